"""The XML nubo writes, read back by the parsers its clients use.

tests/unit/test_xml.c checks that src/api/xml.c writes the files in
tests/data/query/xml byte for byte; here python's xml.etree and botocore's
own response parsers (what awscli and boto3 run) read those same files, and
every value must come back exactly as the C test put it in: escaping, UTF-8,
numbers, booleans, empty elements, and the two error formats.
"""

from datetime import datetime, timezone
from pathlib import Path
import xml.etree.ElementTree as ET

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "query" / "xml"
EC2_NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"

# the strings tests/unit/test_xml.c wrote (before escaping)
TAG_VALUE = "web <1> & \"two\" it's caf\u00e9 \u20ac"
NOTES_VALUE = "line 1\nline 2\r\ntab\there ]]> end"  # \x01 and \x7f were dropped


def read(name):
    return (DATA / name).read_bytes()


def test_etree_reads_describe_instances():
    root = ET.fromstring(read("describe_instances.xml"))
    assert root.tag == EC2_NS + "DescribeInstancesResponse"
    inst = root.find(f"{EC2_NS}reservationSet/{EC2_NS}item/{EC2_NS}instancesSet/{EC2_NS}item")
    assert inst.findtext(EC2_NS + "instanceId") == "i-0123456789abcdef0"
    assert inst.findtext(f"{EC2_NS}instanceState/{EC2_NS}code") == "16"
    assert inst.findtext(EC2_NS + "privateDnsName") == ""
    values = [i.findtext(EC2_NS + "value") for i in inst.find(EC2_NS + "tagSet")]
    assert values == [TAG_VALUE, NOTES_VALUE]


def test_etree_reads_error_documents():
    ec2 = ET.fromstring(read("ec2_error.xml"))
    assert ec2.tag == "Response"
    assert ec2.findtext("Errors/Error/Code") == "InvalidParameterValue"
    assert ec2.findtext("Errors/Error/Message") == "The filter 'x' is invalid"
    assert ec2.findtext("RequestID") == "req-1"
    s3 = ET.fromstring(read("s3_error.xml"))
    assert [c.tag for c in s3] == ["Code", "Message", "Resource", "RequestId"]
    assert s3.findtext("Resource") == "/my-bucket/photos/a&b.jpg"
    assert s3.findtext("RequestId") == "4442587FB7D0A2F9"


@pytest.fixture(scope="module")
def botocore_parts():
    botocore = pytest.importorskip("botocore")
    import botocore.parsers
    import botocore.session

    session = botocore.session.get_session()
    return botocore.parsers, session.get_service_model("ec2"), session.get_service_model("s3")


def test_botocore_parses_describe_instances(botocore_parts):
    parsers, ec2, _ = botocore_parts
    shape = ec2.operation_model("DescribeInstances").output_shape
    parsed = parsers.create_parser("ec2").parse(
        {"body": read("describe_instances.xml"), "headers": {}, "status_code": 200}, shape)
    assert parsed["ResponseMetadata"]["RequestId"] == "59dbff89-35bd-4eac-99ed-be587EXAMPLE"
    res = parsed["Reservations"]
    assert len(res) == 1 and res[0]["ReservationId"] == "r-0123456789abcdef0"
    assert res[0]["Groups"] == []
    inst = res[0]["Instances"][0]
    assert inst["InstanceId"] == "i-0123456789abcdef0"
    assert inst["State"] == {"Code": 16, "Name": "running"}
    assert inst["AmiLaunchIndex"] == 0
    assert inst["EbsOptimized"] is False and inst["SourceDestCheck"] is True
    assert inst["LaunchTime"] == datetime(2026, 11, 22, 5, 1, 2, tzinfo=timezone.utc)
    assert inst["Tags"] == [{"Key": "Name", "Value": TAG_VALUE},
                            {"Key": "notes", "Value": NOTES_VALUE}]


def test_botocore_parses_ec2_error(botocore_parts):
    parsers, ec2, _ = botocore_parts
    shape = ec2.operation_model("DescribeInstances").output_shape
    parsed = parsers.create_parser("ec2").parse(
        {"body": read("ec2_error.xml"), "headers": {}, "status_code": 400}, shape)
    assert parsed["Error"] == {"Code": "InvalidParameterValue",
                               "Message": "The filter 'x' is invalid"}
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"


def test_botocore_parses_s3_error(botocore_parts):
    parsers, _, s3 = botocore_parts
    shape = s3.operation_model("GetObject").output_shape
    parsed = parsers.create_parser("rest-xml").parse(
        {"body": read("s3_error.xml"), "headers": {}, "status_code": 404}, shape)
    # botocore drops the body's RequestId (it takes the header's)
    assert parsed["Error"] == {"Code": "NoSuchKey",
                               "Message": "The specified key does not exist.",
                               "Resource": "/my-bucket/photos/a&b.jpg"}
