"""The control-plane API, driven by boto3 and the AWS CLI: function lifecycle, pagination,
tags, account settings, and Lambda's exact errors for bad input (with nothing written)."""

import base64
import io
import json
import os
import urllib.error
import urllib.request
import zipfile

import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, create, invoke_json, unique, zip_files

HELLO = zip_files({"app.py": "def handler(event, context):\n    return {'v': 1, 'event': event}\n"})


def error_of(excinfo):
    e = excinfo.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def raw(server, method, path, body=None, headers=None):
    req = urllib.request.Request(server.endpoint + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_lifecycle_with_boto3(lam, server):
    name = unique("life")
    created = lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": HELLO},
        Description="first",
        Environment={"Variables": {"GREETING": "hi"}},
        Tags={"team": "core"},
    )
    assert created["State"] == "Pending" and created["StateReasonCode"] == "Creating"
    assert "LastUpdateStatus" not in created
    assert created["CodeSha256"] == base64.b64encode(__import__("hashlib").sha256(HELLO).digest()).decode()
    assert created["CodeSize"] == len(HELLO)
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    lam.get_waiter("function_active_v2").wait(FunctionName=name)

    got = lam.get_function(FunctionName=name)
    assert got["Configuration"]["State"] == "Active"
    assert got["Configuration"]["LastUpdateStatus"] == "Successful"
    assert got["Configuration"]["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert got["Tags"] == {"team": "core"}
    with urllib.request.urlopen(got["Code"]["Location"]) as r:
        assert r.read() == HELLO, "Code.Location downloads the deployment package"

    cfg = lam.get_function_configuration(FunctionName=name)
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["EphemeralStorage"]["Size"]) == (128, 3, 512)

    new_zip = zip_files({"app.py": "def handler(event, context):\n    return {'v': 2}\n"})
    upd = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert upd["LastUpdateStatus"] == "InProgress" and upd["RevisionId"] != cfg["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke_json(lam, name)[1] == {"v": 2}

    upd = lam.update_function_configuration(FunctionName=name, MemorySize=256, Timeout=10, Description="second")
    assert (upd["MemorySize"], upd["Timeout"], upd["Description"]) == (256, 10, "second")
    assert upd["Environment"] == {"Variables": {"GREETING": "hi"}}, "untouched settings are kept"

    lam.delete_function(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=name)
    assert error_of(e)[0] == "ResourceNotFoundException"


def test_lifecycle_with_the_aws_cli(server, tmp_path):
    name = unique("cli")
    z = tmp_path / "fn.zip"
    z.write_bytes(HELLO)
    out = server.aws(
        "lambda", "create-function", "--function-name", name, "--runtime", "python3.11",
        "--handler", "app.handler", "--role", ROLE, "--zip-file", f"fileb://{z}",
    )
    assert json.loads(out.stdout)["FunctionName"] == name
    server.aws("lambda", "wait", "function-active-v2", "--function-name", name)
    outfile = tmp_path / "out.json"
    out = server.aws("lambda", "invoke", "--function-name", name, "--payload", '{"a": 1}', str(outfile))
    assert json.loads(out.stdout)["StatusCode"] == 200
    assert json.loads(outfile.read_text()) == {"v": 1, "event": {"a": 1}}
    listed = json.loads(server.aws("lambda", "list-functions").stdout)
    assert name in [f["FunctionName"] for f in listed["Functions"]]
    server.aws("lambda", "delete-function", "--function-name", name)
    out = server.aws("lambda", "get-function", "--function-name", name, check=False)
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr


def test_list_functions_paginates(lam):
    names = sorted(unique("page") for _ in range(7))
    for n in names:
        lam.create_function(FunctionName=n, Runtime="python3.11", Role=ROLE, Handler="app.handler", Code={"ZipFile": HELLO})
    seen, pages = [], 0
    for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3}):
        pages += 1
        assert len(page["Functions"]) <= 3
        seen += [f["FunctionName"] for f in page["Functions"]]
        assert "State" not in (page["Functions"] or [{}])[0]
    assert pages >= 3
    assert [n for n in seen if n in names] == names
    assert len(seen) == len(set(seen)), "no function is listed twice"
    for n in names:
        lam.delete_function(FunctionName=n)


