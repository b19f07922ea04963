"""Tenant networks through the EC2 API with the real awscli and boto3: VPCs,
subnets, security groups, elastic IPs, network interfaces, metadata options,
the default VPC, isolation between accounts, bad input, and what a
terminate gives back. Only API-level facts: guest connectivity is the
datapath's tests' (docs/network.md)."""

import ipaddress
import re
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import make_tenant, wait_until


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def instances_of(ec2, **kw):
    return [i for r in ec2.describe_instances(**kw)["Reservations"] for i in r["Instances"]]


@pytest.fixture(scope="module")
def world(cloud, tmp_path_factory):
    """acme (admin, read-only) and globex; "idle" (an empty disk: its guests
    cost almost no CPU) public."""
    admin = make_tenant(cloud, "admin")
    tmp = tmp_path_factory.mktemp("vpc")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "idle.qcow2"), "16M"],
                   check=True)
    idle = cloud.api("POST", "/v1/images", {"name": "idle", "disk_blob": cloud.upload(tmp / "idle.qcow2")})["id"]
    admin.boto().modify_image_attribute(ImageId=idle, LaunchPermission={"Add": [{"Group": "all"}]})
    return {
        "acme": make_tenant(cloud, "acme"),
        "acme_ro": make_tenant(cloud, "acme", "auditor", "read-only"),
        "globex": make_tenant(cloud, "globex"),
        "idle": idle,
        "tmp": tmp,
    }


def run_one(tenant, image, **kw):
    return tenant.boto().run_instances(ImageId=image, InstanceType="t1.nano", MinCount=1,
                                       MaxCount=1, **kw)["Instances"][0]


def state_of(ec2, iid):
    return instances_of(ec2, InstanceIds=[iid])[0]["State"]["Name"]


def terminate_and_wait(cloud, ec2, iid):
    ec2.terminate_instances(InstanceIds=[iid])
    wait_until(lambda: state_of(ec2, iid) == "terminated", 180, f"{iid} terminated")


