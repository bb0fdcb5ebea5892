"""Isolation, end to end: real functions next to a neighbour function that must keep answering
throughout. A function cannot see the data directory, another function's code, the host's
secrets or the platform's processes; a memory hog, a fork bomb, a /tmp filler, an endless loop
and a detached background process each end their own invocation (or environment) with the
right error and leave nothing running.

These need root (namespaces, cgroups); elsewhere they are skipped, and the server runs with
--unisolated."""

import base64
import contextlib
import json
import os
import pathlib
import socket
import threading
import time

import pytest

from conftest import create, invoke_json, unique, zip_files

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="isolation tests need root (namespaces and cgroups); CI runs them as root"
)


# The host uid a function runs as: the outer end of its user namespace's only mapping (or its
# own uid when the host gives it no user namespace).
HOST_UID = "(lambda m: int(m[1]) if m[0] != '0' else os.getuid())(open('/proc/self/uid_map').read().split())"


def processes_of_uid(uid):
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                for line in (p / "status").read_text().splitlines():
                    if line.startswith("Uid:") and int(line.split()[1]) == uid:
                        found.append(int(p.name))
            except (OSError, ValueError):
                pass
    return found


def wait_until(fn, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.1)
    return fn()


@pytest.fixture(scope="module")
def neighbour_fn(lam):
    name = unique("neighbour")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    return 'still here'\n"}))
    return name


@contextlib.contextmanager
def neighbour_keeps_answering(lam, name):
    """Invokes the neighbour every 50 ms meanwhile; fails the test if any call fails."""
    stop = threading.Event()
    failures, calls = [], [0]

    def run():
        while not stop.is_set():
            try:
                resp, payload = invoke_json(lam, name)
                if payload != "still here" or "FunctionError" in resp:
                    failures.append(payload)
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))
            calls[0] += 1
            time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=120)
    assert not failures, f"the neighbour failed: {failures[:3]}"
    assert calls[0] > 0


PROBE = '''
import os, socket
def handler(event, context):
    out = {"uid": os.getuid(), "gid": os.getgid(), "uid_map": open("/proc/self/uid_map").read().split(),
           "task_owner": os.stat("/var/task/app.py").st_uid, "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
    for path in event["paths"]:
        try:
            with open(path, "rb") as f:
                f.read(1)
            out[path] = "readable"
        except OSError as e:
            out[path] = e.__class__.__name__
    try:
        os.kill(event["server_pid"], 0)
        out["signal_server"] = "delivered"
    except OSError as e:
        out["signal_server"] = e.__class__.__name__
    try:
        with open("/var/task/new-file", "w") as f:
            f.write("x")
        out["write_code"] = "written"
    except OSError as e:
        out["write_code"] = e.__class__.__name__
    return out
'''


def test_a_function_sees_only_itself(lam, server, neighbour_fn):
    other = lam.get_function(FunctionName=neighbour_fn)["Configuration"]
    other_code = server.data_dir / "code" / "trees" / base64.b64decode(other["CodeSha256"]).hex() / "app.py"
    assert other_code.exists()
    name = unique("probe")
    create(lam, name, zip_files({"app.py": PROBE}))
    secrets = [str(server.data_dir / "stratus.db"), str(other_code), "/etc/shadow", "/root/.bashrc", "/proc/1/environ"]
    with neighbour_keeps_answering(lam, neighbour_fn):
        resp, out = invoke_json(lam, name, {"paths": secrets, "server_pid": server.proc.pid})
    assert "FunctionError" not in resp, out
    for path in secrets[:4]:
        assert out[path] == "FileNotFoundError", (path, out[path])
    assert out["/proc/1/environ"] != "readable" or out["pids"] == [1, 2], "only the environment's own processes"
    assert out["pids"] == [1, 2], f"the environment sees only its init and runtime: {out['pids']}"
    assert out["signal_server"] == "ProcessLookupError", "platform processes are invisible"
    assert out["write_code"] == "OSError", "the code is read-only"
    assert out["uid"] != 0 and out["uid"] != os.getuid(), "functions do not run as the platform's user"


def host_allows_user_namespaces():
    for path, off in (("/proc/sys/user/max_user_namespaces", "0"), ("/proc/sys/kernel/unprivileged_userns_clone", "0")):
        with contextlib.suppress(OSError):
            if pathlib.Path(path).read_text().strip() == off:
                return False
    return True


@pytest.mark.skipif(not host_allows_user_namespaces(), reason="this host allows no unprivileged user namespaces")
def test_a_function_runs_in_a_user_namespace_as_lambdas_user(lam):
    name = unique("userns")
    create(lam, name, zip_files({"app.py": PROBE}))
    resp, out = invoke_json(lam, name, {"paths": ["/etc/passwd"], "server_pid": 1})
    assert (out["uid"], out["gid"]) == (993, 990), "the function sees Lambda's sbx_user1051"
    inner, outer, count = (int(v) for v in out["uid_map"])
    assert inner == 993 and count == 1 and outer >= 900_000, f"only its own host uid is mapped: {out['uid_map']}"
    assert out["task_owner"] == 65534, "root (unmapped) owns the code, seen as nobody"


