"""The EC2 Query API with the real awscli and boto3, against real daemons
and real tiny guests: the user story, paginators and waiters, tenant
isolation, read-only users, signatures, quotas and throttling."""

import base64
import datetime
import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import botocore
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.exceptions import ClientError, WaiterError

from conftest import REGION, Cloud, ConsoleSession, make_tenant, wait_until


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def world(cloud, tmp_path_factory):
    """acme (admin, member, read-only) and globex; tiny made public by the cloud admin."""
    admin = make_tenant(cloud, "admin")
    tiny = cloud.api("GET", "/v1/images/tiny")["id"]
    admin.boto().modify_image_attribute(ImageId=tiny, LaunchPermission={"Add": [{"Group": "all"}]})
    # "idle": an empty disk the firmware finds nothing to boot on; its guests
    # cost almost no CPU, for tests that need many instance records
    tmp = tmp_path_factory.mktemp("ec2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "idle.qcow2"), "16M"],
                   check=True)
    idle = cloud.api("POST", "/v1/images", {"name": "idle", "disk_blob": cloud.upload(tmp / "idle.qcow2")})["id"]
    admin.boto().modify_image_attribute(ImageId=idle, LaunchPermission={"Add": [{"Group": "all"}]})
    w = {
        "admin": admin,
        "acme": make_tenant(cloud, "acme"),
        "acme_member": make_tenant(cloud, "acme", "bob", "member"),
        "acme_ro": make_tenant(cloud, "acme", "auditor", "read-only"),
        "globex": make_tenant(cloud, "globex"),
        "tiny": tiny,
        "idle": idle,
        "tmp": tmp,
    }
    return w


def test_user_story_with_awscli(cloud, world):
    acme, tiny, tmp = world["acme"], world["tiny"], world["tmp"]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "id")],
                   check=True)
    kp = acme.aws("ec2", "import-key-pair", "--key-name", "mykey",
                  "--public-key-material", f"fileb://{tmp / 'id.pub'}")
    fp = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp / "id.pub")],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    assert kp["KeyFingerprint"] == fp.removeprefix("SHA256:")
    (tmp / "init.sh").write_text("#!/bin/sh\necho user-data-ran-$((40+2))\n")
    res = acme.aws("ec2", "run-instances", "--image-id", tiny, "--instance-type", "t1.nano",
                   "--count", "3", "--key-name", "mykey", "--user-data", f"file://{tmp / 'init.sh'}",
                   "--tag-specifications", "ResourceType=instance,Tags=[{Key=Name,Value=web},{Key=team,Value=blue}]")
    ids = [i["InstanceId"] for i in res["Instances"]]
    assert len(ids) == 3 and all(i["State"]["Name"] == "pending" for i in res["Instances"])
    assert res["OwnerId"] == acme.account_id
    acme.aws("ec2", "wait", "instance-running", "--instance-ids", *ids)
    out = acme.aws("ec2", "describe-instances", "--filters",
                   "Name=instance-state-name,Values=running", "Name=tag:team,Values=blue")
    found = [i for r in out["Reservations"] for i in r["Instances"]]
    assert sorted(i["InstanceId"] for i in found) == sorted(ids)
    inst = found[0]
    assert inst["KeyName"] == "mykey" and inst["InstanceType"] == "t1.nano"
    assert inst["Placement"]["AvailabilityZone"] == "nubo-1a"
    # the default VPC's subnet (172.31.0.0/20; .0-.3 are reserved)
    assert re.match(r"172\.31\.(\d|1[0-5])\.\d+$", inst["PrivateIpAddress"])
    assert {"Key": "Name", "Value": "web"} in inst["Tags"]
    # the console, through EC2's GetConsoleOutput
    wait_until(lambda: "NUBO-READY " + ids[0] in
               (acme.aws("ec2", "get-console-output", "--instance-id", ids[0]).get("Output") or ""),
               90, "the ready marker in GetConsoleOutput", interval=0.5)
    acme.aws("ec2", "stop-instances", "--instance-ids", ids[0])
    acme.aws("ec2", "wait", "instance-stopped", "--instance-ids", ids[0])
    acme.aws("ec2", "start-instances", "--instance-ids", ids[0])
    acme.aws("ec2", "wait", "instance-running", "--instance-ids", ids[0])
    acme.aws("ec2", "reboot-instances", "--instance-ids", ids[1])
    # the native API takes the same keys (SigV4, service "nubo")
    mine = signed_native(acme, "GET", "/v1/instances")["instances"]
    assert set(ids) <= {i["id"] for i in mine}
    t = acme.aws("ec2", "terminate-instances", "--instance-ids", *ids)
    assert {i["CurrentState"]["Name"] for i in t["TerminatingInstances"]} <= {"shutting-down", "terminated"}
    acme.aws("ec2", "wait", "instance-terminated", "--instance-ids", *ids)


def test_boto3_paginators_and_waiters(cloud, world):
    ec2 = world["acme"].boto()
    ids = []
    for _ in range(3):  # 60 records, in three calls of 20
        r = ec2.run_instances(ImageId=world["idle"], InstanceType="t1.nano", MinCount=20,
                              MaxCount=20, TagSpecifications=[{"ResourceType": "instance",
                                                               "Tags": [{"Key": "batch", "Value": "p"}]}])
        ids += [i["InstanceId"] for i in r["Instances"]]
    try:
        pages = list(ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:batch", "Values": ["p"]}], PaginationConfig={"PageSize": 25}))
        assert len(pages) == 3
        seen = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
        assert sorted(seen) == sorted(ids) and len(set(seen)) == 60
        ec2.get_waiter("instance_exists").wait(InstanceIds=ids[:5])
    finally:
        for k in range(0, 60, 20):
            ec2.terminate_instances(InstanceIds=ids[k:k + 20])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def test_client_token_idempotency(world):
    ec2 = world["acme"].boto()
    a = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1,
                          ClientToken="once-only")
    b = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1,
                          ClientToken="once-only")
    assert a["Instances"][0]["InstanceId"] == b["Instances"][0]["InstanceId"]
    assert a["ReservationId"] == b["ReservationId"]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.micro", MinCount=1, MaxCount=1,
                          ClientToken="once-only")
    assert code_of(e) == "IdempotentParameterMismatch"
    ec2.terminate_instances(InstanceIds=[a["Instances"][0]["InstanceId"]])


