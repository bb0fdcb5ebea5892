"""Invocation behaviour end to end: request ids and log tails, warm reuse and scale-out,
asynchronous delivery and retries, updates retiring environments, the official runtime
clients (Rust lambda_runtime, Python awslambdaric), persistence across restarts, logs, and the
stratus CLI."""

import base64
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROLE, ROOT, create, invoke_json, unique, zip_files

# Each environment imports the module once, so `pid` (a random token made at import) names the
# environment: process ids say nothing inside a PID namespace, where every runtime is pid 2.
PID_FN = zip_files(
    {
        "app.py": (
            "import os, time, uuid\n"
            "VERSION = 'one'\n"
            "ENV = uuid.uuid4().hex\n"
            "def handler(event, context):\n"
            "    time.sleep(event.get('sleep', 0))\n"
            "    return {'pid': ENV, 'version': VERSION, 'env': os.environ.get('MARK')}\n"
        )
    }
)


def processes_with(marker):
    """Host processes whose command line contains `marker`."""
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    found.append(int(p.name))
            except OSError:
                pass
    return found


def poll(fn, timeout=30, interval=0.2):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value or time.time() > deadline:
            return value
        time.sleep(interval)


def test_request_id_and_tail_match_what_the_function_saw(lam):
    name = unique("rid")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    print('line from', c.aws_request_id)\n    return c.aws_request_id\n"}))
    resp = lam.invoke(FunctionName=name, LogType="Tail")
    rid = resp["ResponseMetadata"]["RequestId"]
    assert json.loads(resp["Payload"].read()) == rid
    tail = base64.b64decode(resp["LogResult"]).decode()
    lines = tail.splitlines()
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert lines[1] == f"line from {rid}"
    assert lines[2] == f"END RequestId: {rid}"
    assert lines[3].startswith(f"REPORT RequestId: {rid}\tDuration: ")
    assert "\tInit Duration: " in lines[3], "the first invocation is a cold start"
    second = base64.b64decode(lam.invoke(FunctionName=name, LogType="Tail")["LogResult"]).decode()
    assert "Init Duration" not in second, "the second reuses the warm environment"


def test_tail_is_the_last_4kb(lam):
    name = unique("tail4k")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    for i in range(2000):\n        print('line', i)\n    return 1\n"}))
    tail = base64.b64decode(lam.invoke(FunctionName=name, LogType="Tail")["LogResult"]).decode()
    assert len(tail.encode()) <= 4096
    assert "line 1999\nEND RequestId" in tail and "line 0\n" not in tail


def test_warm_reuse_and_scale_out(lam):
    name = unique("scale")
    create(lam, name, PID_FN, Timeout=30)
    first = invoke_json(lam, name)[1]["pid"]
    assert invoke_json(lam, name)[1]["pid"] == first, "sequential calls reuse one environment"
    n = 24
    client = lam  # boto3 clients are thread-safe
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: invoke_json(client, name, {"sleep": 1.0}), range(n)))
    elapsed = time.time() - started
    assert all(r[0]["StatusCode"] == 200 and "FunctionError" not in r[0] for r in results)
    pids = {r[1]["pid"] for r in results}
    assert len(pids) == n, "one invocation at a time per environment: concurrent calls get their own"
    assert elapsed < n * 1.0 / 2, f"calls ran in parallel ({elapsed:.1f}s)"


def test_async_invoke_is_delivered(lam, server):
    name = unique("async")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    print('async got', e['n'])\n"}))
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 42}))
    assert resp["StatusCode"] == 202
    rid = resp["ResponseMetadata"]["RequestId"]

    def delivered():
        out = server.cli("logs", name).stdout
        return f"START RequestId: {rid}" in out and "async got 42" in out

    assert poll(delivered), "the queued event ran with the request id the caller got"


def test_async_failures_are_retried_with_the_same_request_id(fresh_server, tmp_path):
    s = fresh_server("--async-retry-delay", "1")
    lam = s.client()
    name = unique("retry")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    raise RuntimeError('always')\n"}))
    rid = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")["ResponseMetadata"]["RequestId"]

    def three_attempts():
        return s.cli("logs", name).stdout.count(f"START RequestId: {rid}") >= 3

    assert poll(three_attempts, timeout=30)
    time.sleep(3.5)
    assert s.cli("logs", name).stdout.count(f"START RequestId: {rid}") == 3, "two retries, then it is discarded"
    assert "retries exhausted" in s.server_log()


