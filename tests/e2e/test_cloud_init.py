"""Debian's real cloud-init against nubo's metadata service: a full Debian 12
guest (images/debian, cloud-init with `datasource_list: [ Ec2, None ]`)
launched through the EC2 API with a key pair and `#cloud-config` user-data,
read back through its serial console: the hostname, the key in the default
user's and root's authorized_keys, the user-data's effect, the instance id
and data source cloud-init saw.

The image is built by tests/run before pytest (debootstrap needs the Debian
archive, which the tests' private network namespace cannot reach); without
a build of the current images/debian the test is skipped and says so.

Run: /usr/bin/python3 -m pytest tests/e2e/test_cloud_init.py (as root).
"""

import os
import re
import shutil
import subprocess

import pytest

import tinyimage
from conftest import ConsoleSession, make_tenant

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which(tinyimage.QEMU) is None, reason="no qemu-system-x86_64"),
]

USER_DATA = """#cloud-config
write_files:
  - path: /root/nubo-user-data
    content: "written by cloud-config\\n"
runcmd:
  - [ sh, -c, 'echo "runcmd: $((6 * 7)) $(cloud-init query instance_id)" > /root/nubo-runcmd' ]
"""



@pytest.fixture(scope="module")
def debian_image():
    try:
        return tinyimage.build_debian(cached_only=True)
    except FileNotFoundError as e:
        pytest.skip(f"{e}: build it outside the tests' network namespace first "
                    "(tests/run does, or /usr/bin/python3 tests/e2e/tinyimage.py build-debian)")


def test_cloud_init_reads_metadata(cloud, debian_image, tmp_path):
    img = cloud.import_tiny(debian_image, name="debian")
    admin = make_tenant(cloud, "admin")
    admin.boto().modify_image_attribute(ImageId=img["id"],
                                        LaunchPermission={"Add": [{"Group": "all"}]})
    acme = make_tenant(cloud, "ci-acme")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci@nubo",
                    "-f", str(tmp_path / "id")], check=True)
    pub = (tmp_path / "id.pub").read_text().split()
    acme.aws("ec2", "import-key-pair", "--key-name", "cikey",
             "--public-key-material", f"fileb://{tmp_path / 'id.pub'}")
    (tmp_path / "ud.yaml").write_text(USER_DATA)
    res = acme.aws("ec2", "run-instances", "--image-id", img["id"], "--instance-type", "t1.small",
                   "--key-name", "cikey", "--user-data", f"file://{tmp_path / 'ud.yaml'}")
    iid = res["Instances"][0]["InstanceId"]
    try:
        acme.aws("ec2", "wait", "instance-running", "--instance-ids", iid)
        inst = acme.aws("ec2", "describe-instances", "--instance-ids", iid)[
            "Reservations"][0]["Instances"][0]
        want_host = inst["PrivateDnsName"].split(".")[0]
        assert re.fullmatch(r"ip-\d+-\d+-\d+-\d+", want_host), inst["PrivateDnsName"]
        # cloud-init's last word; about a minute under TCG on an idle host
        m = acme.wait_console(iid, r"Cloud-init v\. (\S+) finished at .*Datasource (\S+)",
                               timeout=900)
        print(f"\ncloud-init {m.group(1)} finished, datasource {m.group(2)}")
        assert m.group(2).startswith("DataSourceEc2"), m.group(0)

        con = ConsoleSession(cloud, iid, tenant=acme)
        try:
            con.wait_prompt(timeout=120)
            out, rc = con.run("hostname", timeout=60)
            assert rc == 0 and out.strip() == want_host
            out, rc = con.run("cloud-init query instance_id; cloud-init query ds.meta_data.instance-id",
                              timeout=120)
            assert rc == 0 and out.split() == [iid, iid]
            # the key pair, for the default user and (behind a "login as" prefix) root
            out, rc = con.run("cat /home/debian/.ssh/authorized_keys", timeout=60)
            assert rc == 0 and f"{pub[0]} {pub[1]}" in out
            out, rc = con.run("cat /root/.ssh/authorized_keys", timeout=60)
            assert rc == 0 and pub[1] in out
            # the user-data: its files and its commands
            out, rc = con.run("cat /root/nubo-user-data /root/nubo-runcmd", timeout=60)
            assert rc == 0
            assert out.replace("\r", "").split("\n")[:2] == ["written by cloud-config",
                                                              f"runcmd: 42 {iid}"]
            out, rc = con.run("cloud-init status --long", timeout=120)
            assert "status: done" in out and "DataSourceEc2" in out, out
        finally:
            con.close()
    finally:
        acme.aws("ec2", "terminate-instances", "--instance-ids", iid)
        acme.boto().get_waiter("instance_terminated").wait(InstanceIds=[iid])
