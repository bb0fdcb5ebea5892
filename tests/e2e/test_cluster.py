"""Cluster mode: three `stratus serve` nodes on one PostgreSQL database and one NATS server act
as one platform. Any node answers any request; invocations meet on the node that owns their
function version (warm environments are reused whichever node was asked); reserved concurrency
holds across nodes; a node killed outright loses nothing accepted (its claimed events, its
mappings and its schedules move to the survivors); a stopped node drains; keys made with
`stratus accounts --database-url` are valid on every node.

PostgreSQL (Debian's postgresql-15) and `nats-server` are started privately on loopback; without
them the module skips, except under CI, where .ci/run installs them.
"""

import base64
import concurrent.futures
import hashlib
import http.client
import json
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
from botocore.exceptions import ClientError

from brokers import NatsServer, Postgres, nats_add_stream, nats_publish, pg_execute, redis_xadd, require
from brokers import redis_server  # noqa: F401  (a fixture)
from conftest import BIN, Server, create, unique, zip_files
from test_versions import Recorder, wait_for

ACCOUNT = "000000000000"

SINK = r'''
import json, os, time, urllib.request
def handler(e, c):
    start = time.monotonic()
    if isinstance(e, dict) and e.get("sleep"):
        time.sleep(e["sleep"])
    body = json.dumps({"event": e, "request_id": c.aws_request_id, "start": start, "end": time.monotonic(),
                       "stream": c.log_stream_name}).encode()
    urllib.request.urlopen(urllib.request.Request(os.environ["RECORDER"], data=body, method="POST"), timeout=10)
    return {"stream": c.log_stream_name, "start": start, "end": time.monotonic()}
'''


def score(node_id, key):
    """The rendezvous score Stratus gives `node_id` for `key` (cluster crate, `score`)."""
    return int.from_bytes(hashlib.sha256(node_id.encode() + b"\0" + key.encode()).digest()[:8], "big")


class Cluster:
    def __init__(self, tmp, database_url, nats_url, count=3, extra=()):
        self.database_url = database_url
        self.nats_url = nats_url
        self.nodes = []
        for i in range(count):
            node = Server(
                tmp / f"node{i}", "--database-url", database_url, "--nats-url", nats_url, "--node-id", f"n{i}",
                "--keep-alive", "120", "--schedule-seconds", "--drain-secs", "20", *extra,
                env={"STRATUS_WORKER_THREADS": "1"},
            )
            node.node_id = f"n{i}"
            self.nodes.append(node)
        for n in self.nodes:
            n.start(timeout=60)
        self.wait_live(count)

    def status(self, node=None):
        node = node or next(n for n in self.nodes if n.proc.poll() is None)
        with urllib.request.urlopen(node.endpoint + "/_stratus/cluster", timeout=10) as r:
            return json.load(r)

    def live(self, node=None):
        return sorted(n["id"] for n in self.status(node)["nodes"] if n["state"] == "live")

    def wait_live(self, count, timeout=30, node=None):
        assert wait_for(lambda: len(self.live(node)) == count, timeout), self.status(node)

    def owner(self, key, among=None):
        among = among or self.nodes
        return max(among, key=lambda n: score(n.node_id, key))

    def restart_stopped(self):
        for n in self.nodes:
            if n.proc.poll() is not None:
                n.start(timeout=60)
        self.wait_live(len(self.nodes))

    def stop(self):
        for n in self.nodes:
            n.stop(kill=True)


@pytest.fixture(scope="module")
def services():
    require(Postgres)
    require(NatsServer)
    pg, nats = Postgres(), NatsServer()
    pg.start()
    nats.start()
    yield pg, nats
    nats.close()
    pg.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, services):
    pg, nats = services
    pg_execute(pg.url_for("postgres"), "CREATE DATABASE stratus")
    c = Cluster(tmp_path_factory.mktemp("cluster"), pg.url_for("stratus"), nats.url)
    c.nats = nats
    yield c
    c.stop()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def sink(cluster, recorder, node=None, **kw):
    name = unique("sink")
    lam = (node or cluster.nodes[0]).client()
    create(lam, name, zip_files({"app.py": SINK}), Timeout=30, Environment={"Variables": {"RECORDER": recorder.url}}, **kw)
    return name