def test_default_vpc_and_launch_without_network(cloud, world):
    ec2 = world["globex"].boto()
    vpcs = ec2.describe_vpcs()["Vpcs"]
    assert len(vpcs) == 1
    vpc = vpcs[0]
    assert vpc["IsDefault"] is True and vpc["CidrBlock"] == "172.31.0.0/16"
    assert vpc["State"] == "available" and vpc["OwnerId"] == world["globex"].account_id
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert len(subnets) == 1
    sub = subnets[0]
    assert sub["CidrBlock"] == "172.31.0.0/20" and sub["DefaultForAz"] is True
    assert sub["AvailabilityZone"] == "nubo-1a"
    assert sub["AvailableIpAddressCount"] == 4096 - 5
    groups = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    assert len(groups) == 1 and groups[0]["VpcId"] == vpc["VpcId"]
    g = groups[0]
    # EC2's default group: all from itself in, all out
    assert g["IpPermissions"] == [{"IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [],
                                   "PrefixListIds": [],
                                   "UserIdGroupPairs": [{"GroupId": g["GroupId"],
                                                         "GroupName": "default",
                                                         "UserId": world["globex"].account_id}]}]
    assert g["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]

    inst = run_one(world["globex"], world["idle"])
    iid = inst["InstanceId"]
    assert inst["SubnetId"] == sub["SubnetId"] and inst["VpcId"] == vpc["VpcId"]
    ip = inst["PrivateIpAddress"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("172.31.0.0/20")
    assert ip == "172.31.0.4", "the lowest free address of a new subnet (.1-.3 reserved)"
    d = instances_of(ec2, InstanceIds=[iid])[0]
    assert d["PrivateIpAddress"] == ip
    assert d["PrivateDnsName"] == "ip-172-31-0-4.nubo-1.compute.internal"
    assert d["PublicDnsName"] == "" and "PublicIpAddress" not in d
    assert [x["GroupName"] for x in d["SecurityGroups"]] == ["default"]
    nic = d["NetworkInterfaces"][0]
    assert nic["PrivateIpAddress"] == ip and nic["Attachment"]["DeviceIndex"] == 0
    assert nic["MacAddress"].startswith("52:54:00:")
    assert nic["SubnetId"] == sub["SubnetId"] and nic["Status"] == "in-use"
    assert d["MetadataOptions"]["HttpTokens"] == "optional"
    assert d["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert d["MetadataOptions"]["HttpEndpoint"] == "enabled"
    # the address is taken: the subnet counts it
    sub2 = ec2.describe_subnets(SubnetIds=[sub["SubnetId"]])["Subnets"][0]
    assert sub2["AvailableIpAddressCount"] == 4096 - 6
    enis = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["NetworkInterfaces"]
    assert len(enis) == 1 and enis[0]["NetworkInterfaceId"] == nic["NetworkInterfaceId"]
    assert enis[0]["PrivateDnsName"] == d["PrivateDnsName"]
    terminate_and_wait(cloud, ec2, iid)


def test_user_story_with_awscli(cloud, world):
    acme = world["acme"]
    vpc = acme.aws("ec2", "create-vpc", "--cidr-block", "10.20.0.0/16")["Vpc"]
    vpc_id = vpc["VpcId"]
    assert vpc["CidrBlock"] == "10.20.0.0/16" and vpc["IsDefault"] is False
    sub = acme.aws("ec2", "create-subnet", "--vpc-id", vpc_id, "--cidr-block", "10.20.1.0/24")["Subnet"]
    assert sub["VpcId"] == vpc_id and sub["AvailableIpAddressCount"] == 251
    sg = acme.aws("ec2", "create-security-group", "--group-name", "web", "--vpc-id", vpc_id,
                  "--description", "web")["GroupId"]
    acme.aws("ec2", "authorize-security-group-ingress", "--group-id", sg, "--protocol", "tcp",
             "--port", "80", "--cidr", "0.0.0.0/0")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(world["tmp"] / "id")],
                   check=True)
    acme.aws("ec2", "import-key-pair", "--key-name", "mykey",
             "--public-key-material", f"fileb://{world['tmp'] / 'id.pub'}")
    (world["tmp"] / "init.sh").write_text("#!/bin/sh\necho hello\n")
    res = acme.aws("ec2", "run-instances", "--image-id", world["idle"], "--instance-type", "t1.nano",
                   "--count", "1", "--subnet-id", sub["SubnetId"], "--security-group-ids", sg,
                   "--key-name", "mykey", "--user-data", f"file://{world['tmp'] / 'init.sh'}")
    iid = res["Instances"][0]["InstanceId"]
    assert res["Instances"][0]["PrivateIpAddress"] == "10.20.1.4"
    eip = acme.aws("ec2", "allocate-address")
    assert eip["Domain"] == "vpc" and eip["AllocationId"].startswith("eipalloc-")
    assert ipaddress.ip_address(eip["PublicIp"]) in ipaddress.ip_network("198.51.100.0/24")
    assoc = acme.aws("ec2", "associate-address", "--instance-id", iid, "--allocation-id",
                     eip["AllocationId"])["AssociationId"]
    assert assoc.startswith("eipassoc-")

    ec2 = acme.boto()
    d = instances_of(ec2, InstanceIds=[iid])[0]
    assert d["VpcId"] == vpc_id and d["SubnetId"] == sub["SubnetId"]
    assert ipaddress.ip_address(d["PrivateIpAddress"]) in ipaddress.ip_network("10.20.1.0/24")
    assert d["PrivateDnsName"] == "ip-10-20-1-4.nubo-1.compute.internal"
    assert d["PublicIpAddress"] == eip["PublicIp"]
    assert d["PublicDnsName"] == "ec2-" + eip["PublicIp"].replace(".", "-") + ".nubo-1.compute.nubo"
    assert d["SecurityGroups"] == [{"GroupId": sg, "GroupName": "web"}]
    assert d["NetworkInterfaces"][0]["Association"]["PublicIp"] == eip["PublicIp"]
    assert d["KeyName"] == "mykey"
    # the filters of the network
    for name, value in [("vpc-id", vpc_id), ("subnet-id", sub["SubnetId"]),
                        ("private-ip-address", "10.20.1.4"), ("ip-address", eip["PublicIp"]),
                        ("instance.group-id", sg), ("instance.group-name", "web")]:
        got = [i["InstanceId"] for i in instances_of(ec2, Filters=[{"Name": name, "Values": [value]}])]
        assert got == [iid], name
    assert instances_of(ec2, Filters=[{"Name": "vpc-id", "Values": ["vpc-00000000000000000"]}]) == []
    # the rule as awscli shows it
    g = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]
    assert g["GroupName"] == "web" and g["VpcId"] == vpc_id and g["Description"] == "web"
    assert g["IpPermissions"] == [{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                                   "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [],
                                   "PrefixListIds": [], "UserIdGroupPairs": []}]
    by_filter = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["web"]},
                                                      {"Name": "vpc-id", "Values": [vpc_id]}])
    assert [x["GroupId"] for x in by_filter["SecurityGroups"]] == [sg]
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [sg]}])
    ingress = [r for r in rules["SecurityGroupRules"] if not r["IsEgress"]]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIpv4"]) for r in ingress] == \
        [("tcp", 80, 80, "0.0.0.0/0")]
    # boto3's IpPermissions: a group source and a port range, then revoke
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8100,
         "UserIdGroupPairs": [{"GroupId": sg}], "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    g = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]
    p8000 = [p for p in g["IpPermissions"] if p.get("FromPort") == 8000][0]
    assert p8000["UserIdGroupPairs"][0]["GroupId"] == sg
    assert p8000["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}]
    ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8100,
         "UserIdGroupPairs": [{"GroupId": sg}], "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    acme.aws("ec2", "revoke-security-group-ingress", "--group-id", sg, "--protocol", "tcp",
             "--port", "80", "--cidr", "0.0.0.0/0")
    assert ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["IpPermissions"] == []
    # egress: the default allow-all, revoked and put back
    ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["IpPermissionsEgress"] == []
    ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    # addresses and interfaces
    addr = ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]
    assert addr["AssociationId"] == assoc and addr["InstanceId"] == iid
    assert addr["PrivateIpAddress"] == "10.20.1.4"
    assert ec2.describe_addresses(PublicIps=[eip["PublicIp"]])["Addresses"][0]["AllocationId"] == eip["AllocationId"]
    assert [a["AllocationId"] for a in ec2.describe_addresses(
        Filters=[{"Name": "instance-id", "Values": [iid]}])["Addresses"]] == [eip["AllocationId"]]
    eni = ec2.describe_network_interfaces(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkInterfaces"]
    assert len(eni) == 1 and eni[0]["Association"]["PublicIp"] == eip["PublicIp"]
    assert eni[0]["Groups"] == [{"GroupId": sg, "GroupName": "web"}]
    assert eni[0]["Attachment"]["InstanceId"] == iid
    # disassociate, then release
    ec2.disassociate_address(AssociationId=assoc)
    d = instances_of(ec2, InstanceIds=[iid])[0]
    assert "PublicIpAddress" not in d and d["PublicDnsName"] == ""
    ec2.release_address(AllocationId=eip["AllocationId"])
    assert ec2.describe_addresses()["Addresses"] == []
    # the VPC goes once everything in it has
    terminate_and_wait(cloud, ec2, iid)
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_subnet(SubnetId=sub["SubnetId"])
    ec2.delete_vpc(VpcId=vpc_id)
    assert [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []


def test_run_instances_network_parameters(cloud, world):
    ec2 = world["acme"].boto()
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.5.0/24")["Subnet"]["SubnetId"]
    a = ec2.create_security_group(GroupName="a", Description="a", VpcId=vpc)["GroupId"]
    b = ec2.create_security_group(GroupName="b", Description="b", VpcId=vpc)["GroupId"]
    # NetworkInterfaces[0] with groups and a fixed address; metadata options
    inst = run_one(world["acme"], world["idle"],
                   NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": sub, "Groups": [a, b],
                                       "PrivateIpAddress": "10.30.5.77"}],
                   MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 3})
    iid = inst["InstanceId"]
    assert inst["PrivateIpAddress"] == "10.30.5.77" and inst["SubnetId"] == sub
    assert sorted(g["GroupId"] for g in inst["SecurityGroups"]) == sorted([a, b])
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 3
    # the same address again is in use
    with pytest.raises(ClientError) as e:
        run_one(world["acme"], world["idle"], SubnetId=sub, PrivateIpAddress="10.30.5.77")
    assert code_of(e) == "InvalidIPAddress.InUse"
    with pytest.raises(ClientError) as e:
        run_one(world["acme"], world["idle"], SubnetId=sub, PrivateIpAddress="10.30.6.1")
    assert code_of(e) == "InvalidParameterValue" and "10.30.6.1" in str(e.value)
    # a group of another VPC, and a group name that is not in the default VPC
    with pytest.raises(ClientError) as e:
        run_one(world["acme"], world["idle"], SecurityGroupIds=[a])
    assert code_of(e) == "InvalidParameter"
    with pytest.raises(ClientError) as e:
        run_one(world["acme"], world["idle"], SecurityGroups=["a"])
    assert code_of(e) == "InvalidGroup.NotFound"
    # the metadata options change, and a bad one is refused
    out = ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens="optional",
                                               HttpPutResponseHopLimit=2)
    assert out["InstanceId"] == iid
    assert out["InstanceMetadataOptions"]["HttpTokens"] == "optional"
    assert out["InstanceMetadataOptions"]["HttpPutResponseHopLimit"] == 2
    d = instances_of(ec2, InstanceIds=[iid])[0]
    assert d["MetadataOptions"]["HttpTokens"] == "optional"
    assert instances_of(ec2, Filters=[{"Name": "metadata-options.http-tokens", "Values": ["optional"]},
                                      {"Name": "vpc-id", "Values": [vpc]}])[0]["InstanceId"] == iid
    with pytest.raises(ClientError) as e:
        ec2.modify_instance_metadata_options(InstanceId=iid, HttpPutResponseHopLimit=65)
    assert code_of(e) == "InvalidParameterValue"
    # a group in use cannot go; a group referenced by another's rule neither
    ec2.authorize_security_group_ingress(GroupId=a, IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": b}]}])
    terminate_and_wait(cloud, ec2, iid)
    with pytest.raises(ClientError) as e:
        ec2.delete_security_group(GroupId=b)
    assert code_of(e) == "DependencyViolation"
    ec2.delete_security_group(GroupId=a)
    ec2.delete_security_group(GroupId=b)
    ec2.delete_subnet(SubnetId=sub)
    ec2.delete_vpc(VpcId=vpc)


def test_bad_input(cloud, world):
    ec2 = world["acme"].boto()

    def err(fn, **kw):
        with pytest.raises(ClientError) as e:
            fn(**kw)
        return code_of(e), e.value.response["Error"]["Message"]

    assert err(ec2.create_vpc, CidrBlock="10.0.0.0/15")[0] == "InvalidVpc.Range"
    assert err(ec2.create_vpc, CidrBlock="10.0.0.0/29")[0] == "InvalidVpc.Range"
    c, m = err(ec2.create_vpc, CidrBlock="10.0.0.1/16")
    assert c == "InvalidParameterValue" and "10.0.0.1/16" in m
    c, m = err(ec2.create_vpc, CidrBlock="bogus")
    assert c == "InvalidParameterValue" and "bogus" in m
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.0.0/24")["Subnet"]["SubnetId"]
    assert err(ec2.create_subnet, VpcId=vpc, CidrBlock="10.40.0.128/25")[0] == "InvalidSubnet.Conflict"
    assert err(ec2.create_subnet, VpcId=vpc, CidrBlock="10.41.0.0/24")[0] == "InvalidSubnet.Range"
    assert err(ec2.create_subnet, VpcId=vpc, CidrBlock="10.40.0.0/15")[0] == "InvalidSubnet.Range"
    assert err(ec2.create_subnet, VpcId="vpc-00000000000000000", CidrBlock="10.40.1.0/24")[0] == \
        "InvalidVpcID.NotFound"
    sg = ec2.create_security_group(GroupName="x", Description="x", VpcId=vpc)["GroupId"]
    assert err(ec2.create_security_group, GroupName="x", Description="x", VpcId=vpc)[0] == \
        "InvalidGroup.Duplicate"
    perm = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]
    assert err(ec2.revoke_security_group_ingress, GroupId=sg, IpPermissions=perm)[0] == \
        "InvalidPermission.NotFound"
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=perm)
    assert err(ec2.authorize_security_group_ingress, GroupId=sg, IpPermissions=perm)[0] == \
        "InvalidPermission.Duplicate"
    c, m = err(ec2.authorize_security_group_ingress, GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 90, "ToPort": 80, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    assert c == "InvalidParameterValue"
    c, m = err(ec2.authorize_security_group_ingress, GroupId=sg, IpPermissions=[
        {"IpProtocol": "gre", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    assert c == "InvalidParameterValue" and "gre" in m
    c, m = err(ec2.authorize_security_group_ingress, GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "IpRanges": [{"CidrIp": "300.0.0.0/8"}]}])
    assert c == "InvalidParameterValue" and "300.0.0.0/8" in m
    c, m = err(ec2.authorize_security_group_ingress, GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
    assert c == "InvalidParameterValue" and "IPv6" in m
    c, m = err(ec2.run_instances, ImageId=world["idle"], MinCount=1, MaxCount=1,
               NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": sub},
                                  {"DeviceIndex": 1, "SubnetId": sub}])
    assert c == "InvalidParameterValue"
    # nothing of a call with one bad rule is kept
    with pytest.raises(ClientError):
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
            {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "bad"}]}])
    g = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]
    assert [p["IpProtocol"] for p in g["IpPermissions"]] == ["tcp"]
    default = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                    {"Name": "group-name", "Values": ["default"]}])
    assert err(ec2.delete_security_group, GroupId=default["SecurityGroups"][0]["GroupId"])[0] == \
        "CannotDelete"
    assert err(ec2.delete_vpc, VpcId=vpc)[0] == "DependencyViolation"
    # an address cannot be released while associated
    inst = run_one(world["acme"], world["idle"], SubnetId=sub)
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=inst["InstanceId"])
    assert err(ec2.release_address, AllocationId=eip["AllocationId"])[0] == "InvalidIPAddress.InUse"
    # moving it needs AllowReassociation
    other = run_one(world["acme"], world["idle"], SubnetId=sub)
    assert err(ec2.associate_address, AllocationId=eip["AllocationId"],
               InstanceId=other["InstanceId"])[0] == "Resource.AlreadyAssociated"
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=other["InstanceId"],
                          AllowReassociation=True)
    assert instances_of(ec2, InstanceIds=[other["InstanceId"]])[0]["PublicIpAddress"] == eip["PublicIp"]
    assert "PublicIpAddress" not in instances_of(ec2, InstanceIds=[inst["InstanceId"]])[0]
    assert err(ec2.delete_subnet, SubnetId=sub)[0] == "DependencyViolation"
    assert err(ec2.disassociate_address, AssociationId="eipassoc-00000000000000000")[0] == \
        "InvalidAssociationID.NotFound"
    for i in (inst, other):
        terminate_and_wait(cloud, ec2, i["InstanceId"])
    ec2.release_address(AllocationId=eip["AllocationId"])
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_subnet(SubnetId=sub)
    ec2.delete_vpc(VpcId=vpc)


