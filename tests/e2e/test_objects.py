"""Object storage: the S3-compatible API (boto3 and the AWS CLI against --endpoint-url),
bucket notifications that invoke functions, functions that use boto3 unchanged from inside
their environments, and recursive-loop protection."""

import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import AWS, BIN, ROOT, create, unique, zip_files
from test_versions import Recorder, recorder, wait_for  # noqa: F401  (recorder is a fixture)

ACCOUNT = "000000000000"


def err(e):
    return e.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def s3(server):
    return server.s3()


def test_buckets_objects_and_metadata(s3):
    bucket = unique("b").lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=bucket)
    assert err(e) == "BucketAlreadyOwnedByYou"
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="Not_A_Bucket")
    assert err(e) == "InvalidBucketName"
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=bucket)

    body = b"hello, objects\n" * 1000
    put = s3.put_object(Bucket=bucket, Key="a/b.txt", Body=body, ContentType="text/plain", Metadata={"Owner": "me"})
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), "a single PUT's ETag is its MD5"
    head = s3.head_object(Bucket=bucket, Key="a/b.txt")
    assert head["ContentLength"] == len(body) and head["ContentType"] == "text/plain"
    assert head["Metadata"] == {"owner": "me"} and head["ETag"] == put["ETag"]
    got = s3.get_object(Bucket=bucket, Key="a/b.txt", Range="bytes=5-9")
    assert got["Body"].read() == body[5:10] and got["ContentRange"] == f"bytes 5-9/{len(body)}"
    assert s3.get_object(Bucket=bucket, Key="a/b.txt", Range="bytes=-4")["Body"].read() == body[-4:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="a/b.txt", Range=f"bytes={len(body) + 10}-")
    assert err(e) == "InvalidRange"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="missing")
    assert err(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="x", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert err(e) == "BadDigest"

    # If-None-Match: * is checked in the commit: of racing writers, exactly one creates it.
    import concurrent.futures

    def create_once(i):
        try:
            s3.put_object(Bucket=bucket, Key="lock", Body=str(i).encode(), IfNoneMatch="*")
            return True
        except ClientError as e:
            assert e.response["Error"]["Code"] == "PreconditionFailed"
            return False

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert sum(ex.map(create_once, range(16))) == 1
    s3.delete_object(Bucket=bucket, Key="lock")

    copied = s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "a/b.txt"})
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"]
    assert s3.head_object(Bucket=bucket, Key="copy.txt")["Metadata"] == {"owner": "me"}, "COPY keeps metadata"
    s3.copy_object(
        Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "a/b.txt"},
        MetadataDirective="REPLACE", Metadata={"k": "v"}, ContentType="application/x-test",
    )
    h = s3.head_object(Bucket=bucket, Key="copy.txt")
    assert h["Metadata"] == {"k": "v"} and h["ContentType"] == "application/x-test"

    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=bucket)
    assert err(e) == "BucketNotEmpty"
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a/b.txt"}, {"Key": "copy.txt"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["a/b.txt", "copy.txt", "never"]
    s3.delete_object(Bucket=bucket, Key="never")  # absent keys delete fine, as in S3
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=bucket)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_listing_with_prefix_delimiter_and_continuation(s3):
    bucket = unique("list").lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    keys = [f"logs/2026/{i:03d}.log" for i in range(25)] + ["logs/readme", "top", "z/1", "z/2"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=7, **kw)
        pages += 1
        seen += [o["Key"] for o in page.get("Contents", [])]
        assert page["KeyCount"] <= 7
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys) and pages == 5
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["logs/", "z/"]
    assert [o["Key"] for o in top["Contents"]] == ["top"]
    logs = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", Delimiter="/")
    assert [p["Prefix"] for p in logs["CommonPrefixes"]] == ["logs/2026/"]
    assert [o["Key"] for o in logs["Contents"]] == ["logs/readme"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="logs/readme")
    assert [o["Key"] for o in after["Contents"]] == ["top", "z/1", "z/2"]
    # Pages that end on a common prefix continue after everything under it.
    small = s3.list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=1)
    assert small["CommonPrefixes"][0]["Prefix"] == "logs/"
    rest = s3.list_objects_v2(Bucket=bucket, Delimiter="/", ContinuationToken=small["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]] == ["top"] and [p["Prefix"] for p in rest["CommonPrefixes"]] == ["z/"]
    # Version 1 markers that end a page on a common prefix continue after it.
    v1, marker = [], ""
    while True:
        page = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1, Marker=marker)
        v1 += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
        assert len(v1) < 10, v1
    assert v1 == ["logs/", "top", "z/"]
    # The paginator (version 1 markers) sees the same keys.
    v1 = [o["Key"] for p in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 4}) for o in p.get("Contents", [])]
    assert v1 == sorted(keys)


