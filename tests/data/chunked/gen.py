#!/usr/bin/python3
"""Writes the aws-chunked cases of tests/unit/test_chunked.c into this folder:
cases.json (one entry a request: method, path, headers as received, the
secret to verify with) plus, per case, the raw request body (<name>.body,
after the HTTP layer's own chunked encoding was removed, as libmicrohttpd
hands it over) and the payload it must decode to (payload-*.bin).

Where the bodies come from:
  * real clients, recorded by a small capture server run here on 127.0.0.1
    (HTTPS with a throwaway self-signed certificate where the client only
    uses trailers over TLS, plain HTTP otherwise):
      - boto3/botocore 1.29 (Debian's python3-botocore, this interpreter):
        put_object and upload_part with ChecksumAlgorithm CRC32, CRC32C,
        SHA1, SHA256 over HTTPS -> STREAMING-UNSIGNED-PAYLOAD-TRAILER; and
        put_object over HTTP with payload signing and a CRC32 checksum ->
        an ordinary body with x-amz-checksum-crc32 as a plain header;
      - awscli v1 (the `aws` on PATH: 1.45 with botocore 1.43): `s3 cp` with
        its default CRC32 and `s3api put-object --checksum-algorithm`
        SHA1/SHA256 over HTTPS -> STREAMING-UNSIGNED-PAYLOAD-TRAILER;
      - minio-go 7.0.46 (Debian's golang-github-minio-minio-go-v7-dev, built
        from minio_capture.go): PutObject over HTTP ->
        STREAMING-AWS4-HMAC-SHA256-PAYLOAD in 64 KiB chunks, and its
        streaming signer with a CRC32C trailer ->
        STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER.
    Neither botocore nor awscli signs chunks; minio-go is the real signer.
  * the two worked examples of AWS's S3 documentation (chunked upload, and
    chunked upload with a trailing CRC32C), rebuilt here by an encoder
    written from that documentation; the published signatures are checked
    before anything is written, so the encoder is known to be right;
  * that encoder, for what no client here sends: several chunk sizes,
    empty payloads, every trailer algorithm signed.

Real clients stamp the current time into their signatures, so running this
again rewrites the signed cases with new dates; the unsigned bodies and the
payloads come out the same. Needs python3-botocore, python3-awscrt,
openssl, the awscli v1 `aws`, golang-go and golang-github-minio-minio-go-v7-dev:
    /usr/bin/python3 tests/data/chunked/gen.py
"""
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import zlib

import awscrt.checksums
import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import urllib3

HERE = os.path.dirname(os.path.abspath(__file__))
AKID = 'AKIANUBOTEST2345ABCD'
SECRET = 'nUb0/Secret+Key/example0123456789abcdef'
REGION = 'us-east-1'
BUCKET = 'nubo-test'
EMPTY_SHA256 = hashlib.sha256(b'').hexdigest()

DOC_AKID = 'AKIAIOSFODNN7EXAMPLE'
DOC_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'
DOC_DATE = '20130524T000000Z'
# Published in "Signature Calculations for the Authorization Header:
# Transferring Payload in Multiple Chunks" and "... Including Trailing Headers".
DOC_SIGNED = {
    'seed': '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9',
    'chunks': ['ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648',
               '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497',
               'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9'],
}
DOC_TRAILER = {
    'seed': '106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e',
    'chunks': ['b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2',
               '1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7',
               '2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992'],
    'trailer': 'd81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435',
}


# ---- payloads ----

