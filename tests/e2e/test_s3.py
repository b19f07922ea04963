"""The S3 API with the real clients (awscli v2 and v1, boto3, s3cmd) against
nubod's S3 endpoint: buckets, objects, listings, ranges and conditions,
checksums, aws-chunked uploads, multipart, copy, delete-objects, versioning,
public-read buckets, presigned URLs, tenant isolation, and a kill -9 in the
middle of 100 concurrent uploads."""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import tinyimage
from conftest import AWS, REGION, SAN_ENV, Cloud, make_tenant, wait_until

MiB = 1 << 20


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def status_of(excinfo):
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def aws_v1():
    """An awscli 1.x on PATH (newer botocore: CRC32 checksums by default)."""
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = Path(d) / "aws"
        if not p.exists() or p.resolve() == Path(AWS).resolve():
            continue
        try:
            v = subprocess.run([str(p), "--version"], capture_output=True, text=True,
                               timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if v.startswith("aws-cli/1."):
            return str(p)
    return None


AWS_CLIS = [pytest.param(AWS, id="awscli-v2")]
if aws_v1():
    AWS_CLIS.append(pytest.param(aws_v1(), id="awscli-v1"))


class S3User:
    """An account's access key, with the real clients pointed at nubod's S3."""

    def __init__(self, cloud, tenant):
        self.cloud = cloud
        self.key_id, self.secret = tenant.key_id, tenant.secret
        self.account_id, self.account = tenant.account_id, tenant.account

    def boto(self, **kw):
        return boto3.client("s3", endpoint_url=self.cloud.s3_endpoint, region_name=REGION,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
                            config=Config(retries={"max_attempts": 1},
                                          s3={"addressing_style": "path"}, **kw))

    def env(self):
        return dict(os.environ, AWS_ACCESS_KEY_ID=self.key_id,
                    AWS_SECRET_ACCESS_KEY=self.secret, AWS_DEFAULT_REGION=REGION,
                    AWS_MAX_ATTEMPTS="1", AWS_PAGER="", AWS_CONFIG_FILE="/dev/null",
                    AWS_SHARED_CREDENTIALS_FILE="/dev/null")

    def aws(self, *args, cli=AWS, check=True, cwd=None):
        p = subprocess.run([cli, "--endpoint-url", self.cloud.s3_endpoint, "--output", "json",
                            *args], capture_output=True, text=True, env=self.env(), timeout=600,
                           cwd=cwd)
        if check and p.returncode != 0:
            raise AssertionError(f"{cli} {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p

    def creds(self):
        return Credentials(self.key_id, self.secret)


@pytest.fixture(scope="module")
def s3cloud(tmp_path_factory):
    port = tinyimage.free_port()
    c = Cloud(tmp_path_factory.mktemp("s3cloud"),
              nubod_extra=["-s", f"s3_listen=127.0.0.1:{port}", "-s", "s3_domain=s3.nubo.test"])
    c.s3_port = port
    c.s3_endpoint = f"http://127.0.0.1:{port}"
    try:
        c.root.mkdir(parents=True, exist_ok=True)
        c.start_nubod()
        wait_until(lambda: _s3_up(c), 20, "the S3 listener")
        yield c
    finally:
        c.shutdown()
    errs = c.sanitizer_errors()
    assert not errs, "sanitizer reports:\n" + "\n".join(errs)


def _s3_up(c):
    try:
        with urllib.request.urlopen(c.s3_endpoint + "/", timeout=2):
            return True
    except urllib.error.HTTPError as e:
        return e.code == 403  # anonymous ListBuckets: S3's AccessDenied
    except OSError:
        return False


@pytest.fixture(scope="module")
def users(s3cloud):
    return {
        "alice": S3User(s3cloud, make_tenant(s3cloud, "alice")),
        "alice_ro": S3User(s3cloud, make_tenant(s3cloud, "alice", "viewer", "read-only")),
        "bob": S3User(s3cloud, make_tenant(s3cloud, "bob")),
    }


@pytest.fixture
def bucket(users, request):
    """A fresh bucket of alice's, emptied and removed afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]") + "-" + \
        os.urandom(3).hex()
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)
    s3 = users["alice"].boto()
    s3.create_bucket(Bucket=name)
    yield name
    try:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
        for u in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        s3.delete_bucket(Bucket=name)
    except ClientError:
        pass


# ---- raw requests, signed as botocore signs ----

class _FixedPayload(S3SigV4Auth):
    """botocore's S3 signer with the payload hash given (UNSIGNED-PAYLOAD,
    STREAMING-...) instead of the body's sha256."""

    def __init__(self, creds, payload):
        super().__init__(creds, "s3", REGION)
        self._payload = payload

    def payload(self, request):
        return self._payload if self._payload is not None else super().payload(request)


def raw(cloud, method, path, user=None, body=b"", headers=None, host=None, payload=None,
        sign_body=True):
    """One request over http.client; returns (status, headers, body)."""
    headers = dict(headers or {})
    url = cloud.s3_endpoint + path
    if user:
        req = AWSRequest(method=method, url=url, data=body if sign_body else b"",
                         headers=headers)
        if host:
            req.headers["Host"] = host
        _FixedPayload(user.creds(), payload).add_auth(req)
        headers = dict(req.headers.items())
    elif host:
        headers["Host"] = host
    conn = http.client.HTTPConnection("127.0.0.1", cloud.s3_port, timeout=120)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers or "host" in headers,
                        skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body and not any(k.lower() in ("content-length", "transfer-encoding")
                            for k in headers):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def err_code(body):
    import xml.etree.ElementTree as ET
    return ET.fromstring(body).findtext("Code")


# ---- (1) buckets and objects with awscli ----

@pytest.mark.parametrize("cli", AWS_CLIS)
def test_awscli_buckets_objects_sync(users, cli, tmp_path):
    alice = users["alice"]
    b = "cli-" + ("v1" if "pyenv" in cli or cli != AWS else "v2") + "-" + os.urandom(3).hex()
    alice.aws("s3", "mb", f"s3://{b}", cli=cli)
    assert b in alice.aws("s3", "ls", cli=cli).stdout
    small = tmp_path / "small.txt"
    small.write_text("hello nubo\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB + 12345))  # multipart above the 8 MiB threshold
    alice.aws("s3", "cp", str(small), f"s3://{b}/docs/small.txt", "--no-progress", cli=cli)
    alice.aws("s3", "cp", str(big), f"s3://{b}/big.bin", "--no-progress", cli=cli)
    out = alice.aws("s3", "ls", f"s3://{b}/", "--recursive", cli=cli).stdout
    assert "docs/small.txt" in out and "big.bin" in out and str(20 * MiB + 12345) in out
    got = tmp_path / "got.bin"
    alice.aws("s3", "cp", f"s3://{b}/big.bin", str(got), "--no-progress", cli=cli)
    assert got.read_bytes() == big.read_bytes()
    head = json.loads(alice.aws("s3api", "head-object", "--bucket", b, "--key", "big.bin",
                                cli=cli).stdout)
    assert head["ContentLength"] == 20 * MiB + 12345
    assert head["ETag"].endswith('-3"')  # md5 of the parts' md5s, "-N" as S3
    assert alice.aws("s3", "cp", f"s3://{b}/docs/small.txt", "-", cli=cli).stdout == \
        "hello nubo\n"

    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    files = {"index.html": b"<h1>hi</h1>", "css/a b+c.css": b"body{}",
             "caf\u00e9 & co.txt": b"utf-8 names", "css/empty": b""}
    for name, data in files.items():
        (site / name).write_bytes(data)
    alice.aws("s3", "sync", str(site), f"s3://{b}/site", "--no-progress", cli=cli)
    listing = alice.aws("s3", "ls", f"s3://{b}/site/", "--recursive", cli=cli).stdout
    for name in files:
        assert f"site/{name}" in listing
    # a second sync finds nothing to do; a changed file is uploaded again
    assert alice.aws("s3", "sync", str(site), f"s3://{b}/site", cli=cli).stdout.strip() == ""
    (site / "index.html").write_bytes(b"<h1>changed</h1>")
    assert "index.html" in alice.aws("s3", "sync", str(site), f"s3://{b}/site", "--no-progress",
                                     cli=cli).stdout
    down = tmp_path / "down"
    alice.aws("s3", "sync", f"s3://{b}/site", str(down), "--no-progress", cli=cli)
    for name in files:
        assert (down / name).read_bytes() == (site / name).read_bytes()

    alice.aws("s3", "rm", f"s3://{b}/docs/small.txt", cli=cli)
    assert "small.txt" not in alice.aws("s3", "ls", f"s3://{b}/", "--recursive", cli=cli).stdout
    p = alice.aws("s3", "rb", f"s3://{b}", cli=cli, check=False)
    assert p.returncode != 0 and "BucketNotEmpty" in p.stderr
    alice.aws("s3", "rm", f"s3://{b}", "--recursive", cli=cli)
    alice.aws("s3", "rb", f"s3://{b}", cli=cli)
    assert b not in alice.aws("s3", "ls", cli=cli).stdout


# ---- (1) boto3: buckets, objects, headers, ranges, conditions ----

def test_bucket_calls_and_names(users):
    s3 = users["alice"].boto()
    name = "names-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == REGION
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.list_buckets()["Owner"]["ID"] == users["alice"].account_id
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert code_of(e) == "BucketAlreadyOwnedByYou"
    for bad in ("ab", "UpperCase", "under_score", "-dash-first", "192.168.1.1", "a" * 64,
                "double..dot", "xn--punycode"):
        with pytest.raises(ClientError) as e:
            s3.create_bucket(Bucket=bad)
        assert code_of(e) == "InvalidBucketName", bad
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="no-such-bucket-" + os.urandom(3).hex())
    assert status_of(e) == 404
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="no-such-bucket-" + os.urandom(3).hex())
    assert code_of(e) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=name)
    assert code_of(e) == "NoSuchBucketPolicy"
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=name)
    assert code_of(e) == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert status_of(e) == 404