def test_tags_and_account_settings(lam):
    name = unique("tags")
    arn = create(lam, name, HELLO)["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"a": "1", "b": "2"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"a": "1", "b": "2"}
    lam.untag_resource(Resource=arn, TagKeys=["a"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"b": "2"}
    with pytest.raises(ClientError) as e:
        lam.tag_resource(Resource=arn + ":$LATEST", Tags={"x": "y"})
    assert error_of(e)[0] == "InvalidParameterValueException"
    settings = lam.get_account_settings()
    assert settings["AccountLimit"]["CodeSizeZipped"] == 52428800
    assert settings["AccountUsage"]["FunctionCount"] >= 1
    lam.delete_function(FunctionName=name)


def test_revision_id_precondition(lam):
    name = unique("rev")
    create(lam, name, HELLO)
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name, MemorySize=512, RevisionId="stale")
    assert error_of(e)[0] == "PreconditionFailedException" and error_of(e)[2] == 412
    rev = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert lam.update_function_configuration(FunctionName=name, MemorySize=512, RevisionId=rev)["MemorySize"] == 512


def test_not_found_errors_name_the_arn(lam, server):
    missing = unique("missing")
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{missing}"
    for call in (lambda: lam.get_function(FunctionName=missing), lambda: lam.delete_function(FunctionName=missing)):
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e) == ("ResourceNotFoundException", f"Function not found: {arn}", 404)
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=missing)
    assert error_of(e) == ("ResourceNotFoundException", f"Function not found: {arn}:$LATEST", 404)
    status, headers, body = raw(server, "GET", f"/2015-03-31/functions/{missing}")
    assert status == 404 and headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert json.loads(body) == {"Type": "User", "Message": f"Function not found: {arn}"}
    assert headers["x-amzn-RequestId"]


def test_duplicate_create_is_a_conflict(lam):
    name = unique("dup")
    create(lam, name, HELLO)
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler", Code={"ZipFile": HELLO})
    assert error_of(e)[0] == "ResourceConflictException" and error_of(e)[2] == 409


def trees(server):
    d = server.data_dir / "code" / "trees"
    return sorted(os.listdir(d)) if d.exists() else []


def zip_with_symlink(name, target):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o120777) << 16
        z.writestr(info, target)
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
    return buf.getvalue()


