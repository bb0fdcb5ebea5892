"""Function URLs end to end: the configuration API through boto3, and real HTTP requests to
the URLs (API backends in Python and Node, binary bodies, CORS, errors)."""

import base64
import http.client
import json
import shutil
import subprocess
import time
import urllib.parse

import pytest
from botocore.exceptions import ClientError

from conftest import allow_public_url, create, unique, zip_files

PY_BACKEND = r'''
import base64, json
def handler(event, context):
    path = event["rawPath"]
    if path == "/plain":
        return "hello"
    if path == "/object":
        return {"hello": "world"}
    if path == "/fail":
        raise RuntimeError("backend failed")
    if path == "/sleep":
        import time; time.sleep(5)
    if path == "/malformed":
        return {"statusCode": "abc"}
    if path == "/binary":
        return {"statusCode": 200, "headers": {"content-type": event["headers"].get("content-type", "")},
                "body": event["body"] if event["isBase64Encoded"] else base64.b64encode(event["body"].encode()).decode(),
                "isBase64Encoded": True}
    return {
        "statusCode": int(event.get("queryStringParameters", {}).get("status", "200")),
        "headers": {"content-type": "application/json", "x-echo": event["headers"].get("x-custom", "")},
        "cookies": ["session=abc; Path=/", "theme=dark"],
        "body": json.dumps({"event": event, "version": context.function_version}),
    }
'''

NODE_BACKEND = r'''
exports.handler = async (event) => {
  if (event.rawPath === "/fail") throw new Error("node backend failed");
  return {
    statusCode: 201,
    headers: { "content-type": "application/json", "x-runtime": "node" },
    cookies: ["n=1"],
    body: JSON.stringify({ method: event.requestContext.http.method, path: event.rawPath,
                           query: event.queryStringParameters, cookies: event.cookies,
                           body: event.body, headers: event.headers }),
  };
};
'''


def err(excinfo):
    r = excinfo.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


class Url:
    """Requests to a function URL: connects to the HTTP front, naming the URL's host."""

    def __init__(self, server, function_url):
        parsed = urllib.parse.urlsplit(function_url)
        self.host = parsed.netloc
        self.port = urllib.parse.urlsplit(server.http_endpoint).port
        assert parsed.port == self.port, (function_url, server.http_endpoint)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method, path, body=None, headers=None):
        h = {"Host": self.host, **(headers or {})}
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        return resp.status, resp, resp.read()


def make_url(lam, server, name, **kw):
    auth = kw.pop("AuthType", "NONE")
    created = lam.create_function_url_config(FunctionName=name, AuthType=auth, **kw)
    if auth == "NONE":
        allow_public_url(lam, name, kw.get("Qualifier"))
    return Url(server, created["FunctionUrl"]), created


@pytest.fixture(scope="module")
def py_url(lam, server):
    name = unique("pyapi")
    create(lam, name, zip_files({"app.py": PY_BACKEND}), Timeout=2)
    url, _ = make_url(lam, server, name)
    return name, url