def test_any_node_answers_and_invocations_reuse_one_warm_environment(cluster, recorder):
    a, b, c = cluster.nodes
    name = sink(cluster, recorder, node=a)
    assert b.client().get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
    assert name in [f["FunctionName"] for f in c.client().list_functions()["Functions"]]
    streams, inits = set(), []
    for node in [b, c, a, b, c, a]:
        r = node.client().invoke(FunctionName=name, Payload=b'{"n": 1}', LogType="Tail")
        assert r["StatusCode"] == 200 and "FunctionError" not in r
        streams.add(json.loads(r["Payload"].read())["stream"])
        log = base64.b64decode(r["LogResult"]).decode()
        report = [line for line in log.splitlines() if line.startswith("REPORT")]
        assert report, log
        inits.append("Init Duration" in report[0])
    assert len(streams) == 1, f"every invocation ran in the same environment: {streams}"
    assert inits[1:] == [False] * 5, f"only the first invocation started an environment: {inits}"
    owner = cluster.owner(f"{ACCOUNT}/{name}/$LATEST")
    envs = json.load(urllib.request.urlopen(f"{owner.endpoint}/_stratus/functions/{name}/environments"))
    assert envs["live"] == 1, f"the environment lives on the version's owner {owner.node_id}: {envs}"
    # Its function URL, made through one node, answers on another node's HTTP front.
    created = a.client().create_function_url_config(FunctionName=name, AuthType="NONE")
    a.client().add_permission(FunctionName=name, StatementId="public", Action="lambda:InvokeFunctionUrl",
                              Principal="*", FunctionUrlAuthType="NONE")
    host = urllib.parse.urlsplit(created["FunctionUrl"]).hostname
    port = urllib.parse.urlsplit(c.http_endpoint).port
    time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/hello", body=b'{"n": 2}', headers={"Host": f"{host}:{port}"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert json.loads(resp.read())["stream"] in streams, "the URL request ran in the same warm environment"
    # Its log is read through any node, though only the owner ran it.
    other = next(n for n in cluster.nodes if n is not owner)
    time.sleep(0.5)
    log = other.cli("logs", name).stdout
    assert log.count("REPORT RequestId") == 7, log
    # A change through one node reaches the environment placed on another: new code runs.
    a.client().update_function_configuration(FunctionName=name, Environment={"Variables": {"RECORDER": recorder.url, "VERSION": "2"}})
    time.sleep(0.5)
    r = c.client().invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(r["Payload"].read())["stream"] not in streams, "the update retired the old environment"
    status = cluster.status(b)
    assert sorted(n["id"] for n in status["nodes"]) == ["n0", "n1", "n2"]
    for n in status["nodes"]:
        assert n["state"] == "live" and n["address"].startswith("http://127.0.0.1:") and "holds" in n and "load" in n


def test_a_streamed_answer_streams_through_another_node(cluster):
    from test_streaming import NODE_STREAMER, read_stream

    name = unique("stream")
    create(cluster.nodes[0].client(), name, zip_files({"index.js": NODE_STREAMER}), runtime="nodejs20.x",
           handler="index.handler", Timeout=20)
    owner = cluster.owner(f"{ACCOUNT}/{name}/$LATEST")
    other = next(n for n in cluster.nodes if n is not owner).client()
    chunks, complete, resp = read_stream(other, name, {}, LogType="Tail")
    assert b"".join(c for _, c in chunks) == b"first;second" and chunks[0][1] == b"first;"
    assert chunks[-1][0] - chunks[0][0] >= 1.0, f"the first chunk came through before the function finished: {chunks}"
    assert "ErrorCode" not in complete and "REPORT RequestId" in base64.b64decode(complete["LogResult"]).decode()
    chunks, complete, _ = read_stream(other, name, {"failLate": True, "pause": 300})
    assert b"".join(c for _, c in chunks) == b"first;"
    assert complete["ErrorCode"] == "Error" and "failed mid-stream" in complete["ErrorDetails"]
    chunks, complete, _ = read_stream(other, name, {"failEarly": True})
    assert chunks == [] and complete["ErrorCode"] == "Error"


def test_reserved_concurrency_is_never_exceeded_across_nodes(cluster, recorder):
    name = sink(cluster, recorder)
    cluster.nodes[1].client().put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    time.sleep(0.5)  # the change reaches every node

    def call(i):
        node = cluster.nodes[i % 3]
        try:
            r = node.client().invoke(FunctionName=name, Payload=json.dumps({"sleep": 0.4, "i": i}).encode())
            return json.loads(r["Payload"].read())
        except ClientError as e:
            assert e.response["Error"]["Code"] == "TooManyRequestsException", e.response
            return None

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        results = list(pool.map(call, range(60)))
    ran = [r for r in results if r]
    assert len(ran) >= 3, results
    events = sorted([(r["start"], 1) for r in ran] + [(r["end"], -1) for r in ran])
    running, most = 0, 0
    for _, d in events:
        running += d
        most = max(most, running)
    assert most <= 3, f"{most} invocations ran at once with reserved concurrency 3"
    assert most >= 2, "the callers did overlap"