def test_resize_a_stopped_instance(cloud, world):
    ec2 = world["acme"].boto()
    iid = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    with pytest.raises(ClientError) as e:
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t1.micro"})
    assert code_of(e) == "IncorrectInstanceState"
    ec2.stop_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t1.micro"})
    with pytest.raises(ClientError) as e:
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t9.huge"})
    assert code_of(e) == "InvalidParameterValue"
    ec2.start_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "t1.micro"
    pid = cloud.qemu_pid(iid)
    cmd = open(f"/proc/{pid}/cmdline").read().split("\0")
    assert cmd[cmd.index("-m") + 1].startswith("256")
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json",
                                      str(cloud.instance_dir(iid) / "root.qcow2")],
                                     capture_output=True, check=True).stdout)
    assert info["virtual-size"] == 2 << 30, "the disk grew to t1.micro's 2 GiB"
    ec2.terminate_instances(InstanceIds=[iid])


def test_create_image_from_a_running_instance(cloud, world):
    ec2 = world["acme"].boto()
    iid = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    wait_ready_ec2(ec2, iid)
    con = ConsoleSession_for(cloud, world["acme"], iid)
    out, rc = con.run("echo golden-$((6*7)) > /data/golden && sync && cat /data/golden")
    assert "golden-42" in out
    con.close()
    img = ec2.create_image(InstanceId=iid, Name="golden", Description="with a marker")["ImageId"]
    ec2.get_waiter("image_available").wait(ImageIds=[img], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    d = ec2.describe_images(ImageIds=[img])["Images"][0]
    assert d["Name"] == "golden" and d["Description"] == "with a marker"
    assert d["OwnerId"] == world["acme"].account_id and d["State"] == "available"
    # an instance from the new image sees what the source had written
    new = ec2.run_instances(ImageId=img, InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    wait_ready_ec2(ec2, new)
    con = ConsoleSession_for(cloud, world["acme"], new)
    out, rc = con.run("cat /data/golden")
    assert "golden-42" in out
    con.close()
    ec2.terminate_instances(InstanceIds=[iid, new])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid, new], WaiterConfig={"Delay": 1})
    with pytest.raises(ClientError) as e:
        ec2.create_image(InstanceId=iid, Name="again")
    assert code_of(e) == "IncorrectInstanceState"


def ConsoleSession_for(cloud, tenant, iid):
    """The live console through nubod's native API, signed with the tenant's key."""
    con = ConsoleSession(cloud, iid, tenant=tenant)
    con.wait_prompt()
    return con


def wait_ready_ec2(ec2, iid, timeout=120):
    """Waits for the guest's ready marker in GetConsoleOutput."""
    return wait_until(lambda: "NUBO-READY " + iid in
                      base64_output(ec2.get_console_output(InstanceId=iid)),
                      timeout, f"the ready marker of {iid}", interval=0.5)


def base64_output(r):
    return r.get("Output") or ""


def console_handshake(tenant, iid):
    """The live console's upgrade request signed with tenant's key: (status, body)."""
    import socket
    path = f"/v1/instances/{iid}/console"
    req = botocore.awsrequest.AWSRequest(method="GET", url=tenant.cloud.endpoint + path)
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(tenant.key_id, tenant.secret),
                            "nubo", REGION).add_auth(req)
    auth = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    with socket.create_connection(("127.0.0.1", tenant.cloud.port), timeout=10) as s:
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{tenant.cloud.port}\r\n"
                   f"Connection: Upgrade\r\nUpgrade: nubo-console\r\n{auth}\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status == 101:
            return status, b""
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        while m and len(body) < int(m.group(1)):
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
        return status, body