def test_object_metadata_and_errors(users, bucket):
    s3 = users["alice"].boto()
    body = os.urandom(100_000)
    r = s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body, ContentType="image/png",
                      ContentEncoding="identity", ContentDisposition='attachment; filename="x"',
                      CacheControl="max-age=60", ContentLanguage="de",
                      Metadata={"Color": "blue", "owner-note": "a note, with spaces"})
    assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    g = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert g["Body"].read() == body
    assert g["ETag"] == r["ETag"]
    assert g["ContentType"] == "image/png"
    assert g["ContentEncoding"] == "identity"
    assert g["ContentDisposition"] == 'attachment; filename="x"'
    assert g["CacheControl"] == "max-age=60"
    assert g["ContentLanguage"] == "de"
    assert g["Metadata"] == {"color": "blue", "owner-note": "a note, with spaces"}
    assert g["AcceptRanges"] == "bytes"
    h = s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert h["ContentLength"] == len(body) and h["Metadata"]["color"] == "blue"
    assert abs((h["LastModified"] - datetime.datetime.now(datetime.timezone.utc))
               .total_seconds()) < 120
    # an empty object
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/none")
    assert code_of(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="dir/none")
    assert status_of(e) == 404
    # deleting what is not there succeeds, as in S3
    s3.delete_object(Bucket=bucket, Key="dir/none")
    s3.delete_object(Bucket=bucket, Key="dir/obj.bin")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert code_of(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert code_of(e) == "KeyTooLongError"


def test_hostile_keys(users, bucket, s3cloud):
    s3 = users["alice"].boto()
    keys = ["../../etc/passwd", "a/../../b", "./x", "sp ace", "plus+sign", "per%cent",
            "q?uestion#hash", "\u00e9t\u00e9/\u2603/\U0001F600", "back\\slash", "a//b///c",
            "trailing/", "k" * 1024, "&<>\"'"]
    for i, k in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=k, Body=str(i).encode())
    for i, k in enumerate(keys):
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == str(i).encode(), k
    listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in p.get("Contents", [])]
    assert listed == sorted(keys, key=lambda k: k.encode())
    # nothing escaped the store's directory
    assert not (s3cloud.state / "etc").exists()
    assert not Path("/etc/passwd").read_bytes().startswith(b"0")
    # NUL, invalid UTF-8 and an over-long name, sent raw
    alice = users["alice"]
    for path, want in ((f"/{bucket}/nul%00byte", "InvalidArgument"),
                       (f"/{bucket}/bad%FFutf8", "InvalidArgument"),
                       (f"/{bucket}/" + "x" * 1025, "KeyTooLongError"),
                       (f"/{bucket}/" + "%E2%82" + "x", "InvalidArgument")):
        st, _, body = raw(s3cloud, "PUT", path, alice, body=b"data")
        assert st == 400 and err_code(body) == want, (path, body)


def test_ranges_and_conditions(users, bucket, s3cloud):
    s3 = users["alice"].boto()
    body = bytes(range(256)) * 40  # 10240 bytes
    etag = s3.put_object(Bucket=bucket, Key="r", Body=body)["ETag"]

    def rng(spec):
        return s3.get_object(Bucket=bucket, Key="r", Range=spec)

    r = rng("bytes=0-99")
    assert r["Body"].read() == body[:100] and r["ContentRange"] == "bytes 0-99/10240"
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206 and r["ContentLength"] == 100
    assert rng("bytes=10000-")["Body"].read() == body[10000:]
    assert rng("bytes=-50")["Body"].read() == body[-50:]
    assert rng("bytes=10200-99999")["Body"].read() == body[10200:]
    assert rng("bytes=-99999")["Body"].read() == body
    # a range past the end
    with pytest.raises(ClientError) as e:
        rng("bytes=20000-20010")
    assert code_of(e) == "InvalidRange" and status_of(e) == 416
    # malformed or multiple ranges: the whole object, as S3
    for spec in ("bytes=5-2", "bytes=0-1,5-6", "pages=1-2"):
        st, h, data = raw(s3cloud, "GET", f"/{bucket}/r", users["alice"],
                          headers={"Range": spec})
        assert st == 200 and data == body, spec
    # conditions
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    assert s3.get_object(Bucket=bucket, Key="r", IfMatch=etag)["Body"].read() == body
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfMatch='"0123"')
    assert status_of(e) == 412
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfNoneMatch=etag)
    assert status_of(e) == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfModifiedSince=future)
    assert status_of(e) == 304
    assert s3.get_object(Bucket=bucket, Key="r", IfModifiedSince=past)["Body"].read() == body
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfUnmodifiedSince=past)
    assert status_of(e) == 412
    # If-Match decides over If-Unmodified-Since, as S3 documents
    assert s3.get_object(Bucket=bucket, Key="r", IfMatch=etag,
                         IfUnmodifiedSince=past)["Body"].read() == body
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="r", IfNoneMatch=etag)
    assert status_of(e) == 304
    # conditional write: only when absent
    with pytest.raises(ClientError) as e:
        raise_for(raw(s3cloud, "PUT", f"/{bucket}/r", users["alice"], body=b"new",
                      headers={"If-None-Match": "*"}))
    assert status_of(e) == 412
    assert s3.get_object(Bucket=bucket, Key="r")["Body"].read() == body


