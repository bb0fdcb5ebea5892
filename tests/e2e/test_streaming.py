"""Response streaming end to end: InvokeWithResponseStream through boto3, streaming function
URLs read with a plain HTTP client, Node's awslambda.streamifyResponse, and a custom runtime
that streams over the Runtime API itself (chunked body, trailers for a mid-stream error)."""

import base64
import http.client
import json
import time
import urllib.parse

from conftest import allow_public_url, create, invoke_json, unique, zip_files

NODE_STREAMER = r'''
exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  if (event.failEarly) throw new Error("failed before streaming");
  responseStream.setContentType("text/plain");
  responseStream.write("first;");
  await new Promise((r) => setTimeout(r, event.pause || 1500));
  if (event.failLate) throw new Error("failed mid-stream");
  responseStream.write("second");
  responseStream.end();
});
'''

NODE_HTTP_STREAMER = r'''
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const out = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201, headers: { "content-type": "text/event-stream", "x-streamed": "yes" }, cookies: ["s=1"],
  });
  out.write("data: one\n\n");
  await new Promise((r) => setTimeout(r, 1500));
  out.write("data: two\n\n");
  out.end();
});
'''

# A custom runtime that speaks the Runtime API itself: it streams its response with chunked
# encoding, and reports a failure after the first bytes with trailers (reference §1.4).
CUSTOM_STREAMER = r'''#!/usr/bin/python3
import base64, json, os, socket, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
def call(method, path, head=b"", body=b""):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode() + head + b"\r\n" + body)
    return s
def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    headers = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")[1:]}
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        rest += s.recv(65536)
    return headers, rest
while True:
    s = call("GET", "/2018-06-01/runtime/invocation/next")
    headers, body = read_response(s)
    rid = headers[b"lambda-runtime-aws-request-id"].decode()
    event = json.loads(body)
    out = socket.create_connection((host, int(port)))
    out.sendall((f"POST /2018-06-01/runtime/invocation/{rid}/response HTTP/1.1\r\nHost: x\r\n"
                 "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n"
                 "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode())
    for part in (b"custom-", b"stream"):
        out.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.2)
    if event.get("fail"):
        detail = base64.b64encode(json.dumps({"errorMessage": "broke mid-stream", "errorType": "MidStream"}).encode())
        out.sendall(b"0\r\nLambda-Runtime-Function-Error-Type: MidStream\r\nLambda-Runtime-Function-Error-Body: " + detail + b"\r\n\r\n")
    else:
        out.sendall(b"0\r\n\r\n")
    read_response(out)
'''


def read_stream(lam, name, event, **kw):
    """(chunks with arrival times, the InvokeComplete event, the response)."""
    started = time.time()
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(event), **kw)
    chunks, complete = [], None
    for ev in resp["EventStream"]:
        if "PayloadChunk" in ev:
            chunks.append((time.time() - started, ev["PayloadChunk"]["Payload"]))
        if "InvokeComplete" in ev:
            complete = ev["InvokeComplete"]
    return chunks, complete, resp


def test_invoke_with_response_stream_delivers_chunks_as_they_are_written(lam):
    name = unique("streamer")
    create(lam, name, zip_files({"index.js": NODE_STREAMER}), runtime="nodejs20.x", handler="index.handler", Timeout=20)
    chunks, complete, resp = read_stream(lam, name, {}, LogType="Tail")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200 and resp["ExecutedVersion"] == "$LATEST"
    assert b"".join(c for _, c in chunks) == b"first;second"
    assert chunks[0][1] == b"first;"
    first_at, last_at = chunks[0][0], chunks[-1][0]
    assert last_at - first_at >= 1.0, f"the first chunk arrived before the function finished ({chunks})"
    assert "ErrorCode" not in complete
    assert "REPORT RequestId" in base64.b64decode(complete["LogResult"]).decode()

    # Errors: before the first byte, and mid-stream (after it): both end in InvokeComplete.
    chunks, complete, _ = read_stream(lam, name, {"failEarly": True})
    assert chunks == [] and complete["ErrorCode"] == "Error" and "failed before streaming" in complete["ErrorDetails"]
    chunks, complete, _ = read_stream(lam, name, {"failLate": True, "pause": 10})
    assert b"".join(c for _, c in chunks) == b"first;"
    assert complete["ErrorCode"] == "Error" and "failed mid-stream" in complete["ErrorDetails"]

    # A plain Invoke of a streaming function gets the whole body at once.
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    assert resp["Payload"].read() == b"first;second" and "FunctionError" not in resp