def test_read_only_cannot_open_the_console(cloud, world):
    """The live console is a root shell in the guest: a read-only user may read
    the console log, never open the console (native API and CLI alike)."""
    acme, ro = world["acme"], world["acme_ro"]
    ec2 = acme.boto()
    iid = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        wait_ready_ec2(ec2, iid)
        status, body = console_handshake(ro, iid)
        assert status == 403, (status, body)
        err = json.loads(body)["error"]
        assert err["code"] == "UnauthorizedOperation" and "console" in err["message"]
        # the same through the CLI with the read-only key
        from conftest import BUILD, SAN_ENV
        env = {k: v for k, v in __import__("os").environ.items()
               if not k.startswith(("AWS_", "NUBO_"))}
        env.update(NUBO_ENDPOINT=cloud.endpoint, NUBO_ACCESS_KEY_ID=ro.key_id,
                   NUBO_SECRET_ACCESS_KEY=ro.secret, NUBO_CONFIG="/nonexistent", **SAN_ENV)
        p = subprocess.run([str(BUILD / "src/cli/nubo"), "console", iid], input="echo hi\n",
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 1 and "error: UnauthorizedOperation:" in p.stderr, p.stderr
        # reading the log stays allowed
        assert "NUBO-READY " + iid in base64_output(ro.boto().get_console_output(InstanceId=iid))
        # and an account admin gets the shell
        assert console_handshake(acme, iid)[0] == 101
        con = ConsoleSession_for(cloud, acme, iid)
        out, rc = con.run("echo RW-$((6*7))")
        assert "RW-42" in out and rc == 0
        con.close()
    finally:
        ec2.terminate_instances(InstanceIds=[iid])


def test_images_sharing_and_owners(world):
    acme, globex = world["acme"].boto(), world["globex"].boto()
    img = own_image(world)
    assert img in [i["ImageId"] for i in acme.describe_images(Owners=["self"])["Images"]]
    assert all(i["ImageId"] != img for i in globex.describe_images()["Images"])
    with pytest.raises(ClientError) as e:
        globex.describe_images(ImageIds=[img])
    assert code_of(e) == "InvalidAMIID.NotFound"
    acme.modify_image_attribute(ImageId=img, LaunchPermission={"Add": [{"UserId": world["globex"].account_id}]})
    attr = acme.describe_image_attribute(ImageId=img, Attribute="launchPermission")
    assert {"UserId": world["globex"].account_id} in attr["LaunchPermissions"]
    assert [i["ImageId"] for i in globex.describe_images(ImageIds=[img])["Images"]] == [img]
    with pytest.raises(ClientError) as e:  # shared is not owned
        globex.deregister_image(ImageId=img)
    assert code_of(e) == "InvalidAMIID.NotFound"
    acme.modify_image_attribute(ImageId=img, OperationType="remove", UserIds=[world["globex"].account_id])
    with pytest.raises(ClientError) as e:
        globex.run_instances(ImageId=img, InstanceType="t1.nano", MinCount=1, MaxCount=1)
    assert code_of(e) == "InvalidAMIID.NotFound"
    public = acme.describe_images(Owners=["all"], Filters=[{"Name": "is-public", "Values": ["true"]}])["Images"]
    assert world["tiny"] in [i["ImageId"] for i in public]


def test_tags(world):
    ec2 = world["acme"].boto()
    iid = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "env", "Value": "prod"}, {"Key": "empty"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
    assert {(t["Key"], t["Value"], t["ResourceType"]) for t in tags} == {("env", "prod", "instance"), ("empty", "", "instance")}
    found = ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["env"]}])["Reservations"]
    assert iid in [i["InstanceId"] for r in found for i in r["Instances"]]
    ec2.delete_tags(Resources=[iid], Tags=[{"Key": "env", "Value": "wrong"}])
    assert len(ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]) == 2
    ec2.delete_tags(Resources=[iid], Tags=[{"Key": "env"}])
    assert [t["Key"] for t in ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]] == ["empty"]
    with pytest.raises(ClientError) as e:
        ec2.create_tags(Resources=[iid], Tags=[{"Key": "aws:reserved", "Value": "x"}])
    assert code_of(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        ec2.create_tags(Resources=["vol-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    assert code_of(e) == "InvalidID"
    ec2.terminate_instances(InstanceIds=[iid])


def test_key_pairs(world):
    ec2 = world["acme"].boto()
    k = ec2.create_key_pair(KeyName="made")
    assert k["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    p = world["tmp"] / "made.pem"
    p.write_text(k["KeyMaterial"])
    p.chmod(0o600)
    der = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(p), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    import hashlib
    sha1 = hashlib.sha1(der).hexdigest()
    assert k["KeyFingerprint"] == ":".join(sha1[i:i + 2] for i in range(0, 40, 2))
    with pytest.raises(ClientError) as e:
        ec2.create_key_pair(KeyName="made")
    assert code_of(e) == "InvalidKeyPair.Duplicate"
    names = [x["KeyName"] for x in ec2.describe_key_pairs()["KeyPairs"]]
    assert "made" in names
    with pytest.raises(ClientError) as e:
        ec2.describe_key_pairs(KeyNames=["nope"])
    assert code_of(e) == "InvalidKeyPair.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.import_key_pair(KeyName="bad", PublicKeyMaterial=b"ssh-dss AAAAB3NzaC1kc3M= x")
    assert code_of(e) == "InvalidKey.Format"
    ec2.delete_key_pair(KeyName="made")
    ec2.delete_key_pair(KeyName="made")  # idempotent, as EC2
    assert "made" not in [x["KeyName"] for x in ec2.describe_key_pairs()["KeyPairs"]]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1, KeyName="made")
    assert code_of(e) == "InvalidKeyPair.NotFound"


def test_region_and_types(world):
    ec2 = world["acme"].boto()
    assert [r["RegionName"] for r in ec2.describe_regions()["Regions"]] == [REGION]
    azs = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["State"]) for z in azs] == [("nubo-1a", "available")]
    types = {t["InstanceType"]: t for t in ec2.describe_instance_types()["InstanceTypes"]}
    assert types["t1.nano"]["VCpuInfo"]["DefaultVCpus"] == 1
    assert types["t1.nano"]["MemoryInfo"]["SizeInMiB"] == 128
    one = ec2.describe_instance_types(InstanceTypes=["m1.large"])["InstanceTypes"]
    assert [t["InstanceType"] for t in one] == ["m1.large"]
    with pytest.raises(ClientError) as e:
        ec2.describe_instance_types(InstanceTypes=["z9.nope"])
    assert code_of(e) == "InvalidInstanceType"


def test_errors_use_ec2_codes(world):
    ec2 = world["acme"].boto()
    cases = [
        (lambda: ec2.describe_instances(InstanceIds=["i-00000000000000000"]), "InvalidInstanceID.NotFound"),
        (lambda: ec2.describe_instances(InstanceIds=["i-bogus"]), "InvalidInstanceID.Malformed"),
        (lambda: ec2.run_instances(ImageId="ami-00000000000000000", InstanceType="t1.nano", MinCount=1, MaxCount=1), "InvalidAMIID.NotFound"),
        (lambda: ec2.run_instances(ImageId=world["tiny"], InstanceType="t9.none", MinCount=1, MaxCount=1), "InvalidParameterValue"),
        (lambda: ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=3, MaxCount=2), "InvalidParameterValue"),
        (lambda: ec2.run_instances(ImageId=world["tiny"], InstanceType="c1.xlarge", MinCount=60, MaxCount=60), "InsufficientInstanceCapacity"),
        (lambda: ec2.describe_instances(Filters=[{"Name": "no-such-filter", "Values": ["x"]}]), "InvalidParameterValue"),
        (lambda: ec2.describe_instances(MaxResults=2), "InvalidParameterValue"),
        (lambda: ec2.start_instances(InstanceIds=["i-00000000000000000"]), "InvalidInstanceID.NotFound"),
        (lambda: ec2.describe_images(ImageIds=["ami-00000000000000000"]), "InvalidAMIID.NotFound"),
    ]
    for n, (call, want) in enumerate(cases):
        with pytest.raises(ClientError, match=".") as e:
            r = call()
            raise AssertionError(f"case {n} ({want}) succeeded: {r}")
        assert code_of(e) == want, (want, e.value.response["Error"])
    # no MissingParameter slips through botocore's own validation, so send raw
    r = raw_ec2(world["acme"], {"Action": "RunInstances", "Version": "2016-11-15", "MinCount": "1", "MaxCount": "1"})
    assert r[0] == 400 and "<Code>MissingParameter</Code>" in r[1] and "ImageId" in r[1]
    r = raw_ec2(world["acme"], {"Action": "LaunchRockets", "Version": "2016-11-15"})
    assert r[0] == 400 and "<Code>InvalidAction</Code>" in r[1]