def test_address_limit(cloud, world):
    ec2 = world["globex"].boto()
    got = [ec2.allocate_address(Domain="vpc") for _ in range(5)]
    assert len({a["PublicIp"] for a in got}) == 5
    with pytest.raises(ClientError) as e:
        ec2.allocate_address(Domain="vpc")
    assert code_of(e) == "AddressLimitExceeded"
    for a in got:
        ec2.release_address(AllocationId=a["AllocationId"])
    assert ec2.describe_addresses()["Addresses"] == []
    # a cloud admin sets the account's own limit (nubo account quota); the
    # account's use shows
    out = cloud.cli("account", "quota", "globex", "--addresses", "1").stdout
    assert re.search(r"^addresses\s+0\s+1\s*$", out, re.M), out
    one = ec2.allocate_address(Domain="vpc")
    with pytest.raises(ClientError) as e:
        ec2.allocate_address(Domain="vpc")
    assert code_of(e) == "AddressLimitExceeded"
    q = cloud.api("GET", "/v1/accounts/globex/quotas")
    assert q["limits"]["addresses"] == 1 and q["usage"]["addresses"] == 1
    ec2.release_address(AllocationId=one["AllocationId"])
    cloud.api("PUT", "/v1/accounts/globex/quotas", {"addresses": 5})