def test_an_accounts_concurrency_holds_across_nodes(tmp_path, services, recorder):
    """Two nodes, an account limit of 4: the nodes' grants of it never add up to more, so
    however the callers spread over the nodes (and the invocations spill from a full owner
    to the other node), at most 4 run at once."""
    pg, nats = services
    pg_execute(pg.url_for("postgres"), "CREATE DATABASE limited")
    c = Cluster(tmp_path, pg.url_for("limited"), nats.url, count=2, extra=("--account-concurrency", "4"))
    try:
        name = sink(c, recorder)

        def call(i):
            try:
                r = c.nodes[i % 2].client().invoke(FunctionName=name, Payload=json.dumps({"sleep": 0.5}).encode())
                return json.loads(r["Payload"].read())
            except ClientError as e:
                assert e.response["Error"]["Code"] == "TooManyRequestsException", e.response
                return None

        ran = []
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            for _ in range(3):
                ran += [r for r in pool.map(call, range(24)) if r]
        events = sorted([(r["start"], 1) for r in ran] + [(r["end"], -1) for r in ran])
        running, most = 0, 0
        for _, d in events:
            running += d
            most = max(most, running)
        assert most <= 4, f"{most} invocations ran at once with an account limit of 4"
        assert most >= 3 and len(ran) >= 8, f"the limit was usable: {most} at once, {len(ran)} ran"
    finally:
        c.stop()


def test_a_change_reaches_every_node_without_nats(cluster):
    """NATS carries changes at once; the change log in the database brings one a node missed
    (here: NATS is down) within a couple of seconds."""
    name = unique("ver")
    a = cluster.nodes[0]
    create(a.client(), name, zip_files({"app.py": "import os\ndef handler(e, c):\n    return os.environ.get('VERSION')\n"}),
           Environment={"Variables": {"VERSION": "1"}})
    for n in cluster.nodes:
        assert json.loads(n.client().invoke(FunctionName=name)["Payload"].read()) == "1"
    owner = cluster.owner(f"{ACCOUNT}/{name}/$LATEST")
    writer = next(n for n in cluster.nodes if n is not owner)
    cluster.nats.stop()
    try:
        # Changed through a node that does not run it: only the log tells the owner.
        writer.client().update_function_configuration(FunctionName=name, Environment={"Variables": {"VERSION": "2"}})
        for n in cluster.nodes:
            got = wait_for(lambda: json.loads(n.client().invoke(FunctionName=name)["Payload"].read()) == "2", 10)
            assert got, f"{n.node_id} still runs the old configuration"
    finally:
        cluster.nats.start()


def test_a_node_refuses_a_database_migrated_by_a_newer_stratus(tmp_path, services):
    pg, nats = services
    pg_execute(pg.url_for("postgres"), "CREATE DATABASE future")
    pg_execute(pg.url_for("future"), "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    pg_execute(pg.url_for("future"), "INSERT INTO schema_migrations (version, description) VALUES (999, 'from a later release')")
    out = subprocess.run(
        [str(BIN), "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--s3-listen", "127.0.0.1:0", "--unisolated", "--database-url", pg.url_for("future"), "--nats-url", nats.url],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "version 999, newer than this binary's" in out.stderr and "upgrade stratus" in out.stderr, out.stderr


def test_keys_made_on_the_database_work_on_every_node(cluster):
    account = "4" + str(int(time.time() * 1000))[-11:]
    accounts_cli(cluster, "create", "--id", account, "--name", "team")
    key = accounts_cli(cluster, "keys", "create", account)
    import boto3
    from botocore.config import Config

    def client(node, secret=key["secret_access_key"]):
        return boto3.client("lambda", endpoint_url=node.endpoint, region_name="us-east-1",
                            aws_access_key_id=key["access_key_id"], aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 0}))

    time.sleep(1.1)
    name = unique("acct")
    create(client(cluster.nodes[0]), name, zip_files({"app.py": "def handler(e, c):\n    return c.invoked_function_arn\n"}))
    arn = json.loads(client(cluster.nodes[2]).invoke(FunctionName=name)["Payload"].read())
    assert f":{account}:function:{name}" in arn
    assert [f["FunctionName"] for f in client(cluster.nodes[1]).list_functions()["Functions"]] == [name]
    with pytest.raises(ClientError) as e:
        client(cluster.nodes[1], secret="x" * 40).list_functions()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert account in [a["id"] for a in accounts_cli(cluster, "list")]