def payload(size, seed):
    """Deterministic bytes that look random (CR and LF included)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(b'%s-%d' % (seed.encode(), i)).digest()
        i += 1
    return bytes(out[:size])


PAYLOADS = {
    'payload-0.bin': b'',
    'payload-1.bin': b'x',
    'payload-3k.bin': payload(3 * 1024 + 17, 'small'),
    'payload-70k.bin': payload(70 * 1024, 'multi'),
    'payload-doc.bin': b'a' * 66560,
}


# ---- checksums, each from a library, as S3 sends them ----

def checksum_b64(algo, data):
    if algo == 'crc32':
        raw = zlib.crc32(data).to_bytes(4, 'big')
    elif algo == 'crc32c':
        raw = awscrt.checksums.crc32c(data).to_bytes(4, 'big')
    elif algo == 'sha1':
        raw = hashlib.sha1(data).digest()
    elif algo == 'sha256':
        raw = hashlib.sha256(data).digest()
    else:
        raise ValueError(algo)
    return base64.b64encode(raw).decode()


# ---- aws-chunked, written from AWS's documentation ----

def _hmac(key, msg):
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256).digest()


def signing_key(secret, date, region, service='s3'):
    k = _hmac(('AWS4' + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, 'aws4_request')


def chunk_signature(key, amz_date, scope, prev, data):
    sts = '\n'.join(['AWS4-HMAC-SHA256-PAYLOAD', amz_date, scope, prev, EMPTY_SHA256,
                     hashlib.sha256(data).hexdigest()])
    return _hmac(key, sts).hex()


def trailer_signature(key, amz_date, scope, prev, canonical):
    sts = '\n'.join(['AWS4-HMAC-SHA256-TRAILER', amz_date, scope, prev,
                     hashlib.sha256(canonical).hexdigest()])
    return _hmac(key, sts).hex()


def encode_signed(data, size, key, amz_date, scope, seed, trailer=None):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]; trailer: (name, value).
    Returns the body and the signatures in order."""
    out, sigs, prev = bytearray(), [], seed
    pieces = [data[i:i + size] for i in range(0, len(data), size)] + [b'']
    for piece in pieces:
        prev = chunk_signature(key, amz_date, scope, prev, piece)
        sigs.append(prev)
        out += b'%x;chunk-signature=%s\r\n' % (len(piece), prev.encode())
        if piece:
            out += piece + b'\r\n'
    if trailer is None:
        out += b'\r\n'
    else:
        canonical = ('%s:%s\n' % trailer).encode()
        prev = trailer_signature(key, amz_date, scope, prev, canonical)
        sigs.append(prev)
        out += b'%s:%s\r\n' % (trailer[0].encode(), trailer[1].encode())
        out += b'x-amz-trailer-signature:%s\r\n\r\n' % prev.encode()
    return bytes(out), sigs


def encode_unsigned_trailer(data, size, name, value):
    out = bytearray()
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out += b'%x\r\n%s\r\n' % (len(piece), piece)
    out += b'0\r\n%s:%s\r\n\r\n' % (name.encode(), value.encode())
    return bytes(out)


# ---- seed signatures: botocore's own S3 signer over the request headers ----