def raise_for(resp):
    """A raw response as botocore would raise it."""
    st, _, body = resp
    if st >= 300:
        code = err_code(body) if body else str(st)
        raise ClientError({"Error": {"Code": code},
                           "ResponseMetadata": {"HTTPStatusCode": st}}, "raw")
    return resp


# ---- (1) listings ----

def test_listing_delimiter_paging_encoding(users, bucket, s3cloud):
    s3 = users["alice"].boto()
    keys = ["a", "a/1", "a/2", "a/b/3", "b+c", "b c/d", "z", "\u00e9", "\U0001F600/x",
            "~tilde", "A", "0"] + [f"many/{i:03d}" for i in range(25)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    order = sorted(keys, key=lambda k: k.encode())
    # V2: paging with continuation tokens, 7 at a time
    got, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=bucket, MaxKeys=7, **kw)
        pages += 1
        assert r["KeyCount"] == len(r.get("Contents", []))
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert got == order and pages == (len(keys) + 6) // 7
    # V1: markers
    got, marker = [], ""
    while True:
        r = s3.list_objects(Bucket=bucket, MaxKeys=5, Marker=marker)
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or r["Contents"][-1]["Key"]
    assert got == order
    assert s3.list_objects(Bucket=bucket)["Contents"][0]["Owner"]["ID"] == users["alice"].account_id
    # delimiter: common prefixes, in order
    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "b c/", "many/", "\U0001F600/"]
    assert [o["Key"] for o in r["Contents"]] == \
        [k for k in order if "/" not in k]
    r = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/b/"]
    # start-after, max-keys 0
    r = s3.list_objects_v2(Bucket=bucket, StartAfter="many/020", Prefix="many/")
    assert [o["Key"] for o in r["Contents"]] == [f"many/{i:03d}" for i in range(21, 25)]
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=0).get("Contents", []) == []
    # paging across common prefixes with the paginator (delimiter and max-keys 2)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/",
                                                         PaginationConfig={"PageSize": 2})
    seen = []
    for p in pages:
        seen += [o["Key"] for o in p.get("Contents", [])] + \
            [c["Prefix"] for c in p.get("CommonPrefixes", [])]
    assert sorted(seen, key=lambda k: k.encode()) == \
        sorted([k for k in order if "/" not in k] + ["a/", "b c/", "many/", "\U0001F600/"],
               key=lambda k: k.encode())
    assert len(seen) == len(set(seen))
    # encoding-type=url, read raw: keys come back %-encoded
    st, _, body = raw(s3cloud, "GET", f"/{bucket}?list-type=2&encoding-type=url&prefix=b",
                      users["alice"])
    assert st == 200
    assert b"<Key>b%2Bc</Key>" in body and b"<Key>b%20c/d</Key>" in body
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="not-a-token")
    assert code_of(e) == "InvalidArgument"


# ---- (1) checksums and signatures ----

def test_content_md5_and_checksums(users, bucket, s3cloud):
    s3 = users["alice"].boto()
    data = b"checksummed payload" * 100
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket=bucket, Key="md5", Body=data, ContentMD5=md5)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="md5bad", Body=data,
                      ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
    assert code_of(e) == "BadDigest"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="md5bad")
    assert status_of(e) == 404
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    alice = users["alice"]
    st, h, _ = raw(s3cloud, "PUT", f"/{bucket}/crc", alice, body=data,
                   headers={"x-amz-checksum-crc32": crc})
    assert st == 200 and h["x-amz-checksum-crc32"] == crc
    g = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert g["ChecksumCRC32"] == crc and g["Body"].read() == data
    st, _, body = raw(s3cloud, "PUT", f"/{bucket}/crcbad", alice, body=data,
                      headers={"x-amz-checksum-crc32": "AAAAAA=="})
    assert st == 400 and err_code(body) == "BadDigest"
    sha1 = base64.b64encode(hashlib.sha1(data).digest()).decode()
    st, _, _ = raw(s3cloud, "PUT", f"/{bucket}/sha1", alice, body=data,
                   headers={"x-amz-checksum-sha1": sha1})
    assert st == 200
    # boto3's own checksum support
    s3.put_object(Bucket=bucket, Key="sdk", Body=data, ChecksumAlgorithm="SHA256")
    # x-amz-content-sha256 that does not match the body
    st, _, body = raw(s3cloud, "PUT", f"/{bucket}/shabad", alice, body=b"real body",
                      payload=hashlib.sha256(b"another body").hexdigest(), sign_body=False)
    assert st == 400 and err_code(body) == "XAmzContentSHA256Mismatch"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="shabad")