def accounts_cli(cluster, *args):
    out = subprocess.run([str(BIN), "accounts", *args, "--database-url", cluster.database_url, "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_an_object_written_through_one_node_is_read_through_another(cluster, recorder):
    import boto3
    from botocore.config import Config

    name = sink(cluster, recorder)
    arn = cluster.nodes[0].client().get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    key = accounts_cli(cluster, "keys", "create", ACCOUNT)

    def s3(node):
        return boto3.client("s3", endpoint_url=node.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                            config=Config(retries={"max_attempts": 0}))

    a, b, c = cluster.nodes
    bucket = unique("bkt")
    s3(a).create_bucket(Bucket=bucket)
    s3(b).put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": [
        {"Id": "all", "LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    big, small = bytes(range(256)) * 1200, b"small"
    s3(a).put_object(Bucket=bucket, Key="big", Body=big)
    s3(a).put_object(Bucket=bucket, Key="small", Body=small)
    assert s3(c).get_object(Bucket=bucket, Key="big")["Body"].read() == big
    assert s3(b).get_object(Bucket=bucket, Key="small")["Body"].read() == small
    # A multipart upload whose parts go through two nodes, completed through the third.
    up = s3(a).create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    p1 = s3(a).upload_part(Bucket=bucket, Key="joined", UploadId=up, PartNumber=1, Body=b"a" * (5 << 20))["ETag"]
    p2 = s3(b).upload_part(Bucket=bucket, Key="joined", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    s3(c).complete_multipart_upload(Bucket=bucket, Key="joined", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})
    assert s3(b).head_object(Bucket=bucket, Key="joined")["ContentLength"] == (5 << 20) + 4
    assert sorted(o["Key"] for o in s3(c).list_objects_v2(Bucket=bucket)["Contents"]) == ["big", "joined", "small"]

    def notified():
        keys = []
        for r in recorder.snapshot():
            for rec in (r["event"].get("Records") or []) if isinstance(r["event"], dict) else []:
                keys.append(rec["s3"]["object"]["key"])
        return keys

    assert wait_for(lambda: sorted(notified()) == ["big", "joined", "small"], 30), notified()
    time.sleep(3)
    assert sorted(notified()) == ["big", "joined", "small"], "each notification fired once"
    s3(c).delete_object(Bucket=bucket, Key="big")
    with pytest.raises(ClientError):
        s3(a).get_object(Bucket=bucket, Key="big")


def test_a_node_killed_mid_burst_loses_nothing_and_its_work_moves(cluster, recorder, redis_server):  # noqa: F811
    name = sink(cluster, recorder)
    lam = cluster.nodes[0].client()
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    # A NATS and a Redis mapping, and a schedule ticking every 2 seconds.
    stream = unique("S").replace("-", "_").upper()
    nats_add_stream(cluster.nats.url, stream, [f"{stream}.>"])
    rkey = unique("stream")
    maps = {}
    for kind, source in [("nats", {"NATS_SERVERS": [cluster.nats.url]}, ), ("redis", {"REDIS_SERVERS": [redis_server.url]})]:
        topic = stream if kind == "nats" else rkey
        maps[kind] = lam.create_event_source_mapping(
            FunctionName=name, SelfManagedEventSource={"Endpoints": source}, Topics=[topic],
            StartingPosition="TRIM_HORIZON", BatchSize=10,
        )["UUID"]
    import boto3
    from botocore.config import Config
    def scheduler(node):
        return boto3.client("scheduler", endpoint_url=node.endpoint, region_name="us-east-1",
                            aws_access_key_id="t", aws_secret_access_key="t", config=Config(retries={"max_attempts": 0}))

    scheduler(cluster.nodes[1]).create_schedule(
        Name=name, ScheduleExpression="rate(2 seconds)", FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": arn, "RoleArn": "arn:aws:iam::000000000000:role/s",
                "Input": '{"tick": "<aws.scheduler.scheduled-time>", "id": "<aws.scheduler.execution-id>"}'},
    )

    def produce(i):
        nats_publish(cluster.nats.url, f"{stream}.x", json.dumps({"rec": f"nats-{i}"}).encode())
        redis_xadd(redis_server.url, rkey, {"rec": f"redis-{i}"})

    for i in range(10):
        produce(i)
    assert wait_for(lambda: delivered(recorder, "nats-9") and delivered(recorder, "redis-9"), 60), "mappings run"
    # The node killed is the one polling the NATS mapping: its mappings, the async events it
    # claimed and (if it had them) the account's schedules must all move.
    holder = mapping_holder(cluster, maps["nats"])
    owner = next(n for n in cluster.nodes if n.node_id == holder)
    survivors = [n for n in cluster.nodes if n is not owner]
    lam = survivors[0].client()
    # The burst: async events through every node; the owner is killed halfway.
    accepted, sync_errors = [], []
    stop_sync = threading.Event()

    def sync_calls():
        i = 0
        while not stop_sync.is_set():
            node = survivors[i % 2]
            i += 1
            try:
                r = node.client().invoke(FunctionName=name, Payload=json.dumps({"sync": i}).encode())
                if r.get("FunctionError"):
                    sync_errors.append(r["Payload"].read())
            except Exception as e:  # noqa: BLE001
                sync_errors.append(repr(e))
            time.sleep(0.05)

    t = threading.Thread(target=sync_calls)
    t.start()
    killed_at = None
    for i in range(60):
        if i == 30:
            owner.stop(kill=True)
            killed_at = time.time()
        node = cluster.nodes[i % 3]
        if node.proc.poll() is not None:
            node = survivors[i % 2]
        node.client().invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"async": i, "sleep": 0.3}).encode())
        accepted.append(i)
        if i >= 30:
            produce(100 + i)
        time.sleep(0.03)
    try:
        # Every accepted event and every record arrives, though the node that held some died.
        wanted = {f"async-{i}" for i in accepted}
        wanted |= {f"{kind}-{100 + i}" for kind in ("nats", "redis") for i in range(30, 60)}
        ok = wait_for(lambda: wanted <= seen(recorder), 90)
        assert ok, f"lost: {sorted(wanted - seen(recorder))}"
        # The dead node is declared dead, and a survivor holds the mappings.
        assert wait_for(lambda: owner.node_id not in cluster.live(survivors[0]), 15)
        for kind, uuid in maps.items():
            new_holder = mapping_holder(cluster, uuid, among=survivors, timeout=25)
            assert new_holder in [n.node_id for n in survivors], (kind, holder, new_holder)
        took_over = time.time() - killed_at
        assert took_over < 25, f"the mappings moved {took_over:.1f} s after the kill"
        # Ticks: one execution id per scheduled time, and they went on after the kill.
        time.sleep(3)
        ticks = {}
        for r in recorder.snapshot():
            e = r["event"]
            if isinstance(e, dict) and "tick" in e:
                ticks.setdefault(e["tick"], set()).add(e["id"])
        assert ticks, "the schedule fired"
        assert all(len(ids) == 1 for ids in ticks.values()), f"a tick was enqueued twice: {ticks}"
        after = [t for t in ticks if parse_time(t) > killed_at + 1]
        assert after, f"ticks continued after the kill: {sorted(ticks)}"
    finally:
        stop_sync.set()
        t.join()
        scheduler(survivors[0]).delete_schedule(Name=name)
        for uuid in maps.values():
            lam.delete_event_source_mapping(UUID=uuid)
        cluster.restart_stopped()
    assert not sync_errors, f"sync invocations through the survivors failed: {sync_errors[:5]}"