def test_hostile_keys_are_stored_and_listed_safely(server, s3):
    bucket = unique("hostile").lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    keys = [
        "../../../../etc/stratus-escape", "a/../../b", "/leading/slash", "dir//double", "%", "%2F%2e%2e",
        "spa ce+plus", "ünïcødé/日本語/🙂", "new\nline", "x" * 1024, "a?b#c&d=e", ".", "..",
    ]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    for k in keys:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode(), k
    listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in p["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())
    url = s3.list_objects_v2(Bucket=bucket, EncodingType="url")
    assert len(url["Contents"]) == len(keys)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="y" * 1025, Body=b"")
    assert err(e) == "KeyTooLongError"
    # Keys never become paths: nothing was written outside the data directory, and the
    # stored files are named by random ids.
    assert not pathlib.Path("/etc/stratus-escape").exists()
    for f in (server.data_dir / "objects" / "blobs").rglob("*"):
        assert f.name.isalnum(), f


def test_aws_cli_sync_round_trip(server, tmp_path):
    key, secret = server.access_key()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"}

    def aws(*args, codes=(0,)):
        out = subprocess.run([str(AWS), "--endpoint-url", server.s3_endpoint, *args],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode in codes, out.stderr
        return out.stdout

    bucket = unique("sync").lower().replace("_", "-")
    src, back = tmp_path / "src", tmp_path / "back"
    for i in range(30):
        p = src / f"d{i % 4}" / f"sub{i % 3}" / f"file {i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(i * 3001))
    (src / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024))  # multipart in the CLI
    (src / "ünï %.txt").write_text("unicode")
    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "sync", str(src), f"s3://{bucket}/tree", "--only-show-errors")
    assert aws("s3", "sync", str(src), f"s3://{bucket}/tree", "--dryrun") == "", "a second sync has nothing to do"
    aws("s3", "sync", f"s3://{bucket}/tree", str(back), "--only-show-errors")
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(back) for p in back.rglob("*") if p.is_file())
    for f in files:
        assert (src / f).read_bytes() == (back / f).read_bytes(), f
    listing = aws("s3", "ls", f"s3://{bucket}/tree/", "--recursive")
    assert len(listing.strip().splitlines()) == len(files)
    aws("s3", "rm", f"s3://{bucket}/tree", "--recursive", "--only-show-errors")
    # `ls` finding nothing exits with 1, as against AWS.
    assert aws("s3", "ls", f"s3://{bucket}/tree/", "--recursive", codes=(1,)).strip() == ""
    aws("s3", "rb", f"s3://{bucket}")


def test_multipart_upload_of_100_mb(server, s3, tmp_path):
    bucket = unique("mpu").lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1024 * 1024))
    chunk = 8 * 1024 * 1024
    config = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=4)
    s3.upload_file(str(src), bucket, "big", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == 100 * 1024 * 1024
    assert head["ETag"].endswith('-13"'), "a multipart object's ETag counts its parts"
    dst = tmp_path / "big.back"
    s3.download_file(bucket, "big", str(dst), Config=config)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(src) == digest(dst)
    # An upload aborted half way leaves nothing behind.
    up = s3.create_multipart_upload(Bucket=bucket, Key="aborted")
    s3.upload_part(Bucket=bucket, Key="aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1024)
    assert s3.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["UploadId"] == up["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=up["UploadId"])
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="aborted", UploadId=up["UploadId"])
    assert err(e) == "NoSuchUpload"
    # Parts other than the last must be at least 5 MB.
    up = s3.create_multipart_upload(Bucket=bucket, Key="small-parts")
    parts = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="small-parts", UploadId=up["UploadId"], PartNumber=n, Body=b"y" * 100)["ETag"]}
        for n in (1, 2)
    ]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="small-parts", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    assert err(e) == "EntityTooSmall"


def test_oversized_uploads_fail_and_leave_nothing(fresh_server, tmp_path):
    s = fresh_server("--max-object-size", str(1024 * 1024))
    s3 = s.s3()
    s3.create_bucket(Bucket="limits")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="limits", Key="too-big", Body=b"z" * (1024 * 1024 + 1))
    assert err(e) == "EntityTooLarge"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="limits", Key="too-big")
    s3.put_object(Bucket="limits", Key="fits", Body=b"z" * (1024 * 1024))
    staging = list((s.data_dir / "objects" / "staging").iterdir())
    blobs = [f for f in (s.data_dir / "objects" / "blobs").rglob("*") if f.is_file()]
    assert staging == [] and len(blobs) == 1, "the refused upload left no file"