def test_signatures_and_anonymous(users, bucket, s3cloud):
    alice = users["alice"]
    good = alice.boto()
    good.put_object(Bucket=bucket, Key="k", Body=b"secret")
    bad = boto3.client("s3", endpoint_url=s3cloud.s3_endpoint, region_name=REGION,
                       aws_access_key_id=alice.key_id, aws_secret_access_key="x" * 40,
                       config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        bad.get_object(Bucket=bucket, Key="k")
    assert code_of(e) == "SignatureDoesNotMatch"
    unknown = boto3.client("s3", endpoint_url=s3cloud.s3_endpoint, region_name=REGION,
                           aws_access_key_id="AKIAAAAAAAAAAAAAAAAA", aws_secret_access_key="x" * 40,
                           config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        unknown.list_buckets()
    assert code_of(e) == "InvalidAccessKeyId"
    # anonymous: nothing of a private bucket
    for method, path in (("GET", f"/{bucket}/k"), ("GET", f"/{bucket}"), ("GET", "/"),
                         ("PUT", f"/{bucket}/new"), ("DELETE", f"/{bucket}/k")):
        st, _, body = raw(s3cloud, method, path, body=b"x" if method == "PUT" else b"")
        assert st == 403 and err_code(body) == "AccessDenied", (method, path)
        assert b"secret" not in body
    # a tampered request: path changed after signing
    req = AWSRequest(method="GET", url=f"{s3cloud.s3_endpoint}/{bucket}/k")
    S3SigV4Auth(alice.creds(), "s3", REGION).add_auth(req)
    st, _, body = raw(s3cloud, "GET", f"/{bucket}/k2", headers=dict(req.headers.items()))
    assert st == 403 and err_code(body) == "SignatureDoesNotMatch"
    # signed for a region that is not this endpoint's
    other = boto3.client("s3", endpoint_url=s3cloud.s3_endpoint, region_name="eu-west-3",
                         aws_access_key_id=alice.key_id, aws_secret_access_key=alice.secret,
                         config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        other.list_buckets()
    assert code_of(e) == "AuthorizationHeaderMalformed"
    # read-only users read but never write
    ro = users["alice_ro"].boto()
    assert ro.get_object(Bucket=bucket, Key="k")["Body"].read() == b"secret"
    for call in (lambda: ro.put_object(Bucket=bucket, Key="ro", Body=b"x"),
                 lambda: ro.delete_object(Bucket=bucket, Key="k"),
                 lambda: ro.create_bucket(Bucket="ro-" + os.urandom(3).hex())):
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "AccessDenied"


def test_key_changes_apply_at_once(s3cloud):
    """nubod keeps recently used keys in memory: disabling or deleting a key,
    or making its user read-only, must still apply to the very next request."""
    carol = S3User(s3cloud, make_tenant(s3cloud, "carol"))
    s3 = carol.boto()
    name = "carol-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=name)
    for _ in range(3):  # used, so remembered (the row and its signing key)
        s3.put_object(Bucket=name, Key="k", Body=b"v")
    # the remembered signing key is the one of the key's own secret: another
    # secret with the same key id still fails, and so does the us-east-1
    # scope's key (not derived yet) with it
    for region in (REGION, "us-east-1"):
        forged = boto3.client("s3", endpoint_url=s3cloud.s3_endpoint, region_name=region,
                              aws_access_key_id=carol.key_id,
                              aws_secret_access_key=carol.secret[:-1]
                              + ("y" if carol.secret.endswith("x") else "x"),
                              config=Config(retries={"max_attempts": 1},
                                            s3={"addressing_style": "path"}))
        with pytest.raises(ClientError) as e:
            forged.get_object(Bucket=name, Key="k")
        assert code_of(e) == "SignatureDoesNotMatch"
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"v"
    s3cloud.api("POST", f"/v1/keys/{carol.key_id}/disable")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=name, Key="k")
    assert code_of(e) == "InvalidAccessKeyId"
    s3cloud.api("POST", f"/v1/keys/{carol.key_id}/enable")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"v"
    s3cloud.api("PUT", "/v1/accounts/carol/users/admin", {"role": "read-only"})
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="k2", Body=b"v")
    assert code_of(e) == "AccessDenied"
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"v"
    s3cloud.api("PUT", "/v1/accounts/carol/users/admin", {"role": "admin"})
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    s3cloud.api("DELETE", f"/v1/keys/{carol.key_id}")
    with pytest.raises(ClientError) as e:
        s3.list_buckets()
    assert code_of(e) == "InvalidAccessKeyId"


def test_other_account_sees_nothing(users, bucket, s3cloud):
    alice, bob = users["alice"].boto(), users["bob"].boto()
    alice.put_object(Bucket=bucket, Key="private.txt", Body=b"alice's data")
    assert bucket not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    calls = {
        "get": lambda: bob.get_object(Bucket=bucket, Key="private.txt"),
        "head": lambda: bob.head_object(Bucket=bucket, Key="private.txt"),
        "list": lambda: bob.list_objects_v2(Bucket=bucket),
        "list1": lambda: bob.list_objects(Bucket=bucket),
        "versions": lambda: bob.list_object_versions(Bucket=bucket),
        "put": lambda: bob.put_object(Bucket=bucket, Key="bob.txt", Body=b"x"),
        "delete": lambda: bob.delete_object(Bucket=bucket, Key="private.txt"),
        "delete_many": lambda: bob.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": "private.txt"}]}),
        "copy_out": lambda: bob.copy_object(Bucket=bucket, Key="c",
                                            CopySource={"Bucket": bucket, "Key": "private.txt"}),
        "location": lambda: bob.get_bucket_location(Bucket=bucket),
        "versioning": lambda: bob.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
        "acl": lambda: bob.put_bucket_acl(Bucket=bucket, ACL="public-read"),
        "mpu": lambda: bob.create_multipart_upload(Bucket=bucket, Key="m"),
        "uploads": lambda: bob.list_multipart_uploads(Bucket=bucket),
        "delete_bucket": lambda: bob.delete_bucket(Bucket=bucket),
    }
    for name, call in calls.items():
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) in ("AccessDenied", "403"), name
        assert b"alice's data" not in json.dumps(e.value.response, default=str).encode()
    with pytest.raises(ClientError) as e:
        bob.head_bucket(Bucket=bucket)
    assert status_of(e) == 403
    # x-amz-expected-bucket-owner: the owner's guard is honoured
    alice.put_object(Bucket=bucket, Key="guarded", Body=b"g",
                     ExpectedBucketOwner=users["alice"].account_id)
    with pytest.raises(ClientError) as e:
        alice.put_object(Bucket=bucket, Key="guarded", Body=b"h",
                         ExpectedBucketOwner=users["bob"].account_id)
    assert code_of(e) == "AccessDenied"
    assert alice.get_object(Bucket=bucket, Key="guarded")["Body"].read() == b"g"
    alice.delete_object(Bucket=bucket, Key="guarded")
    with pytest.raises(ClientError) as e:
        bob.create_bucket(Bucket=bucket)
    assert code_of(e) == "BucketAlreadyExists"
    # copying alice's object into bob's own bucket is refused too
    mine = "bob-" + os.urandom(3).hex()
    bob.create_bucket(Bucket=mine)
    with pytest.raises(ClientError) as e:
        bob.copy_object(Bucket=mine, Key="stolen", CopySource={"Bucket": bucket,
                                                               "Key": "private.txt"})
    assert code_of(e) == "AccessDenied"
    bob.delete_bucket(Bucket=mine)
    # and alice's object is untouched
    assert alice.get_object(Bucket=bucket, Key="private.txt")["Body"].read() == b"alice's data"
    assert [o["Key"] for o in alice.list_objects_v2(Bucket=bucket)["Contents"]] == ["private.txt"]


def test_virtual_hosted_style(users, bucket, s3cloud):
    alice = users["alice"]
    host = f"{bucket}.s3.nubo.test:{s3cloud.s3_port}"
    st, _, _ = raw(s3cloud, "PUT", "/v/key.txt", alice, body=b"vhost", host=host)
    assert st == 200
    st, _, body = raw(s3cloud, "GET", "/v/key.txt", alice, host=host)
    assert st == 200 and body == b"vhost"
    st, _, body = raw(s3cloud, "GET", "/?list-type=2", alice, host=host)
    assert st == 200 and b"<Key>v/key.txt</Key>" in body
    # the same object, path-style
    assert alice.boto().get_object(Bucket=bucket, Key="v/key.txt")["Body"].read() == b"vhost"
    # a bucket in the host name that does not exist
    st, _, body = raw(s3cloud, "GET", "/v/key.txt", alice,
                      host=f"nosuch-{os.urandom(3).hex()}.s3.nubo.test:{s3cloud.s3_port}")
    assert st == 404 and err_code(body) == "NoSuchBucket"


# ---- (2) aws-chunked uploads ----

def _sigv4_key(secret, date):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _chunked_body(data, mode, chunk, trailer, key, amz_date, seed, tamper=None):
    """The aws-chunked body: signatures chained from seed (signed modes),
    then the trailer (and its signature) in the -TRAILER modes."""
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    prev, out = seed, []
    for i, p in enumerate(pieces):
        if mode == "trailer":
            out.append(f"{len(p):x}\r\n".encode() + p + (b"\r\n" if p else b""))
            continue
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev,
                         hashlib.sha256(b"").hexdigest(), hashlib.sha256(p).hexdigest()])
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        if tamper == "signature" and i == 1:
            sig = "0" * 64
        if tamper == "data" and i == 0:
            p = bytes([p[0] ^ 1]) + p[1:]
        out.append(f"{len(p):x};chunk-signature={sig}\r\n".encode() + p +
                   (b"\r\n" if p or mode == "signed" else b""))
        prev = sig
    if mode in ("trailer", "signed-trailer"):
        line = f"x-amz-checksum-{trailer[0]}:{trailer[1]}"
        out.append(line.encode() + b"\r\n")
        if mode == "signed-trailer":
            sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev,
                             hashlib.sha256((line + "\n").encode()).hexdigest()])
            sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
            if tamper == "trailer-signature":
                sig = "f" * 64
            out.append(f"x-amz-trailer-signature:{sig}\r\n".encode())
        out.append(b"\r\n")
    return b"".join(out)


