"""Runtime conformance: every folder in cases/ is a function, an event and what must come back
(a payload, or a function error of a given type), run through the real server with boto3."""

import base64
import json
import pathlib

import pytest

from conftest import ROLE, invoke_json, unique, zip_dir

CASES = sorted(p for p in (pathlib.Path(__file__).parent / "cases").iterdir() if (p / "case.json").exists())


def subst(value, name):
    if isinstance(value, str):
        return value.replace("{name}", name)
    if isinstance(value, dict):
        return {k: subst(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [subst(v, name) for v in value]
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(lam, case):
    spec = json.loads((case / "case.json").read_text())
    name = unique(case.name)
    lam.create_function(
        FunctionName=name,
        Runtime=spec["runtime"],
        Role=ROLE,
        Handler=spec["handler"],
        Code={"ZipFile": zip_dir(case)},
        Timeout=spec.get("timeout", 3),
        MemorySize=spec.get("memory", 128),
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    resp, payload = invoke_json(lam, name, spec.get("event", {}), LogType="Tail")
    expect = subst(spec["expect"], name)
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert resp["StatusCode"] == 200, "function errors are never HTTP errors"
    assert resp["ExecutedVersion"] == "$LATEST"
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert f"START RequestId: {request_id} Version: $LATEST" in tail
    assert f"END RequestId: {request_id}" in tail
    assert f"REPORT RequestId: {request_id}\tDuration: " in tail
    if "error_type" in expect:
        assert resp.get("FunctionError") == "Unhandled", payload
        assert payload["errorType"] == expect["error_type"], payload
        if "message" in expect:
            assert payload["errorMessage"] == expect["message"], payload
        if "message_contains" in expect:
            assert expect["message_contains"] in payload["errorMessage"], payload
        if expect.get("has_request_id"):
            assert payload["requestId"] == request_id
        if expect.get("request_id_empty"):
            assert payload["requestId"] == ""
        if "stack_contains" in expect:
            assert any(expect["stack_contains"] in line for line in payload["stackTrace"]), payload
        if "trace_contains" in expect:
            assert any(expect["trace_contains"] in line for line in payload["trace"]), payload
        if "report_status" in expect:
            report = tail.split("\nREPORT")[-1]
            assert f"Status: {expect['report_status']}" in report, tail
    else:
        assert "FunctionError" not in resp, payload
        if "payload" in expect:
            assert payload == expect["payload"]
        for k, v in expect.get("payload_subset", {}).items():
            assert payload[k] == v, (k, payload)
        if isinstance(payload, dict) and "request_id" in payload:
            assert payload["request_id"] == request_id, "the function sees the caller's request id"
