"""Versions, aliases, concurrency and scaling, and reliable asynchronous invocation, driven by
boto3 against the real server."""

import base64
import collections
import concurrent.futures
import http.server
import json
import socketserver
import threading
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, create, invoke_json, unique, zip_files


def code(version_tag, extra=""):
    return zip_files(
        {
            "app.py": (
                "import os, time\n"
                f"TAG = {version_tag!r}\n"
                "def handler(e, c):\n"
                "    time.sleep(e.get('sleep', 0))\n"
                f"{extra}"
                "    return {'tag': TAG, 'version': c.function_version, 'arn': c.invoked_function_arn,\n"
                "            'init': os.environ.get('AWS_LAMBDA_INITIALIZATION_TYPE')}\n"
            )
        }
    )


def err(excinfo):
    r = excinfo.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def test_publish_list_invoke_and_delete_versions(lam):
    name = unique("ver")
    create(lam, name, code("one"))
    v1 = lam.publish_version(FunctionName=name, Description="first")
    assert v1["Version"] == "1" and v1["FunctionArn"].endswith(f":{name}:1") and v1["Description"] == "first"
    assert lam.publish_version(FunctionName=name)["Version"] == "1", "nothing changed: the same version comes back"
    latest = lam.get_function_configuration(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=code("two"))
    with pytest.raises(ClientError) as e:
        lam.publish_version(FunctionName=name, CodeSha256=latest["CodeSha256"])
    assert err(e)[0] == "InvalidParameterValueException", "CodeSha256 must match $LATEST"
    with pytest.raises(ClientError) as e:
        lam.publish_version(FunctionName=name, RevisionId="stale")
    assert err(e)[0] == "PreconditionFailedException"
    v2 = lam.publish_version(FunctionName=name)
    assert v2["Version"] == "2"
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    assert versions[0]["FunctionArn"].endswith(":$LATEST")
    resp, out = invoke_json(lam, name, Qualifier="1")
    assert out["tag"] == "one" and out["version"] == "1" and resp["ExecutedVersion"] == "1"
    assert out["arn"].endswith(f":{name}:1"), "the runtime sees the ARN as invoked"
    resp, out = invoke_json(lam, f"{name}:2")
    assert out["tag"] == "two" and resp["ExecutedVersion"] == "2"
    assert invoke_json(lam, name)[1]["tag"] == "two"
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["Version"] == "1"
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Qualifier="1")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert err(e)[0] == "InvalidParameterValueException"
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "2"]


def test_publish_flag_on_create_and_update(lam):
    name = unique("pubflag")
    resp = lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler", Code={"ZipFile": code("a")}, Publish=True)
    assert resp["Version"] == "1"
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    resp = lam.update_function_code(FunctionName=name, ZipFile=code("b"), Publish=True)
    assert resp["Version"] == "2"


def test_aliases_and_weighted_routing(lam):
    name = unique("alias")
    create(lam, name, code("one"))
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=code("two"))
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1", Description="stable")
    assert alias["AliasArn"].endswith(f":{name}:prod") and alias["FunctionVersion"] == "1"
    with pytest.raises(ClientError) as e:
        lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    assert err(e)[0] == "ResourceConflictException" and err(e)[2] == 409
    with pytest.raises(ClientError) as e:
        lam.create_alias(FunctionName=name, Name="broken", FunctionVersion="9")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.get_alias(FunctionName=name, Name="nope")
    assert err(e)[0] == "ResourceNotFoundException"
    resp, out = invoke_json(lam, name, Qualifier="prod")
    assert out["tag"] == "one" and resp["ExecutedVersion"] == "1" and out["arn"].endswith(":prod")
    with pytest.raises(ClientError) as e:
        lam.update_alias(FunctionName=name, Name="prod", RevisionId="stale", FunctionVersion="2")
    assert err(e)[0] == "PreconditionFailedException"
    updated = lam.update_alias(FunctionName=name, Name="prod", RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
    assert updated["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}
    counts = collections.Counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for resp, out in pool.map(lambda _: invoke_json(lam, name, Qualifier="prod"), range(300)):
            counts[resp["ExecutedVersion"]] += 1
            assert out["version"] == resp["ExecutedVersion"]
    assert counts["1"] + counts["2"] == 300
    assert 55 <= counts["2"] <= 125, f"about 30% to version 2: {dict(counts)}"
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["prod"]
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert err(e)[0] == "ResourceConflictException", "a version an alias uses cannot be deleted"
    lam.delete_alias(FunctionName=name, Name="prod")
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Qualifier="prod")
    assert err(e)[0] == "ResourceNotFoundException"


def test_invalid_alias_routing_is_refused(lam):
    name = unique("badalias")
    create(lam, name, code("one"))
    lam.publish_version(FunctionName=name)
    unchecked = lam  # these pass botocore's own checks
    with pytest.raises(ClientError) as e:
        unchecked.create_alias(FunctionName=name, Name="x", FunctionVersion="$LATEST", RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})
    assert err(e)[0] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        unchecked.create_alias(FunctionName=name, Name="y", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})
    assert err(e)[0] == "InvalidParameterValueException"


