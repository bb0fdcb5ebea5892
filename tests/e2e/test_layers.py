"""Layers, end to end with boto3: publish, read, list and delete layer versions, and functions
that import from their layers at /opt (merged in order, later layers winning)."""

import base64
import hashlib
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ISOLATED, create, invoke_json, unique, zip_files

PY_HANDLER = """
import os
def handler(event, context):
    import shared, only_a
    try:
        open('/opt/python/new.py', 'w').close()
        opt_write = 'written'
    except OSError as e:
        opt_write = e.__class__.__name__
    opt = os.environ.get('STRATUS_OPT_DIR', '/opt')
    with open(os.path.join(opt, 'bin', 'tool')) as f:
        tool = f.read().strip()
    return {'shared': shared.WHO, 'only_a': only_a.WHO, 'tool': tool, 'opt_write': opt_write}
"""


def err(excinfo):
    r = excinfo.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def publish(lam, name, files, **kw):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": zip_files(files)}, **kw)


@pytest.fixture
def two_layers(lam):
    a, b = unique("layer-a"), unique("layer-b")
    va = publish(
        lam,
        a,
        {"python/shared.py": "WHO = 'a'\n", "python/only_a.py": "WHO = 'only a'\n", "bin/tool": "tool of a\n"},
        CompatibleRuntimes=["python3.11"],
        Description="first",
    )
    vb = publish(lam, b, {"python/shared.py": "WHO = 'b'\n"}, CompatibleRuntimes=["python3.11", "nodejs20.x"])
    return a, b, va, vb