def test_unsigned_and_wrongly_signed_requests(fresh_server):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    s = fresh_server("--auth", "enforced")
    anon = boto3.client("s3", endpoint_url=s.s3_endpoint, region_name="us-east-1", config=Config(signature_version=UNSIGNED))
    with pytest.raises(ClientError) as e:
        anon.list_buckets()
    assert err(e) == "AccessDenied"
    key, _ = s.access_key()
    wrong = boto3.client("s3", endpoint_url=s.s3_endpoint, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key="wrong" * 8)
    with pytest.raises(ClientError) as e:
        wrong.list_buckets()
    assert err(e) == "SignatureDoesNotMatch"
    # Another account cannot see or touch this account's bucket.
    subprocess.run([str(BIN), "accounts", "create", "--id", "111111111111", "--name", "other", "--data-dir", str(s.data_dir)],
                   capture_output=True, text=True, check=True)
    mine, theirs = s.s3(), s.s3("111111111111")
    mine.create_bucket(Bucket="mine")
    mine.put_object(Bucket="mine", Key="k", Body=b"secret")
    with pytest.raises(ClientError) as e:
        theirs.get_object(Bucket="mine", Key="k")
    assert err(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        theirs.create_bucket(Bucket="mine")
    assert err(e) == "BucketAlreadyExists"
    assert [b["Name"] for b in theirs.list_buckets()["Buckets"]] == []


def form_upload(s3, bucket, key, data):
    """A browser-style POST upload with a policy presigned by boto3."""
    post = s3.generate_presigned_post(bucket, key, ExpiresIn=300)
    boundary = "----stratus" + os.urandom(8).hex()
    parts = []
    for k, v in post["fields"].items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(post["url"], data=b"".join(parts), method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status in (200, 204), r.status


def notify(s3, bucket, arn, events=("s3:ObjectCreated:*",), prefix=None, suffix=None, config_id="cfg"):
    rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v]
    conf = {"Id": config_id, "LambdaFunctionArn": arn, "Events": list(events)}
    if rules:
        conf["Filter"] = {"Key": {"FilterRules": rules}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": [conf]}
    )


RECORD_EVENT = (
    "import json, os, urllib.request\n"
    "def handler(e, c):\n"
    "    body = json.dumps({'event': e, 'fn': c.function_name, 'trace': os.environ.get('_X_AMZN_TRACE_ID')}).encode()\n"
    "    urllib.request.urlopen(urllib.request.Request(os.environ['RECORDER'], data=body, method='POST'), timeout=10)\n"
)


def test_notifications_invoke_the_function_with_s3_records(server, lam, s3, recorder):
    name = unique("onupload")
    create(lam, name, zip_files({"app.py": RECORD_EVENT}), Environment={"Variables": {"RECORDER": recorder.url}})
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    bucket = unique("inbox").lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        notify(s3, bucket, arn, events=("s3:ObjectRestore:*",))
    assert err(e) == "InvalidArgument"
    notify(s3, bucket, arn, events=("s3:ObjectCreated:*", "s3:ObjectRemoved:*"), prefix="in/", suffix=".jpg")
    got = s3.get_bucket_notification_configuration(Bucket=bucket)["LambdaFunctionConfigurations"][0]
    assert got["LambdaFunctionArn"] == arn and got["Id"] == "cfg"
    assert sorted(r["Value"] for r in got["Filter"]["Key"]["FilterRules"]) == [".jpg", "in/"]

    put = s3.put_object(Bucket=bucket, Key="in/Happy Face.jpg", Body=b"j" * 1024)
    s3.put_object(Bucket=bucket, Key="out/ignored.jpg", Body=b"x")
    s3.put_object(Bucket=bucket, Key="in/ignored.png", Body=b"x")
    s3.copy_object(Bucket=bucket, Key="in/copy.jpg", CopySource={"Bucket": bucket, "Key": "in/Happy Face.jpg"})
    s3.delete_object(Bucket=bucket, Key="in/copy.jpg")
    form_upload(s3, bucket, "in/posted.jpg", b"from a browser form")
    assert s3.get_object(Bucket=bucket, Key="in/posted.jpg")["Body"].read() == b"from a browser form"
    records = wait_for(lambda: [r for r in recorder.snapshot() if r["fn"] == name] if len(recorder.snapshot()) >= 4 else None, timeout=30)
    assert records and len(records) == 4, recorder.snapshot()
    time.sleep(1)
    assert len([r for r in recorder.snapshot() if r["fn"] == name]) == 4, "filtered keys invoke nothing"
    by_name = {r["event"]["Records"][0]["eventName"]: r["event"]["Records"][0] for r in records}
    assert set(by_name) == {"ObjectCreated:Put", "ObjectCreated:Copy", "ObjectRemoved:Delete", "ObjectCreated:Post"}
    rec = by_name["ObjectCreated:Put"]
    assert rec["eventSource"] == "aws:s3" and rec["eventVersion"] == "2.1" and rec["awsRegion"] == "us-east-1"
    assert rec["s3"]["bucket"]["name"] == bucket and rec["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{bucket}"
    assert rec["s3"]["object"]["key"] == "in/Happy+Face.jpg", "keys are URL-encoded"
    assert rec["s3"]["object"]["size"] == 1024 and rec["s3"]["object"]["eTag"] == put["ETag"].strip('"')
    assert rec["s3"]["configurationId"] == "cfg" and rec["requestParameters"]["sourceIPAddress"] == "127.0.0.1"
    assert rec["userIdentity"]["principalId"].startswith("AWS:AKIA")
    assert rec["responseElements"]["x-amz-request-id"] == put["ResponseMetadata"]["RequestId"]
    seq = [by_name[n]["s3"]["object"]["sequencer"] for n in ("ObjectCreated:Put", "ObjectCreated:Copy", "ObjectRemoved:Delete")]
    assert seq == sorted(seq), "sequencers order the changes"
    assert "size" not in by_name["ObjectRemoved:Delete"]["s3"]["object"]
    # Each one is billed as an S3-triggered invocation.
    def rows():
        with urllib.request.urlopen(f"{server.endpoint}/_stratus/ledger?limit=1000") as r:
            return [row for row in json.load(r)["records"] if row["function"] == name]

    assert wait_for(lambda: len(rows()) == 4, timeout=10), rows()
    assert all(r["trigger"] == "s3" for r in rows()), rows()


def test_events_survive_a_crash_between_upload_and_invocation(fresh_server, recorder):
    s = fresh_server()
    lam, s3 = s.client(), s.s3()
    name = unique("durable")
    create(lam, name, zip_files({"app.py": RECORD_EVENT}), Environment={"Variables": {"RECORDER": recorder.url}})
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    s3.create_bucket(Bucket="durable")
    notify(s3, "durable", arn)
    # Killed right after the last acknowledged upload: whatever had not reached the function
    # yet must reach it after the restart.
    for i in range(20):
        s3.put_object(Bucket="durable", Key=f"k{i}", Body=b"v")
    s.stop(kill=True)
    s2 = fresh_server(data_dir=s.data_dir)
    got = wait_for(lambda: len({r["event"]["Records"][0]["s3"]["object"]["key"] for r in recorder.snapshot()}) == 20, timeout=60)
    keys = {r["event"]["Records"][0]["s3"]["object"]["key"] for r in recorder.snapshot()}
    assert got, f"missing: {sorted({f'k{i}' for i in range(20)} - keys)}"
    assert s2.s3().get_object(Bucket="durable", Key="k19")["Body"].read() == b"v"


@pytest.fixture(scope="session")
def pillow_boto3_zip():
    """boto3 and Pillow for Python 3.11, as a layer (built once, cached under target/)."""
    cache = ROOT / "target" / "e2e-cache" / "layer-pillow-boto3-py311.zip"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        site = cache.parent / "layer-build" / "python"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site), "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux2014_x86_64", "pillow", "boto3"],
            check=True, timeout=600,
        )
        tmp = cache.with_suffix(".tmp")
        subprocess.run(["python3", "-m", "zipfile", "-c", str(tmp), "python"], cwd=site.parent, check=True)
        tmp.rename(cache)
    return cache.read_bytes()