def test_url_config_lifecycle(lam, server):
    name = unique("urlcfg")
    create(lam, name, zip_files({"app.py": PY_BACKEND}))
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    url = created["FunctionUrl"]
    host = urllib.parse.urlsplit(url).hostname
    url_id = host.split(".")[0]
    assert len(url_id) == 32 and url_id.isalnum() and url_id.lower() == url_id
    assert host == f"{url_id}.lambda-url.us-east-1.localhost" and url.endswith("/")
    assert created["FunctionArn"] == arn and created["AuthType"] == "NONE"
    assert "LastModifiedTime" not in created and "InvokeMode" not in created
    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == url and got["InvokeMode"] == "BUFFERED" and "LastModifiedTime" in got
    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert err(e) == (
        "ResourceConflictException",
        f"Failed to create function url config for [functionArn = {arn}]. Error message:  FunctionUrlConfig exists for this Lambda function",
        409,
    )
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET"], "MaxAge": 60}
    updated = lam.update_function_url_config(FunctionName=name, Cors=cors, AuthType="AWS_IAM")
    assert updated["Cors"] == cors and updated["AuthType"] == "AWS_IAM" and updated["FunctionUrl"] == url

    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    alias_url = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    assert alias_url["FunctionArn"] == arn + ":live" and alias_url["FunctionUrl"] != url
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert sorted(u["FunctionUrl"] for u in listed) == sorted([url, alias_url["FunctionUrl"]])

    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=name, Qualifier="1", AuthType="NONE")
    assert err(e)[0] == "ValidationException" and "at 'qualifier'" in err(e)[1]
    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=name, Qualifier="nope", AuthType="NONE")
    assert err(e) == ("ResourceNotFoundException", "Function does not exist", 404)
    with pytest.raises(ClientError) as e:
        lam.create_function_url_config(FunctionName=name + "-missing", AuthType="NONE")
    assert err(e) == ("ResourceNotFoundException", "Function does not exist", 404)

    lam.delete_alias(FunctionName=name, Name="live")
    assert len(lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]) == 1, "the alias's URL went"
    lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(ClientError) as e:
        lam.get_function_url_config(FunctionName=name)
    assert err(e) == ("ResourceNotFoundException", "The resource you requested does not exist.", 404)
    status, resp, body = Url(server, url).request("GET", "/")
    assert (status, json.loads(body)) == (403, {"Message": None}), "a deleted URL answers like an unknown one"
    assert resp.getheader("x-amzn-ErrorType") == "AccessDeniedException"


def test_python_api_backend_sees_awss_event_and_shapes_the_answer(py_url):
    name, url = py_url
    status, resp, body = url.request(
        "POST",
        "/items/42?status=201&tag=a&tag=b&q=hello%20world",
        body=json.dumps({"k": "v"}),
        headers={"Content-Type": "application/json", "X-Custom": "yes", "Cookie": "c1=v1; c2=v2", "User-Agent": "t"},
    )
    assert status == 201, body
    assert resp.getheader("x-echo") == "yes"
    assert resp.getheader("content-type") == "application/json"
    assert resp.msg.get_all("set-cookie") == ["session=abc; Path=/", "theme=dark"]
    request_id = resp.getheader("x-amzn-RequestId")
    out = json.loads(body)
    event = out["event"]
    assert out["version"] == "$LATEST"
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/items/42"
    assert event["rawQueryString"] == "status=201&tag=a&tag=b&q=hello%20world"
    assert event["queryStringParameters"] == {"status": "201", "tag": "a,b", "q": "hello world"}
    assert event["cookies"] == ["c1=v1", "c2=v2"] and "cookie" not in event["headers"]
    assert event["headers"]["x-custom"] == "yes" and event["headers"]["content-type"] == "application/json"
    assert json.loads(event["body"]) == {"k": "v"} and event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["http"] == {
        "method": "POST",
        "path": "/items/42",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "t",
    }
    assert ctx["accountId"] == "anonymous" and ctx["requestId"] == request_id
    assert ctx["domainName"] == url.host.split(":")[0] and ctx["apiId"] == ctx["domainPrefix"] == url.host.split(".")[0]
    assert ctx["stage"] == "$default" and abs(ctx["timeEpoch"] / 1000 - time.time()) < 60
    assert "pathParameters" not in event


def test_plain_results_and_errors(py_url, lam):
    name, url = py_url
    status, resp, body = url.request("GET", "/plain")
    assert (status, body, resp.getheader("content-type")) == (200, b"hello", "application/json")
    status, _, body = url.request("GET", "/object")
    assert (status, body) == (200, b'{"hello":"world"}')
    status, _, body = url.request("GET", "/fail")
    assert (status, body) == (502, b"Internal Server Error")
    status, _, body = url.request("GET", "/malformed")
    assert status == 502
    status, _, _ = url.request("GET", "/sleep")
    assert status == 504, "the function timed out"
    status, _, body = url.request("GET", "/plain")
    assert (status, body) == (200, b"hello"), "the URL keeps serving after a timeout"