def test_invoke_with_response_stream_of_a_buffered_function(lam):
    name = unique("nostream")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    return {'whole': True}\n"}))
    chunks, complete, _ = read_stream(lam, name, {})
    assert [c for _, c in chunks] == [b'{"whole": true}'] and "ErrorCode" not in complete
    failing = unique("nostreamfail")
    create(lam, failing, zip_files({"app.py": "def handler(e, c):\n    raise KeyError('k')\n"}))
    chunks, complete, _ = read_stream(lam, failing, {})
    assert chunks == [] and complete["ErrorCode"] == "KeyError"


def test_custom_runtime_streams_and_reports_mid_stream_errors_with_trailers(lam):
    name = unique("customstream")
    create(
        lam, name, zip_files({"bootstrap": CUSTOM_STREAMER}, modes={"bootstrap": 0o755}),
        runtime="provided.al2023", handler="unused",
    )
    chunks, complete, _ = read_stream(lam, name, {})
    assert b"".join(c for _, c in chunks) == b"custom-stream" and "ErrorCode" not in complete
    chunks, complete, _ = read_stream(lam, name, {"fail": True})
    assert b"".join(c for _, c in chunks) == b"custom-stream"
    assert complete["ErrorCode"] == "MidStream" and "broke mid-stream" in complete["ErrorDetails"]


def url_connection(server, function_url):
    parsed = urllib.parse.urlsplit(function_url)
    conn = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(server.http_endpoint).port, timeout=60)
    return conn, parsed.netloc


def test_streaming_function_url_sends_the_first_bytes_before_the_function_returns(lam, server):
    name = unique("urlstream")
    create(lam, name, zip_files({"index.js": NODE_HTTP_STREAMER}), runtime="nodejs20.x", handler="index.handler")
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    allow_public_url(lam, name)
    assert created["InvokeMode"] == "RESPONSE_STREAM"
    conn, host = url_connection(server, created["FunctionUrl"])
    started = time.time()
    conn.request("GET", "/events", headers={"Host": host})
    resp = conn.getresponse()
    assert resp.status == 201 and resp.getheader("content-type") == "text/event-stream"
    assert resp.getheader("x-streamed") == "yes" and resp.msg.get_all("set-cookie") == ["s=1"]
    first = resp.read1(100)
    first_at = time.time() - started
    rest = resp.read()
    total_at = time.time() - started
    assert first == b"data: one\n\n", first
    assert rest == b"data: two\n\n"
    assert total_at - first_at >= 1.0, f"the first event came {first_at:.2f}s in, the last {total_at:.2f}s in"


NODE_BIG = r'''
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const mb = Number((event.queryStringParameters || {}).mb || event.mb || 0);
  const block = Buffer.alloc(1024 * 1024, 120);
  for (let i = 0; i < mb; i++) {
    if (!responseStream.write(block)) await new Promise((r) => responseStream.once("drain", r));
  }
  responseStream.end();
});
'''


def test_streams_carry_more_than_the_buffered_limit(lam, server):
    name = unique("bigstream")
    create(lam, name, zip_files({"index.js": NODE_BIG}), runtime="nodejs20.x", handler="index.handler",
           Timeout=60, MemorySize=512)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    allow_public_url(lam, name)
    conn, host = url_connection(server, created["FunctionUrl"])
    conn.request("GET", "/?mb=24", headers={"Host": host})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type") == "application/octet-stream"
    received = 0
    while True:
        block = resp.read1(1 << 20)
        if not block:
            break
        received += len(block)
    assert received == 24 * 1024 * 1024, "a streamed response is not held to the 6 MB buffered limit"
    chunks, complete, _ = read_stream(lam, name, {"mb": 12})
    assert sum(len(c) for _, c in chunks) == 12 * 1024 * 1024 and "ErrorCode" not in complete