THUMBNAILER = (
    "import io, urllib.parse, boto3\n"
    "from PIL import Image\n"
    "s3 = boto3.client('s3')\n"
    "def handler(event, context):\n"
    "    for r in event['Records']:\n"
    "        bucket = r['s3']['bucket']['name']\n"
    "        key = urllib.parse.unquote_plus(r['s3']['object']['key'])\n"
    "        img = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)['Body'].read()))\n"
    "        img.thumbnail((128, 128))\n"
    "        out = io.BytesIO()\n"
    "        img.save(out, 'JPEG')\n"
    "        s3.put_object(Bucket=bucket + '-thumbs', Key='thumb-' + key, Body=out.getvalue(), ContentType='image/jpeg')\n"
    "    return 'ok'\n"
)


def test_image_pipeline_with_pillow_and_boto3_inside_the_function(server, lam, s3, pillow_boto3_zip):
    from PIL import Image

    layer = lam.publish_layer_version(LayerName=unique("pillow"), Content={"ZipFile": pillow_boto3_zip})["LayerVersionArn"]
    name = unique("thumbnailer")
    create(lam, name, zip_files({"app.py": THUMBNAILER}), Layers=[layer], Timeout=60, MemorySize=512)
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    bucket = unique("photos").lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket + "-thumbs")
    notify(s3, bucket, arn, suffix=".jpg")
    photo = io.BytesIO()
    Image.new("RGB", (1024, 768), (200, 30, 90)).save(photo, "JPEG")
    s3.put_object(Bucket=bucket, Key="my photo.jpg", Body=photo.getvalue(), ContentType="image/jpeg")

    def thumb():
        try:
            return s3.get_object(Bucket=bucket + "-thumbs", Key="thumb-my photo.jpg")["Body"].read()
        except ClientError:
            return None

    data = wait_for(thumb, timeout=90)
    assert data, f"no thumbnail; function log:\n{lam_log(server, name)}"
    img = Image.open(io.BytesIO(data))
    assert img.size == (128, 96) and img.format == "JPEG"