def _chunked_put(cloud, user, path, data, mode, chunk=64 * 1024, trailer=None, tamper=None):
    """PUT with an aws-chunked body: mode "signed"
    (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), "signed-trailer"
    (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER) or "trailer"
    (STREAMING-UNSIGNED-PAYLOAD-TRAILER), as the AWS SDKs send them."""
    payload = {"signed": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
               "signed-trailer": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
               "trailer": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}[mode]
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data))}
    if trailer:
        headers["x-amz-trailer"] = f"x-amz-checksum-{trailer[0]}"
    # the length does not depend on the signatures (64 hex digits each); the
    # SDKs sign Content-Length
    length = len(_chunked_body(data, mode, chunk, trailer, b"k", "20000101T000000Z", "0" * 64))
    req = AWSRequest(method="PUT", url=cloud.s3_endpoint + path, data=b"", headers=headers)
    req.headers["Content-Length"] = str(length)
    _FixedPayload(user.creds(), payload).add_auth(req)
    hdrs = dict(req.headers.items())
    amz_date = hdrs["X-Amz-Date"]
    body = _chunked_body(data, mode, chunk, trailer, _sigv4_key(user.secret, amz_date[:8]),
                         amz_date, hdrs["Authorization"].rsplit("Signature=", 1)[1], tamper)
    assert len(body) == length
    return raw(cloud, "PUT", path, body=body, headers=hdrs)


def test_aws_chunked_signed(users, bucket, s3cloud):
    alice, s3 = users["alice"], users["alice"].boto()
    data = os.urandom(300_000)
    st, _, body = _chunked_put(s3cloud, alice, f"/{bucket}/chunked", data, "signed")
    assert st == 200, body
    g = s3.get_object(Bucket=bucket, Key="chunked")
    assert g["Body"].read() == data and g["ContentLength"] == len(data)
    assert "ContentEncoding" not in g  # aws-chunked is not the object's encoding
    for tamper in ("signature", "data"):
        st, _, body = _chunked_put(s3cloud, alice, f"/{bucket}/bad-{tamper}", data, "signed",
                                   tamper=tamper)
        assert st == 403 and err_code(body) == "SignatureDoesNotMatch", (tamper, body)
        with pytest.raises(ClientError) as e:
            s3.head_object(Bucket=bucket, Key=f"bad-{tamper}")
        assert status_of(e) == 404


@pytest.mark.parametrize("algo", ["crc32", "crc32c", "sha1", "sha256"])
def test_aws_chunked_unsigned_trailer(users, bucket, s3cloud, algo):
    alice, s3 = users["alice"], users["alice"].boto()
    data = os.urandom(200_001)
    if algo == "crc32":
        digest = zlib.crc32(data).to_bytes(4, "big")
    elif algo == "crc32c":
        digest = _crc32c(data).to_bytes(4, "big")
    else:
        digest = hashlib.new(algo, data).digest()
    value = base64.b64encode(digest).decode()
    st, h, body = _chunked_put(s3cloud, alice, f"/{bucket}/t-{algo}", data, "trailer",
                               trailer=(algo, value))
    assert st == 200, body
    g = s3.get_object(Bucket=bucket, Key=f"t-{algo}", ChecksumMode="ENABLED")
    assert g["Body"].read() == data
    assert g[f"Checksum{algo.upper()}"] == value
    wrong = base64.b64encode(bytes(len(digest))).decode()
    st, _, body = _chunked_put(s3cloud, alice, f"/{bucket}/tbad-{algo}", data, "trailer",
                               trailer=(algo, wrong))
    assert st == 400 and err_code(body) == "BadDigest", body
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key=f"tbad-{algo}")
    assert status_of(e) == 404


def test_aws_chunked_signed_trailer(users, bucket, s3cloud):
    alice, s3 = users["alice"], users["alice"].boto()
    data = os.urandom(150_000)
    value = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    st, _, body = _chunked_put(s3cloud, alice, f"/{bucket}/st", data, "signed-trailer",
                               trailer=("crc32", value))
    assert st == 200, body
    g = s3.get_object(Bucket=bucket, Key="st", ChecksumMode="ENABLED")
    assert g["Body"].read() == data and g["ChecksumCRC32"] == value
    st, _, body = _chunked_put(s3cloud, alice, f"/{bucket}/st-bad", data, "signed-trailer",
                               trailer=("crc32", value), tamper="trailer-signature")
    assert st == 403 and err_code(body) == "SignatureDoesNotMatch", body
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="st-bad")
    assert status_of(e) == 404


def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# ---- (3) multipart ----

def test_multipart_awscli_50mib(users, tmp_path):
    alice = users["alice"]
    b = "mpu-cli-" + os.urandom(3).hex()
    alice.aws("s3", "mb", f"s3://{b}")
    src = tmp_path / "fifty.bin"
    src.write_bytes(os.urandom(50 * MiB))
    alice.aws("s3", "cp", str(src), f"s3://{b}/fifty.bin", "--no-progress")
    head = json.loads(alice.aws("s3api", "head-object", "--bucket", b, "--key",
                                "fifty.bin").stdout)
    assert head["ContentLength"] == 50 * MiB and head["ETag"].endswith('-7"')
    # the ETag is S3's: md5 of the 8 MiB parts' md5s, "-7"
    data = src.read_bytes()
    md5s = b"".join(hashlib.md5(data[i:i + 8 * MiB]).digest() for i in range(0, len(data), 8 * MiB))
    assert head["ETag"] == '"%s-7"' % hashlib.md5(md5s).hexdigest()
    got = tmp_path / "got.bin"
    alice.aws("s3", "cp", f"s3://{b}/fifty.bin", str(got), "--no-progress")
    assert got.read_bytes() == data
    assert alice.boto().list_multipart_uploads(Bucket=b).get("Uploads", []) == []
    alice.aws("s3", "rb", f"s3://{b}", "--force")


def test_multipart_boto3_transfer(users, bucket, tmp_path):
    s3 = users["alice"].boto()
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(50 * MiB + 777))
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB,
                         max_concurrency=4)
    s3.upload_file(str(src), bucket, "transfer/up.bin", Config=cfg)
    assert s3.head_object(Bucket=bucket, Key="transfer/up.bin")["ETag"].endswith('-7"')
    dst = tmp_path / "down.bin"
    s3.download_file(bucket, "transfer/up.bin", str(dst), Config=cfg)
    assert dst.read_bytes() == src.read_bytes()