def test_a_paused_node_loses_its_mapping_and_comes_back_without_a_second_poller(cluster, recorder):
    """SIGSTOP the node polling a NATS mapping for longer than its lease: a survivor takes the
    mapping over; when the paused node wakes, its lease is gone (its checkpoints are refused,
    its poller stops) and it rejoins as a live node. Every record is delivered."""
    import signal

    name = sink(cluster, recorder)
    stream = unique("P").replace("-", "_").upper()
    nats_add_stream(cluster.nats.url, stream, [f"{stream}.>"])
    lam = cluster.nodes[0].client()
    uuid = lam.create_event_source_mapping(
        FunctionName=name, SelfManagedEventSource={"Endpoints": {"NATS_SERVERS": [cluster.nats.url]}},
        Topics=[stream], StartingPosition="TRIM_HORIZON", BatchSize=5,
    )["UUID"]
    try:
        for i in range(5):
            nats_publish(cluster.nats.url, f"{stream}.x", json.dumps({"rec": f"nats-{i}"}).encode())
        assert wait_for(lambda: {f"nats-{i}" for i in range(5)} <= seen(recorder), 60)
        holder = mapping_holder(cluster, uuid)
        paused = next(n for n in cluster.nodes if n.node_id == holder)
        others = [n for n in cluster.nodes if n is not paused]
        paused.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(5, 25):
                nats_publish(cluster.nats.url, f"{stream}.x", json.dumps({"rec": f"nats-{i}"}).encode())
            new_holder = mapping_holder(cluster, uuid, among=others, timeout=25)
            assert new_holder != holder
            assert wait_for(lambda: {f"nats-{i}" for i in range(25)} <= seen(recorder), 30), sorted(seen(recorder))
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        for i in range(25, 35):
            nats_publish(cluster.nats.url, f"{stream}.x", json.dumps({"rec": f"nats-{i}"}).encode())
        assert wait_for(lambda: {f"nats-{i}" for i in range(35)} <= seen(recorder), 30), sorted(seen(recorder))
        assert wait_for(lambda: holder in cluster.live(others[0]), 15), "the paused node came back"
        time.sleep(4)  # a renewal period: a stale poller would have shown itself by now
        holders = [n["id"] for n in cluster.status(others[0])["nodes"]
                   if n["state"] == "live" and uuid in n["holds"].get("mappings", [])]
        assert holders == [new_holder], f"one node polls the mapping: {holders}"
    finally:
        lam.delete_event_source_mapping(UUID=uuid)


