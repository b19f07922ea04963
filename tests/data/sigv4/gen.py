#!/usr/bin/python3
"""Generates cases.json for tests/unit/test_sigv4.c: requests signed by
botocore's own SigV4 signers (SigV4Auth, S3SigV4Auth, SigV4QueryAuth,
S3SigV4QueryAuth) and, through a botocore client whose HTTP send is
intercepted, requests exactly as the EC2 and S3 clients build them.

Each case is what a server receives (method, path and query as on the
request line, headers, sha256 of the body) plus what it knows (the secret,
the expected region and service, its clock) and what botocore computed (the
Authorization header or the presigned URL, and its canonical request).

The clock is fixed, so running this again writes the same file:
    /usr/bin/python3 tests/data/sigv4/gen.py > tests/data/sigv4/cases.json
It uses Debian's python3-botocore (the interpreter is pinned on purpose)
and python3-awscrt: with awscrt installed, botocore's clients (and so awscli)
sign with the CRT signers (botocore.crt.auth), so the "crt-" cases are
signed by those, the others by botocore's Python signers.
"""
import datetime
import hashlib
import json
import sys
import types
import urllib.parse

import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.session
import botocore.utils

try:
    import botocore.crt.auth
except ImportError:
    sys.exit('gen.py needs python3-awscrt (the CRT signers awscli uses)')

AKID = 'AKIANUBOTEST2345ABCD'
SECRET = 'nUb0/Secret+Key/example0123456789abcdef'
TOKEN_AKID = 'ASIANUBOTEST2345WXYZ'
TOKEN_SECRET = 'another/Secret+Key=withPadding0123456789'
TOKEN = 'FwoGZXIvYXdzE+session/token=='

LONG_SECRET = 'L0ng/secret+' * 9  # 108 characters

T0 = datetime.datetime(2026, 11, 22, 5, 1, 2)
T_MIDNIGHT = datetime.datetime(2026, 12, 31, 23, 59, 58)

_clock = [T0]