def test_multipart_calls(users, bucket):
    s3 = users["alice"].boto()
    part = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1000)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="m/obj", ContentType="text/x-m",
                                    Metadata={"kind": "multi"})
    uid = up["UploadId"]
    other = s3.create_multipart_upload(Bucket=bucket, Key="m/other")["UploadId"]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in uploads) == \
        sorted([("m/obj", uid), ("m/other", other)])
    etags = [s3.upload_part(Bucket=bucket, Key="m/obj", UploadId=uid, PartNumber=i + 1,
                            Body=p)["ETag"] for i, p in enumerate(part)]
    assert etags[0] == '"%s"' % hashlib.md5(part[0]).hexdigest()
    # a part uploaded again replaces the first
    part[1] = os.urandom(5 * MiB)
    etags[1] = s3.upload_part(Bucket=bucket, Key="m/obj", UploadId=uid, PartNumber=2,
                              Body=part[1])["ETag"]
    lp = s3.list_parts(Bucket=bucket, Key="m/obj", UploadId=uid)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in lp["Parts"]] == \
        [(i + 1, etags[i], len(part[i])) for i in range(3)]
    lp = s3.list_parts(Bucket=bucket, Key="m/obj", UploadId=uid, MaxParts=2)
    assert lp["IsTruncated"] and lp["NextPartNumberMarker"] == 2
    lp = s3.list_parts(Bucket=bucket, Key="m/obj", UploadId=uid, PartNumberMarker=2)
    assert [p["PartNumber"] for p in lp["Parts"]] == [3]

    def complete(parts, key="m/obj", upload=uid):
        return s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})

    for parts, want in (([(1, etags[0]), (2, '"%s"' % ("0" * 32))], "InvalidPart"),
                        ([(2, etags[1]), (1, etags[0])], "InvalidPartOrder"),
                        ([(1, etags[0]), (4, etags[2])], "InvalidPart")):
        with pytest.raises(ClientError) as e:
            complete(parts)
        assert code_of(e) == want
    # a small part that is not the last
    small = s3.create_multipart_upload(Bucket=bucket, Key="m/small")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="m/small", UploadId=small, PartNumber=1,
                        Body=b"tiny")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="m/small", UploadId=small, PartNumber=2,
                        Body=b"tiny")["ETag"]
    with pytest.raises(ClientError) as e:
        complete([(1, e1), (2, e2)], key="m/small", upload=small)
    assert code_of(e) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key="m/small", UploadId=small)

    r = complete([(i + 1, etags[i]) for i in range(3)])
    md5s = b"".join(hashlib.md5(p).digest() for p in part)
    assert r["ETag"] == '"%s-3"' % hashlib.md5(md5s).hexdigest()
    g = s3.get_object(Bucket=bucket, Key="m/obj")
    assert g["Body"].read() == b"".join(part)
    assert g["ContentType"] == "text/x-m" and g["Metadata"] == {"kind": "multi"}
    assert s3.get_object(Bucket=bucket, Key="m/obj", Range="bytes=5242870-5242889")["Body"] \
        .read() == b"".join(part)[5242870:5242890]
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="m/obj", UploadId=uid)
    assert code_of(e) == "NoSuchUpload"
    s3.abort_multipart_upload(Bucket=bucket, Key="m/other", UploadId=other)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="m/other", UploadId=other, PartNumber=1, Body=b"x")
    assert code_of(e) == "NoSuchUpload"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="m/obj", UploadId="0" * 32, PartNumber=10001,
                       Body=b"x")
    assert code_of(e) == "InvalidArgument"


def test_upload_part_copy(users, bucket):
    s3 = users["alice"].boto()
    src = os.urandom(12 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    p1 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceRange=f"bytes=0-{6 * MiB - 1}")["CopyPartResult"]
    p2 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceRange=f"bytes={6 * MiB}-{12 * MiB - 1}")["CopyPartResult"]
    p3 = s3.upload_part(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=3,
                        Body=b"tail")
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]},
                  {"PartNumber": 3, "ETag": p3["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == src + b"tail"


# ---- (4) copy, delete-objects, versioning, public-read, presigned ----

def test_copy_object(users, bucket):
    s3 = users["alice"].boto()
    s3.put_object(Bucket=bucket, Key="orig", Body=b"copy me", ContentType="text/plain",
                  Metadata={"a": "1"})
    etag = s3.head_object(Bucket=bucket, Key="orig")["ETag"]
    r = s3.copy_object(Bucket=bucket, Key="same-meta", CopySource={"Bucket": bucket,
                                                                   "Key": "orig"})
    assert r["CopyObjectResult"]["ETag"] == etag
    h = s3.head_object(Bucket=bucket, Key="same-meta")
    assert h["ContentType"] == "text/plain" and h["Metadata"] == {"a": "1"}
    s3.copy_object(Bucket=bucket, Key="new-meta", CopySource=f"{bucket}/orig",
                   MetadataDirective="REPLACE", ContentType="text/x-new", Metadata={"b": "2"})
    h = s3.head_object(Bucket=bucket, Key="new-meta")
    assert h["ContentType"] == "text/x-new" and h["Metadata"] == {"b": "2"}
    # onto itself only with REPLACE, as S3
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="orig", CopySource={"Bucket": bucket, "Key": "orig"})
    assert code_of(e) == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="orig", CopySource={"Bucket": bucket, "Key": "orig"},
                   MetadataDirective="REPLACE", Metadata={"c": "3"})
    assert s3.head_object(Bucket=bucket, Key="orig")["Metadata"] == {"c": "3"}
    # across buckets of the same account, keys that need escaping
    other = "copy-dst-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="sp ace/&+?.txt", Body=b"odd")
    s3.copy_object(Bucket=other, Key="x/y z", CopySource={"Bucket": bucket,
                                                          "Key": "sp ace/&+?.txt"})
    assert s3.get_object(Bucket=other, Key="x/y z")["Body"].read() == b"odd"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=other, Key="z", CopySource={"Bucket": bucket, "Key": "missing"})
    assert code_of(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=other, Key="z", CopySource={"Bucket": bucket, "Key": "orig"},
                       CopySourceIfMatch='"nope"')
    assert status_of(e) == 412
    s3.delete_object(Bucket=other, Key="x/y z")
    s3.delete_bucket(Bucket=other)


@pytest.mark.parametrize("cli", AWS_CLIS)
def test_delete_objects(users, bucket, cli, s3cloud):
    """awscli v2 (botocore 1.29) sends Content-MD5, v1 (newer botocore) a CRC32
    checksum and no Content-MD5: both are accepted."""
    alice = users["alice"]
    s3 = alice.boto()
    keys = [f"d/{i}" for i in range(30)] + ["d/sp ace", "d/&amp"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    req = {"Objects": [{"Key": k} for k in keys[:20]] + [{"Key": "d/missing"}]}
    out = json.loads(alice.aws("s3api", "delete-objects", "--bucket", bucket, "--delete",
                               json.dumps(req), cli=cli).stdout)
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted(keys[:20] + ["d/missing"])
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="d/")["Contents"]]
    assert sorted(left) == sorted(keys[20:])
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[20:]],
                                                  "Quiet": True})
    assert r.get("Deleted", []) == [] and r.get("Errors", []) == []
    assert s3.list_objects_v2(Bucket=bucket, Prefix="d/").get("Contents", []) == []
    # neither Content-MD5 nor a checksum: refused, as S3
    body = b"<Delete><Object><Key>d/0</Key></Object></Delete>"
    st, _, resp = raw(s3cloud, "POST", f"/{bucket}?delete", alice, body=body)
    assert st == 400 and err_code(resp) == "InvalidRequest"
    st, _, resp = raw(s3cloud, "POST", f"/{bucket}?delete", alice, body=body,
                      headers={"Content-MD5": base64.b64encode(hashlib.md5(b"x").digest())
                               .decode()})
    assert st == 400 and err_code(resp) == "BadDigest"
    st, _, resp = raw(s3cloud, "POST", f"/{bucket}?delete", alice, body=b"<Delete><Object>",
                      headers={"Content-MD5": base64.b64encode(
                          hashlib.md5(b"<Delete><Object>").digest()).decode()})
    assert st == 400 and err_code(resp) == "MalformedXML"