def test_a_stopped_node_drains_and_comes_back(cluster, recorder):
    name = sink(cluster, recorder)
    owner = cluster.owner(f"{ACCOUNT}/{name}/$LATEST")
    others = [n for n in cluster.nodes if n is not owner]
    others[0].client().invoke(FunctionName=name, Payload=b"{}")
    errors, done = [], threading.Event()
    slow = concurrent.futures.ThreadPoolExecutor(1).submit(
        lambda: others[1].client().invoke(FunctionName=name, Payload=json.dumps({"sleep": 2, "slow": 1}).encode())
    )
    time.sleep(0.3)

    def calls():
        i = 0
        while not done.is_set():
            try:
                r = others[i % 2].client().invoke(FunctionName=name, Payload=b"{}")
                if r.get("FunctionError"):
                    errors.append(r["Payload"].read())
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
            i += 1

    t = threading.Thread(target=calls)
    t.start()
    try:
        owner.stop()  # SIGTERM: the owner drains
        assert owner.proc.returncode == 0, owner.server_log()[-3000:]
        r = slow.result(timeout=30)
        assert r["StatusCode"] == 200 and "FunctionError" not in r, "the invocation in flight finished"
        assert owner.node_id not in cluster.live(others[0]), "it left the cluster"
        time.sleep(1)
    finally:
        done.set()
        t.join()
    assert not errors, errors[:5]
    cluster.restart_stopped()
    assert cluster.live(owner) == ["n0", "n1", "n2"], "it rejoined"


def seen(recorder):
    """Every marker the function has been given: `async-N` events, and the `nats-N` and
    `redis-N` records of the mappings' batches (NATS data arrives base64-encoded)."""
    out = set()
    for r in recorder.snapshot():
        e = r["event"]
        if isinstance(e, dict) and "async" in e:
            out.add(f"async-{e['async']}")
        text = json.dumps(e)
        out.update(re.findall(r'"(redis-\d+)"', text))
        for data in re.findall(r'"data": "([A-Za-z0-9+/=]+)"', text):
            out.update(re.findall(r"nats-\d+", base64.b64decode(data).decode(errors="replace")))
    return out


def delivered(recorder, marker):
    return marker in seen(recorder)


def mapping_holder(cluster, uuid, among=None, timeout=40):
    """The node polling mapping `uuid`, as the cluster's status shows it; with `among`, only
    one of those nodes (asking the first of them)."""
    found = {}
    ids = [n.node_id for n in (among or cluster.nodes)]

    def look():
        for n in cluster.status((among or cluster.nodes)[0])["nodes"]:
            if n["state"] == "live" and n["id"] in ids and uuid in n["holds"].get("mappings", []):
                found["node"] = n["id"]
                return True
        return False

    assert wait_for(look, timeout), cluster.status((among or cluster.nodes)[0])
    return found["node"]


def parse_time(iso):
    import datetime
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