def test_isolation_and_read_only(cloud, world):
    """globex against acme's VPC, subnet, group, address and interface:
    NotFound as for one that does not exist; acme's read-only user: every
    change refused, every Describe answered."""
    acme = world["acme"].boto()
    vpc = acme.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    sub = acme.create_subnet(VpcId=vpc, CidrBlock="10.50.1.0/24")["Subnet"]["SubnetId"]
    sg = acme.create_security_group(GroupName="iso", Description="iso", VpcId=vpc)["GroupId"]
    inst = run_one(world["acme"], world["idle"], SubnetId=sub, SecurityGroupIds=[sg])
    iid = inst["InstanceId"]
    eip = acme.allocate_address(Domain="vpc")
    assoc = acme.associate_address(AllocationId=eip["AllocationId"], InstanceId=iid)["AssociationId"]
    eni = inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
    perm = [{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "IpRanges": [{"CidrIp": "1.0.0.0/8"}]}]

    g = world["globex"].boto()
    cases = [
        ("InvalidVpcID.NotFound", g.describe_vpcs, {"VpcIds": [vpc]}),
        ("InvalidVpcID.NotFound", g.delete_vpc, {"VpcId": vpc}),
        ("InvalidVpcID.NotFound", g.create_subnet, {"VpcId": vpc, "CidrBlock": "10.50.2.0/24"}),
        ("InvalidVpcID.NotFound", g.create_security_group,
         {"GroupName": "x", "Description": "x", "VpcId": vpc}),
        ("InvalidSubnetID.NotFound", g.describe_subnets, {"SubnetIds": [sub]}),
        ("InvalidSubnetID.NotFound", g.delete_subnet, {"SubnetId": sub}),
        ("InvalidSubnetID.NotFound", g.run_instances,
         {"ImageId": world["idle"], "MinCount": 1, "MaxCount": 1, "SubnetId": sub}),
        ("InvalidGroup.NotFound", g.run_instances,
         {"ImageId": world["idle"], "MinCount": 1, "MaxCount": 1, "SecurityGroupIds": [sg]}),
        ("InvalidGroup.NotFound", g.describe_security_groups, {"GroupIds": [sg]}),
        ("InvalidGroup.NotFound", g.delete_security_group, {"GroupId": sg}),
        ("InvalidGroup.NotFound", g.authorize_security_group_ingress, {"GroupId": sg, "IpPermissions": perm}),
        ("InvalidGroup.NotFound", g.authorize_security_group_egress, {"GroupId": sg, "IpPermissions": perm}),
        ("InvalidGroup.NotFound", g.revoke_security_group_ingress, {"GroupId": sg, "IpPermissions": perm}),
        ("InvalidGroup.NotFound", g.revoke_security_group_egress, {"GroupId": sg, "IpPermissions": perm}),
        ("InvalidAllocationID.NotFound", g.describe_addresses, {"AllocationIds": [eip["AllocationId"]]}),
        ("InvalidAllocationID.NotFound", g.release_address, {"AllocationId": eip["AllocationId"]}),
        ("InvalidAllocationID.NotFound", g.associate_address,
         {"AllocationId": eip["AllocationId"], "InstanceId": iid}),
        ("InvalidAssociationID.NotFound", g.disassociate_address, {"AssociationId": assoc}),
        ("InvalidNetworkInterfaceID.NotFound", g.describe_network_interfaces,
         {"NetworkInterfaceIds": [eni]}),
        ("InvalidInstanceID.NotFound", g.modify_instance_metadata_options,
         {"InstanceId": iid, "HttpTokens": "required"}),
        ("InvalidVpcID.NotFound", g.create_tags, {"Resources": [vpc], "Tags": [{"Key": "k", "Value": "v"}]}),
    ]
    for code, fn, kw in cases:
        with pytest.raises(ClientError) as e:
            fn(**kw)
        assert code_of(e) == code, (fn.__name__, e.value.response["Error"])
    # globex's own address cannot go onto acme's instance or interface
    mine = g.allocate_address(Domain="vpc")
    with pytest.raises(ClientError) as e:
        g.associate_address(AllocationId=mine["AllocationId"], InstanceId=iid)
    assert code_of(e) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as e:
        g.associate_address(AllocationId=mine["AllocationId"], NetworkInterfaceId=eni)
    assert code_of(e) == "InvalidNetworkInterfaceID.NotFound"
    g.release_address(AllocationId=mine["AllocationId"])
    # globex's lists do not show any of it
    assert vpc not in [v["VpcId"] for v in g.describe_vpcs()["Vpcs"]]
    assert sg not in [x["GroupId"] for x in g.describe_security_groups()["SecurityGroups"]]
    assert g.describe_addresses()["Addresses"] == []
    assert eni not in [n["NetworkInterfaceId"] for n in g.describe_network_interfaces()["NetworkInterfaces"]]

    ro = world["acme_ro"].boto()
    changes = [
        (ro.create_vpc, {"CidrBlock": "10.60.0.0/16"}),
        (ro.delete_vpc, {"VpcId": vpc}),
        (ro.create_subnet, {"VpcId": vpc, "CidrBlock": "10.50.9.0/24"}),
        (ro.delete_subnet, {"SubnetId": sub}),
        (ro.create_security_group, {"GroupName": "y", "Description": "y", "VpcId": vpc}),
        (ro.delete_security_group, {"GroupId": sg}),
        (ro.authorize_security_group_ingress, {"GroupId": sg, "IpPermissions": perm}),
        (ro.authorize_security_group_egress, {"GroupId": sg, "IpPermissions": perm}),
        (ro.revoke_security_group_ingress, {"GroupId": sg, "IpPermissions": perm}),
        (ro.revoke_security_group_egress, {"GroupId": sg, "IpPermissions": perm}),
        (ro.allocate_address, {"Domain": "vpc"}),
        (ro.associate_address, {"AllocationId": eip["AllocationId"], "InstanceId": iid}),
        (ro.disassociate_address, {"AssociationId": assoc}),
        (ro.release_address, {"AllocationId": eip["AllocationId"]}),
        (ro.modify_instance_metadata_options, {"InstanceId": iid, "HttpTokens": "required"}),
    ]
    for fn, kw in changes:
        with pytest.raises(ClientError) as e:
            fn(**kw)
        assert code_of(e) == "UnauthorizedOperation", fn.__name__
    assert vpc in [v["VpcId"] for v in ro.describe_vpcs()["Vpcs"]]
    assert ro.describe_subnets(SubnetIds=[sub])["Subnets"][0]["SubnetId"] == sub
    assert ro.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["GroupName"] == "iso"
    assert ro.describe_addresses()["Addresses"][0]["AssociationId"] == assoc
    assert ro.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["VpcId"] == vpc
    assert ro.describe_security_group_rules()["SecurityGroupRules"]
    # nothing changed: acme's address is still where it was
    assert acme.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]["InstanceId"] == iid
    acme.disassociate_address(AssociationId=assoc)
    acme.release_address(AllocationId=eip["AllocationId"])
    terminate_and_wait(cloud, acme, iid)
    acme.delete_security_group(GroupId=sg)
    acme.delete_subnet(SubnetId=sub)
    acme.delete_vpc(VpcId=vpc)