def lam_log(server, name):
    return server.cli("logs", name, check=False).stdout[-3000:]


LOOPING = (
    "import os, urllib.parse, boto3\n"
    "s3 = boto3.client('s3')\n"
    "def handler(event, context):\n"
    "    r = event['Records'][0]\n"
    "    n = int(urllib.parse.unquote_plus(r['s3']['object']['key']).split('-')[1])\n"
    "    s3.put_object(Bucket=r['s3']['bucket']['name'], Key=f'gen-{n + 1}', Body=os.environ.get('_X_AMZN_TRACE_ID', '').encode())\n"
)


def test_a_function_writing_into_its_own_trigger_bucket_is_stopped(fresh_server, pillow_boto3_zip):
    s = fresh_server()
    lam, s3 = s.client(), s.s3()
    layer = lam.publish_layer_version(LayerName="boto3", Content={"ZipFile": pillow_boto3_zip})["LayerVersionArn"]
    name = unique("loop")
    create(lam, name, zip_files({"app.py": LOOPING}), Layers=[layer], Timeout=60)
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    s3.create_bucket(Bucket="loop")
    notify(s3, "loop", arn)
    s3.put_object(Bucket="loop", Key="gen-0", Body=b"start")
    assert wait_for(lambda: "recursive loop detected" in s.server_log(), timeout=120), lam_log(s, name)
    time.sleep(2)
    keys = sorted((o["Key"] for o in s3.list_objects_v2(Bucket="loop")["Contents"]), key=lambda k: int(k.split("-")[1]))
    assert keys == [f"gen-{i}" for i in range(17)], "16 invocations, then the loop is stopped"
    assert b"Lineage=" in s3.get_object(Bucket="loop", Key="gen-16")["Body"].read()


def test_readers_never_see_half_an_object(server, s3):
    import concurrent.futures

    bucket = unique("atomic").lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    versions = {bytes([i]) * (3 * 1024 * 1024): i for i in range(1, 6)}
    s3.put_object(Bucket=bucket, Key="k", Body=next(iter(versions)))
    stop = time.time() + 4
    seen = set()

    def write():
        while time.time() < stop:
            for body in versions:
                s3.put_object(Bucket=bucket, Key="k", Body=body)

    def read():
        while time.time() < stop:
            body = s3.get_object(Bucket=bucket, Key="k")["Body"].read()
            assert body in versions, f"a torn read: {len(body)} bytes"
            seen.add(versions[body])

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futures = [ex.submit(write), ex.submit(read), ex.submit(read)]
        for f in futures:
            f.result()
    assert len(seen) > 1, "the readers saw the object change"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs as a full disk")
def test_a_full_disk_fails_the_upload_and_leaves_nothing(fresh_server, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        s = fresh_server(data_dir=mnt / "data")
        s3 = s.s3()
        s3.create_bucket(Bucket="full")
        s3.put_object(Bucket="full", Key="before", Body=b"kept")
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="full", Key="huge", Body=os.urandom(32 * 1024 * 1024))
        assert err(e) == "InsufficientStorage"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert list((s.data_dir / "objects" / "staging").iterdir()) == [], "the partial upload was removed"
        with pytest.raises(ClientError):
            s3.head_object(Bucket="full", Key="huge")
        assert s3.get_object(Bucket="full", Key="before")["Body"].read() == b"kept"
        s3.put_object(Bucket="full", Key="after", Body=b"still works")
        assert s3.get_object(Bucket="full", Key="after")["Body"].read() == b"still works"
        s.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
