"""OpenTelemetry export: with a collector configured, every invocation becomes one span
(OTLP/HTTP JSON) in the trace the function sees as `_X_AMZN_TRACE_ID`, joining the caller's
trace when it sends `X-Amzn-Trace-Id`."""

import http.server
import json
import threading
import time

import pytest

from conftest import create, unique, zip_files

TRACED = zip_files(
    {
        "app.py": (
            "import os\n"
            "def handler(event, context):\n"
            "    if event.get('fail'):\n"
            "        raise RuntimeError('no')\n"
            "    return os.environ.get('_X_AMZN_TRACE_ID')\n"
        )
    }
)


class Collector(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Collector.received.append((self.path, self.headers.get("content-type"), json.loads(body)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    Collector.received = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def spans():
    out = []
    for path, ctype, body in Collector.received:
        assert path == "/v1/traces" and ctype == "application/json"
        for rs in body["resourceSpans"]:
            service = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}["service.name"]["stringValue"]
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    s["service"] = service
                    s["attrs"] = {a["key"]: list(a["value"].values())[0] for a in s["attributes"]}
                    out.append(s)
    return out


def span_of(request_id, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for s in spans():
            if s["attrs"].get("faas.invocation_id") == request_id:
                return s
        time.sleep(0.1)
    raise AssertionError(f"no span for {request_id}: {spans()}")


def invoke_with_header(lam, name, payload, trace_header):
    def add(request, **kwargs):
        request.headers["X-Amzn-Trace-Id"] = trace_header

    lam.meta.events.register_first("before-sign.lambda.Invoke", add)
    try:
        return lam.invoke(FunctionName=name, Payload=payload)
    finally:
        lam.meta.events.unregister("before-sign.lambda.Invoke", add)


def test_each_invocation_is_a_span_in_the_functions_trace(fresh_server, collector):
    server = fresh_server("--otlp-endpoint", collector, "--otel-service-name", "stratus-test")
    lam = server.client()
    name = unique("traced")
    create(lam, name, TRACED, MemorySize=256)

    caller = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    resp = invoke_with_header(lam, name, b"{}", caller)
    seen = json.loads(resp["Payload"].read())
    rid = resp["ResponseMetadata"]["RequestId"]
    s = span_of(rid)
    assert s["service"] == "stratus-test" and s["name"] == name and s["kind"] == 2
    assert s["traceId"] == "5759e988bd862e3fe1be46a994272793"
    assert s["parentSpanId"] == "53995c3f42cd8ad8"
    # The function's own spans would hang under this invocation's span.
    assert seen == f"Root=1-5759e988-bd862e3fe1be46a994272793;Parent={s['spanId']};Sampled=1"
    assert s["attrs"]["faas.coldstart"] is True and s["attrs"]["faas.max_memory"] == str(256 << 20)
    assert s["attrs"]["cloud.account.id"] == "000000000000" and s["status"]["code"] == 1
    assert int(s["endTimeUnixNano"]) > int(s["startTimeUnixNano"])

    # Without a caller's trace, a new sampled one; errors are marked.
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    seen = json.loads(resp["Payload"].read())
    s = span_of(resp["ResponseMetadata"]["RequestId"])
    root = seen.split(";")[0].removeprefix("Root=1-").replace("-", "")
    assert s["traceId"] == root and "parentSpanId" not in s and seen.endswith("Sampled=1")
    assert s["attrs"]["faas.coldstart"] is False
    resp = lam.invoke(FunctionName=name, Payload=b'{"fail": true}')
    s = span_of(resp["ResponseMetadata"]["RequestId"])
    assert s["status"]["code"] == 2 and s["attrs"]["stratus.outcome"] == "handled_error"

    # A caller that did not sample its trace gets no span.
    resp = invoke_with_header(lam, name, b"{}", "Root=1-5759e988-bd862e3fe1be46a994272794;Sampled=0")
    rid = resp["ResponseMetadata"]["RequestId"]
    time.sleep(1)
    assert all(x["attrs"].get("faas.invocation_id") != rid for x in spans())


def test_without_a_collector_functions_still_get_a_trace_id(lam):
    name = unique("untraced")
    create(lam, name, TRACED)
    seen = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
    assert seen.startswith("Root=1-") and seen.endswith("Sampled=0")


def test_function_url_requests_join_the_callers_trace(fresh_server, collector):
    import http.client
    import urllib.parse

    from conftest import allow_public_url

    server = fresh_server("--otlp-endpoint", collector)
    lam = server.client()
    name = unique("traced-url")
    create(lam, name, TRACED)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    allow_public_url(lam, name)
    c = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(server.http_endpoint).port, timeout=30)
    c.request("GET", "/", headers={
        "Host": urllib.parse.urlsplit(url).netloc,
        "X-Amzn-Trace-Id": "Root=1-6759e988-bd862e3fe1be46a994272793;Parent=63995c3f42cd8ad8;Sampled=1",
    })
    r = c.getresponse()
    seen = r.read().decode()
    assert r.status == 200, seen
    s = span_of(r.headers["x-amzn-RequestId"])
    assert s["traceId"] == "6759e988bd862e3fe1be46a994272793" and s["parentSpanId"] == "63995c3f42cd8ad8"
    assert s["attrs"]["faas.trigger"] == "http"
    assert seen == f"Root=1-6759e988-bd862e3fe1be46a994272793;Parent={s['spanId']};Sampled=1"