def concurrent_invokes(lam, name, n, sleep):
    def one(_):
        try:
            return invoke_json(lam, name, {"sleep": sleep})[0]["StatusCode"]
        except ClientError as e:
            return (e.response["Error"]["Code"], e.response["Error"].get("Reason") or json.loads(e.response.get("Error", {}).get("Message", "{}") if False else "{}").get("Reason"), e.response)
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_reserved_concurrency_throttles_with_the_right_reason(lam, server):
    name = unique("reserved")
    create(lam, name, code("one"), Timeout=10)
    assert lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)["ReservedConcurrentExecutions"] == 2
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 2
    assert lam.get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"] == 2
    settings = lam.get_account_settings()["AccountLimit"]
    assert settings["UnreservedConcurrentExecutions"] <= settings["ConcurrentExecutions"] - 2
    results = concurrent_invokes(lam, name, 4, 1.5)
    assert results.count(200) == 2, results
    throttled = [r for r in results if r != 200]
    assert len(throttled) == 2
    for code_, _, resp in throttled:
        assert code_ == "TooManyRequestsException" and resp["ResponseMetadata"]["HTTPStatusCode"] == 429
    raw = urllib.request.Request(f"{server.endpoint}/2015-03-31/functions/{name}/invocations", data=b"{}", method="POST")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(raw)
    body = json.loads(e.value.read())
    assert e.value.code == 429 and body == {"Type": "User", "message": "Rate Exceeded.", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}
    lam.delete_function_concurrency(FunctionName=name)
    assert invoke_json(lam, name)[0]["StatusCode"] == 200
    with pytest.raises(ClientError) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=settings["ConcurrentExecutions"])
    assert err(e)[0] == "InvalidParameterValueException", "at least 100 must stay unreserved"


def test_account_limit_throttles(fresh_server):
    s = fresh_server("--account-concurrency", "2")
    lam = s.client()
    name = unique("account")
    create(lam, name, code("one"), Timeout=10)
    results = concurrent_invokes(lam, name, 3, 1.5)
    assert results.count(200) == 2, results
    assert [r[0] for r in results if r != 200] == ["TooManyRequestsException"]
    raw = urllib.request.Request(f"{s.endpoint}/2015-03-31/functions/{name}/invocations", data=b'{"sleep": 1}', method="POST")
    t = threading.Thread(target=lambda: [invoke_json(lam, name, {"sleep": 1.5}) for _ in range(1)])
    t2 = threading.Thread(target=lambda: [invoke_json(lam, name, {"sleep": 1.5}) for _ in range(1)])
    t.start()
    t2.start()
    time.sleep(0.5)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(raw)
    t.join()
    t2.join()
    assert json.loads(e.value.read())["Reason"] == "ConcurrentInvocationLimitExceeded"


def test_scaling_rate_limits_new_environments(fresh_server):
    s = fresh_server("--scaling-burst", "2", "--scaling-window-secs", "60")
    lam = s.client()
    name = unique("scale")
    create(lam, name, code("one"), Timeout=10)
    results = concurrent_invokes(lam, name, 3, 1.0)
    assert results.count(200) == 2, results
    assert [r[0] for r in results if r != 200] == ["TooManyRequestsException"]


def environments(server, name):
    with urllib.request.urlopen(f"{server.endpoint}/_stratus/functions/{name}/environments") as r:
        return json.loads(r.read())