def test_update_retires_environments_but_in_flight_calls_finish_on_old_code(lam):
    name = unique("retire")
    create(lam, name, PID_FN, Timeout=30)
    before = invoke_json(lam, name)[1]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke_json, lam, name, {"sleep": 2})
        time.sleep(0.7)
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"MARK": "new"}})
        new = invoke_json(lam, name)[1]
        old = slow.result()[1]
    assert old["env"] is None and old["pid"] == before["pid"], "the in-flight call finished in its old environment"
    assert new["env"] == "new" and new["pid"] != before["pid"], "new calls run with the new configuration"
    new_code = zip_files({"app.py": "def handler(e, c):\n    return {'version': 'two'}\n"})
    lam.update_function_code(FunctionName=name, ZipFile=new_code)
    assert invoke_json(lam, name)[1]["version"] == "two"


def test_crashed_environment_is_replaced_and_the_function_keeps_serving(lam):
    name = unique("crash")
    code = "import os, uuid\nENV = uuid.uuid4().hex\ndef handler(e, c):\n    if e.get('die'):\n        os._exit(9)\n    return ENV\n"
    create(lam, name, zip_files({"app.py": code}))
    pid = invoke_json(lam, name)[1]
    resp, payload = invoke_json(lam, name, {"die": True})
    assert resp["FunctionError"] == "Unhandled" and payload["errorType"] == "Runtime.ExitError"
    assert "exit status 9" in payload["errorMessage"]
    resp, new_pid = invoke_json(lam, name)
    assert "FunctionError" not in resp and new_pid != pid


def test_timeout_kills_the_environment_and_everything_in_it(lam):
    name = unique("hang")
    marker = f"{time.time() % 1000:.6f}"
    code = (
        "import subprocess, time, uuid\nENV = uuid.uuid4().hex\n"
        "def handler(e, c):\n"
        "    if e.get('hang'):\n"
        f"        subprocess.Popen(['sleep', '3{marker}'])\n"
        "        time.sleep(60)\n"
        "    return ENV\n"
    )
    create(lam, name, zip_files({"app.py": code}), Timeout=1)
    env = invoke_json(lam, name)[1]
    started = time.time()
    resp, payload = invoke_json(lam, name, {"hang": True})
    assert payload["errorType"] == "Sandbox.Timedout" and time.time() - started < 5
    assert poll(lambda: not processes_with(f"3{marker}"), timeout=5), "the environment's processes are gone"
    assert invoke_json(lam, name)[1] != env


def test_stdout_flood_is_bounded(fresh_server):
    s = fresh_server("--log-budget", str(2 << 20))
    lam = s.client()
    flood, neighbour = unique("flood"), unique("neighbour")
    code = "import sys\ndef handler(e, c):\n    line = 'x' * 1023 + '\\n'\n    for _ in range(40000):\n        sys.stdout.write(line)\n    return 'done'\n"
    create(lam, flood, zip_files({"app.py": code}), Timeout=60)
    create(lam, neighbour, zip_files({"app.py": "def handler(e, c):\n    return 'ok'\n"}))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(invoke_json, lam, flood)
        while not fut.done():
            assert invoke_json(lam, neighbour)[1] == "ok"
            time.sleep(0.1)
        assert fut.result()[1] == "done"
    time.sleep(1)
    size = sum(p.stat().st_size for p in (s.data_dir / "logs" / flood).iterdir())
    assert size <= (2 << 20) + (4 << 20) + 65536, f"logs kept within the budget ({size} bytes for 40 MB printed)"
    rss_kb = int([l for l in open(f"/proc/{s.proc.pid}/status") if l.startswith("VmHWM")][0].split()[1])
    assert rss_kb < 400 * 1024, f"the server did not buffer the flood ({rss_kb} kB peak)"


def test_idle_environments_are_stopped_after_keep_alive(fresh_server):
    s = fresh_server("--keep-alive", "1")
    lam = s.client()
    name = unique("idle")
    create(lam, name, PID_FN)
    env = invoke_json(lam, name)[1]["pid"]
    time.sleep(3)
    assert invoke_json(lam, name)[1]["pid"] != env, "the idle environment was stopped; this call started a new one"