class _FixedDatetime(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return _clock[0]


# botocore.auth reads the time through its module-level "datetime" (older
# releases) or get_current_datetime (newer ones); both are pinned here.
botocore.auth.datetime = types.SimpleNamespace(datetime=_FixedDatetime)
if hasattr(botocore.auth, 'get_current_datetime'):
    botocore.auth.get_current_datetime = lambda: _clock[0]
botocore.crt.auth.datetime = types.SimpleNamespace(datetime=_FixedDatetime,
                                                   timezone=datetime.timezone)

# Clients pick their signer from AUTH_TYPE_MAPS: the Python signers unless a
# test asks for the CRT ones.
PY_SIGNERS = {'v4': botocore.auth.SigV4Auth, 'v4-query': botocore.auth.SigV4QueryAuth,
              's3v4': botocore.auth.S3SigV4Auth, 's3v4-query': botocore.auth.S3SigV4QueryAuth}
CRT_SIGNERS = {'v4': botocore.crt.auth.CrtSigV4Auth,
               'v4-query': botocore.crt.auth.CrtSigV4QueryAuth,
               's3v4': botocore.crt.auth.CrtS3SigV4Auth,
               's3v4-query': botocore.crt.auth.CrtS3SigV4QueryAuth}
CRT_OF = {botocore.auth.SigV4Auth: botocore.crt.auth.CrtSigV4Auth,
          botocore.auth.SigV4QueryAuth: botocore.crt.auth.CrtSigV4QueryAuth,
          botocore.auth.S3SigV4Auth: botocore.crt.auth.CrtS3SigV4Auth,
          botocore.auth.S3SigV4QueryAuth: botocore.crt.auth.CrtS3SigV4QueryAuth}

# Record the canonical request each signer computes.
_last_cr = []
_orig_cr = botocore.auth.SigV4Auth.canonical_request


def _recording_cr(self, request):
    cr = _orig_cr(self, request)
    _last_cr.append(cr)
    return cr


botocore.auth.SigV4Auth.canonical_request = _recording_cr


def epoch(dt):
    return int(dt.replace(tzinfo=datetime.timezone.utc).timestamp())


def body_bytes(body):
    if body is None:
        return b''
    if isinstance(body, str):
        return body.encode('utf-8')
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    pos = body.tell()
    data = body.read()
    body.seek(pos)
    return data


def wire(prepared, extra_headers=()):
    """What the server sees of a prepared request."""
    parts = urllib.parse.urlsplit(prepared.url)
    headers = [[k, v.decode('utf-8') if isinstance(v, bytes) else v]
               for k, v in prepared.headers.items()]
    for h in headers:
        if h[0].lower() == 'amz-sdk-invocation-id':
            h[1] = '00000000-0000-4000-8000-000000000000'  # random, unsigned
    if not any(k.lower() == 'host' for k, _ in headers):
        headers.insert(0, ['Host', botocore.auth._host_from_url(prepared.url)])
    headers.extend([list(h) for h in extra_headers])
    return {
        'method': prepared.method,
        'path': parts.path or '/',
        'query': parts.query if parts.query else None,
        'headers': headers,
        'body_sha256': hashlib.sha256(body_bytes(prepared.body)).hexdigest(),
    }


def header(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def payload_of(case, cr):
    if cr is not None:
        return cr.split('\n')[-1]
    # CRT: the header when it sent one, UNSIGNED-PAYLOAD for S3 URLs, else
    # the body's hash.
    h = header(case['headers'], 'x-amz-content-sha256')
    if h is not None:
        return h
    if case['s3'] and case['query'] and 'X-Amz-Signature=' in case['query']:
        return 'UNSIGNED-PAYLOAD'
    return case['body_sha256']


def finish(case, name, region, service, s3, akid, secret, now_offset, cr):
    case.update({
        'name': name,
        'region': region,
        'service': service,
        's3': s3,
        'access_key': akid,
        'secret': secret,
        'canonical_request': cr,
    })
    auth = header(case['headers'], 'authorization')
    if auth is not None:
        case['presigned'] = False
        case['authorization'] = auth
        fields = dict(p.strip().split('=', 1) for p in auth.split(' ', 1)[1].split(','))
        case['signed_headers'] = fields['SignedHeaders']
        amz_date = header(case['headers'], 'x-amz-date')
        if amz_date is None:
            amz_date = _clock[0].strftime('%Y%m%dT%H%M%SZ')
        case['amz_date'] = amz_date
        case['payload_hash'] = payload_of(case, cr)
    else:
        case['presigned'] = True
        q = urllib.parse.parse_qs(case['query'], keep_blank_values=True)
        case['amz_date'] = q['X-Amz-Date'][0]
        case['signed_headers'] = q['X-Amz-SignedHeaders'][0]
        case['expires'] = int(q['X-Amz-Expires'][0])
        case['payload_hash'] = payload_of(case, cr)
    case['now'] = epoch(_clock[0]) + now_offset
    return case


NOISE = (('User-Agent', 'aws-cli/1.45 Python/3.11 botocore/1.29'),
         ('Accept-Encoding', 'identity'))


def sign_one(name, signer_cls, method, url, region, service, headers=None,
         data=None, params=None, s3=False, creds=None, expires=None,
         context=None, clock=T0, now_offset=17, upload=None, crt=False):
    _clock[0] = clock
    if crt:
        signer_cls = CRT_OF[signer_cls]
        name = 'crt-' + name
        if params:
            # botocore's CRT signers take no list of params (and clients put
            # the query in the URL anyway), so it goes there, encoded.
            url += ('&' if '?' in url else '?') + botocore.utils.percent_encode_sequence(params)
            params = None
    _last_cr.clear()
    creds = creds or botocore.credentials.Credentials(AKID, SECRET)
    req = botocore.awsrequest.AWSRequest(method=method, url=url,
                                         headers=dict(headers or {}),
                                         data=data, params=params or {})
    if context:
        req.context.update(context)
    if expires is None:
        signer = signer_cls(creds, service, region)
    else:
        signer = signer_cls(creds, service, region, expires=expires)
    signer.add_auth(req)
    case = wire(req.prepare(), NOISE)
    if upload is not None:
        # A presigned PUT: the body comes with the request, unsigned.
        case['body_sha256'] = hashlib.sha256(upload).hexdigest()
    return finish(case, name, region, service, s3, creds.access_key,
                  creds.secret_key, now_offset, _last_cr[-1] if _last_cr else None)


def direct_cases(crt=False):
    c = []

    def sign(*args, **kwargs):
        return sign_one(*args, crt=crt, **kwargs)

    # EC2 Query API: form POSTs, body hashed, query empty.
    form = [('Action', 'RunInstances'), ('Version', '2016-11-15'),
            ('ImageId', 'ami-0123456789abcdef0'), ('MinCount', '1'),
            ('MaxCount', '1'),
            ('UserData', 'IyEvYmluL3NoCmVjaG8gImhpIiA+IC90bXAveA=='),
            ('TagSpecification.1.Tag.1.Value', 'a b+c/d=e&f%g ~é中'),
            ('TagSpecification.1.Tag.1.Key', '  spaced  key  ')]
    ctype = {'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'}
    c.append(sign('ec2-post-form', botocore.auth.SigV4Auth, 'POST',
                  'http://127.0.0.1:8773/', 'us-east-1', 'ec2', headers=ctype,
                  data=dict(form)))
    c.append(sign('ec2-post-repeated', botocore.auth.SigV4Auth, 'POST',
                  'https://ec2.nubo-1.example.com/', 'nubo-1', 'ec2',
                  headers=ctype,
                  data=urllib.parse.urlencode(
                      [('Action', 'DescribeInstances'), ('Version', '2016-11-15'),
                       ('InstanceId.1', 'i-1'), ('InstanceId.1', 'i-0'),
                       ('Filter.1.Value.1', ''), ('Empty', '')]).encode()))
    # EC2 over GET: params signed from their values, sent with quote_plus.
    c.append(sign('ec2-get-query', botocore.auth.SigV4Auth, 'GET',
                  'http://127.0.0.1:8773/', 'eu-west-3', 'ec2',
                  params=[('Version', '2016-11-15'), ('Action', 'DescribeImages'),
                          ('Filter.1.Name', 'name'),
                          ('Filter.1.Value.1', 'my image (v1) + copy/é=&?'),
                          ('Owner.1', 'self'), ('Owner.1', 'amazon'),
                          ('Empty', ''), ('a-b', 'x'), ('a', 'y'), ('A', 'z'),
                          ('tilde~', '~'), ('star*', '*')]))
    # Date header instead of X-Amz-Date (botocore then signs Date).
    c.append(sign('ec2-date-header', botocore.auth.SigV4Auth, 'POST',
                  'http://localhost:8773/', 'us-east-1', 'ec2',
                  headers=dict(ctype, Date='placeholder'),
                  data={'Action': 'DescribeRegions', 'Version': '2016-11-15'}))
    # Session token: X-Amz-Security-Token becomes a signed header.
    c.append(sign('ec2-session-token', botocore.auth.SigV4Auth, 'POST',
                  'http://127.0.0.1:8773/', 'us-east-1', 'ec2', headers=ctype,
                  data={'Action': 'DescribeInstances', 'Version': '2016-11-15'},
                  creds=botocore.credentials.Credentials(TOKEN_AKID, TOKEN_SECRET, TOKEN)))
    # Header values with runs of spaces and tabs; extra signed headers.
    c.append(sign('ec2-header-spaces', botocore.auth.SigV4Auth, 'POST',
                  'http://127.0.0.1:8773/', 'us-east-1', 'ec2',
                  headers=dict(ctype, **{'X-Nubo-Note': '  a   b \t c  ',
                                         'X-Nubo-Empty': '',
                                         'My-Header': 'x"y\'z,;'}),
                  data={'Action': 'DescribeInstances'}))
    # Signed at 23:59:58: received after midnight, the scope keeps the
    # signing day.
    c.append(sign('ec2-midnight', botocore.auth.SigV4Auth, 'POST',
                  'http://127.0.0.1:8773/', 'us-east-1', 'ec2', headers=ctype,
                  data={'Action': 'DescribeInstances'}, clock=T_MIDNIGHT,
                  now_offset=5))
    # A non-S3 REST path: normalised (dot segments, double slashes) and
    # encoded a second time.
    c.append(sign('rest-path-normalised', botocore.auth.SigV4Auth, 'PUT',
                  'http://127.0.0.1:8787/v1//a%20b/./c/../%C3%A9%2Bx/~t/',
                  'us-east-1', 'nubo', data=b'{"k": "v"}',
                  headers={'Content-Type': 'application/json'}))
    c.append(sign('rest-path-dotdot-root', botocore.auth.SigV4Auth, 'GET',
                  'http://127.0.0.1:8787/a/../..', 'us-east-1', 'nubo'))
    c.append(sign('rest-path-empty', botocore.auth.SigV4Auth, 'GET',
                  'http://127.0.0.1:8787', 'us-east-1', 'nubo'))
    # S3: path used as sent, x-amz-content-sha256 always present.
    c.append(sign('s3-put-signed-payload', botocore.auth.S3SigV4Auth, 'PUT',
                  'http://127.0.0.1:9000/bucket/dir/obj.txt', 'us-east-1', 's3',
                  data=b'hello, world\n', s3=True,
                  headers={'Content-Type': 'text/plain',
                           'x-amz-meta-owner': ' Ann   Lee ',
                           'Content-MD5': 'i7x2aq0i9vLJmx4mKKs5Vg=='}))
    c.append(sign('s3-put-unsigned-payload', botocore.auth.S3SigV4Auth, 'PUT',
                  'https://127.0.0.1:9443/bucket/big.bin', 'us-east-1', 's3',
                  data=b'\x00\x01binary\xff', s3=True,
                  context={'client_config': botocore.config.Config(
                      s3={'payload_signing_enabled': False})}))
    c.append(sign('s3-get-odd-key', botocore.auth.S3SigV4Auth, 'GET',
                  'http://127.0.0.1:9000/bucket/dir/a%20b%2Bc/%C3%A9%E4%B8%AD%20%3D%26.txt',
                  'eu-west-3', 's3', s3=True))
    c.append(sign('s3-get-dots-kept', botocore.auth.S3SigV4Auth, 'GET',
                  'http://127.0.0.1:9000/bucket//x/./y/../z', 'us-east-1', 's3',
                  s3=True))
    c.append(sign('s3-list-query', botocore.auth.S3SigV4Auth, 'GET',
                  'http://127.0.0.1:9000/bucket', 'us-east-1', 's3', s3=True,
                  params=[('list-type', '2'), ('prefix', 'a b+c/é'),
                          ('delimiter', '/'), ('encoding-type', 'url'),
                          ('start-after', '')]))
    c.append(sign('s3-acl-bare-key', botocore.auth.S3SigV4Auth, 'GET',
                  'http://127.0.0.1:9000/bucket/k?acl', 'us-east-1', 's3',
                  s3=True))
    # A secret longer than SHA-256's block (HMAC hashes such keys first).
    c.append(sign('ec2-long-secret', botocore.auth.SigV4Auth, 'POST',
                  'http://127.0.0.1:8773/', 'us-east-1', 'ec2', headers=ctype,
                  data={'Action': 'DescribeInstances'},
                  creds=botocore.credentials.Credentials(AKID, LONG_SECRET)))
    # Presigned URLs.
    c.append(sign('s3-presigned-get', botocore.auth.S3SigV4QueryAuth, 'GET',
                  'http://127.0.0.1:9000/bucket/dir/a%20b%2Bc/%C3%A9.txt?'
                  'response-content-disposition=attachment%3B%20filename%3D%22x%20y.txt%22',
                  'us-east-1', 's3', s3=True, expires=900, now_offset=600))
    c.append(sign('s3-presigned-put', botocore.auth.S3SigV4QueryAuth, 'PUT',
                  'http://127.0.0.1:9000/bucket/upload.bin', 'eu-west-3', 's3',
                  s3=True, expires=3600, upload=b'uploaded bytes',
                  headers={'Content-Type': 'application/octet-stream'},
                  now_offset=3599))
    c.append(sign('s3-presigned-week', botocore.auth.S3SigV4QueryAuth, 'GET',
                  'http://127.0.0.1:9000/bucket/k', 'us-east-1', 's3', s3=True,
                  expires=604800, now_offset=604000))
    c.append(sign('s3-presigned-token', botocore.auth.S3SigV4QueryAuth, 'GET',
                  'http://127.0.0.1:9000/bucket/k', 'us-east-1', 's3', s3=True,
                  creds=botocore.credentials.Credentials(TOKEN_AKID, TOKEN_SECRET, TOKEN),
                  expires=60, now_offset=1))
    c.append(sign('ec2-presigned-get', botocore.auth.SigV4QueryAuth, 'GET',
                  'http://127.0.0.1:8773/', 'nubo-1', 'ec2', expires=300,
                  params={'Action': 'DescribeInstances', 'Version': '2016-11-15',
                          'Filter.1.Value.1': 'web server #1'}))
    return c


class _Raw:
    def __init__(self, data):
        self._data = data

    def stream(self, **kwargs):
        yield self._data


def client_cases(crt=False):
    """Requests as botocore's EC2 and S3 clients build them."""
    _clock[0] = T0
    botocore.auth.AUTH_TYPE_MAPS.update(CRT_SIGNERS if crt else PY_SIGNERS)
    prefix = 'crt-' if crt else ''
    session = botocore.session.get_session()
    # s3v4: older botocore presigns S3 URLs with SigV2 unless told.
    cfg = botocore.config.Config(retries={'max_attempts': 1}, signature_version='s3v4',
                                 s3={'addressing_style': 'path'})
    out = []

    def capture(request, **kwargs):
        out.append((wire(request, NOISE[1:]), _last_cr[-1] if _last_cr else None))
        body = (b'<?xml version="1.0"?><Response><Errors><Error><Code>Stop</Code>'
                b'<Message>captured</Message></Error></Errors></Response>')
        return botocore.awsrequest.AWSResponse(request.url, 400, {}, _Raw(body))

    cases = []
    for svc, region, url in (('ec2', 'us-east-1', 'http://127.0.0.1:8773'),
                             ('s3', 'us-east-1', 'http://127.0.0.1:9000')):
        client = session.create_client(svc, region_name=region, endpoint_url=url,
                                       aws_access_key_id=AKID,
                                       aws_secret_access_key=SECRET,
                                       config=cfg if svc == 's3' else cfg.merge(
                                           botocore.config.Config(signature_version='v4')))
        client.meta.events.register('before-send', capture)
        if svc == 'ec2':
            calls = [
                ('client-ec2-describe-instances', 'describe_instances',
                 {'Filters': [{'Name': 'tag:Name', 'Values': ['web 1', 'a+b=c&d', 'é']}],
                  'InstanceIds': ['i-0123456789abcdef0']}),
                ('client-ec2-run-instances', 'run_instances',
                 {'ImageId': 'ami-0123456789abcdef0', 'MinCount': 1, 'MaxCount': 2,
                  'InstanceType': 't1.nano', 'UserData': '#!/bin/sh\necho hi > /tmp/x\n',
                  'ClientToken': 'tok/1+2=3'}),
            ]
        else:
            calls = [
                ('client-s3-put-object', 'put_object',
                 {'Bucket': 'bucket', 'Key': 'dir/a b+c/é~=&.txt', 'Body': b'data\n',
                  'ContentType': 'text/plain', 'Metadata': {'note': 'x  y'}}),
                ('client-s3-list-objects-v2', 'list_objects_v2',
                 {'Bucket': 'bucket', 'Prefix': 'a b+c/é', 'Delimiter': '/'}),
                ('client-s3-get-object-range', 'get_object',
                 {'Bucket': 'bucket', 'Key': 'k', 'Range': 'bytes=0-9'}),
            ]
        for name, op, params in calls:
            _last_cr.clear()
            try:
                getattr(client, op)(**params)
            except botocore.exceptions.ClientError:
                pass
            w, cr = out.pop()
            cases.append(finish(w, prefix + name, region, svc, svc == 's3', AKID, SECRET,
                                -42, cr))
        # Presigned URLs from the client (the server sees a GET/PUT with
        # only a Host header).
        if svc == 's3':
            pres = [('client-s3-presign-get', 'get_object',
                     {'Bucket': 'bucket', 'Key': 'dir/a b+c/é.txt',
                      'ResponseContentType': 'text/plain; charset=utf-8'}, 'GET'),
                    ('client-s3-presign-put', 'put_object',
                     {'Bucket': 'bucket', 'Key': 'up load.txt'}, 'PUT')]
        else:
            pres = [('client-ec2-presign', 'describe_instances',
                     {'InstanceIds': ['i-0123456789abcdef0']}, 'GET')]
        for name, op, params, method in pres:
            _last_cr.clear()
            url_s = client.generate_presigned_url(op, Params=params, ExpiresIn=1200,
                                                  HttpMethod=method)
            parts = urllib.parse.urlsplit(url_s)
            w = {'method': method, 'path': parts.path, 'query': parts.query,
                 'headers': [['Host', parts.netloc]] + [list(h) for h in NOISE],
                 'body_sha256': hashlib.sha256(b'').hexdigest()}
            case = finish(w, prefix + name, region, svc, svc == 's3', AKID, SECRET, 1199,
                          _last_cr[-1] if _last_cr else None)
            case['url'] = url_s
            cases.append(case)
    return cases


def key_vectors():
    """Signing keys and HMACs as botocore's SigV4Auth computes them."""
    out = []
    for secret, date, region, service in ((SECRET, '20261122', 'us-east-1', 'ec2'),
                                          (LONG_SECRET, '20261231', 'nubo-1', 's3'),
                                          ('', '19700101', 'r', 's')):
        signer = botocore.auth.SigV4Auth(None, service, region)
        k = signer._sign(('AWS4' + secret).encode(), date)
        for part in (region, service, 'aws4_request'):
            k = signer._sign(k, part)
        msg = 'AWS4-HMAC-SHA256\n' + date + 'T000000Z\nanything \u00e9'
        out.append({'secret': secret, 'date': date, 'region': region, 'service': service,
                    'key': k.hex(), 'data': msg, 'hmac': signer._sign(k, msg, hex=True)})
    return out


def main():
    cases = direct_cases() + client_cases() + direct_cases(crt=True) + client_cases(crt=True)
    for case in cases:
        if case['presigned'] and 'url' not in case:
            case['url'] = 'http://%s%s?%s' % (header(case['headers'], 'host'),
                                              case['path'], case['query'])
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), names
    json.dump({'comment': 'generated by gen.py from botocore signers; do not edit',
               'cases': cases, 'keys': key_vectors()}, sys.stdout, indent=1, ensure_ascii=False, sort_keys=True)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