def raw_ec2(tenant, params, secret=None, when=None):
    """A form POST signed by botocore's own SigV4 signer (optionally with a
    wrong secret or at another time)."""
    creds = botocore.credentials.Credentials(tenant.key_id, secret or tenant.secret)
    body = "&".join(f"{k}={urllib.parse.quote(str(v), safe='')}" for k, v in params.items())
    req = botocore.awsrequest.AWSRequest(method="POST", url=tenant.cloud.endpoint + "/", data=body,
                                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    signer = botocore.auth.SigV4Auth(creds, "ec2", REGION)
    if when:
        from unittest import mock
        with mock.patch("botocore.auth.datetime") as dt:
            dt.datetime.utcnow.return_value = when
            dt.datetime.now.return_value = when
            dt.timezone = datetime.timezone
            signer.add_auth(req)
    else:
        signer.add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body.encode() if isinstance(prepared.body, str) else prepared.body,
                               method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


import urllib.parse  # noqa: E402


def test_signatures_are_checked(world):
    acme = world["acme"]
    ok = raw_ec2(acme, {"Action": "DescribeRegions", "Version": "2016-11-15"})
    assert ok[0] == 200 and REGION in ok[1]
    bad = raw_ec2(acme, {"Action": "DescribeRegions", "Version": "2016-11-15"}, secret="x" * 40)
    assert bad[0] == 403 and "<Code>SignatureDoesNotMatch</Code>" in bad[1]
    old = datetime.datetime.utcnow() - datetime.timedelta(minutes=20)
    late = raw_ec2(acme, {"Action": "DescribeRegions", "Version": "2016-11-15"}, when=old)
    assert late[0] == 400 and "<Code>RequestExpired</Code>" in late[1]
    # a presigned URL made in the past, replayed after it expired
    creds = botocore.credentials.Credentials(acme.key_id, acme.secret)
    req = botocore.awsrequest.AWSRequest(method="GET", url=acme.cloud.endpoint + "/?Action=DescribeRegions&Version=2016-11-15")
    from unittest import mock
    with mock.patch("botocore.auth.datetime") as dt:
        dt.datetime.utcnow.return_value = old
        dt.datetime.now.return_value = old
        dt.timezone = datetime.timezone
        botocore.auth.SigV4QueryAuth(creds, "ec2", REGION, expires=60).add_auth(req)
    try:
        urllib.request.urlopen(req.prepare().url, timeout=10)
        raise AssertionError("an expired presigned URL was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "<Code>RequestExpired</Code>" in e.read().decode()
    # a fresh presigned URL works once made
    req = botocore.awsrequest.AWSRequest(method="GET", url=acme.cloud.endpoint + "/?Action=DescribeRegions&Version=2016-11-15")
    botocore.auth.SigV4QueryAuth(creds, "ec2", REGION, expires=60).add_auth(req)
    with urllib.request.urlopen(req.prepare().url, timeout=10) as r:
        assert r.status == 200
    # unknown and disabled keys
    ghost = type(acme)(acme.cloud, {"access_key_id": "AKIAAAAAAAAAAAAAAAAA", "secret_access_key": "x" * 40,
                                    "account_id": "", "account": "", "role": ""})
    with pytest.raises(ClientError) as e:
        ghost.boto().describe_regions()
    assert code_of(e) == "AuthFailure"
    temp = make_tenant(acme.cloud, "acme", "temp", "member")
    acme.cloud.api("POST", f"/v1/keys/{temp.key_id}/disable")
    with pytest.raises(ClientError) as e:
        temp.boto().describe_regions()
    assert code_of(e) == "AuthFailure"
    acme.cloud.api("POST", f"/v1/keys/{temp.key_id}/enable")
    temp.boto().describe_regions()
    # secrets are stored sealed, never in the clear
    db = (acme.cloud.state / "nubo.db").read_bytes() + (acme.cloud.state / "nubo.db-wal").read_bytes()
    assert acme.secret.encode() not in db


def test_isolation_matrix(world):
    """Tenant B against tenant A's resources: NotFound, never Forbidden; and
    a read-only user against every changing action: UnauthorizedOperation."""
    acme, globex, ro = world["acme"].boto(), world["globex"].boto(), world["acme_ro"].boto()
    acme.create_key_pair(KeyName="isokey")
    iid = acme.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1,
                             MaxCount=1, KeyName="isokey")["Instances"][0]["InstanceId"]
    img = own_image(world)
    against_b = [
        (lambda: globex.describe_instances(InstanceIds=[iid]), "InvalidInstanceID.NotFound"),
        (lambda: globex.describe_instance_status(InstanceIds=[iid]), "InvalidInstanceID.NotFound"),
        (lambda: globex.stop_instances(InstanceIds=[iid]), "InvalidInstanceID.NotFound"),
        (lambda: globex.start_instances(InstanceIds=[iid]), "InvalidInstanceID.NotFound"),
        (lambda: globex.reboot_instances(InstanceIds=[iid]), "InvalidInstanceID.NotFound"),
        (lambda: globex.terminate_instances(InstanceIds=[iid]), "InvalidInstanceID.NotFound"),
        (lambda: globex.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t1.micro"}), "InvalidInstanceID.NotFound"),
        (lambda: globex.get_console_output(InstanceId=iid), "InvalidInstanceID.NotFound"),
        (lambda: globex.create_image(InstanceId=iid, Name="steal"), "InvalidInstanceID.NotFound"),
        (lambda: globex.create_tags(Resources=[iid], Tags=[{"Key": "a", "Value": "b"}]), "InvalidInstanceID.NotFound"),
        (lambda: globex.delete_tags(Resources=[iid]), "InvalidInstanceID.NotFound"),
        (lambda: globex.describe_images(ImageIds=[img]), "InvalidAMIID.NotFound"),
        (lambda: globex.deregister_image(ImageId=img), "InvalidAMIID.NotFound"),
        (lambda: globex.modify_image_attribute(ImageId=img, LaunchPermission={"Add": [{"Group": "all"}]}), "InvalidAMIID.NotFound"),
        (lambda: globex.describe_image_attribute(ImageId=img, Attribute="launchPermission"), "InvalidAMIID.NotFound"),
        (lambda: globex.run_instances(ImageId=img, InstanceType="t1.nano", MinCount=1, MaxCount=1), "InvalidAMIID.NotFound"),
        (lambda: globex.describe_key_pairs(KeyNames=["isokey"]), "InvalidKeyPair.NotFound"),
        (lambda: globex.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1, KeyName="isokey"), "InvalidKeyPair.NotFound"),
    ]
    for call, want in against_b:
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == want, (want, e.value.response["Error"])
    listing = globex.describe_instances()["Reservations"]
    assert iid not in [i["InstanceId"] for r in listing for i in r["Instances"]]
    assert all(t["ResourceId"] != iid for t in globex.describe_tags()["Tags"])
    # key pairs: B deleting A's key (by name or id) deletes nothing of A's
    akey = acme.describe_key_pairs(KeyNames=["isokey"])["KeyPairs"][0]
    globex.delete_key_pair(KeyName="isokey")  # idempotent: nothing of B's to delete
    globex.delete_key_pair(KeyPairId=akey["KeyPairId"])
    assert acme.describe_key_pairs(KeyNames=["isokey"])["KeyPairs"] == [akey]
    # the same name in both accounts: two independent key pairs
    bkey = globex.create_key_pair(KeyName="isokey")
    assert bkey["KeyPairId"] != akey["KeyPairId"]
    assert bkey["KeyFingerprint"] != akey["KeyFingerprint"]
    pem = world["tmp"] / "isokey.pem"
    pem.write_text(bkey["KeyMaterial"])
    pem.chmod(0o600)
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(pem)], capture_output=True, text=True,
                         check=True).stdout
    both = acme.import_key_pair(KeyName="isoimport", PublicKeyMaterial=pub.encode())
    again = globex.import_key_pair(KeyName="isoimport", PublicKeyMaterial=pub.encode())
    assert both["KeyPairId"] != again["KeyPairId"]
    globex.delete_key_pair(KeyName="isoimport")
    assert [k["KeyPairId"] for k in acme.describe_key_pairs(KeyNames=["isoimport"])["KeyPairs"]] == [both["KeyPairId"]]
    assert acme.describe_key_pairs(KeyNames=["isokey"])["KeyPairs"] == [akey]
    acme.delete_key_pair(KeyName="isoimport")
    globex.delete_key_pair(KeyName="isokey")
    # RegisterImage: A's upload and A's image as the kernel are not B's to use;
    # A's blob answers exactly as a never-uploaded one
    blob = own_blob(world)
    with pytest.raises(ClientError) as e:
        globex.register_image(Name="stolen", ImageLocation="blob:" + blob)
    stolen = e.value.response["Error"]
    with pytest.raises(ClientError) as e:
        globex.register_image(Name="stolen", ImageLocation="blob:" + "f" * 64)
    nothing = e.value.response["Error"]
    assert stolen["Code"] == nothing["Code"] == "InvalidManifest", (stolen, nothing)
    assert stolen["Message"].replace(blob, "X") == nothing["Message"].replace("f" * 64, "X")
    kimg = signed_native(world["acme"], "POST", "/v1/images",
                         {"name": "isokernel", "disk_blob": blob, "kernel_blob": blob})["id"]
    gblob = own_blob(world, "globex")
    with pytest.raises(ClientError) as e:
        globex.register_image(Name="with-a-kernel", ImageLocation="blob:" + gblob, KernelId=kimg)
    assert code_of(e) == "InvalidAMIID.NotFound", e.value.response["Error"]
    # tags on A's image and key pair ids are not B's to change
    for rid, want in ((img, "InvalidAMIID.NotFound"), (akey["KeyPairId"], "InvalidKeyPair.NotFound")):
        with pytest.raises(ClientError) as e:
            globex.create_tags(Resources=[rid], Tags=[{"Key": "a", "Value": "b"}])
        assert code_of(e) == want, (rid, e.value.response["Error"])
        with pytest.raises(ClientError) as e:
            globex.delete_tags(Resources=[rid])
        assert code_of(e) == want, (rid, e.value.response["Error"])
    # Owners=[A's account id]: A's private images stay hidden from B
    assert kimg in [i["ImageId"] for i in acme.describe_images(Owners=[world["acme"].account_id])["Images"]]
    shown = [i["ImageId"] for i in globex.describe_images(Owners=[world["acme"].account_id])["Images"]]
    assert img not in shown and kimg not in shown
    # a shared or public image shows its owner's tags to its owner only
    acme.create_tags(Resources=[kimg], Tags=[{"Key": "secret", "Value": "acme-only"}])
    acme.modify_image_attribute(ImageId=kimg, LaunchPermission={"Add": [{"Group": "all"}]})
    seen = globex.describe_images(ImageIds=[kimg])["Images"][0]
    assert not seen.get("Tags"), seen
    assert not globex.describe_images(Filters=[{"Name": "tag:secret", "Values": ["*"]}])["Images"]
    assert not globex.describe_images(Filters=[{"Name": "tag-key", "Values": ["secret"]}])["Images"]
    assert all(t["ResourceId"] != kimg for t in globex.describe_tags()["Tags"])
    mine = acme.describe_images(Filters=[{"Name": "tag:secret", "Values": ["acme-only"]}])["Images"]
    assert [(i["ImageId"], i["Tags"]) for i in mine] == [(kimg, [{"Key": "secret", "Value": "acme-only"}])]
    acme.deregister_image(ImageId=kimg)
    # read-only: every changing action is refused, reading works
    mutating = [
        lambda: ro.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1),
        lambda: ro.stop_instances(InstanceIds=[iid]),
        lambda: ro.start_instances(InstanceIds=[iid]),
        lambda: ro.reboot_instances(InstanceIds=[iid]),
        lambda: ro.terminate_instances(InstanceIds=[iid]),
        lambda: ro.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t1.micro"}),
        lambda: ro.create_image(InstanceId=iid, Name="ro"),
        lambda: ro.register_image(Name="ro", ImageLocation="blob:" + "0" * 64),
        lambda: ro.deregister_image(ImageId=img),
        lambda: ro.modify_image_attribute(ImageId=img, LaunchPermission={"Add": [{"Group": "all"}]}),
        lambda: ro.create_tags(Resources=[iid], Tags=[{"Key": "a", "Value": "b"}]),
        lambda: ro.delete_tags(Resources=[iid]),
        lambda: ro.create_key_pair(KeyName="ro"),
        lambda: ro.import_key_pair(KeyName="ro", PublicKeyMaterial=b"ssh-ed25519 AAAA"),
        lambda: ro.delete_key_pair(KeyName="isokey"),
    ]
    for call in mutating:
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "UnauthorizedOperation"
    assert iid in [i["InstanceId"] for r in ro.describe_instances()["Reservations"] for i in r["Instances"]]
    # a member of the account acts on it; its keys are the account admin's business
    world["acme_member"].boto().create_tags(Resources=[iid], Tags=[{"Key": "by", "Value": "bob"}])
    member_keys = world["acme_member"]
    with pytest.raises(Exception):
        signed_native(member_keys, "POST", "/v1/keys", {"account": "acme", "user": "eve"})
    acme.terminate_instances(InstanceIds=[iid])