def test_publish_get_list_and_delete_layer_versions(lam, two_layers):
    a, b, va, vb = two_layers
    assert va["Version"] == 1 and va["LayerVersionArn"] == va["LayerArn"] + ":1"
    assert va["LayerArn"].endswith(f":layer:{a}") and va["Description"] == "first"
    zipped = urllib.request.urlopen(va["Content"]["Location"], timeout=10).read()
    assert len(zipped) == va["Content"]["CodeSize"]
    assert base64.b64encode(hashlib.sha256(zipped).digest()).decode() == va["Content"]["CodeSha256"]
    va2 = publish(lam, a, {"python/shared.py": "WHO = 'a2'\n"}, CompatibleRuntimes=["nodejs20.x"])
    assert va2["Version"] == 2
    got = lam.get_layer_version(LayerName=a, VersionNumber=1)
    assert got["LayerVersionArn"] == va["LayerVersionArn"] and got["CompatibleRuntimes"] == ["python3.11"]
    assert lam.get_layer_version_by_arn(Arn=va2["LayerVersionArn"])["Version"] == 2
    assert lam.get_layer_version(LayerName=va["LayerArn"], VersionNumber=2)["Version"] == 2, "by layer ARN"
    versions = lam.list_layer_versions(LayerName=a)["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1], "newest first"
    page = lam.list_layer_versions(LayerName=a, MaxItems=1)
    assert [v["Version"] for v in page["LayerVersions"]] == [2]
    rest = lam.list_layer_versions(LayerName=a, MaxItems=1, Marker=page["NextMarker"])
    assert [v["Version"] for v in rest["LayerVersions"]] == [1] and "NextMarker" not in rest
    python_only = lam.list_layer_versions(LayerName=a, CompatibleRuntime="python3.11")["LayerVersions"]
    assert [v["Version"] for v in python_only] == [1]
    layers = {l["LayerName"]: l for l in lam.list_layers()["Layers"]}
    assert layers[a]["LatestMatchingVersion"]["Version"] == 2 and layers[b]["LayerArn"] == vb["LayerArn"]
    layers = {l["LayerName"]: l for l in lam.list_layers(CompatibleRuntime="python3.11")["Layers"]}
    assert layers[a]["LatestMatchingVersion"]["Version"] == 1, "the newest version matching the runtime"

    lam.delete_layer_version(LayerName=a, VersionNumber=2)
    lam.delete_layer_version(LayerName=a, VersionNumber=2)  # deleting again is not an error
    with pytest.raises(ClientError) as e:
        lam.get_layer_version(LayerName=a, VersionNumber=2)
    assert err(e) == ("ResourceNotFoundException", "The resource you requested does not exist.", 404)
    assert publish(lam, a, {"x.txt": "x"})["Version"] == 3, "numbers are never reused"


def test_functions_see_their_layers_merged_in_order_at_opt(lam, two_layers):
    a, b, va, vb = two_layers
    name = unique("layered")
    created = lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role="arn:aws:iam::123456789012:role/lambda-role",
        Handler="app.handler",
        Code={"ZipFile": zip_files({"app.py": PY_HANDLER})},
        Layers=[va["LayerVersionArn"], vb["LayerVersionArn"]],
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert created["Layers"] == [
        {"Arn": va["LayerVersionArn"], "CodeSize": va["Content"]["CodeSize"]},
        {"Arn": vb["LayerVersionArn"], "CodeSize": vb["Content"]["CodeSize"]},
    ]
    resp, out = invoke_json(lam, name)
    assert "FunctionError" not in resp, out
    assert out["shared"] == "b", "the later layer wins"
    assert (out["only_a"], out["tool"]) == ("only a", "tool of a")
    if ISOLATED:
        assert out["opt_write"] == "OSError", "/opt is read-only"

    lam.update_function_configuration(FunctionName=name, Layers=[vb["LayerVersionArn"], va["LayerVersionArn"]])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert invoke_json(lam, name)[1]["shared"] == "a", "reordered: now the first layer's file wins"

    # Deleting a layer version does not take it away from functions that use it.
    lam.delete_layer_version(LayerName=b, VersionNumber=1)
    lam.update_function_configuration(FunctionName=name, Description="new environments")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert invoke_json(lam, name)[1]["shared"] == "a"
    assert lam.get_function_configuration(FunctionName=name)["Layers"][0]["Arn"] == vb["LayerVersionArn"]


def test_node_functions_require_from_their_layer(lam):
    layer = publish(lam, unique("nodelayer"), {"nodejs/node_modules/greet/index.js": "exports.hi = n => `hi ${n}`;\n"})
    name = unique("nodelayered")
    code = zip_files({"index.js": "const g = require('greet');\nexports.handler = async (e) => g.hi(e.who);\n"})
    create(lam, name, code, runtime="nodejs20.x", handler="index.handler", Layers=[layer["LayerVersionArn"]])
    resp, out = invoke_json(lam, name, {"who": "layers"})
    assert out == "hi layers", out


def test_bad_layer_references_are_refused(lam, two_layers):
    a, b, va, vb = two_layers
    code = zip_files({"app.py": PY_HANDLER})

    def attempt(layers):
        with pytest.raises(ClientError) as e:
            create(lam, unique("badlayers"), code, Layers=layers)
        return err(e)

    missing = va["LayerArn"] + ":99"
    assert attempt([missing]) == ("InvalidParameterValueException", f"Layer version {missing} does not exist.", 400)
    code_, message, status = attempt([va["LayerVersionArn"]] * 6)
    assert (code_, message, status) == ("InvalidParameterValueException", "Cannot reference more than 5 layers.", 400)
    code_, message, status = attempt(["not-an-arn"])
    assert code_ == "ValidationException" and "at 'layers'" in message and status == 400
    va2 = publish(lam, a, {"x.txt": "2"})
    code_, message, _ = attempt([va["LayerVersionArn"], va2["LayerVersionArn"]])
    assert code_ == "InvalidParameterValueException" and "versions of the same layer" in message
    with pytest.raises(ClientError) as e:
        lam.publish_layer_version(LayerName="bad name", Content={"ZipFile": zip_files({"a": "b"})})
    assert err(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam.publish_layer_version(LayerName=unique("broken"), Content={"ZipFile": b"not a zip"})
    assert err(e)[0] == "InvalidParameterValueException"