def zip_bomb():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("zeros", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(300):
                f.write(chunk)
    return buf.getvalue()


def corrupt_zip():
    z = bytearray(zip_files({"app.py": "x" * 5000}))
    z[40:60] = b"\xff" * 20
    return bytes(z)


BAD_CREATES = [
    ("bad name", {"FunctionName": "bad name!"}, "ValidationException", "Member must satisfy regular expression pattern"),
    ("long name", {"FunctionName": "a" * 65}, "InvalidParameterValueException", "Member must have length less than or equal to 64"),
    ("unknown runtime", {"Runtime": "cobol85"}, "InvalidParameterValueException", "Value cobol85 at 'runtime' failed to satisfy constraint"),
    ("retired runtime", {"Runtime": "python2.7"}, "InvalidParameterValueException", "is no longer supported"),
    ("runtime not on host", {"Runtime": "dotnet8"}, "InvalidParameterValueException", "Available runtimes:"),
    ("bad handler", {"Handler": "has space"}, "ValidationException", "at 'handler' failed to satisfy constraint"),
    ("memory", {"MemorySize": 64}, "ValidationException", "greater than or equal to 128"),
    ("timeout", {"Timeout": 901}, "ValidationException", "less than or equal to 900"),
    ("reserved env", {"Environment": {"Variables": {"AWS_REGION": "x"}}}, "InvalidParameterValueException", "reserved keys"),
    ("corrupt zip", {"Code": {"ZipFile": b"PK\x03\x04 this is not a zip"}}, "InvalidParameterValueException", "Could not unzip uploaded file"),
    ("damaged zip", {"Code": {"ZipFile": corrupt_zip()}}, "InvalidParameterValueException", "Could not unzip uploaded file"),
    ("dot-dot entry", {"Code": {"ZipFile": zip_files({"../escape.py": "x"})}}, "InvalidParameterValueException", "outside the package root"),
    ("absolute entry", {"Code": {"ZipFile": zip_files({"/etc/evil": "x"})}}, "InvalidParameterValueException", "outside the package root"),
    ("symlink out", {"Code": {"ZipFile": zip_with_symlink("link", "/etc/shadow")}}, "InvalidParameterValueException", "points outside"),
    ("symlink up", {"Code": {"ZipFile": zip_with_symlink("a/link", "../../x")}}, "InvalidParameterValueException", "points outside"),
    ("zip bomb", {"Code": {"ZipFile": zip_bomb()}}, "InvalidParameterValueException", "Unzipped size must be smaller than 262144000 bytes"),
]


@pytest.mark.parametrize("label,override,code,fragment", BAD_CREATES, ids=[b[0] for b in BAD_CREATES])
def test_bad_create_gets_lambdas_error_and_writes_nothing(lam, server, label, override, code, fragment):
    unchecked = server.client(validate=False)  # send what botocore would refuse client-side
    before = trees(server)
    params = {"FunctionName": unique("bad"), "Runtime": "python3.11", "Role": ROLE, "Handler": "app.handler", "Code": {"ZipFile": HELLO}}
    params.update(override)
    with pytest.raises(ClientError) as e:
        unchecked.create_function(**params)
    got_code, msg, status = error_of(e)
    assert (got_code, status // 100) == (code, 4), msg
    assert fragment in msg
    if params["FunctionName"] != "bad name!" and len(params["FunctionName"]) <= 64:
        with pytest.raises(ClientError):
            lam.get_function(FunctionName=params["FunctionName"])
    if label not in ("bad name", "long name", "unknown runtime", "retired runtime", "runtime not on host", "bad handler", "memory", "timeout", "reserved env"):
        assert trees(server) == before, "a refused package leaves nothing behind"


def test_malformed_json_bodies(server):
    status, headers, body = raw(server, "POST", "/2015-03-31/functions", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    assert json.loads(body)["message"].startswith("Could not parse request body into json")
    status, headers, _ = raw(server, "POST", "/2015-03-31/functions", b'{"FunctionName": 5}', {"Content-Type": "application/json"})
    assert status == 400 and headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    status, headers, _ = raw(server, "GET", "/2099-01-01/nonsense")
    assert status == 404 and headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_invoke_input_errors(lam, server):
    name = unique("inv")
    create(lam, name, HELLO)
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"\x87 not json")
    code, msg, status = error_of(e)
    assert (code, status) == ("InvalidRequestContentException", 400)
    assert msg.startswith("Could not parse request body into json: Could not parse payload into json")
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
    code, msg, status = error_of(e)
    assert (code, status) == ("RequestEntityTooLargeException", 413)
    assert msg == "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'"' + b"x" * (2 * 1024 * 1024) + b'"')
    assert error_of(e)[0] == "RequestEntityTooLargeException"
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Qualifier="7")
    assert error_of(e)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=f"{name}:1", Qualifier="2")
    assert error_of(e)[0] == "InvalidParameterValueException"
    status, headers, _ = raw(server, "POST", f"/2015-03-31/functions/{name}/invocations", b"{}", {"X-Amz-Invocation-Type": "Sometimes"})
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    assert lam.invoke(FunctionName=name, InvocationType="DryRun")["StatusCode"] == 204