def test_terminate_releases_address_and_disassociates(cloud, world):
    ec2 = world["acme"].boto()
    vpc = ec2.create_vpc(CidrBlock="10.70.0.0/16")["Vpc"]["VpcId"]
    # a /28: .4 to .14 for instances
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.70.0.0/28")["Subnet"]["SubnetId"]
    first = run_one(world["acme"], world["idle"], SubnetId=sub)
    second = run_one(world["acme"], world["idle"], SubnetId=sub)
    assert (first["PrivateIpAddress"], second["PrivateIpAddress"]) == ("10.70.0.4", "10.70.0.5")
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=first["InstanceId"])
    terminate_and_wait(cloud, ec2, first["InstanceId"])
    # the elastic IP stays allocated, no longer associated
    addr = ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]
    assert addr["PublicIp"] == eip["PublicIp"]
    assert "AssociationId" not in addr and "InstanceId" not in addr
    # the terminated instance shows no address; its interface is gone
    d = instances_of(ec2, InstanceIds=[first["InstanceId"]])[0]
    assert d["State"]["Name"] == "terminated" and "PrivateIpAddress" not in d
    assert first["InstanceId"] not in [
        n.get("Attachment", {}).get("InstanceId")
        for n in ec2.describe_network_interfaces()["NetworkInterfaces"]]
    # the next launch takes the freed address
    third = run_one(world["acme"], world["idle"], SubnetId=sub)
    assert third["PrivateIpAddress"] == "10.70.0.4"
    # more than fit than the subnet has addresses for: MinCount 10 fails and
    # makes nothing; MinCount 1 makes the nine that fit
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=world["idle"], InstanceType="t1.nano", MinCount=10,
                          MaxCount=20, SubnetId=sub)
    assert code_of(e) == "InsufficientFreeAddressesInSubnet"
    more = ec2.run_instances(ImageId=world["idle"], InstanceType="t1.nano", MinCount=1,
                             MaxCount=20, SubnetId=sub)["Instances"]
    assert sorted(i["PrivateIpAddress"] for i in more) == sorted(f"10.70.0.{n}" for n in range(6, 15))
    before = len(instances_of(ec2))
    with pytest.raises(ClientError) as e:
        run_one(world["acme"], world["idle"], SubnetId=sub)
    assert code_of(e) == "InsufficientFreeAddressesInSubnet"
    assert len(instances_of(ec2)) == before
    assert ec2.describe_subnets(SubnetIds=[sub])["Subnets"][0]["AvailableIpAddressCount"] == 0
    ids = [second["InstanceId"], third["InstanceId"]] + [i["InstanceId"] for i in more]
    ec2.terminate_instances(InstanceIds=ids)
    wait_until(lambda: all(i["State"]["Name"] == "terminated"
                           for i in instances_of(ec2, InstanceIds=ids)), 300, "all terminated")
    assert ec2.describe_subnets(SubnetIds=[sub])["Subnets"][0]["AvailableIpAddressCount"] == 11
    ec2.release_address(AllocationId=eip["AllocationId"])
    ec2.delete_subnet(SubnetId=sub)
    ec2.delete_vpc(VpcId=vpc)