class _StreamingAuth(botocore.auth.S3SigV4Auth):
    """botocore's S3 signer, told the payload hash instead of hashing it."""

    def __init__(self, creds, region, payload_hash, when):
        super().__init__(creds, 's3', region)
        self._payload_hash = payload_hash
        self._when = when

    def payload(self, request):
        return self._payload_hash

    def add_auth(self, request):
        # pin the clock: botocore reads it through datetime in add_auth
        real = botocore.auth.datetime
        when = self._when

        class _Fixed(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return when

        botocore.auth.datetime = type('m', (), {'datetime': _Fixed})
        if hasattr(botocore.auth, 'get_current_datetime'):
            saved = botocore.auth.get_current_datetime
            botocore.auth.get_current_datetime = lambda: when
        try:
            super().add_auth(request)
        finally:
            botocore.auth.datetime = real
            if hasattr(botocore.auth, 'get_current_datetime'):
                botocore.auth.get_current_datetime = saved


def sign_request(host, path, headers, payload_hash, akid, secret, when, region=REGION):
    """Headers of a PUT as botocore signs it (Authorization, X-Amz-Date...)."""
    req = botocore.awsrequest.AWSRequest(method='PUT', url='http://%s%s' % (host, path),
                                         headers=dict(headers), data=b'')
    req.headers['X-Amz-Content-SHA256'] = payload_hash
    auth = _StreamingAuth(botocore.credentials.Credentials(akid, secret), region, payload_hash,
                          when)
    auth.add_auth(req)
    out = [['Host', host]] + [[k, v] for k, v in req.headers.items()]
    sig = req.headers['Authorization'].rsplit('Signature=', 1)[1]
    return out, sig


# ---- the capture server ----

class Capture(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    requests = []

    def log_message(self, *a):
        pass

    def _body(self):
        te = self.headers.get('Transfer-Encoding', '')
        if 'chunked' in [t.strip().lower() for t in te.split(',')]:
            out = bytearray()
            while True:
                line = self.rfile.readline(1 << 16)
                size = int(line.split(b';')[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1 << 16) not in (b'\r\n', b'\n', b''):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(16)
        return self.rfile.read(int(self.headers.get('Content-Length', '0')))

    def _reply(self, status, body=b'', extra=()):
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        body = self._body()
        path, _, query = self.path.partition('?')
        Capture.requests.append({'method': 'PUT', 'path': path, 'query': query,
                                 'headers': [[k, v] for k, v in self.headers.items()],
                                 'body': body})
        self._reply(200, extra=[('ETag', '"%s"' % hashlib.md5(body).hexdigest())])

    def do_POST(self):
        self._body()
        if 'uploads' in self.path:
            xml = ('<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult>'
                   '<Bucket>%s</Bucket><Key>k</Key><UploadId>nubo-upload-1</UploadId>'
                   '</InitiateMultipartUploadResult>' % BUCKET).encode()
            return self._reply(200, xml, [('Content-Type', 'application/xml')])
        self._reply(400)

    def do_GET(self):
        self._reply(404)

    do_HEAD = do_GET


def serve(tls_dir=None):
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Capture)
    if tls_dir:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(tls_dir, 'cert.pem'), os.path.join(tls_dir, 'key.pem'))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def make_cert(d):
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj',
                    '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                    '-keyout', os.path.join(d, 'key.pem'), '-out', os.path.join(d, 'cert.pem')],
                   check=True, capture_output=True)


def take(path_suffix):
    """The one recorded PUT whose path ends with path_suffix."""
    hits = [r for r in Capture.requests if r['path'].endswith(path_suffix)]
    if len(hits) != 1:
        sys.exit('gen.py: %d requests recorded for %s' % (len(hits), path_suffix))
    return hits[0]


# ---- the cases ----

cases = []


def add(name, client, req, payload_file, secret=SECRET, region=REGION, note=None, **extra):
    # clients that send the same bytes share one body file
    body_file = next((c['body'] for c in cases if c['body_bytes'] == req['body']), None)
    if not body_file:
        body_file = name + '.body'
        with open(os.path.join(HERE, body_file), 'wb') as f:
            f.write(req['body'])
    c = {'name': name, 'client': client, 'method': req['method'], 'path': req['path'],
         'query': req.get('query', ''), 'headers': req['headers'], 'body': body_file,
         'body_bytes': req['body'],
         'payload': payload_file, 'secret': secret, 'region': region}
    if note:
        c['note'] = note
    c.update(extra)
    if PAYLOADS[payload_file] and req['body'] == PAYLOADS[payload_file]:
        c['plain'] = True
    cases.append(c)