def test_memory_hog_fails_its_invocation_with_out_of_memory(lam, neighbour_fn):
    name = unique("hog")
    code = "def handler(e, c):\n    blocks = []\n    while True:\n        blocks.append(bytearray(16 * 1024 * 1024))\n"
    create(lam, name, zip_files({"app.py": code}), MemorySize=128, Timeout=20)
    with neighbour_keeps_answering(lam, neighbour_fn):
        resp, payload = invoke_json(lam, name, LogType="Tail")
    assert resp["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.OutOfMemory", payload
    assert "signal: killed" in payload["errorMessage"]
    tail = base64.b64decode(resp["LogResult"]).decode()
    used = int(tail.split("Max Memory Used: ")[1].split(" MB")[0])
    assert 120 <= used <= 128, tail
    assert "Error Type: Runtime.OutOfMemory" in tail


def test_max_memory_used_is_the_environments_real_peak(lam):
    name = unique("peak")
    code = "def handler(e, c):\n    b = bytearray(e['mb'] * 1024 * 1024)\n    b[::4096] = b'x' * len(b[::4096])\n    return len(b)\n"
    create(lam, name, zip_files({"app.py": code}), MemorySize=512)
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"mb": 200}), LogType="Tail")
    tail = base64.b64decode(resp["LogResult"]).decode()
    used = int(tail.split("Max Memory Used: ")[1].split(" MB")[0])
    assert 200 <= used <= 512, tail


def test_fork_bomb_is_contained_and_leaves_nothing(lam, neighbour_fn):
    name = unique("forkbomb")
    code = (
        "import os, time\n"
        "def handler(e, c):\n"
        "    if not e.get('bomb'):\n"
        f"        return {HOST_UID}\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            time.sleep(0.01)\n"
    )
    create(lam, name, zip_files({"app.py": code}), Timeout=3)
    uid = invoke_json(lam, name)[1]
    with neighbour_keeps_answering(lam, neighbour_fn):
        resp, payload = invoke_json(lam, name, {"bomb": True})
    # Contained by a limit of its own environment: the process limit holds it until the timeout,
    # or its 1,024 copies (128 MB between them) run out of memory first; either ends the invocation.
    assert payload["errorType"] in ("Sandbox.Timedout", "Runtime.OutOfMemory"), payload
    assert wait_until(lambda: not processes_of_uid(uid)), f"{len(processes_of_uid(uid))} processes left"


def test_endless_loop_times_out_and_leaves_nothing(lam, neighbour_fn):
    name = unique("spin")
    code = f"import os\ndef handler(e, c):\n    if e.get('spin'):\n        while True:\n            pass\n    return {HOST_UID}\n"
    create(lam, name, zip_files({"app.py": code}), Timeout=2)
    uid = invoke_json(lam, name)[1]
    with neighbour_keeps_answering(lam, neighbour_fn):
        started = time.time()
        resp, payload = invoke_json(lam, name, {"spin": True})
    assert payload["errorType"] == "Sandbox.Timedout" and time.time() - started < 6
    assert wait_until(lambda: not processes_of_uid(uid))


def test_tmp_filler_gets_no_space_left(lam, neighbour_fn):
    name = unique("tmpfill")
    code = (
        "import errno\n"
        "def handler(e, c):\n"
        "    chunk = b'x' * (1024 * 1024)\n"
        "    written = 0\n"
        "    try:\n"
        "        with open('/tmp/fill', 'wb') as f:\n"
        "            while True:\n"
        "                f.write(chunk)\n"
        "                f.flush()\n"
        "                written += len(chunk)\n"
        "    except OSError as err:\n"
        "        return {'errno': err.errno, 'mb': written // (1024 * 1024)}\n"
    )
    create(lam, name, zip_files({"app.py": code}), MemorySize=1024, EphemeralStorage={"Size": 512}, Timeout=30)
    with neighbour_keeps_answering(lam, neighbour_fn):
        resp, out = invoke_json(lam, name)
    assert "FunctionError" not in resp, out
    assert out["errno"] == 28, "ENOSPC: /tmp is bounded by EphemeralStorage"
    assert 500 <= out["mb"] <= 512, out


def test_tmp_filler_beyond_memory_fails_with_out_of_memory(lam, neighbour_fn):
    # /tmp is memory-backed: it counts against MemorySize (documented in docs/sandbox.md).
    name = unique("tmpoom")
    code = "def handler(e, c):\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n            f.write(b'x' * (1024 * 1024))\n"
    create(lam, name, zip_files({"app.py": code}), MemorySize=128, Timeout=30)
    with neighbour_keeps_answering(lam, neighbour_fn):
        resp, payload = invoke_json(lam, name)
    assert payload["errorType"] == "Runtime.OutOfMemory", payload