def test_scale_out_and_back_to_zero_but_provisioned_stay(fresh_server):
    s = fresh_server("--keep-alive", "2")
    lam = s.client()
    name = unique("autoscale")
    create(lam, name, code("one"), Timeout=10)
    lam.publish_version(FunctionName=name)
    results = concurrent_invokes(lam, name, 6, 1.0)
    assert results.count(200) == 6
    assert environments(s, name)["live"] == 6, "one environment per concurrent invocation"
    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
    assert err(e)[0] == "InvalidParameterValueException"
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2)
    assert put["Status"] == "IN_PROGRESS" and put["RequestedProvisionedConcurrentExecutions"] == 2
    deadline = time.time() + 20
    while lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")["Status"] != "READY":
        assert time.time() < deadline, "provisioned concurrency never became ready"
        time.sleep(0.2)
    got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert got["AllocatedProvisionedConcurrentExecutions"] == 2
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].split(":")[-1] for c in listed] == ["1"]
    resp, out = invoke_json(lam, name, Qualifier="1")
    assert out["init"] == "provisioned-concurrency", "served by a provisioned environment"
    assert invoke_json(lam, name)[1]["init"] == "on-demand"
    deadline = time.time() + 15
    while environments(s, name)["live"] > 2:
        assert time.time() < deadline, f"on-demand environments never went away: {environments(s, name)}"
        time.sleep(0.3)
    assert environments(s, name) == {"live": 2, "idle": 2, "provisioned": 2}, "the provisioned ones stay"
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    with pytest.raises(ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert err(e)[0] == "ProvisionedConcurrencyConfigNotFoundException"
    deadline = time.time() + 15
    while environments(s, name)["live"] > 0:
        assert time.time() < deadline, "after the configuration is gone, they scale to zero too"
        time.sleep(0.3)


class Recorder:
    """A tiny HTTP server functions post to, recording what they were given."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.records.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def close(self):
        self.server.shutdown()


RECORDING = (
    "import json, urllib.request\n"
    "def handler(e, c):\n"
    "    body = json.dumps({'event': e, 'request_id': c.aws_request_id, 'fn': c.function_name}).encode()\n"
    "    urllib.request.urlopen(urllib.request.Request(e.get('recorder') or e['requestPayload']['recorder'], data=body, method='POST'), timeout=10)\n"
    "    if e.get('fail'):\n"
    "        raise RuntimeError('asked to fail')\n"
    "    return {'ok': e.get('n')}\n"
)


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def wait_for(fn, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    return fn()


def test_event_invoke_config_api(lam):
    name, other = unique("eic"), unique("eicdest")
    create(lam, name, code("one"))
    create(lam, other, code("one"))
    other_arn = lam.get_function_configuration(FunctionName=other)["FunctionArn"]
    put = lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, DestinationConfig={"OnFailure": {"Destination": other_arn}}
    )
    assert put["MaximumRetryAttempts"] == 1 and put["DestinationConfig"]["OnFailure"]["Destination"] == other_arn
    assert put["FunctionArn"].endswith(f":{name}:$LATEST")
    upd = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=120)
    assert upd["MaximumRetryAttempts"] == 1 and upd["MaximumEventAgeInSeconds"] == 120, "update keeps the rest"
    put = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert "MaximumEventAgeInSeconds" not in put and put["DestinationConfig"]["OnFailure"] == {}, "put replaces"
    assert len(lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]) == 1
    unchecked = lam
    with pytest.raises(ClientError) as e:
        unchecked.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": lam.get_function_configuration(FunctionName=name)["FunctionArn"]}})
    assert err(e)[0] == "InvalidParameterValueException", "not itself"
    lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert err(e)[0] == "ResourceNotFoundException"


def test_destinations_receive_records_in_awss_shape(fresh_server, recorder):
    s = fresh_server("--async-retry-delay", "1")
    lam = s.client()
    name, ok_dest, fail_dest = unique("src"), unique("okdest"), unique("faildest")
    for n in (name, ok_dest, fail_dest):
        create(lam, n, zip_files({"app.py": RECORDING}))
    arn = lambda n: lam.get_function_configuration(FunctionName=n)["FunctionArn"]  # noqa: E731
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnSuccess": {"Destination": arn(ok_dest)}, "OnFailure": {"Destination": arn(fail_dest)}},
    )
    good = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"recorder": recorder.url, "n": 1}))
    bad = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"recorder": recorder.url, "n": 2, "fail": True}))
    good_id, bad_id = good["ResponseMetadata"]["RequestId"], bad["ResponseMetadata"]["RequestId"]
    by = lambda fn: [r for r in recorder.snapshot() if r["fn"] == fn]  # noqa: E731
    assert wait_for(lambda: by(ok_dest) and by(fail_dest), timeout=30), recorder.snapshot()
    attempts = [r for r in by(name) if r["request_id"] == bad_id]
    assert len(attempts) == 2, "one retry, with the same request id"
    success = by(ok_dest)[0]["event"]
    assert success["version"] == "1.0"
    assert success["requestContext"] == {
        "requestId": good_id,
        "functionArn": arn(name) + ":$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert success["requestPayload"]["n"] == 1
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert success["responsePayload"] == {"ok": 1}
    failure = by(fail_dest)[0]["event"]
    assert failure["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 2
    assert failure["requestContext"]["requestId"] == bad_id
    assert failure["responseContext"]["functionError"] == "Unhandled"
    assert failure["responsePayload"]["errorType"] == "RuntimeError"


def test_dead_letter_target_gets_the_original_event(fresh_server, recorder):
    s = fresh_server("--async-retry-delay", "1")
    lam = s.client()
    name, dlq = unique("dlqsrc"), unique("dlq")
    create(lam, dlq, zip_files({"app.py": RECORDING}))
    dlq_arn = lam.get_function_configuration(FunctionName=dlq)["FunctionArn"]
    create(lam, name, zip_files({"app.py": RECORDING}), DeadLetterConfig={"TargetArn": dlq_arn})
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"recorder": recorder.url, "fail": True, "n": 7}))
    got = wait_for(lambda: [r for r in recorder.snapshot() if r["fn"] == dlq], timeout=20)
    assert got and got[0]["event"]["n"] == 7, "the dead-letter target receives the event itself"


def test_zero_reserved_concurrency_sends_async_events_to_on_failure(fresh_server, recorder):
    s = fresh_server()
    lam = s.client()
    name, dest = unique("zero"), unique("zerodest")
    create(lam, name, zip_files({"app.py": RECORDING}))
    create(lam, dest, zip_files({"app.py": RECORDING}))
    dest_arn = lam.get_function_configuration(FunctionName=dest)["FunctionArn"]
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnFailure": {"Destination": dest_arn}})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"recorder": recorder.url}))
    assert resp["StatusCode"] == 202, "async invocations are accepted even with no capacity"
    got = wait_for(lambda: [r for r in recorder.snapshot() if r["fn"] == dest], timeout=20)
    record = got[0]["event"]
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record
    assert not [r for r in recorder.snapshot() if r["fn"] == name]


def test_a_retry_past_the_maximum_event_age_goes_to_on_failure(fresh_server, recorder):
    # Retries wait 35 s then 70 s: the second failure at ~35 s cannot be retried within the
    # 60 s maximum age, so the event ends there as EventAgeExceeded (not RetriesExhausted).
    s = fresh_server("--async-retry-delay", "35")
    lam = s.client()
    name, dest = unique("aged"), unique("ageddest")
    create(lam, name, zip_files({"app.py": RECORDING}))
    create(lam, dest, zip_files({"app.py": RECORDING}))
    dest_arn = lam.get_function_configuration(FunctionName=dest)["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=2,
        MaximumEventAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": dest_arn}},
    )
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"recorder": recorder.url, "fail": True}))
    got = wait_for(lambda: [r for r in recorder.snapshot() if r["fn"] == dest], timeout=60)
    assert got, recorder.snapshot()
    assert got[0]["event"]["requestContext"]["condition"] == "EventAgeExceeded"
    assert got[0]["event"]["requestContext"]["approximateInvokeCount"] == 2
    assert len([r for r in recorder.snapshot() if r["fn"] == name]) == 2, "no third attempt"


def test_no_accepted_event_is_lost_across_kill_9(fresh_server, recorder, tmp_path):
    s = fresh_server("--no-freeze")
    lam = s.client()
    name = unique("durable")
    slow = RECORDING.replace("def handler(e, c):\n", "import time\ndef handler(e, c):\n    time.sleep(0.05)\n")
    create(lam, name, zip_files({"app.py": slow}))
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    accepted = []
    for i in range(150):
        r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"recorder": recorder.url, "n": i}))
        assert r["StatusCode"] == 202
        accepted.append(i)
    time.sleep(0.5)  # some delivered, some in flight, most still queued
    s.stop(kill=True)
    delivered_before = {r["event"]["n"] for r in recorder.snapshot()}
    assert len(delivered_before) < len(accepted), "the crash happened mid-burst"
    s2 = fresh_server("--no-freeze", data_dir=s.data_dir)
    everything = lambda: {r["event"]["n"] for r in recorder.snapshot()} >= set(accepted)  # noqa: E731
    assert wait_for(everything, timeout=120), f"missing: {set(accepted) - {r['event']['n'] for r in recorder.snapshot()}}"
    # None goes to a function deleted meanwhile.
    lam2 = s2.client()
    gone = unique("gone")
    create(lam2, gone, zip_files({"app.py": slow}))
    lam2.put_function_concurrency(FunctionName=gone, ReservedConcurrentExecutions=1)
    for i in range(30):
        lam2.invoke(FunctionName=gone, InvocationType="Event", Payload=json.dumps({"recorder": recorder.url, "n": 1000 + i}))
    time.sleep(0.3)
    lam2.delete_function(FunctionName=gone)
    deleted_at = len([r for r in recorder.snapshot() if r["fn"] == gone])
    time.sleep(2)
    after = len([r for r in recorder.snapshot() if r["fn"] == gone])
    assert after <= deleted_at + 1, "at most the invocation in flight at the deletion finishes"
    assert after < 30
