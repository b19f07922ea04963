"""The instance metadata service through the whole of nubo: tiny guests of
two accounts (both in their default VPC, 172.31.0.0/16, so likely the same
address) launched through the EC2 API with key pairs and user-data; each
guest's init reads 169.254.169.254 and the answers are its own; IMDSv2
required refuses the plain GET; tokens are checked.

Needs the tenant network datapath (a metadata listener per VPC namespace).
Run: /usr/bin/python3 -m pytest tests/e2e/test_metadata.py (as root).
"""

import re
import subprocess

import pytest

from conftest import ConsoleSession, make_tenant

MD = "http://169.254.169.254/latest"
# a token from the guest's shell: busybox wget cannot PUT, nc can
TOKEN_CMD = (r"printf 'PUT /latest/api/token HTTP/1.0\r\n"
             r"X-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n' | "
             r"nc 169.254.169.254 80 | tail -n 1")


@pytest.fixture(scope="module")
def world(cloud, tmp_path_factory):
    admin = make_tenant(cloud, "admin")
    tiny = cloud.api("GET", "/v1/images/tiny")["id"]
    admin.boto().modify_image_attribute(ImageId=tiny, LaunchPermission={"Add": [{"Group": "all"}]})
    tmp = tmp_path_factory.mktemp("md")
    w = {"tiny": tiny}
    for name in ("mdacme", "mdglobex"):
        t = make_tenant(cloud, name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                        "-f", str(tmp / name)], check=True)
        t.aws("ec2", "import-key-pair", "--key-name", f"{name}-key",
              "--public-key-material", f"fileb://{tmp / (name + '.pub')}")
        w[name] = t
        w[name + ".pub"] = (tmp / (name + ".pub")).read_text().strip()
    return w



def launch(t, tiny, key, user_data, **kw):
    ec2 = t.boto()
    r = ec2.run_instances(ImageId=tiny, InstanceType="t1.nano", MinCount=1, MaxCount=1,
                          KeyName=key, UserData=user_data, **kw)
    return r["Instances"][0]["InstanceId"]


def test_guests_read_their_own_metadata(cloud, world):
    tiny = world["tiny"]
    a = launch(world["mdacme"], tiny, "mdacme-key",
               "#!/bin/sh\necho \"ud-acme-$((40 + 2)) $(hostname)\"\n")
    g = launch(world["mdglobex"], tiny, "mdglobex-key",
               "#!/bin/sh\necho \"ud-globex-$((40 + 2))\"\n",
               MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 1})
    try:
        ia = world["mdacme"].boto().describe_instances(InstanceIds=[a])[
            "Reservations"][0]["Instances"][0]
        host_a = ia["PrivateDnsName"].split(".")[0]
        # the init: a token, then its id, hostname and key (nubo's answers)
        acme, globex = world["mdacme"], world["mdglobex"]
        acme.wait_console(a, re.escape(f"metadata service (IMDSv2): instance {a}, "
                                        f"hostname {host_a}, key yes"), timeout=180)
        acme.wait_console(a, f"ud-acme-42 {host_a}", timeout=30)
        globex.wait_console(g, re.escape(f"metadata service (IMDSv2): instance {g},") +
                           r" hostname ip-\S+, key yes", timeout=180)
        globex.wait_console(g, "ud-globex-42", timeout=30)
        acme.wait_console(a, f"NUBO-READY {a} ", timeout=60)
        globex.wait_console(g, f"NUBO-READY {g} ", timeout=60)

        con = ConsoleSession(cloud, a, tenant=acme)
        try:
            con.wait_prompt(timeout=60)
            out, rc = con.run(f"wget -q -O - {MD}/meta-data/instance-id", timeout=30)
            assert rc == 0 and out.strip() == a
            out, rc = con.run(f"wget -q -O - {MD}/meta-data/public-keys/0/openssh-key", timeout=30)
            assert rc == 0 and out.split()[:2] == world["mdacme.pub"].split()[:2]
            out, rc = con.run(f"wget -q -O - {MD}/meta-data/public-keys/", timeout=30)
            assert rc == 0 and out.strip() == "0=mdacme-key"
            out, rc = con.run("cat /root/.ssh/authorized_keys", timeout=30)
            assert out.split()[:2] == world["mdacme.pub"].split()[:2]
            out, rc = con.run(f"wget -q -O - {MD}/dynamic/instance-identity/document", timeout=30)
            assert rc == 0 and f'"instanceId": "{a}"' in out
            # a forged token is refused even though tokens are optional here
            out, rc = con.run(f"wget -q -O - --header 'X-aws-ec2-metadata-token: "
                              f"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' {MD}/meta-data/instance-id",
                              timeout=30)
            assert rc != 0 and a not in out
        finally:
            con.close()

        con = ConsoleSession(cloud, g, tenant=globex)
        try:
            con.wait_prompt(timeout=60)
            # required: the plain GET is refused
            out, rc = con.run(f"wget -S -O - {MD}/meta-data/instance-id 2>&1", timeout=30)
            assert rc != 0 and "401" in out and g not in out
            out, rc = con.run(f"t=$({TOKEN_CMD}); wget -q -O - --header "
                              f"\"X-aws-ec2-metadata-token: $t\" {MD}/meta-data/instance-id",
                              timeout=30)
            assert rc == 0 and out.strip() == g
            out, rc = con.run(f"t=$({TOKEN_CMD}); wget -q -O - --header "
                              f"\"X-aws-ec2-metadata-token: $t\" "
                              f"{MD}/meta-data/public-keys/0/openssh-key", timeout=30)
            assert rc == 0 and out.split()[:2] == world["mdglobex.pub"].split()[:2]
        finally:
            con.close()
    finally:
        world["mdacme"].boto().terminate_instances(InstanceIds=[a])
        world["mdglobex"].boto().terminate_instances(InstanceIds=[g])
        world["mdacme"].boto().get_waiter("instance_terminated").wait(InstanceIds=[a])
        world["mdglobex"].boto().get_waiter("instance_terminated").wait(InstanceIds=[g])