def test_detached_background_process_ends_with_its_environment(lam):
    name = unique("daemon")
    marker = f"4{time.time() % 1000:.6f}"
    code = (
        "import os, subprocess\n"
        "def handler(e, c):\n"
        f"    subprocess.Popen(['sleep', '{marker}'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"    return {HOST_UID}\n"
    )
    create(lam, name, zip_files({"app.py": code}))
    uid = invoke_json(lam, name)[1]
    assert processes_of_uid(uid), "the background process runs while its environment lives"
    lam.update_function_configuration(FunctionName=name, Description="retire the environment")
    assert wait_until(lambda: not processes_of_uid(uid)), "nothing of the environment is left"


def test_isolated_network_reaches_only_its_runtime_api(lam, server):
    code = (
        "import os, socket\n"
        "def handler(e, c):\n"
        "    host, port = e['api'].rsplit(':', 1)\n"
        "    try:\n"
        "        socket.create_connection((host, int(port)), timeout=2).close()\n"
        "        reached = True\n"
        "    except OSError:\n"
        "        reached = False\n"
        "    return {'reached_platform_api': reached, 'runtime_api': os.environ['AWS_LAMBDA_RUNTIME_API']}\n"
    )
    api = server.endpoint.split("//")[1]
    isolated, open_net = unique("netiso"), unique("nethost")
    create(lam, isolated, zip_files({"app.py": code}), Tags={"stratus:network": "isolated"})
    create(lam, open_net, zip_files({"app.py": code}))
    out = invoke_json(lam, isolated, {"api": api})[1]
    assert out == {"reached_platform_api": False, "runtime_api": "127.0.0.1:9001"}, out
    out = invoke_json(lam, open_net, {"api": api})[1]
    assert out["reached_platform_api"] is True, "by default functions share the host's network, as on Lambda"


def test_a_function_cannot_take_another_environments_events(lam):
    victim, thief = unique("victim"), unique("thief")
    create(lam, victim, zip_files({"app.py": "import os\ndef handler(e, c):\n    return os.environ['AWS_LAMBDA_RUNTIME_API']\n"}))
    # The thief waits on the victim's /next; the victim's own runtime queues behind it after
    # each invocation, so without protection the thief would receive the victim's next event.
    steal = (
        "import urllib.request\n"
        "def handler(e, c):\n"
        "    try:\n"
        "        with urllib.request.urlopen('http://' + e['api'] + '/2018-06-01/runtime/invocation/next', timeout=6) as r:\n"
        "            return {'stolen': r.read().decode()}\n"
        "    except Exception as err:\n"
        "        return {'refused': err.__class__.__name__}\n"
    )
    create(lam, thief, zip_files({"app.py": steal}), Timeout=10)
    victim_api = invoke_json(lam, victim)[1]
    result = {}
    t = threading.Thread(target=lambda: result.update(invoke_json(lam, thief, {"api": victim_api})[1]))
    t.start()
    time.sleep(1.5)
    answers = [invoke_json(lam, victim, {"n": i}) for i in range(3)]
    t.join()
    assert "stolen" not in result, f"another function received the victim's event: {result}"
    for resp, payload in answers:
        assert "FunctionError" not in resp and payload == victim_api, payload


def test_idle_environments_are_frozen_until_their_next_invocation(lam):
    name = unique("frozen")
    code = (
        "import threading, time\n"
        "ticks = [0]\n"
        "def tick():\n"
        "    while True:\n"
        "        ticks[0] += 1\n"
        "        time.sleep(0.01)\n"
        "threading.Thread(target=tick, daemon=True).start()\n"
        "def handler(e, c):\n"
        "    return ticks[0]\n"
    )
    create(lam, name, zip_files({"app.py": code}))
    before = invoke_json(lam, name)[1]
    time.sleep(1.0)
    after = invoke_json(lam, name)[1]
    # Unfrozen, the thread would tick ~100 times in that second; frozen after 50 ms idle, a few.
    assert after - before < 40, f"background work ran while idle: {after - before} ticks"
    assert after > before, "and it resumes when the environment is thawed"


UID_FN = f"import os\ndef handler(e, c):\n    return {HOST_UID}\n"


def test_environments_die_with_a_killed_server(fresh_server):
    s = fresh_server("--no-freeze")
    lam = s.client()
    create(lam, "victim", zip_files({"app.py": UID_FN}))
    uid = invoke_json(lam, "victim")[1]
    assert processes_of_uid(uid)
    s.stop(kill=True)
    assert wait_until(lambda: not processes_of_uid(uid), timeout=5), "SIGKILL of the server ends its environments"


def test_frozen_environments_of_a_killed_server_are_removed_at_the_next_start(fresh_server, tmp_path):
    s = fresh_server()
    lam = s.client()
    create(lam, "sleeper", zip_files({"app.py": UID_FN}))
    uid = invoke_json(lam, "sleeper")[1]
    time.sleep(0.5)  # frozen by now
    s.stop(kill=True)
    time.sleep(0.5)
    assert processes_of_uid(uid), "a frozen environment cannot react to its server's death"
    fresh_server(data_dir=tmp_path / "other")
    assert wait_until(lambda: not processes_of_uid(uid), timeout=10), "the next server start removes it"