def test_binary_round_trip(py_url):
    name, url = py_url
    image = bytes(range(256)) * 64 + b"\x89PNG\r\n\x1a\n"
    status, resp, body = url.request("PUT", "/binary", body=image, headers={"Content-Type": "image/png"})
    assert status == 200 and resp.getheader("content-type") == "image/png"
    assert body == image


def test_node_api_backend(lam, server):
    name = unique("nodeapi")
    create(lam, name, zip_files({"index.js": NODE_BACKEND}), runtime="nodejs20.x", handler="index.handler")
    url, _ = make_url(lam, server, name)
    status, resp, body = url.request(
        "PATCH", "/users/7?x=1", body="plain text", headers={"Content-Type": "text/plain", "Cookie": "a=b"}
    )
    assert status == 201 and resp.getheader("x-runtime") == "node"
    assert resp.msg.get_all("set-cookie") == ["n=1"]
    out = json.loads(body)
    assert out["method"] == "PATCH" and out["path"] == "/users/7" and out["query"] == {"x": "1"}
    assert out["cookies"] == ["a=b"] and out["body"] == "plain text"
    status, _, body = url.request("GET", "/fail")
    assert (status, body) == (502, b"Internal Server Error")


def test_alias_url_runs_the_aliased_version_and_throttles_with_429(lam, server):
    name = unique("aliasurl")
    create(lam, name, zip_files({"app.py": PY_BACKEND}))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    created = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    allow_public_url(lam, name, "live")
    url = Url(server, created["FunctionUrl"])
    status, _, body = url.request("GET", "/")
    assert status == 200 and json.loads(body)["version"] == "1"
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    status, resp, body = url.request("GET", "/")
    assert status == 429 and json.loads(body) == {"message": "Rate Exceeded."}


def test_iam_urls_need_a_signature_and_unknown_urls_are_forbidden(lam, server, py_url):
    name = unique("iamurl")
    create(lam, name, zip_files({"app.py": PY_BACKEND}))
    url, _ = make_url(lam, server, name, AuthType="AWS_IAM")
    status, _, body = url.request("GET", "/plain")
    assert (status, json.loads(body)) == (403, {"Message": "Forbidden"})
    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00"}
    status, _, body = url.request("GET", "/plain", headers=signed)
    assert (status, body) == (200, b"hello")
    bogus = Url(server, "http://" + "a" * 32 + ".lambda-url.us-east-1.localhost:" + str(url.port) + "/")
    status, _, body = bogus.request("GET", "/")
    assert (status, body) == (403, b'{"Message":null}')


def test_cors_preflight_and_response_headers(lam, server):
    name = unique("corsurl")
    create(lam, name, zip_files({"app.py": PY_BACKEND}))
    cors = {
        "AllowOrigins": ["https://app.example"],
        "AllowMethods": ["GET", "POST"],
        "AllowHeaders": ["content-type", "x-custom"],
        "ExposeHeaders": ["x-echo"],
        "MaxAge": 600,
        "AllowCredentials": True,
    }
    url, _ = make_url(lam, server, name, Cors=cors)
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "Content-Type, X-Custom"}
    status, resp, body = url.request("OPTIONS", "/", headers=pre)
    assert status == 200 and body == b""
    assert resp.getheader("access-control-allow-origin") == "https://app.example"
    assert resp.getheader("access-control-allow-methods") == "GET,POST"
    assert resp.getheader("access-control-allow-headers") == "content-type,x-custom"
    assert resp.getheader("access-control-max-age") == "600"
    assert resp.getheader("access-control-allow-credentials") == "true"
    status, resp, _ = url.request("OPTIONS", "/", headers={**pre, "Origin": "https://evil.example"})
    assert resp.getheader("access-control-allow-origin") is None
    status, resp, _ = url.request("GET", "/", headers={"Origin": "https://app.example", "X-Custom": "1"})
    assert status == 200 and resp.getheader("access-control-allow-origin") == "https://app.example"
    assert resp.getheader("access-control-expose-headers") == "x-echo"
    logs = server.cli("logs", name).stdout
    assert logs.count("START RequestId") == 1, "preflights are answered without invoking the function"