def test_tags_of_network_resources(world):
    ec2 = world["acme"].boto()
    vpc = ec2.create_vpc(CidrBlock="10.80.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "blue"}]}])["Vpc"]
    assert vpc["Tags"] == [{"Key": "Name", "Value": "blue"}]
    vid = vpc["VpcId"]
    got = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["blue"]}])["Vpcs"]
    assert [v["VpcId"] for v in got] == [vid]
    with pytest.raises(ClientError) as e:
        ec2.create_subnet(VpcId=vid, CidrBlock="10.80.1.0/24", TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": "k", "Value": "v"}]}])
    assert code_of(e) == "InvalidParameterValue"
    assert ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vid]}])["Subnets"] == []
    sub = ec2.create_subnet(VpcId=vid, CidrBlock="10.80.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="t", Description="t", VpcId=vid, TagSpecifications=[
        {"ResourceType": "security-group", "Tags": [{"Key": "team", "Value": "red"}]}])["GroupId"]
    eip = ec2.allocate_address(Domain="vpc", TagSpecifications=[
        {"ResourceType": "elastic-ip", "Tags": [{"Key": "use", "Value": "web"}]}])
    ec2.create_tags(Resources=[sub], Tags=[{"Key": "tier", "Value": "db"}])
    assert ec2.describe_subnets(SubnetIds=[sub])["Subnets"][0]["Tags"] == [{"Key": "tier", "Value": "db"}]
    assert ec2.describe_security_groups(
        Filters=[{"Name": "tag:team", "Values": ["red"]}])["SecurityGroups"][0]["GroupId"] == sg
    assert ec2.describe_addresses(
        Filters=[{"Name": "tag:use", "Values": ["web"]}])["Addresses"][0]["AllocationId"] == eip["AllocationId"]
    kinds = {t["ResourceId"]: t["ResourceType"] for t in ec2.describe_tags()["Tags"]}
    assert kinds[vid] == "vpc" and kinds[sub] == "subnet" and kinds[sg] == "security-group"
    assert kinds[eip["AllocationId"]] == "elastic-ip"
    ec2.release_address(AllocationId=eip["AllocationId"])
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_subnet(SubnetId=sub)
    ec2.delete_vpc(VpcId=vid)
    # the tags went with the resources
    left = {t["ResourceId"] for t in ec2.describe_tags()["Tags"]}
    assert not left & {vid, sub, sg, eip["AllocationId"]}
