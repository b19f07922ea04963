"""DescribeInstances answers built from the store in one query (instances
joined with their tags) and shared between concurrent identical requests:
each instance shows exactly its own tags, and requests that arrive while the
same answer is being built all get the current answer. Real daemons, real
idle guests, boto3."""

import subprocess
import threading

import pytest

from conftest import make_tenant

COUNT = 50


@pytest.fixture(scope="module")
def fleet(cloud, tmp_path_factory):
    """COUNT idle instances of a tenant of their own, each with tags of its
    own (none on every fifth one)."""
    tmp = tmp_path_factory.mktemp("describe")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "idle.qcow2"), "16M"],
                   check=True)
    tenant = make_tenant(cloud, "tagger")
    ec2 = tenant.boto()
    image = cloud.api("POST", "/v1/images", {"name": "idle-describe",
                                             "disk_blob": cloud.upload(tmp / "idle.qcow2")})["id"]
    make_tenant(cloud, "admin").boto().modify_image_attribute(
        ImageId=image, LaunchPermission={"Add": [{"Group": "all"}]})
    ids = []
    for _ in range(COUNT // 10):
        r = ec2.run_instances(ImageId=image, InstanceType="t1.nano", MinCount=10, MaxCount=10)
        ids += [i["InstanceId"] for i in r["Instances"]]
    want = {}
    for k, iid in enumerate(ids):
        tags = []
        if k % 5:
            tags = [{"Key": "own", "Value": iid}, {"Key": f"k{k}", "Value": f"v{k}"}]
            if k % 3 == 0:
                tags.append({"Key": "Name", "Value": f"web & <{k}>"})
            ec2.create_tags(Resources=[iid], Tags=tags)
        want[iid] = sorted((t["Key"], t["Value"]) for t in tags)
    yield tenant, ids, want
    for k in range(0, len(ids), 10):
        ec2.terminate_instances(InstanceIds=ids[k:k + 10])
    # gone before the module's cloud stops (it gives its QEMUs 20 s)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids,
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 180})


def tags_of(answer):
    return {i["InstanceId"]: sorted((t["Key"], t["Value"]) for t in i.get("Tags", []))
            for r in answer["Reservations"] for i in r["Instances"]}


def test_each_instance_shows_exactly_its_own_tags(fleet):
    tenant, ids, want = fleet
    ec2 = tenant.boto()
    # every instance of the account in one answer
    assert tags_of(ec2.describe_instances()) == want
    # in pages of 7 (the same query, cut)
    got = {}
    for page in ec2.get_paginator("describe_instances").paginate(
            PaginationConfig={"PageSize": 7}):
        got.update(tags_of(page))
    assert got == want
    # by id, in an order of the caller's (each instance loaded on its own)
    some = ids[::-1][:12]
    assert tags_of(ec2.describe_instances(InstanceIds=some)) == {i: want[i] for i in some}
    # filtered on a tag only one instance has, and on tag-key
    k = 7
    assert tags_of(ec2.describe_instances(
        Filters=[{"Name": f"tag:k{k}", "Values": [f"v{k}"]}])) == {ids[k]: want[ids[k]]}
    assert set(tags_of(ec2.describe_instances(
        Filters=[{"Name": "tag-key", "Values": ["own"]}]))) == {i for i in ids if want[i]}
    # another account sees none of them
    other = make_tenant(tenant.cloud, "tagger-other").boto()
    assert not set(tags_of(other.describe_instances())) & set(ids)


def test_distinct_requests_between_changes_show_the_current_rows(fleet):
    """Requests that differ while the store is unchanged share one read of
    the rows (an instance snapshot with each item rendered once); a change
    makes the next one read them again."""
    tenant, ids, want = fleet
    ec2 = tenant.boto()
    # distinct filters, the same epoch: each answer exactly its instance
    for k in (1, 2, 3, 4, 6):
        got = tags_of(ec2.describe_instances(
            Filters=[{"Name": "instance-id", "Values": [ids[k]]}]))
        assert got == {ids[k]: want[ids[k]]}
    # a change, then requests none of which was asked before
    ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "fresh", "Value": "yes"}])
    try:
        assert set(tags_of(ec2.describe_instances(
            Filters=[{"Name": "tag-key", "Values": ["fresh"]}]))) == {ids[1]}
        got = tags_of(ec2.describe_instances(
            Filters=[{"Name": "instance-id", "Values": [ids[1], ids[2]]},
                     {"Name": "instance-state-name", "Values": ["pending", "running",
                                                             "stopped"]}]))
        assert got == {ids[1]: sorted(want[ids[1]] + [("fresh", "yes")]),
                       ids[2]: want[ids[2]]}
        # pages of a filtered answer: the same rows, cut
        pages = {}
        for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "tag-key", "Values": ["own"]}],
                PaginationConfig={"PageSize": 6}):
            pages.update(tags_of(page))
        assert set(pages) == {i for i in ids if want[i]}
        assert pages[ids[1]] == sorted(want[ids[1]] + [("fresh", "yes")])
    finally:
        ec2.delete_tags(Resources=[ids[1]], Tags=[{"Key": "fresh"}])
    assert tags_of(ec2.describe_instances(InstanceIds=[ids[1]])) == {ids[1]: want[ids[1]]}
    assert tags_of(ec2.describe_instances(
        Filters=[{"Name": "tag-key", "Values": ["fresh"]}])) == {}


def test_concurrent_identical_describes_all_get_the_current_answer(fleet):
    tenant, ids, want = fleet
    admin = tenant.boto()
    clients = [tenant.boto() for _ in range(8)]
    for rnd in range(4):
        # a change: every cached answer is stale, so the 8 requests below
        # miss together; one builds the answer, the others wait for it
        admin.create_tags(Resources=ids, Tags=[{"Key": "round", "Value": f"r{rnd}"}])
        expect = {i: sorted(want[i] + [("round", f"r{rnd}")]) for i in ids}
        start = threading.Barrier(len(clients))
        answers, errors = [None] * len(clients), []

        def call(n):
            try:
                start.wait(30)
                answers[n] = tags_of(clients[n].describe_instances())
            except Exception as e:  # reported below, with the others
                errors.append(repr(e))

        threads = [threading.Thread(target=call, args=(n,)) for n in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert all(a == expect for a in answers), f"round {rnd}: a stale or wrong answer"
    admin.delete_tags(Resources=ids, Tags=[{"Key": "round"}])