def own_blob(world, tenant="acme"):
    """A small disk uploaded with tenant's key (signed, UNSIGNED-PAYLOAD); its sha256."""
    disk = world["tmp"] / f"blob-{tenant}.qcow2"
    if not disk.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    t = world[tenant]
    data = disk.read_bytes() + tenant.encode()  # each tenant's blob is its own
    req = botocore.awsrequest.AWSRequest(method="PUT", url=t.cloud.endpoint + "/v1/blobs", data=data,
                                         headers={"Content-Type": "application/octet-stream",
                                                  "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(t.key_id, t.secret),
                            "nubo", REGION).add_auth(req)
    p = req.prepare()
    r = urllib.request.Request(p.url, data=data, method="PUT", headers=dict(p.headers))
    with urllib.request.urlopen(r, timeout=30) as resp:
        return json.loads(resp.read())["blob"]


def own_image(world):
    """An image of acme's own: made here from an uploaded disk (signed with
    acme's key) unless acme has one already."""
    mine = world["acme"].boto().describe_images(Owners=["self"])["Images"]
    if mine:
        return mine[0]["ImageId"]
    disk = world["tmp"] / "own.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    tenant = world["acme"]
    data = disk.read_bytes()
    req = botocore.awsrequest.AWSRequest(method="PUT", url=tenant.cloud.endpoint + "/v1/blobs", data=data,
                                         headers={"Content-Type": "application/octet-stream",
                                                  "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(tenant.key_id, tenant.secret),
                            "nubo", REGION).add_auth(req)
    p = req.prepare()
    r = urllib.request.Request(p.url, data=data, method="PUT", headers=dict(p.headers))
    with urllib.request.urlopen(r, timeout=30) as resp:
        blob = json.loads(resp.read())["blob"]
    return signed_native(tenant, "POST", "/v1/images", {"name": "own", "disk_blob": blob})["id"]


def signed_native(tenant, method, path, body=None):
    """A native /v1 call signed with the tenant's key (service "nubo")."""
    data = json.dumps(body).encode() if body is not None else None
    req = botocore.awsrequest.AWSRequest(method=method, url=tenant.cloud.endpoint + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(tenant.key_id, tenant.secret),
                            "nubo", REGION).add_auth(req)
    p = req.prepare()
    r = urllib.request.Request(p.url, data=data, method=method, headers=dict(p.headers))
    with urllib.request.urlopen(r, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def test_quotas(cloud, world):
    cloud.api("PUT", "/v1/accounts/globex/quotas", {"instances": 2})
    ec2 = world["globex"].boto()
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=3, MaxCount=3)
    assert code_of(e) == "InstanceLimitExceeded"
    r = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=5)
    assert len(r["Instances"]) == 2, "MaxCount is cut to what the quota allows"
    ids = [i["InstanceId"] for i in r["Instances"]]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1)
    assert code_of(e) == "InstanceLimitExceeded"
    ec2.terminate_instances(InstanceIds=ids)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1})
    q = cloud.api("GET", "/v1/accounts/globex/quotas")
    assert q["limits"]["instances"] == 2 and q["usage"]["instances"] == 0
    # vCPUs and memory count too: two t1.medium (2 vCPU each) do not fit in 3;
    # the message names the quota that tripped, and only it
    cloud.api("PUT", "/v1/accounts/globex/quotas", {"instances": 100, "vcpus": 3})
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.medium", MinCount=2, MaxCount=2)
    msg = e.value.response["Error"]["Message"]
    assert code_of(e) == "VcpuLimitExceeded", e.value.response["Error"]
    assert "vCPU limit of 3" in msg and "memory" not in msg and "instance limit" not in msg, msg
    cloud.api("PUT", "/v1/accounts/globex/quotas", {"vcpus": 512, "memory_mb": 100})
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1)
    msg = e.value.response["Error"]["Message"]
    assert code_of(e) == "InstanceLimitExceeded"
    assert "memory limit of 100 MiB" in msg and "vCPU" not in msg and "instance limit" not in msg, msg
    # images: none allowed, so RegisterImage is refused
    cloud.api("PUT", "/v1/accounts/globex/quotas", {"memory_mb": 1 << 20, "images": 0})
    with pytest.raises(ClientError) as e:
        ec2.register_image(Name="over", ImageLocation="blob:" + "0" * 64)
    assert code_of(e) == "ResourceLimitExceeded"
    cloud.api("PUT", "/v1/accounts/globex/quotas", {"images": 100})