def test_versioning(users, bucket):
    s3 = users["alice"].boto()
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="v", Body=b"before versioning")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"two")["VersionId"]
    assert v1 != v2 and v1 != "null"
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"two"
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v1)["Body"].read() == b"one"
    assert s3.get_object(Bucket=bucket, Key="v", VersionId="null")["Body"].read() == \
        b"before versioning"
    assert s3.head_object(Bucket=bucket, Key="v", VersionId=v1)["VersionId"] == v1
    d = s3.delete_object(Bucket=bucket, Key="v")
    assert d["DeleteMarker"] and d["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="v")
    assert code_of(e) == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    lv = s3.list_object_versions(Bucket=bucket)
    assert [(x["VersionId"], x["IsLatest"]) for x in lv["Versions"]] == \
        [(v2, False), (v1, False), ("null", False)]
    assert [(x["VersionId"], x["IsLatest"]) for x in lv["DeleteMarkers"]] == \
        [(d["VersionId"], True)]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="v", VersionId="0" * 32)
    assert code_of(e) == "NoSuchVersion"
    # removing the marker brings v2 back
    s3.delete_object(Bucket=bucket, Key="v", VersionId=d["VersionId"])
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="v", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"one"
    # paging through versions
    for i in range(5):
        s3.put_object(Bucket=bucket, Key="p", Body=str(i).encode())
    seen = []
    for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix="p", PaginationConfig={"PageSize": 2}):
        seen += [x["VersionId"] for x in page.get("Versions", [])]
    assert len(seen) == 5 and len(set(seen)) == 5
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    r = s3.put_object(Bucket=bucket, Key="p", Body=b"null again")
    assert r.get("VersionId", "null") == "null"


def test_public_read_bucket(users, bucket, s3cloud):
    alice, bob = users["alice"].boto(), users["bob"].boto()
    alice.put_object(Bucket=bucket, Key="pub/page.html", Body=b"<p>public</p>",
                     ContentType="text/html")
    url = f"{s3cloud.s3_endpoint}/{bucket}/pub/page.html"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 403
    alice.put_bucket_acl(Bucket=bucket, ACL="public-read")
    grants = alice.get_bucket_acl(Bucket=bucket)["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ"
               for g in grants)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"<p>public</p>" and r.headers["Content-Type"] == "text/html"
    with urllib.request.urlopen(f"{s3cloud.s3_endpoint}/{bucket}?list-type=2", timeout=10) as r:
        assert b"<Key>pub/page.html</Key>" in r.read()
    # another account reads too, but writes nothing
    assert bob.get_object(Bucket=bucket, Key="pub/page.html")["Body"].read() == b"<p>public</p>"
    with pytest.raises(ClientError) as e:
        bob.put_object(Bucket=bucket, Key="pub/evil", Body=b"x")
    assert code_of(e) == "AccessDenied"
    for method in ("PUT", "DELETE"):
        st, _, _ = raw(s3cloud, method, f"/{bucket}/pub/page.html",
                       body=b"x" if method == "PUT" else b"")
        assert st == 403
    st, _, _ = raw(s3cloud, "GET", f"/{bucket}?acl")
    assert st == 403
    # and private again
    alice.put_bucket_acl(Bucket=bucket, ACL="private")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 403
    with pytest.raises(ClientError) as e:
        alice.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    assert code_of(e) == "NotImplemented"


def test_presigned_urls(users, bucket, s3cloud):
    s3 = users["alice"].boto()
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket,
                                                              "Key": "pre/signed file"},
                                        ExpiresIn=300)
    req = urllib.request.Request(put_url, data=b"presigned body", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    get_url = s3.generate_presigned_url("get_object", Params={
        "Bucket": bucket, "Key": "pre/signed file",
        "ResponseContentDisposition": 'attachment; filename="f.txt"'}, ExpiresIn=300)
    with urllib.request.urlopen(get_url, timeout=30) as r:
        assert r.read() == b"presigned body"
        assert r.headers["Content-Disposition"] == 'attachment; filename="f.txt"'
    # tampered: another key with the same signature
    bad = get_url.replace("signed%20file", "signed%20other")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=30)
    assert e.value.code == 403
    # expired
    old = s3.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                          "Key": "pre/signed file"},
                                    ExpiresIn=1)
    parts = urllib.parse.urlsplit(old)
    q = urllib.parse.parse_qs(parts.query)
    assert q["X-Amz-Expires"] == ["1"]
    wait_until(lambda: _expired(old), 10, "the presigned URL to expire", interval=0.2)
    # a presigned PUT cannot be replayed onto another key
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(
            put_url.replace("signed%20file", "hijack"), data=b"x", method="PUT"), timeout=30)
    assert e.value.code == 403


def _expired(url):
    try:
        urllib.request.urlopen(url, timeout=10).read()
        return False
    except urllib.error.HTTPError as e:
        return e.code == 403 and b"expired" in e.read()


# ---- (5) s3cmd ----

def test_s3cmd(users, s3cloud, tmp_path):
    s3cmd = shutil.which("s3cmd")
    if not s3cmd:
        pytest.skip("s3cmd is not installed (scripts/deps.sh test installs it)")
    alice = users["alice"]
    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"""[default]
access_key = {alice.key_id}
secret_key = {alice.secret}
host_base = 127.0.0.1:{s3cloud.s3_port}
host_bucket = 127.0.0.1:{s3cloud.s3_port}
bucket_location = {REGION}
use_https = False
signature_v2 = False
check_ssl_certificate = False
multipart_chunk_size_mb = 5
""")

    def run(*args, check=True):
        p = subprocess.run([s3cmd, "-c", str(cfg), "--no-progress", *args], capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, HOME=str(tmp_path)))
        if check and p.returncode != 0:
            raise AssertionError(f"s3cmd {' '.join(args)} failed ({p.returncode}): "
                                 f"{p.stdout}\n{p.stderr}")
        return p

    b = "s3cmd-" + os.urandom(3).hex()
    run("mb", f"s3://{b}")
    assert f"s3://{b}" in run("ls").stdout
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello from s3cmd\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MiB + 5))  # multipart (5 MiB chunks)
    run("put", str(f), f"s3://{b}/dir/hello.txt")
    run("put", str(big), f"s3://{b}/big.bin")
    out = run("ls", "-r", f"s3://{b}").stdout
    assert f"s3://{b}/dir/hello.txt" in out and f"s3://{b}/big.bin" in out
    got = tmp_path / "got"
    got.mkdir()
    run("get", f"s3://{b}/dir/hello.txt", str(got / "hello.txt"))
    run("get", f"s3://{b}/big.bin", str(got / "big.bin"))
    assert (got / "hello.txt").read_bytes() == f.read_bytes()
    assert (got / "big.bin").read_bytes() == big.read_bytes()
    assert users["alice"].boto().head_object(Bucket=b, Key="big.bin")["ETag"].endswith('-3"')
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "a.txt").write_text("a")
    (site / "sub" / "b c.txt").write_text("b")
    run("sync", str(site) + "/", f"s3://{b}/site/")
    out = run("ls", "-r", f"s3://{b}/site/").stdout
    assert f"s3://{b}/site/a.txt" in out and f"s3://{b}/site/sub/b c.txt" in out
    (site / "a.txt").write_text("changed")
    run("sync", str(site) + "/", f"s3://{b}/site/")
    back = tmp_path / "back"
    run("sync", f"s3://{b}/site/", str(back) + "/")
    assert (back / "a.txt").read_text() == "changed" and (back / "sub" / "b c.txt").read_text() == "b"
    run("del", f"s3://{b}/dir/hello.txt")
    assert "hello.txt" not in run("ls", "-r", f"s3://{b}").stdout
    run("del", "-r", "--force", f"s3://{b}/")
    run("rb", f"s3://{b}")
    assert f"s3://{b}" not in run("ls").stdout