def capture_botocore(tmp):
    tls = serve(tmp)
    plain = serve()
    urllib3.disable_warnings()
    https = 'https://127.0.0.1:%d' % tls.server_address[1]
    http_url = 'http://127.0.0.1:%d' % plain.server_address[1]
    ver = botocore.__version__

    def client(url, **s3):
        cfg = botocore.config.Config(s3=dict(addressing_style='path', **s3), retries={'max_attempts': 1})
        return boto3.client('s3', endpoint_url=url, region_name=REGION, verify=False,
                            aws_access_key_id=AKID, aws_secret_access_key=SECRET, config=cfg)

    c = client(https)
    for algo in ('CRC32', 'CRC32C', 'SHA1', 'SHA256'):
        key = 'boto-put-%s' % algo.lower()
        c.put_object(Bucket=BUCKET, Key=key, Body=PAYLOADS['payload-3k.bin'],
                     ChecksumAlgorithm=algo)
        add('botocore-put-%s' % algo.lower(),
            'botocore %s put_object(ChecksumAlgorithm=%s) over HTTPS' % (ver, algo),
            take('/' + key), 'payload-3k.bin')
    c.put_object(Bucket=BUCKET, Key='boto-put-70k', Body=PAYLOADS['payload-70k.bin'],
                 ChecksumAlgorithm='CRC32')
    add('botocore-put-70k-crc32', 'botocore %s put_object 70 KiB, CRC32, over HTTPS' % ver,
        take('/boto-put-70k'), 'payload-70k.bin')
    c.put_object(Bucket=BUCKET, Key='boto-put-empty', Body=b'', ChecksumAlgorithm='CRC32')
    add('botocore-put-empty-crc32', 'botocore %s put_object of 0 bytes, CRC32, over HTTPS' % ver,
        take('/boto-put-empty'), 'payload-0.bin')
    up = c.create_multipart_upload(Bucket=BUCKET, Key='boto-part', ChecksumAlgorithm='SHA256')
    c.upload_part(Bucket=BUCKET, Key='boto-part', UploadId=up['UploadId'], PartNumber=1,
                  Body=PAYLOADS['payload-70k.bin'], ChecksumAlgorithm='SHA256')
    add('botocore-upload-part-sha256',
        'botocore %s upload_part(ChecksumAlgorithm=SHA256) over HTTPS' % ver,
        take('/boto-part'), 'payload-70k.bin')
    # over HTTP botocore signs the payload and sends the checksum as a header
    c = client(http_url, payload_signing_enabled=True)
    c.put_object(Bucket=BUCKET, Key='boto-header-crc32', Body=PAYLOADS['payload-3k.bin'],
                 ChecksumAlgorithm='CRC32')
    add('botocore-header-crc32',
        'botocore %s put_object(ChecksumAlgorithm=CRC32) over HTTP, payload signed' % ver,
        take('/boto-header-crc32'), 'payload-3k.bin')
    tls.shutdown()
    plain.shutdown()


def capture_awscli(tmp):
    aws = shutil.which('aws')
    if not aws:
        sys.exit('gen.py: no aws on PATH')
    ver = subprocess.run([aws, '--version'], capture_output=True, text=True).stdout.strip()
    ver = ver or subprocess.run([aws, '--version'], capture_output=True, text=True).stderr.strip()
    tls = serve(tmp)
    url = 'https://127.0.0.1:%d' % tls.server_address[1]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE='/nonexistent',
               AWS_SHARED_CREDENTIALS_FILE='/nonexistent', AWS_EC2_METADATA_DISABLED='true',
               PYTHONWARNINGS='ignore')
    files = {}
    for p in ('payload-3k.bin', 'payload-70k.bin'):
        files[p] = os.path.join(tmp, p)
        with open(files[p], 'wb') as f:
            f.write(PAYLOADS[p])
    base = [aws, '--endpoint-url', url, '--no-verify-ssl']
    runs = [
        ('awscli-cp-crc32', 's3 cp (default checksum)', 'payload-3k.bin',
         ['s3', 'cp', files['payload-3k.bin'], 's3://%s/cli-cp-3k' % BUCKET], '/cli-cp-3k'),
        ('awscli-cp-70k-crc32', 's3 cp 70 KiB (default checksum)', 'payload-70k.bin',
         ['s3', 'cp', files['payload-70k.bin'], 's3://%s/cli-cp-70k' % BUCKET], '/cli-cp-70k'),
        ('awscli-put-sha1', 's3api put-object --checksum-algorithm SHA1', 'payload-3k.bin',
         ['s3api', 'put-object', '--bucket', BUCKET, '--key', 'cli-sha1', '--body',
          files['payload-3k.bin'], '--checksum-algorithm', 'SHA1'], '/cli-sha1'),
        ('awscli-put-sha256', 's3api put-object --checksum-algorithm SHA256', 'payload-70k.bin',
         ['s3api', 'put-object', '--bucket', BUCKET, '--key', 'cli-sha256', '--body',
          files['payload-70k.bin'], '--checksum-algorithm', 'SHA256'], '/cli-sha256'),
    ]
    for name, what, pfile, args, suffix in runs:
        r = subprocess.run(base + args, env=env, capture_output=True, text=True, timeout=120)
        if r.returncode:
            sys.exit('gen.py: aws %s failed: %s' % (' '.join(args), r.stderr))
        add(name, '%s: %s over HTTPS' % (ver, what), take(suffix), pfile)
    tls.shutdown()