def test_restart_keeps_functions_and_code(fresh_server, tmp_path):
    s = fresh_server()
    lam = s.client()
    name = unique("persist")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    return 'still here'\n"}), Environment={"Variables": {"KEY": "v"}})
    s.stop()
    s2 = fresh_server(data_dir=s.data_dir)
    lam2 = s2.client()
    assert lam2.get_function_configuration(FunctionName=name)["Environment"] == {"Variables": {"KEY": "v"}}
    assert invoke_json(lam2, name)[1] == "still here"


def rust_bootstrap():
    path = ROOT / "target" / "debug" / "rust-echo"
    if not path.exists():
        pytest.fail(f"{path} is missing: scripts/test builds it with `cargo build --workspace`")
    return path.read_bytes()


def test_rust_function_on_the_official_lambda_runtime_crate(lam):
    name = unique("rust")
    create(lam, name, zip_files({"bootstrap": rust_bootstrap()}, {"bootstrap": 0o755}), runtime="provided.al2023", handler="bootstrap")
    resp, payload = invoke_json(lam, name, {"hello": "rust"})
    assert payload == {"hello": "rust"} and "FunctionError" not in resp
    resp, ctx = invoke_json(lam, name, {"context": True})
    assert ctx["request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert ctx["function_name"] == name and ctx["memory"] == 128 and ctx["version"] == "$LATEST"
    assert ctx["invoked_function_arn"].endswith(f":function:{name}")
    assert ctx["deadline"] > time.time() * 1000
    resp, err = invoke_json(lam, name, {"fail": "rust says no"})
    assert resp["FunctionError"] == "Unhandled" and err["errorMessage"] == "rust says no"
    # Many concurrent invocations of one function.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: invoke_json(lam, name, {"i": i})[1], range(200)))
    assert results == [{"i": i} for i in range(200)]


@pytest.fixture(scope="session")
def awslambdaric_dir(tmp_path_factory):
    target = ROOT / "target" / "e2e-cache" / "awslambdaric"
    if not (target / "awslambdaric").exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "awslambdaric"],
            check=True,
            timeout=300,
        )
    return target


def test_python_function_on_the_official_awslambdaric(lam, awslambdaric_dir):
    files, modes = {}, {}
    for p in awslambdaric_dir.rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts:
            rel = str(p.relative_to(awslambdaric_dir))
            files[rel] = p.read_bytes()
            modes[rel] = p.stat().st_mode & 0o777
    files["app.py"] = "def handler(event, context):\n    return {'ric': event, 'fn': context.function_name}\n"
    files["bootstrap"] = "#!/bin/sh\ncd \"$LAMBDA_TASK_ROOT\"\nexec python3.11 -m awslambdaric app.handler\n"
    modes["bootstrap"] = 0o755
    name = unique("ric")
    create(lam, name, zip_files(files, modes), runtime="provided.al2023", handler="app.handler")
    resp, payload = invoke_json(lam, name, {"x": 1})
    assert payload == {"ric": {"x": 1}, "fn": name}, payload


def test_cli_invoke_functions_and_logs(server, lam, tmp_path):
    name = unique("clitool")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    print('cli saw', e)\n    return e\n"}))
    event = tmp_path / "event.json"
    event.write_text('{"from": "file"}')
    out = server.cli("invoke", name, "--payload", f"@{event}")
    assert json.loads(out.stdout) == {"from": "file"}
    assert "REPORT RequestId:" in out.stderr and "cli saw" in out.stderr
    assert name in server.cli("functions").stdout
    logs = server.cli("logs", name).stdout
    assert "cli saw {'from': 'file'}" in logs and "START RequestId" in logs
    follower = subprocess.Popen(
        [str(ROOT / "target" / "debug" / "stratus"), "logs", name, "--follow", "--endpoint", server.endpoint],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        server.cli("invoke", name, "--payload", '{"late": true}')
        deadline = time.time() + 10
        seen = ""
        while "'late': True" not in seen and time.time() < deadline:
            seen += follower.stdout.readline()
        assert "'late': True" in seen, "--follow prints new lines as they arrive"
    finally:
        follower.kill()
    failing = unique("clifail")
    create(lam, failing, zip_files({"app.py": "def handler(e, c):\n    raise ValueError('nope')\n"}))
    out = server.cli("invoke", failing, check=False)
    assert out.returncode == 1 and "ValueError" in out.stdout
    out = server.cli("invoke", "does-not-exist", check=False)
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr
