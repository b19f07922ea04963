"""The image library in the object store: every image's disk is an object of
the system bucket nubo-library, which no tenant can list, read or take; and
images imported from a tenant's own bucket with `nubo image import
s3://bucket/key` and EC2 RegisterImage --image-location bucket/key, uploaded
there with the real awscli, boot."""

import hashlib
import http.client
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import AWS, BUILD, REGION, SAN_ENV, Cloud, ConsoleSession, make_tenant, wait_until

LIBRARY = "nubo-library"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def env_of(tenant):
    return dict(os.environ, AWS_ACCESS_KEY_ID=tenant.key_id,
                AWS_SECRET_ACCESS_KEY=tenant.secret, AWS_DEFAULT_REGION=REGION,
                AWS_MAX_ATTEMPTS="1", AWS_PAGER="", AWS_CONFIG_FILE="/dev/null",
                AWS_SHARED_CREDENTIALS_FILE="/dev/null")


def s3(tenant, *args, check=True):
    """awscli against the cloud's S3 endpoint with tenant's key."""
    p = subprocess.run([AWS, "--endpoint-url", tenant.cloud.s3_endpoint, "--output", "json",
                        *args], capture_output=True, text=True, env=env_of(tenant), timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def nubo(tenant, *args):
    """The nubo CLI signed with tenant's access key (no bearer token)."""
    env = dict(env_of(tenant), NUBO_ENDPOINT=tenant.cloud.endpoint, **SAN_ENV)
    env.pop("NUBO_TOKEN", None)
    return subprocess.run([str(BUILD / "src/cli/nubo"), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def wait_ready(ec2, iid, timeout=180):
    return wait_until(lambda: "NUBO-READY " + iid in
                      (ec2.get_console_output(InstanceId=iid).get("Output") or ""),
                      timeout, f"the ready marker of {iid}", interval=0.5)


@pytest.fixture(scope="module")
def disks(tiny_image, tmp_path_factory):
    """The tiny image's disk as qcow2 and as raw."""
    d = tmp_path_factory.mktemp("disks")
    raw = d / "tiny.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(tiny_image.disk), str(raw)],
                   check=True)
    return {"qcow2": tiny_image.disk, "raw": raw}


def test_an_images_disk_is_an_object_of_the_system_bucket(cloud, tiny_image):
    img = cloud.api("GET", "/v1/images/tiny")
    f = cloud.library_file(img["sha256"])
    assert f is not None, "the disk is the object blobs/<sha256> of nubo-library"
    assert sha256(f) == img["sha256"]
    assert subprocess.run(["qemu-img", "compare", "-q", str(tiny_image.disk), str(f)]).returncode == 0
    assert not (cloud.state / "library").exists(), "no image files outside the object store"
    # nobody's key reaches the bucket: not a tenant's, not the cloud admin's
    for t in (make_tenant(cloud, "peeker"), make_tenant(cloud, "admin")):
        ls = s3(t, "s3", "ls", f"s3://{LIBRARY}/", check=False)
        assert ls.returncode != 0 and "AccessDenied" in ls.stderr, ls.stderr
        get = s3(t, "s3api", "get-object", "--bucket", LIBRARY, "--key",
                 f"blobs/{img['sha256']}", "/dev/null", check=False)
        assert get.returncode != 0 and "AccessDenied" in get.stderr, get.stderr
        put = s3(t, "s3api", "put-object", "--bucket", LIBRARY, "--key",
                 f"blobs/{img['sha256']}", "--body", "/etc/hostname", check=False)
        assert put.returncode != 0 and "AccessDenied" in put.stderr, put.stderr
        mb = s3(t, "s3", "mb", f"s3://{LIBRARY}", check=False)
        assert mb.returncode != 0 and "BucketAlreadyExists" in mb.stderr, mb.stderr
        buckets = json.loads(s3(t, "s3api", "list-buckets").stdout)["Buckets"]
        assert LIBRARY not in {b["Name"] for b in buckets}
    assert sha256(f) == img["sha256"], "the put was refused, the blob is intact"


def test_an_upload_of_unknown_length_is_stored_whole(cloud, tiny_image):
    """A chunked PUT /v1/blobs (no Content-Length) goes into the library as
    a multipart upload; the blob is the same bytes, named by their sha256."""
    data = Path(tiny_image.disk).read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", cloud.port, timeout=120)
    conn.request("PUT", "/v1/blobs", body=iter([data[:1 << 20], data[1 << 20:]]),
                 headers={"Authorization": f"Bearer {cloud.token}",
                          "Content-Type": "application/octet-stream"},
                 encode_chunked=True)
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 201, body
    want = hashlib.sha256(data).hexdigest()
    assert body == {"blob": want, "size": len(data)}
    f = cloud.library_file(want)
    assert f is not None and f.read_bytes() == data
    # and nothing of the upload itself is left under its temporary name
    db = sqlite3.connect(f"file:{cloud.state}/objects/meta.db?mode=ro", uri=True)
    try:
        left = db.execute("SELECT count(*) FROM versions v JOIN buckets b ON b.id = v.bucket_id"
                          " WHERE b.name = ? AND substr(v.key, 1, 8) = CAST('uploads/' AS BLOB)",
                          (LIBRARY,)).fetchone()[0]
        pending = db.execute("SELECT count(*) FROM uploads u JOIN buckets b ON b.id = u.bucket_id"
                             " WHERE b.name = ?", (LIBRARY,)).fetchone()[0]
    finally:
        db.close()
    assert left == 0 and pending == 0


def test_import_from_a_bucket_with_the_cli_boots(cloud, tiny_image, disks):
    acme = make_tenant(cloud, "s3acme")
    s3(acme, "s3", "mb", "s3://acme-disks")
    s3(acme, "s3", "cp", str(disks["raw"]), "s3://acme-disks/images/tiny.raw")
    p = nubo(acme, "image", "import", "s3://acme-disks/images/tiny.raw", "--name", "from-raw",
             "--kernel", str(tiny_image.vmlinuz), "--initrd", str(tiny_image.initrd),
             "--cmdline", tiny_image.cmdline, "--json")
    assert p.returncode == 0, p.stderr
    img = json.loads(p.stdout)
    assert img["format"] == "qcow2" and img["size"] == 64 << 20
    # converted into the library; the tenant's object stays as it was
    f = cloud.library_file(img["sha256"])
    assert f is not None and sha256(f) == img["sha256"]
    assert subprocess.run(["qemu-img", "compare", "-q", str(tiny_image.disk), str(f)]).returncode == 0
    head = json.loads(s3(acme, "s3api", "head-object", "--bucket", "acme-disks", "--key",
                         "images/tiny.raw").stdout)
    assert head["ContentLength"] == 64 << 20
    ec2 = acme.boto()
    iid = ec2.run_instances(ImageId=img["id"], InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    wait_ready(ec2, iid)
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})


def test_register_image_with_an_image_location_boots(cloud, tiny_image, disks):
    acme = make_tenant(cloud, "s3acme")
    s3(acme, "s3", "mb", "s3://acme-qcow")
    s3(acme, "s3", "cp", str(disks["qcow2"]), "s3://acme-qcow/tiny.qcow2")
    ec2 = acme.boto()
    # the kernel and initrd of an image of the same account
    kern = nubo(acme, "image", "import", str(disks["qcow2"]), "--name", "kern",
                "--kernel", str(tiny_image.vmlinuz), "--initrd", str(tiny_image.initrd),
                "--cmdline", tiny_image.cmdline, "--json")
    assert kern.returncode == 0, kern.stderr
    kern_id = json.loads(kern.stdout)["id"]
    # EC2's own form, bucket/key, and the s3:// one
    a = ec2.register_image(Name="loc-plain", ImageLocation="acme-qcow/tiny.qcow2",
                           KernelId=kern_id)["ImageId"]
    b = ec2.register_image(Name="loc-s3", ImageLocation="s3://acme-qcow/tiny.qcow2",
                           KernelId=kern_id)["ImageId"]
    imgs = {i["ImageId"]: i for i in ec2.describe_images(ImageIds=[a, b])["Images"]}
    assert {i["State"] for i in imgs.values()} == {"available"}
    shas = [json.loads(nubo(acme, "image", "show", i, "--json").stdout)["sha256"] for i in (a, b)]
    assert shas[0] == shas[1] and cloud.library_file(shas[0]) is not None
    # DryRun checks the location without making anything
    with pytest.raises(ClientError) as e:
        ec2.register_image(Name="dry", ImageLocation="acme-qcow/tiny.qcow2", KernelId=kern_id,
                           DryRun=True)
    assert e.value.response["Error"]["Code"] == "DryRunOperation"
    iid = ec2.run_instances(ImageId=a, InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    wait_ready(ec2, iid)
    # the guest's disk is the one from the bucket
    con = ConsoleSession(cloud, iid, tenant=acme)
    con.wait_prompt()
    out, _ = con.run("cat /data/nubo-image")
    assert "tiny" in out
    con.close()
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    # blob:<sha256> goes on working
    blob = cloud.upload(disks["qcow2"])
    p = subprocess.run([AWS, "--endpoint-url", cloud.endpoint, "--output", "json", "ec2",
                        "register-image", "--name", "loc-blob", "--image-location",
                        f"blob:{blob}"], capture_output=True, text=True,
                       env=env_of(make_tenant(cloud, "admin")), timeout=300)
    assert p.returncode == 0, p.stderr


def test_another_accounts_bucket_and_a_missing_key_are_refused(cloud, disks):
    owner = make_tenant(cloud, "s3owner")
    other = make_tenant(cloud, "s3other")
    s3(owner, "s3", "mb", "s3://owner-private")
    s3(owner, "s3", "cp", str(disks["qcow2"]), "s3://owner-private/disk.qcow2")
    ec2 = other.boto()
    for loc in ("owner-private/disk.qcow2", "s3://owner-private/disk.qcow2",
                f"{LIBRARY}/blobs/{cloud.api('GET', '/v1/images/tiny')['sha256']}"):
        with pytest.raises(ClientError) as e:
            ec2.register_image(Name="stolen", ImageLocation=loc)
        assert e.value.response["Error"]["Code"] == "InvalidManifest"
        assert loc in e.value.response["Error"]["Message"]
        assert "AccessDenied" in e.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as e:
            ec2.register_image(Name="stolen", ImageLocation=loc, DryRun=True)
        assert e.value.response["Error"]["Code"] == "InvalidManifest"
    p = nubo(other, "image", "import", "s3://owner-private/disk.qcow2", "--name", "stolen")
    assert p.returncode != 0 and "AccessDenied" in p.stderr, p.stderr
    # a missing key, a missing bucket
    with pytest.raises(ClientError) as e:
        owner.boto().register_image(Name="nothing", ImageLocation="owner-private/nope.qcow2")
    assert e.value.response["Error"]["Code"] == "InvalidManifest"
    assert "NoSuchKey" in e.value.response["Error"]["Message"]
    p = nubo(owner, "image", "import", "s3://no-such-bucket-here/x", "--name", "nothing")
    assert p.returncode != 0 and "NoSuchBucket" in p.stderr, p.stderr
    for t in (owner, other):
        names = {i["Name"] for i in t.boto().describe_images(Owners=["self"])["Images"]}
        assert not names & {"stolen", "nothing"}
    # made public-read, another account may import it
    s3(owner, "s3api", "put-bucket-acl", "--bucket", "owner-private", "--acl", "public-read")
    ok = ec2.register_image(Name="from-public", ImageLocation="owner-private/disk.qcow2")
    assert ok["ImageId"].startswith("ami-")
    # a malformed location is the caller's mistake
    with pytest.raises(ClientError) as e:
        ec2.register_image(Name="bad", ImageLocation="s3://Bad_Bucket!/k")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_old_library_files_move_into_the_bucket(tiny_image, tmp_path):
    """A state dir from before the object store: its library/ files become
    objects at start (checked against their names), and a restart changes
    nothing."""
    c = Cloud(tmp_path / "old", bridge="nbbr8", cidr="10.218.0.0/24")
    lib = c.state / "library"
    (lib / "tmp").mkdir(parents=True)
    disk_sha = sha256(tiny_image.disk)
    (lib / disk_sha).write_bytes(Path(tiny_image.disk).read_bytes())
    (lib / ("0" * 64)).write_bytes(b"not what its name says")
    (lib / "tmp" / "upload-deadbeef").write_bytes(b"half an upload")
    c.root.mkdir(parents=True, exist_ok=True)
    c.start_nubod()
    try:
        f = c.library_file(disk_sha)
        assert f is not None and sha256(f) == disk_sha
        assert not (lib / disk_sha).exists() and not (lib / "tmp").exists()
        assert (lib / ("0" * 64)).exists(), "a file that fails its hash is left for a person"
        assert c.library_file("0" * 64) is None
        assert "1 files moved" in c.nubod.log() and "1 left (bad hash)" in c.nubod.log()
        c.nubod.stop()
        c.daemons.remove(c.nubod)
        c.start_nubod()
        assert c.library_file(disk_sha) == f
    finally:
        c.shutdown()
    errs = c.sanitizer_errors()
    assert not errs, "sanitizer reports:\n" + "\n".join(errs)