def capture_minio(tmp):
    src = os.path.join(HERE, 'minio_capture.go')
    exe = os.path.join(tmp, 'minio_capture')
    env = dict(os.environ, GO111MODULE='off', GOPATH='/usr/share/gocode', GOFLAGS='',
               GOCACHE=os.path.join(tmp, 'gocache'), GOPROXY='off')
    subprocess.run(['go', 'build', '-o', exe, src], env=env, check=True)
    srv = serve()
    host = '127.0.0.1:%d' % srv.server_address[1]
    files = {}
    for p in ('payload-3k.bin', 'payload-70k.bin', 'payload-1.bin'):
        files[p] = os.path.join(tmp, p)
        with open(files[p], 'wb') as f:
            f.write(PAYLOADS[p])
    subprocess.run([exe, host, AKID, SECRET,
                    'put:minio-put-3k=' + files['payload-3k.bin'],
                    'put:minio-put-70k=' + files['payload-70k.bin'],
                    'put:minio-put-1=' + files['payload-1.bin'],
                    'trailer:minio-trailer-3k=' + files['payload-3k.bin'],
                    'trailer:minio-trailer-70k=' + files['payload-70k.bin']],
                   check=True, timeout=120)
    ver = 'minio-go 7.0.46 (Debian)'
    add('minio-put-3k', ver + ' PutObject over HTTP', take('/minio-put-3k'), 'payload-3k.bin')
    add('minio-put-70k', ver + ' PutObject 70 KiB over HTTP (two 64 KiB chunks)',
        take('/minio-put-70k'), 'payload-70k.bin')
    add('minio-put-1', ver + ' PutObject of 1 byte over HTTP', take('/minio-put-1'),
        'payload-1.bin')
    note = ('minio-go ends each trailer line with a bare LF and puts CRLF before '
            'x-amz-trailer-signature')
    add('minio-trailer-3k', ver + ' StreamingSignV4 with a CRC32C trailer',
        take('/minio-trailer-3k'), 'payload-3k.bin', note=note)
    add('minio-trailer-70k', ver + ' StreamingSignV4 with a CRC32C trailer, 70 KiB',
        take('/minio-trailer-70k'), 'payload-70k.bin', note=note)
    srv.shutdown()