def test_quotas_bind_create_image_and_resize(cloud, world):
    """CreateImage counts against the images quota; ModifyInstanceAttribute
    InstanceType against vCPUs and memory (a stopped instance keeps its place)."""
    ec2 = world["globex"].boto()
    cloud.api("PUT", "/v1/accounts/globex/quotas", {"instances": 100, "vcpus": 512,
                                                     "memory_mb": 1 << 20, "images": 100})
    iid = ec2.run_instances(ImageId=world["idle"], InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        ec2.stop_instances(InstanceIds=[iid], Force=True)
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        # images
        have = cloud.api("GET", "/v1/accounts/globex/quotas")["usage"]["images"]
        cloud.api("PUT", "/v1/accounts/globex/quotas", {"images": have})
        with pytest.raises(ClientError) as e:
            ec2.create_image(InstanceId=iid, Name="over-quota")
        assert code_of(e) == "ResourceLimitExceeded", e.value.response["Error"]
        assert f"images limit of {have}" in e.value.response["Error"]["Message"]
        assert not ec2.describe_images(Filters=[{"Name": "name", "Values": ["over-quota"]}])["Images"]
        assert cloud.api("GET", "/v1/accounts/globex/quotas")["usage"]["images"] == have
        # vCPUs: t1.nano (1) -> t1.medium (2) does not fit in 1
        used = cloud.api("GET", "/v1/accounts/globex/quotas")["usage"]
        cloud.api("PUT", "/v1/accounts/globex/quotas", {"images": 100, "vcpus": used["vcpus"]})
        with pytest.raises(ClientError) as e:
            ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t1.medium"})
        msg = e.value.response["Error"]["Message"]
        assert code_of(e) == "VcpuLimitExceeded", e.value.response["Error"]
        assert "vCPU limit" in msg and "memory" not in msg, msg
        # memory: t1.nano (128 MiB) -> t1.micro (256 MiB, 1 vCPU) does not fit
        cloud.api("PUT", "/v1/accounts/globex/quotas", {"vcpus": 512,
                                                         "memory_mb": used["memory_mb"] + 64})
        with pytest.raises(ClientError) as e:
            ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t1.micro"})
        msg = e.value.response["Error"]["Message"]
        assert code_of(e) == "InstanceLimitExceeded", e.value.response["Error"]
        assert "memory limit" in msg and "vCPU" not in msg, msg
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["InstanceType"] == "t1.nano", "a refused resize changes nothing"
        # within the quotas it goes through
        cloud.api("PUT", "/v1/accounts/globex/quotas", {"memory_mb": 1 << 20})
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t1.micro"})
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["InstanceType"] == "t1.micro"
    finally:
        cloud.api("PUT", "/v1/accounts/globex/quotas", {"instances": 100, "vcpus": 512,
                                                         "memory_mb": 1 << 20, "images": 100})
        ec2.terminate_instances(InstanceIds=[iid])


def test_request_rate_limits(cloud, tiny_image, tmp_path):
    c = Cloud(tmp_path, bridge="nbbr6", cidr="10.216.0.0/24",
              # buckets that never refill: exactly the burst gets through,
              # however slowly the calls come (no timing in the test)
              nubod_extra=["-s", "rate_describe=0", "-s", "rate_describe_burst=5",
                           "-s", "rate_mutate=0", "-s", "rate_mutate_burst=2"])
    try:
        # nubod alone: an agent would replace the namespace's `inet nubo`
        # NAT table with its own, then delete it at teardown
        c.root.mkdir(parents=True, exist_ok=True)
        c.start_nubod()
        a, b = make_tenant(c, "a"), make_tenant(c, "b")
        ea, eb = a.boto(), b.boto()
        codes = []
        for _ in range(8):
            try:
                ea.describe_regions()
                codes.append("ok")
            except ClientError as e:
                codes.append(code_of_resp(e))
        assert codes == ["ok"] * 5 + ["RequestLimitExceeded"] * 3
        eb.describe_regions()  # another account has its own bucket
        ea.create_key_pair(KeyName="k1")
        ea.create_key_pair(KeyName="k2")
        with pytest.raises(ClientError) as e:
            ea.create_key_pair(KeyName="k3")
        assert code_of(e) == "RequestLimitExceeded"
    finally:
        c.shutdown()
    assert cloud.nat_intact(), "the module cloud's `inet nubo` table was replaced or deleted"


def code_of_resp(e):
    return e.response["Error"]["Code"]


def instance_ids(resp):
    return sorted(i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"])


def test_instance_status_placement_and_filters(world):
    ec2 = world["acme"].boto()
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1,
                          Placement={"AvailabilityZone": "nubo-1z"})
    assert code_of(e) == "InvalidParameterValue" and "nubo-1z" in e.value.response["Error"]["Message"]
    a = ec2.run_instances(ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1,
                          Placement={"AvailabilityZone": "nubo-1a"})["Instances"][0]
    b = ec2.run_instances(ImageId=world["idle"], InstanceType="t1.micro", MinCount=1,
                          MaxCount=1)["Instances"][0]
    ia, ib = a["InstanceId"], b["InstanceId"]
    try:
        assert a["Placement"]["AvailabilityZone"] == "nubo-1a"
        ec2.get_waiter("instance_status_ok").wait(InstanceIds=[ia], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        st = ec2.describe_instance_status(InstanceIds=[ia])["InstanceStatuses"]
        assert len(st) == 1 and st[0]["InstanceId"] == ia
        assert st[0]["InstanceState"] == {"Code": 16, "Name": "running"}
        assert st[0]["InstanceStatus"]["Status"] == "ok" and st[0]["SystemStatus"]["Status"] == "ok"
        assert st[0]["AvailabilityZone"] == "nubo-1a"
        ec2.get_waiter("instance_running").wait(InstanceIds=[ib], WaiterConfig={"Delay": 1})
        ec2.stop_instances(InstanceIds=[ib], Force=True)
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[ib], WaiterConfig={"Delay": 1})
        # a stopped instance has a status only with IncludeAllInstances
        assert ec2.describe_instance_status(Filters=[{"Name": "instance-id", "Values": [ib]}])["InstanceStatuses"] == []
        st = ec2.describe_instance_status(InstanceIds=[ib], IncludeAllInstances=True)["InstanceStatuses"]
        assert [s["InstanceState"]["Name"] for s in st] == ["stopped"]
        # filters by id, type, image and zone
        f = lambda name, *v: instance_ids(ec2.describe_instances(Filters=[{"Name": name, "Values": list(v)}]))
        assert f("instance-id", ia) == [ia]
        assert f("instance-id", ia, ib) == sorted([ia, ib])
        both = f("instance-id", ia, ib)
        assert ia in f("instance-type", "t1.nano") and ib not in f("instance-type", "t1.nano")
        assert ib in f("instance-type", "t1.micro") and ia not in f("instance-type", "t1.micro")
        assert ia in f("image-id", world["tiny"]) and ib not in f("image-id", world["tiny"])
        assert ib in f("image-id", world["idle"]) and ia not in f("image-id", world["idle"])
        assert set(both) <= set(f("availability-zone", "nubo-1a"))
        assert f("availability-zone", "nubo-1z") == []
        assert instance_ids(ec2.describe_instances(Filters=[
            {"Name": "instance-type", "Values": ["t1.micro"]},
            {"Name": "image-id", "Values": [world["idle"]]},
            {"Name": "instance-id", "Values": [ia, ib]}])) == [ib]
    finally:
        ec2.terminate_instances(InstanceIds=[ia, ib])


def test_register_and_deregister_image(world):
    ec2 = world["acme"].boto()
    blob = own_blob(world)
    with pytest.raises(ClientError) as e:  # checked, not made
        ec2.register_image(Name="registered", ImageLocation="blob:" + blob, KernelId=world["tiny"],
                           Description="from a blob", DryRun=True)
    assert code_of(e) == "DryRunOperation"
    assert not ec2.describe_images(Filters=[{"Name": "name", "Values": ["registered"]}])["Images"]
    img = ec2.register_image(Name="registered", ImageLocation="blob:" + blob,
                             KernelId=world["tiny"], Description="from a blob")["ImageId"]
    d = ec2.describe_images(ImageIds=[img])["Images"][0]
    assert d["Name"] == "registered" and d["Description"] == "from a blob"
    assert d["State"] == "available" and d["OwnerId"] == world["acme"].account_id
    assert d["KernelId"], "KernelId gives the new image the kernel image's kernel"
    with pytest.raises(ClientError) as e:
        ec2.register_image(Name="registered", ImageLocation="blob:" + blob)
    assert code_of(e) == "InvalidAMIName.Duplicate"
    with pytest.raises(ClientError) as e:
        ec2.deregister_image(ImageId=img, DryRun=True)
    assert code_of(e) == "DryRunOperation"
    assert ec2.describe_images(ImageIds=[img])["Images"]
    ec2.deregister_image(ImageId=img)
    with pytest.raises(ClientError) as e:
        ec2.describe_images(ImageIds=[img])
    assert code_of(e) == "InvalidAMIID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.deregister_image(ImageId=img)
    assert code_of(e) == "InvalidAMIID.NotFound"


def test_create_image_of_a_stopped_instance(world):
    ec2 = world["acme"].boto()
    iid = ec2.run_instances(ImageId=world["idle"], InstanceType="t1.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        ec2.stop_instances(InstanceIds=[iid], Force=True)
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        img = ec2.create_image(InstanceId=iid, Name="from-stopped")["ImageId"]
        ec2.get_waiter("image_available").wait(ImageIds=[img], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        d = ec2.describe_images(ImageIds=[img])["Images"][0]
        assert d["Name"] == "from-stopped" and d["State"] == "available"
        # the new image launches
        new = ec2.run_instances(ImageId=img, InstanceType="t1.nano", MinCount=1,
                                MaxCount=1)["Instances"][0]["InstanceId"]
        ec2.get_waiter("instance_running").wait(InstanceIds=[new], WaiterConfig={"Delay": 1})
        ec2.terminate_instances(InstanceIds=[new])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[new], WaiterConfig={"Delay": 1})
        ec2.deregister_image(ImageId=img)
    finally:
        ec2.terminate_instances(InstanceIds=[iid])


def test_make_public_then_private(world):
    acme, globex = world["acme"].boto(), world["globex"].boto()
    blob = own_blob(world)
    img = acme.register_image(Name="public-then-not", ImageLocation="blob:" + blob)["ImageId"]
    try:
        acme.modify_image_attribute(ImageId=img, LaunchPermission={"Add": [{"Group": "all"}]})
        assert globex.describe_images(ImageIds=[img])["Images"][0]["Public"] is True
        # a bad grantee among good ones changes nothing
        with pytest.raises(ClientError) as e:
            acme.modify_image_attribute(ImageId=img, LaunchPermission={
                "Remove": [{"Group": "all"}], "Add": [{"UserId": "acct-nobody"}]})
        assert code_of(e) == "InvalidUserID.Malformed"
        assert globex.describe_images(ImageIds=[img])["Images"][0]["Public"] is True
        acme.modify_image_attribute(ImageId=img, LaunchPermission={"Remove": [{"Group": "all"}]})
        attr = acme.describe_image_attribute(ImageId=img, Attribute="launchPermission")
        assert attr["LaunchPermissions"] == []
        assert acme.describe_images(ImageIds=[img])["Images"][0]["Public"] is False
        with pytest.raises(ClientError) as e:
            globex.describe_images(ImageIds=[img])
        assert code_of(e) == "InvalidAMIID.NotFound"
        with pytest.raises(ClientError) as e:
            globex.run_instances(ImageId=img, InstanceType="t1.nano", MinCount=1, MaxCount=1)
        assert code_of(e) == "InvalidAMIID.NotFound"
    finally:
        acme.deregister_image(ImageId=img)


def test_dry_run_checks_parameters_and_ids(world):
    acme, globex, ro = world["acme"].boto(), world["globex"].boto(), world["acme_ro"].boto()
    iid = acme.run_instances(ImageId=world["idle"], InstanceType="t1.nano", MinCount=1,
                             MaxCount=1)["Instances"][0]["InstanceId"]
    ghost = "i-00000000000000000"
    try:
        acme.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        before = len(instance_ids(acme.describe_instances()))

        def dry(call, **kw):
            with pytest.raises(ClientError) as e:
                call(DryRun=True, **kw)
            return e.value.response["Error"]["Code"]
        # allowed: DryRunOperation, and nothing changes
        assert dry(acme.run_instances, ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1) == "DryRunOperation"
        assert dry(acme.stop_instances, InstanceIds=[iid]) == "DryRunOperation"
        assert dry(acme.reboot_instances, InstanceIds=[iid]) == "DryRunOperation"
        assert dry(acme.terminate_instances, InstanceIds=[iid]) == "DryRunOperation"
        assert dry(acme.create_tags, Resources=[iid], Tags=[{"Key": "dry", "Value": "1"}]) == "DryRunOperation"
        assert dry(acme.create_key_pair, KeyName="dry") == "DryRunOperation"
        assert dry(acme.describe_instances) == "DryRunOperation"
        assert len(instance_ids(acme.describe_instances())) == before
        inst = acme.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["State"]["Name"] == "running" and not inst.get("Tags")
        assert "dry" not in [k["KeyName"] for k in acme.describe_key_pairs()["KeyPairs"]]
        # the parameters and ids are checked first, as EC2 does
        assert dry(acme.stop_instances, InstanceIds=[ghost]) == "InvalidInstanceID.NotFound"
        assert dry(acme.stop_instances, InstanceIds=[iid, ghost]) == "InvalidInstanceID.NotFound"
        assert dry(globex.stop_instances, InstanceIds=[iid]) == "InvalidInstanceID.NotFound"
        assert dry(globex.terminate_instances, InstanceIds=[iid]) == "InvalidInstanceID.NotFound"
        assert dry(globex.create_tags, Resources=[iid], Tags=[{"Key": "a", "Value": "b"}]) == "InvalidInstanceID.NotFound"
        assert dry(acme.run_instances, ImageId="ami-00000000000000000", InstanceType="t1.nano", MinCount=1, MaxCount=1) == "InvalidAMIID.NotFound"
        assert dry(acme.run_instances, ImageId=world["tiny"], InstanceType="t9.none", MinCount=1, MaxCount=1) == "InvalidParameterValue"
        assert dry(acme.modify_instance_attribute, InstanceId=iid, InstanceType={"Value": "t1.micro"}) == "IncorrectInstanceState"
        assert dry(globex.create_image, InstanceId=iid, Name="dry") == "InvalidInstanceID.NotFound"
        assert dry(globex.deregister_image, ImageId=world["tiny"]) == "InvalidAMIID.NotFound"
        acme.create_key_pair(KeyName="drydup")
        assert dry(acme.create_key_pair, KeyName="drydup") == "InvalidKeyPair.Duplicate"
        acme.delete_key_pair(KeyName="drydup")
        # a read-only user is not authorized, dry or not
        assert dry(ro.stop_instances, InstanceIds=[iid]) == "UnauthorizedOperation"
        assert dry(ro.run_instances, ImageId=world["tiny"], InstanceType="t1.nano", MinCount=1, MaxCount=1) == "UnauthorizedOperation"
        assert dry(ro.describe_instances) == "DryRunOperation"
    finally:
        acme.terminate_instances(InstanceIds=[iid])


def test_reboot_checks_every_id_before_acting(world):
    ec2 = world["acme"].boto()
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=world["idle"], InstanceType="t1.nano",
                                                       MinCount=2, MaxCount=2)["Instances"]]
    up, down = ids
    try:
        ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 1})
        ec2.stop_instances(InstanceIds=[down], Force=True)
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[down], WaiterConfig={"Delay": 1})
        seq = signed_native(world["acme"], "GET", f"/v1/instances/{up}")["reboot_seq"]
        for order in ([up, down], [down, up]):
            with pytest.raises(ClientError) as e:
                ec2.reboot_instances(InstanceIds=order)
            assert code_of(e) == "IncorrectInstanceState" and down in e.value.response["Error"]["Message"]
            assert "rebooted" in e.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as e:
            ec2.reboot_instances(InstanceIds=[up, "i-00000000000000000"])
        assert code_of(e) == "InvalidInstanceID.NotFound"
        assert signed_native(world["acme"], "GET", f"/v1/instances/{up}")["reboot_seq"] == seq, \
            "a refused RebootInstances rebooted nothing"
        ec2.reboot_instances(InstanceIds=[up])
        assert signed_native(world["acme"], "GET", f"/v1/instances/{up}")["reboot_seq"] == seq + 1
        ec2.terminate_instances(InstanceIds=[down])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[down], WaiterConfig={"Delay": 1})
    finally:
        ec2.terminate_instances(InstanceIds=ids)