# ---- durability: a client that goes away ----

def test_abandoned_upload_leaves_nothing(users, bucket, s3cloud):
    s3 = users["alice"].boto()
    url = urllib.parse.urlsplit(s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "abandoned"}, ExpiresIn=300))
    tmp = s3cloud.state / "objects" / "tmp"
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("PUT", url.path + "?" + url.query)
    conn.putheader("Content-Length", str(4 * MiB))
    conn.endheaders()
    conn.send(os.urandom(MiB))
    wait_until(lambda: any(tmp.iterdir()), 30, "the upload's temporary file")
    conn.close()
    wait_until(lambda: not any(tmp.iterdir()), 30, "the temporary file to go")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="abandoned")
    assert status_of(e) == 404


# ---- durability: kill -9 during 100 concurrent uploads ----

def test_kill9_during_concurrent_uploads(users, s3cloud):
    """100 uploads at once; half of them hold back their last byte until nubod
    is killed, the other half run freely until a tenth of all are answered.
    After kill -9 and a restart: every acknowledged object reads back
    byte-identical, no held-back upload is visible, every other one is
    absent or whole, and no temporary or orphaned file is left."""
    s3 = users["alice"].boto()
    b = "crash-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=b)
    objects = s3cloud.state / "objects"
    data_before = sum(1 for d in (objects / "data").iterdir() for _ in d.iterdir())
    n = 100
    rnd = __import__("random").Random(4)
    sizes = [rnd.choice([1, 4096, 100_000, 700_000, 2 * MiB, 4 * MiB + 3]) for _ in range(n)]
    bodies = [os.urandom(s) for s in sizes]
    held = set(range(0, n, 2))
    urls = [s3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": f"obj/{i:03d}"},
                                      ExpiresIn=600) for i in range(n)]
    acked = [False] * n
    lock = threading.Lock()
    answered = threading.Semaphore(0)
    holding = threading.Semaphore(0)
    killed = threading.Event()

    def upload(i):
        u = urllib.parse.urlsplit(urls[i])
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            conn.putrequest("PUT", u.path + "?" + u.query)
            conn.putheader("Content-Length", str(sizes[i]))
            conn.endheaders()
            view = memoryview(bodies[i])
            end = sizes[i] - 1 if i in held else sizes[i]
            for off in range(0, end, 256 * 1024):
                conn.send(view[off:min(off + 256 * 1024, end)])
            if i in held:
                holding.release()
                killed.wait(180)
                conn.send(view[end:])
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                with lock:
                    acked[i] = True
            conn.close()
        except (OSError, http.client.HTTPException):
            pass  # nubod died under it
        finally:
            if i not in held:
                answered.release()

    threads = [threading.Thread(target=upload, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for _ in range(len(held)):
        assert holding.acquire(timeout=180), "held uploads never got their bodies out"
    for _ in range(n // 10):
        assert answered.acquire(timeout=180), "uploads stalled"
    s3cloud.nubod.stop(sig=signal.SIGKILL)
    killed.set()
    for t in threads:
        t.join(timeout=60)
    with lock:
        snap = list(acked)
    leftovers = list((objects / "tmp").iterdir())
    assert leftovers, "the held uploads left no temporary file to clean up"
    s3cloud.start_nubod()
    wait_until(lambda: _s3_up(s3cloud), 20, "the S3 listener after the restart")
    assert sum(snap) >= 1 and not any(snap[i] for i in held)
    visible = 0
    with_file = 0  # objects up to 16 KiB have none: their bytes are in their row
    for i in range(n):
        try:
            got = s3.get_object(Bucket=b, Key=f"obj/{i:03d}")["Body"].read()
            visible += 1
            has_file = s3cloud.object_file(b, f"obj/{i:03d}") is not None
            assert has_file == (sizes[i] > 16 * 1024), (i, sizes[i], has_file)
            with_file += has_file
        except ClientError as e:
            assert e.response["Error"]["Code"] == "NoSuchKey"
            got = None
        if snap[i]:
            assert got == bodies[i], f"acknowledged upload {i} lost or damaged"
        elif i in held:
            assert got is None, f"upload {i}, one byte short when nubod died, is visible"
        else:  # nubod died before answering: all or nothing
            assert got is None or got == bodies[i], f"upload {i} is partial"
    listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=b)
              for o in p.get("Contents", [])]
    assert len(listed) == visible
    # the restart's sweep removed what the killed uploads left behind
    assert list((objects / "tmp").iterdir()) == []
    data_after = sum(1 for d in (objects / "data").iterdir() for _ in d.iterdir())
    assert data_after == data_before + with_file, "orphaned data files remain"
    print(f"kill -9: {sum(snap)} acknowledged, {len(held)} held back, {visible} visible")


# ---- quotas and upload expiry (a cloud of their own: nubod's config) ----

def test_quotas_and_stale_upload_expiry(tmp_path):
    port = tinyimage.free_port()
    c = Cloud(tmp_path / "quota", nubod_extra=[
        "-s", f"s3_listen=127.0.0.1:{port}", "-s", "s3_quota_bytes=1M",
        "-s", "s3_quota_objects=3", "-s", "s3_upload_expiry=1"])
    c.s3_port, c.s3_endpoint = port, f"http://127.0.0.1:{port}"
    try:
        c.root.mkdir(parents=True)
        c.start_nubod()
        wait_until(lambda: _s3_up(c), 20, "the S3 listener")
        s3 = S3User(c, make_tenant(c, "carol")).boto()
        s3.create_bucket(Bucket="quota")
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="quota", Key="too-big", Body=os.urandom(MiB + 1))
        assert code_of(e) == "QuotaExceeded" and status_of(e) == 403
        for i in range(3):
            s3.put_object(Bucket="quota", Key=f"k{i}", Body=b"x" * 1000)
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="quota", Key="k3", Body=b"x")
        assert code_of(e) == "QuotaExceeded"
        # overwriting adds no object; deleting makes room again
        s3.put_object(Bucket="quota", Key="k0", Body=b"y" * 1000)
        s3.delete_object(Bucket="quota", Key="k1")
        s3.put_object(Bucket="quota", Key="k3", Body=b"x")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="quota")["Contents"]] == \
            ["k0", "k2", "k3"]
        assert not list((c.state / "objects" / "tmp").iterdir())
        # an upload left unfinished is aborted by nubod's periodic job
        uid = s3.create_multipart_upload(Bucket="quota", Key="stale")["UploadId"]
        wait_until(lambda: not s3.list_multipart_uploads(Bucket="quota").get("Uploads"), 60,
                   "the stale upload to expire", interval=0.5)
        with pytest.raises(ClientError) as e:
            s3.upload_part(Bucket="quota", Key="stale", UploadId=uid, PartNumber=1, Body=b"x")
        assert code_of(e) == "NoSuchUpload"
        assert "stale uploads aborted" in c.nubod.log()
    finally:
        c.shutdown()
    errs = c.sanitizer_errors()
    assert not errs, "sanitizer reports:\n" + "\n".join(errs)