def doc_examples():
    """AWS's worked examples: 64 KiB + 1 KiB of 'a', signed, and with a
    CRC32C trailer. The seed is what AWS published; the Authorization is
    rebuilt by botocore's signer and must give the same signature."""
    data = PAYLOADS['payload-doc.bin']
    when = datetime.datetime(2013, 5, 24)
    key = signing_key(DOC_SECRET, '20130524', 'us-east-1')
    scope = '20130524/us-east-1/s3/aws4_request'
    host = 's3.amazonaws.com'
    common = [('Content-Encoding', 'aws-chunked'), ('x-amz-decoded-content-length', '66560'),
              ('x-amz-storage-class', 'REDUCED_REDUNDANCY')]
    for name, pub, mode, trailer in (
            ('doc-signed', DOC_SIGNED, 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD', None),
            ('doc-signed-trailer', DOC_TRAILER, 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER',
             ('x-amz-checksum-crc32c', checksum_b64('crc32c', data)))):
        body, sigs = encode_signed(data, 65536, key, DOC_DATE, scope, pub['seed'], trailer)
        want = pub['chunks'] + ([pub['trailer']] if trailer else [])
        if sigs != want:
            sys.exit('gen.py: %s: the encoder does not give AWS\'s published signatures:\n%s'
                     % (name, '\n'.join(sigs)))
        if trailer and trailer[1] != 'sOO8/Q==':
            sys.exit('gen.py: CRC32C of the example is not the published sOO8/Q==')
        hdrs = list(common) + [('Content-Length', str(len(body)))]
        if trailer:
            hdrs.append(('x-amz-trailer', trailer[0]))
            hdrs = [h for h in hdrs if h[0] != 'Content-Length']
        path = '/examplebucket/chunkObject.txt'
        headers, seed = sign_request(host, path, hdrs, mode, DOC_AKID, DOC_SECRET, when)
        extra = {}
        if seed != pub['seed']:
            # the published seed stays; only the Authorization cannot be checked
            extra['verify_auth'] = False
            headers = [h for h in headers if h[0] != 'Authorization'] + [[
                'Authorization', 'AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, '
                'Signature=%s' % (DOC_AKID, scope, 'host', pub['seed'])]]
        add(name, 'AWS S3 documentation, rebuilt by gen.py',
            {'method': 'PUT', 'path': path, 'headers': headers, 'body': body},
            'payload-doc.bin', secret=DOC_SECRET, note='AWS documentation example', **extra)


def generated():
    """What no client here sends: other chunk sizes and every signed trailer."""
    when = datetime.datetime(2026, 11, 22, 5, 1, 2)
    amz_date = when.strftime('%Y%m%dT%H%M%SZ')
    scope = '%s/%s/s3/aws4_request' % (amz_date[:8], REGION)
    key = signing_key(SECRET, amz_date[:8], REGION)
    host = '127.0.0.1:9000'
    specs = [
        ('gen-signed-3k-1000', 'payload-3k.bin', 1000, None),
        ('gen-signed-70k-8k', 'payload-70k.bin', 8192, None),
        ('gen-signed-empty', 'payload-0.bin', 8192, None),
        ('gen-signed-trailer-crc32', 'payload-3k.bin', 1024, 'crc32'),
        ('gen-signed-trailer-sha1', 'payload-3k.bin', 1000, 'sha1'),
        ('gen-signed-trailer-sha256', 'payload-3k.bin', 4096, 'sha256'),
        ('gen-signed-trailer-empty', 'payload-0.bin', 4096, 'crc32c'),
        ('gen-unsigned-crc32c-1000', 'payload-3k.bin', 1000, 'crc32c'),
    ]
    for name, pfile, size, algo in specs:
        data = PAYLOADS[pfile]
        path = '/%s/%s' % (BUCKET, name)
        hdrs = [('Content-Encoding', 'aws-chunked'),
                ('x-amz-decoded-content-length', str(len(data)))]
        trailer = None
        if algo:
            trailer = ('x-amz-checksum-' + algo, checksum_b64(algo, data))
            hdrs.append(('x-amz-trailer', trailer[0]))
        if name.startswith('gen-unsigned'):
            mode = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER'
            body = encode_unsigned_trailer(data, size, *trailer)
            headers, _ = sign_request(host, path, hdrs, mode, AKID, SECRET, when)
        else:
            mode = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD' + ('-TRAILER' if algo else '')
            headers, seed = sign_request(host, path, hdrs, mode, AKID, SECRET, when)
            body, _ = encode_signed(data, size, key, amz_date, scope, seed, trailer)
        add(name, 'gen.py, seed signed by botocore', {'method': 'PUT', 'path': path,
                                                       'headers': headers, 'body': body}, pfile)


def main():
    for old in os.listdir(HERE):
        if old.endswith('.body'):
            os.unlink(os.path.join(HERE, old))
    for name, data in PAYLOADS.items():
        with open(os.path.join(HERE, name), 'wb') as f:
            f.write(data)
    with tempfile.TemporaryDirectory() as tmp:
        make_cert(tmp)
        doc_examples()
        generated()
        capture_botocore(tmp)
        capture_awscli(tmp)
        capture_minio(tmp)
    for c in cases:
        del c['body_bytes']
    with open(os.path.join(HERE, 'cases.json'), 'w') as f:
        json.dump({'generator': 'tests/data/chunked/gen.py', 'cases': cases}, f, indent=1)
        f.write('\n')
    print('%d cases' % len(cases))


if __name__ == '__main__':
    main()