def test_oversized_bodies_get_413_and_http2_works(fresh_server, tmp_path):
    s = fresh_server("--http-max-body", "1000")
    lam = s.client()
    name = unique("smallurl")
    create(lam, name, zip_files({"app.py": PY_BACKEND}))
    url, created = make_url(lam, s, name)
    status, _, _ = url.request("POST", "/plain", body=b"x" * 2000)
    assert status == 413
    status, _, body = url.request("POST", "/plain", body=b"x" * 10)
    assert (status, body) == (200, b"hello"), "the connection and the URL still serve"
    curl = shutil.which("curl")
    if curl:
        out = subprocess.run(
            [curl, "-s", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version}",
             "--resolve", f"{url.host.split(':')[0]}:{url.port}:127.0.0.1", created["FunctionUrl"] + "plain"],
            capture_output=True, text=True, timeout=30,
        )
        assert out.stdout.splitlines() == ["hello", "2"], out


ROUTE_BACKEND = r'''
import json
def handler(event, context):
    if event.get("rawPath", event.get("path", "")).endswith("/fail"):
        raise RuntimeError("route backend failed")
    if event.get("version") == "1.0":
        return {"statusCode": 202, "multiValueHeaders": {"x-multi": ["a", "b"]}, "headers": {"x-one": "1"},
                "body": json.dumps({"event": event, "version": context.function_version})}
    return {"statusCode": 200, "body": json.dumps({"event": event, "version": context.function_version})}
'''


def route_call(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(server.http_endpoint).port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp, resp.read()


def test_http_routes_with_both_payload_formats(lam, server):
    name = unique("routed")
    create(lam, name, zip_files({"app.py": ROUTE_BACKEND}))
    prefix = "/" + unique("api")
    server.cli("routes", "add", f"GET {prefix}/items/{{id}}", name)
    server.cli("routes", "add", f"ANY {prefix}/files/{{proxy+}}", name, "--payload-format", "1.0")
    listed = server.cli("routes").stdout
    assert f"GET {prefix}/items/{{id}}" in listed and name in listed and "1.0" in listed

    status, resp, body = route_call(server, "GET", f"{prefix}/items/42?x=1&x=2", headers={"Cookie": "k=v"})
    assert status == 200, body
    event = json.loads(body)["event"]
    assert event["version"] == "2.0" and event["routeKey"] == f"GET {prefix}/items/{{id}}"
    assert event["pathParameters"] == {"id": "42"} and event["rawPath"] == f"{prefix}/items/42"
    assert event["queryStringParameters"] == {"x": "1,2"} and event["cookies"] == ["k=v"]
    assert event["requestContext"]["routeKey"] == event["routeKey"]
    assert event["requestContext"]["accountId"] == "000000000000"

    status, resp, body = route_call(server, "DELETE", f"{prefix}/files/a/b%20c.txt?q=1&q=2", body=b"\x00\x01",
                                    headers={"Content-Type": "application/octet-stream"})
    assert status == 202, body
    assert resp.msg.get_all("x-multi") == ["a", "b"] and resp.getheader("x-one") == "1"
    event = json.loads(body)["event"]
    assert event["version"] == "1.0" and event["httpMethod"] == "DELETE"
    assert event["resource"] == f"{prefix}/files/{{proxy+}}" and event["pathParameters"] == {"proxy": "a/b c.txt"}
    assert event["multiValueQueryStringParameters"] == {"q": ["1", "2"]} and event["queryStringParameters"] == {"q": "2"}
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x00\x01"
    assert event["stageVariables"] is None

    status, _, body = route_call(server, "POST", f"{prefix}/items/42")
    assert (status, json.loads(body)) == (404, {"message": "Not Found"}), "no route for POST"
    status, _, body = route_call(server, "GET", f"{prefix}/files/fail")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})

    server.cli("routes", "delete", f"GET {prefix}/items/{{id}}")
    status, _, _ = route_call(server, "GET", f"{prefix}/items/42")
    assert status == 404, "a deleted route no longer answers"
    out = server.cli("routes", "add", "FETCH /x", name, check=False)
    assert out.returncode != 0 and "Invalid route key" in out.stderr
    out = server.cli("routes", "add", "GET /x", name + "-missing", check=False)
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr


def test_default_route_and_qualified_routes(fresh_server):
    s = fresh_server()
    lam = s.client()
    name = unique("defroute")
    create(lam, name, zip_files({"app.py": ROUTE_BACKEND}))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    status, _, _ = route_call(s, "GET", "/anything")
    assert status == 404, "no routes yet"
    s.cli("routes", "add", "$default", name, "--qualifier", "live")
    status, _, body = route_call(s, "PUT", "/anything/at/all")
    out = json.loads(body)
    assert status == 200 and out["version"] == "1" and out["event"]["routeKey"] == "$default"


BROWSER_PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
async function go() {
  const out = {};
  try {
    const r = await fetch("%(url)sitems?x=1", {method: "POST", body: JSON.stringify({a: 1}),
      headers: {"Content-Type": "application/json", "X-Custom": "browser"}});
    out.status = r.status; out.echo = r.headers.get("x-echo");
    const body = await r.json(); out.method = body.event.requestContext.http.method; out.custom = body.event.headers["x-custom"];
  } catch (e) { out.error = String(e); }
  try {
    await fetch("%(denied)s", {method: "POST", headers: {"X-Custom": "1"}});
    out.denied = "allowed";
  } catch (e) { out.denied = "blocked"; }
  document.getElementById("out").textContent = JSON.stringify(out);
}
go();
</script></body></html>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (CI installs it)")
def test_a_browser_passes_cors_preflight_and_fetches(lam, server, tmp_path):
    import http.server
    import re
    import threading

    name, other = unique("browser"), unique("nocors")
    create(lam, name, zip_files({"app.py": PY_BACKEND}))
    create(lam, other, zip_files({"app.py": PY_BACKEND}))
    page = {}

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{site.server_address[1]}"
    try:
        cors = {"AllowOrigins": [origin], "AllowMethods": ["POST"], "AllowHeaders": ["content-type", "x-custom"],
                "ExposeHeaders": ["x-echo"], "MaxAge": 60}
        url = lam.create_function_url_config(FunctionName=name, AuthType="NONE", Cors=cors)["FunctionUrl"]
        denied = lam.create_function_url_config(
            FunctionName=other, AuthType="NONE", Cors={"AllowOrigins": ["https://elsewhere.example"]}
        )["FunctionUrl"]
        allow_public_url(lam, name)
        allow_public_url(lam, other)
        page["html"] = BROWSER_PAGE % {"url": url, "denied": denied}
        out = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom", origin + "/"],
            capture_output=True, text=True, timeout=120,
        )
        found = re.search(r'<pre id="out">(.*?)</pre>', out.stdout, re.S)
        assert found, out.stdout[-2000:] + out.stderr[-2000:]
        result = json.loads(found.group(1).replace("&quot;", '"'))
    finally:
        site.shutdown()
    assert result.get("status") == 200, result
    assert result["method"] == "POST" and result["custom"] == "browser"
    assert result["echo"] == "browser", "an exposed header is readable"
    assert result["denied"] == "blocked", "an origin the URL does not allow is refused by the browser"
    logs = server.cli("logs", name).stdout
    assert logs.count("START RequestId") == 1, "the preflight did not reach the function"


def test_a_slow_function_does_not_hold_up_others(py_url, lam, server):
    import threading

    name, slow_url = py_url
    fast = unique("fastapi")
    create(lam, fast, zip_files({"app.py": PY_BACKEND}))
    fast_url, _ = make_url(lam, server, fast)
    fast_url.request("GET", "/plain")  # warm
    slow_done = []
    t = threading.Thread(target=lambda: slow_done.append(Url(server, "http://" + slow_url.host + "/").request("GET", "/sleep")[0]))
    t.start()
    time.sleep(0.3)
    started = time.time()
    status, _, body = fast_url.request("GET", "/plain")
    elapsed = time.time() - started
    t.join(timeout=30)
    assert (status, body) == (200, b"hello") and elapsed < 1.0, f"the fast call took {elapsed:.2f}s"
    assert slow_done == [504]
