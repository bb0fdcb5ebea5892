"""Event source mappings: boto3's Create/Get/Update/Delete/ListEventSourceMappings, and
pollers that read real NATS JetStream, Redis, PostgreSQL, RabbitMQ and Mosquitto servers
(started on loopback by `brokers`), records produced with each broker's own client.

Each source is checked the same way: records arrive in order per partition in batches of the
configured size; a poison record ends, alone after bisection, at the on-failure destination;
a kill -9 of Stratus in the middle of the stream loses nothing; a broker restart is survived."""

import asyncio
import base64
import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from brokers import (  # noqa: F401  (fixtures)
    fresh_broker, kafka_create_topic, mqtt_broker, nats_add_stream, nats_server, pg_execute, postgres, rabbitmq,
    redis_client, redis_server,
)
from conftest import create, unique, zip_files
from test_versions import Recorder, recorder, wait_for  # noqa: F401  (recorder is a fixture)

# Normalises every source's event to [(partition, value)], records it, and fails on "poison".
FUNCTION = r'''
import base64, json, os, time, urllib.request

def d(s):
    return base64.b64decode(s).decode()

def records(e):
    if e.get("eventSource") == "SelfManagedKafka":
        return [(p, d(r["value"])) for p, rs in e["records"].items() for r in rs]
    if "rmqMessagesByQueue" in e:
        return [(q, d(m["data"])) for q, ms in e["rmqMessagesByQueue"].items() for m in ms]
    out = []
    for r in e.get("Records", []):
        if "nats" in r:
            out.append((r["nats"]["subject"], d(r["nats"]["data"])))
        elif "redis" in r:
            out.append((r["redis"]["stream"], r["redis"]["fields"]["v"]))
        elif "dynamodb" in r:
            img = r["dynamodb"].get("NewImage") or r["dynamodb"].get("OldImage") or {}
            out.append((r["table"], img.get("v", {}).get("S", "")))
        elif "topic" in r:
            out.append((r["topic"], d(r["data"])))
    return out

def handler(e, c):
    recs = records(e)
    failing = [v for _, v in recs if "poison" in v]
    body = json.dumps({"records": recs, "failed": bool(failing), "event": e, "request_id": c.aws_request_id})
    urllib.request.urlopen(urllib.request.Request(os.environ["RECORDER"], data=body.encode(), method="POST"), timeout=10)
    if any(v.startswith("slow") for _, v in recs):
        time.sleep(0.3)
    if failing:
        if os.environ.get("REPORT"):
            ids = [r["redis"]["sequenceNumber"] for r in e["Records"] if "poison" in r["redis"]["fields"]["v"]]
            return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}
        raise RuntimeError("poison record: " + failing[0])
    return {}
'''

DESTINATION = r'''
import json, os, urllib.request
def handler(e, c):
    body = json.dumps({"destination": e}).encode()
    urllib.request.urlopen(urllib.request.Request(os.environ["RECORDER"], data=body, method="POST"), timeout=10)
'''


def function(lam, recorder, source=FUNCTION, **env):
    name = unique("esm")
    create(lam, name, zip_files({"app.py": source}), Timeout=30,
           Environment={"Variables": {"RECORDER": recorder.url, **env}})
    return name, lam.get_function_configuration(FunctionName=name)["FunctionArn"]


def wait_enabled(lam, uuid, timeout=60):
    state = wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled", timeout)
    assert state, lam.get_event_source_mapping(UUID=uuid)


# -- each source: how to name it, and how to produce with its own client ----------------------

class Nats:
    kind = "nats"

    def __init__(self, broker):
        self.broker, self.id = broker, unique("s").replace("-", "_").upper()
        nats_add_stream(broker.url, self.id, [f"{self.id}.>"])

    def mapping(self):
        return {"SelfManagedEventSource": {"Endpoints": {"NATS_SERVERS": [self.broker.url]}},
                "Topics": [self.id], "StartingPosition": "TRIM_HORIZON"}

    def partitions(self):
        return [f"{self.id}.a", f"{self.id}.b"]

    def produce(self, values):
        import nats

        async def main():
            nc = await nats.connect(self.broker.url)
            js = nc.jetstream()
            for i, v in enumerate(values):
                await js.publish(self.partitions()[i % 2], v.encode())
            await nc.close()
        asyncio.run(main())


class Redis:
    kind = "redis"

    def __init__(self, broker):
        self.broker, self.id = broker, unique("stream")

    def mapping(self):
        return {"SelfManagedEventSource": {"Endpoints": {"REDIS_SERVERS": [self.broker.url]}},
                "Topics": [self.id], "StartingPosition": "TRIM_HORIZON"}

    def partitions(self):
        return [self.id]

    def produce(self, values):
        r = redis_client(self.broker.url)
        pipe = r.pipeline()
        for v in values:
            pipe.xadd(self.id, {"v": v})
        pipe.execute()
        r.close()


class Pg:
    kind = "postgres"

    def __init__(self, broker):
        self.broker, self.id = broker, unique("t").replace("-", "_")
        pg_execute(broker.url, f"CREATE TABLE {self.id} (id serial PRIMARY KEY, v text)")
        pg_execute(broker.url, f"ALTER TABLE {self.id} REPLICA IDENTITY FULL")

    def mapping(self):
        return {"SelfManagedEventSource": {"Endpoints": {"POSTGRES_SERVERS": [self.broker.url]}},
                "Topics": [f"public.{self.id}"], "StartingPosition": "TRIM_HORIZON"}

    def partitions(self):
        return [f"public.{self.id}"]

    def produce(self, values):
        import psycopg

        with psycopg.connect(self.broker.url, autocommit=True) as c:
            for v in values:
                c.execute(f"INSERT INTO {self.id} (v) VALUES (%s)", (v,))


class Rabbit:
    kind = "rabbitmq"

    def __init__(self, broker):
        import pika

        self.broker, self.id = broker, unique("q")
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        conn.channel().queue_declare(self.id, durable=True)
        conn.close()

    def mapping(self):
        return {"SelfManagedEventSource": {"Endpoints": {"RABBITMQ_BROKERS": [self.broker.url]}},
                "Queues": [self.id]}

    def partitions(self):
        return [f"{self.id}::/"]

    def produce(self, values):
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        ch = conn.channel()
        ch.confirm_delivery()
        for v in values:
            ch.basic_publish("", self.id, v.encode(), pika.BasicProperties(delivery_mode=2, message_id=v))
        conn.close()


class Mqtt:
    kind = "mqtt"

    def __init__(self, broker):
        self.broker, self.id = broker, unique("t")

    def mapping(self):
        return {"SelfManagedEventSource": {"Endpoints": {"MQTT_BROKERS": [self.broker.url]}},
                "Topics": [f"{self.id}/#"]}

    def partitions(self):
        return [f"{self.id}/a", f"{self.id}/b"]

    def produce(self, values):
        import paho.mqtt.client as mqtt

        host, port = self.broker.url.removeprefix("mqtt://").split(":")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.max_inflight_messages_set(1)  # one at a time: the broker sees them in order
        c.connect(host, int(port))
        c.loop_start()
        for i, v in enumerate(values):
            c.publish(self.partitions()[i % 2], v.encode(), qos=1).wait_for_publish(10)
        c.disconnect()
        c.loop_stop()


class Kafka:
    kind = "kafka"

    def __init__(self, broker):
        self.broker, self.id = broker, unique("topic")
        kafka_create_topic(broker.url, self.id, partitions=2)

    def mapping(self):
        return {"SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [self.broker.url]}},
                "Topics": [self.id], "StartingPosition": "TRIM_HORIZON"}

    def partitions(self):
        return [f"{self.id}-0", f"{self.id}-1"]

    def after_restart(self):
        # tansu keeps topics in memory (its durable engines need S3 or a PostgreSQL schema of
        # its own): the restart checks that Stratus reconnects and reads on, not durability.
        kafka_create_topic(self.broker.url, self.id, partitions=2)

    def produce(self, values):
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.broker.url, "enable.idempotence": False})
        for i, v in enumerate(values):
            p.produce(self.id, v.encode(), partition=i % 2)
        assert p.flush(30) == 0


SOURCES = {"nats": Nats, "redis": Redis, "postgres": Pg, "rabbitmq": Rabbit, "mqtt": Mqtt, "kafka": Kafka}


def delivered(recorder):
    """Batches the function completed (a failing batch's records were not delivered)."""
    return [r["records"] for r in recorder.snapshot() if "records" in r and not r["failed"]]


def values_seen(recorder):
    return [v for batch in delivered(recorder) for _, v in batch]


def assert_in_order(recorder, partitions, expected, exactly_once):
    """Every expected value was delivered, in order per partition (the first delivery of each
    value; a redelivery after a crash may repeat some)."""
    by_partition = {}
    for batch in delivered(recorder):
        for p, v in batch:
            by_partition.setdefault(p, []).append(v)
    for p, vs in by_partition.items():
        want = [v for v in expected if v in set(vs)]
        firsts = list(dict.fromkeys(vs))
        assert [v for v in firsts if v in set(expected)] == want, f"{p} out of order: {vs}"
        if exactly_once:
            assert len(vs) == len(set(vs)), f"{p} delivered twice: {vs}"
    seen = set(values_seen(recorder))
    missing = [v for v in expected if v not in seen]
    assert not missing, f"never delivered: {missing}"
    assert set(by_partition) <= set(partitions)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_source_end_to_end(kind, fresh_server, fresh_broker, recorder, tmp_path):
    broker = fresh_broker(kind)
    src = SOURCES[kind](broker)
    server = fresh_server()
    lam = server.client()
    fn, _ = function(lam, recorder)
    dest, dest_arn = function(lam, recorder, DESTINATION)

    m = lam.create_event_source_mapping(
        FunctionName=fn, BatchSize=10, MaximumBatchingWindowInSeconds=1,
        DestinationConfig={"OnFailure": {"Destination": dest_arn}},
        MaximumRetryAttempts=1, BisectBatchOnFunctionError=True,
        **src.mapping(),
    )
    assert m["State"] == "Creating" and m["ResponseMetadata"]["HTTPStatusCode"] == 202
    uuid = m["UUID"]
    wait_enabled(lam, uuid)

    # Ordered delivery in full batches, and a poison record.
    first = [f"b{i:03d}" for i in range(40)]
    first[17] = "b017-poison"
    src.produce(first)
    good = [v for v in first if "poison" not in v]
    assert wait_for(lambda: set(good) <= set(values_seen(recorder)), 60), values_seen(recorder)
    destination = wait_for(lambda: [r["destination"] for r in recorder.snapshot() if "destination" in r], 60)
    assert len(destination) == 1, destination
    assert_in_order(recorder, src.partitions(), good, exactly_once=True)
    sizes = [len(b) for b in delivered(recorder)]
    assert max(sizes) == 10 and all(s <= 10 for s in sizes), sizes
    d = destination[0]
    assert d["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert d["requestContext"]["functionArn"].endswith(f":{fn}:$LATEST")
    info = next(v for k, v in d.items() if k.endswith("BatchInfo"))
    # Bisection left the poison record alone.
    assert info["batchSize"] == 1 and info["startSequenceNumber"] == info["endSequenceNumber"], d
    assert d["requestContext"]["approximateInvokeCount"] == 2
    if src.kind in ("nats", "redis", "postgres", "kafka"):
        assert "payload" not in info  # a stream keeps its records: the record names them only
    else:
        # A queue's records are gone from the broker once acknowledged: the record carries them.
        assert base64.b64encode(b"b017-poison").decode() in json.dumps(info["payload"]), d

    # The event's shape.
    event = next(r["event"] for r in recorder.snapshot() if "event" in r)
    if src.kind == "kafka":
        assert event["eventSource"] == "SelfManagedKafka" and event["bootstrapServers"] == broker.url
        rec = next(iter(event["records"].values()))[0]
        assert rec["topic"] == src.id and rec["timestampType"] == "CREATE_TIME" and isinstance(rec["offset"], int)
    elif src.kind == "rabbitmq":
        assert event["eventSource"] == "aws:rmq" and list(event["rmqMessagesByQueue"]) == src.partitions()
        msg = event["rmqMessagesByQueue"][src.partitions()[0]][0]
        assert msg["basicProperties"]["deliveryMode"] == 2 and msg["redelivered"] is False
    else:
        rec = event["Records"][0]
        assert rec["eventSource"] == f"stratus:{src.kind}" and rec["awsRegion"] == "us-east-1"

    # kill -9 of Stratus in the middle of the stream: nothing is lost.
    second = [f"slow{i:03d}" for i in range(40)]
    src.produce(second)
    assert wait_for(lambda: any(v.startswith("slow") for v in values_seen(recorder)), 30)
    server.stop(kill=True)
    before = len(values_seen(recorder))
    server.start()
    lam = server.client()
    assert wait_for(lambda: set(second) <= set(values_seen(recorder)), 90), (before, values_seen(recorder))
    assert_in_order(recorder, src.partitions(), good + second, exactly_once=False)

    # A broker restart is survived.
    broker.restart()
    if hasattr(src, "after_restart"):
        src.after_restart()
    third = [f"c{i:03d}" for i in range(20)]
    src.produce(third)
    assert wait_for(lambda: set(third) <= set(values_seen(recorder)), 90), values_seen(recorder)[-30:]
    assert_in_order(recorder, src.partitions(), good + second + third, exactly_once=False)
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["LastProcessingResult"] == "OK", got
    lam.delete_event_source_mapping(UUID=uuid)


def err(e):
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_mapping_api(server, lam, recorder, tmp_path):
    """The API's shapes and errors, with boto3 and the AWS CLI (no broker: the poller reports
    that it cannot connect)."""
    fn, fn_arn = function(lam, recorder)
    dest, dest_arn = function(lam, recorder, DESTINATION)
    unreachable = "nats://127.0.0.1:1"
    m = lam.create_event_source_mapping(
        FunctionName=fn, SelfManagedEventSource={"Endpoints": {"NATS_SERVERS": [unreachable]}},
        Topics=["ORDERS"], StartingPosition="LATEST", BatchSize=50, MaximumBatchingWindowInSeconds=2,
        ParallelizationFactor=3, MaximumRetryAttempts=4, MaximumRecordAgeInSeconds=3600,
        BisectBatchOnFunctionError=True, FunctionResponseTypes=["ReportBatchItemFailures"],
        DestinationConfig={"OnFailure": {"Destination": dest_arn}},
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"data": {"kind": ["order"]}})}]},
    )
    uuid = m["UUID"]
    assert m["State"] == "Creating" and m["StateTransitionReason"] == "User action"
    assert m["FunctionArn"] == fn_arn and m["BatchSize"] == 50 and m["ParallelizationFactor"] == 3
    assert m["SelfManagedEventSource"] == {"Endpoints": {"NATS_SERVERS": [unreachable]}}
    assert m["Topics"] == ["ORDERS"] and m["StartingPosition"] == "LATEST"
    assert m["MaximumRetryAttempts"] == 4 and m["MaximumRecordAgeInSeconds"] == 3600
    assert m["BisectBatchOnFunctionError"] is True and m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert m["DestinationConfig"] == {"OnFailure": {"Destination": dest_arn}}
    assert json.loads(m["FilterCriteria"]["Filters"][0]["Pattern"]) == {"data": {"kind": ["order"]}}
    assert m["EventSourceMappingArn"].endswith(f":event-source-mapping:{uuid}")
    # The poller says why it cannot read.
    got = wait_for(lambda: (g := lam.get_event_source_mapping(UUID=uuid))["LastProcessingResult"].startswith("PROBLEM") and g, 30)
    assert got and "Connection error" in got["LastProcessingResult"], got

    # Update: settings change, the source does not; disabling stops the poller.
    up = lam.update_event_source_mapping(UUID=uuid, BatchSize=10, Enabled=False, FunctionResponseTypes=[])
    assert up["State"] == "Disabling" and up["BatchSize"] == 10 and up["FunctionResponseTypes"] == []
    assert lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled"
    assert lam.update_event_source_mapping(UUID=uuid, Enabled=True)["State"] == "Updating"

    # List: by function, paginated.
    other = lam.create_event_source_mapping(
        FunctionName=fn, SelfManagedEventSource={"Endpoints": {"REDIS_SERVERS": ["redis://127.0.0.1:1"]}},
        Topics=["k"], StartingPosition="TRIM_HORIZON")["UUID"]
    listed = lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"]
    assert [x["UUID"] for x in listed] == [uuid, other]
    pages = list(lam.get_paginator("list_event_source_mappings").paginate(FunctionName=fn_arn, PaginationConfig={"PageSize": 1}))
    assert [x["UUID"] for p in pages for x in p["EventSourceMappings"]] == [uuid, other] and len(pages) >= 2
    assert lam.list_event_source_mappings(FunctionName=dest)["EventSourceMappings"] == []

    # `stratus mappings`.
    table = server.cli("mappings", "list", "--function", fn).stdout
    assert uuid in table and other in table and "redis://127.0.0.1:1 k" in table, table
    made = server.cli("mappings", "create", "--function", fn, "--source", "amqp://guest:guest@127.0.0.1:1/%2f",
                      "--topic", "jobs", "--batch-size", "7", "--retries", "2").stdout.strip()
    shown = lam.get_event_source_mapping(UUID=made)
    assert shown["Queues"] == ["jobs"] and shown["BatchSize"] == 7 and shown["MaximumRetryAttempts"] == 2
    assert "disabled" in server.cli("mappings", "disable", made).stdout
    assert lam.get_event_source_mapping(UUID=made)["State"] == "Disabled"
    server.cli("mappings", "delete", made)
    bad = server.cli("mappings", "create", "--function", fn, "--source", "smtp://x", "--topic", "t", check=False)
    assert bad.returncode != 0 and "unknown source scheme" in bad.stderr

    # The AWS CLI.
    out = server.aws("lambda", "create-event-source-mapping", "--function-name", fn,
                     "--self-managed-event-source", '{"Endpoints": {"MQTT_BROKERS": ["mqtt://127.0.0.1:1"]}}',
                     "--topics", "sensors/#", "--batch-size", "5")
    cli = json.loads(out.stdout)
    assert cli["Topics"] == ["sensors/#"] and cli["BatchSize"] == 5 and "StartingPosition" not in cli
    assert json.loads(server.aws("lambda", "get-event-source-mapping", "--uuid", cli["UUID"]).stdout)["UUID"] == cli["UUID"]
    server.aws("lambda", "delete-event-source-mapping", "--uuid", cli["UUID"])

    # Errors, in Lambda's shape.
    raw = server.client(validate=False)
    base = {"FunctionName": fn, "SelfManagedEventSource": {"Endpoints": {"NATS_SERVERS": [unreachable]}},
            "Topics": ["S"], "StartingPosition": "TRIM_HORIZON"}
    for change, code, words in [
        ({"BatchSize": 0}, "InvalidParameterValueException", "BatchSize"),
        ({"BatchSize": 10001}, "InvalidParameterValueException", "BatchSize"),
        ({"MaximumBatchingWindowInSeconds": 301}, "InvalidParameterValueException", "MaximumBatchingWindowInSeconds"),
        ({"ParallelizationFactor": 11}, "InvalidParameterValueException", "ParallelizationFactor"),
        ({"MaximumRetryAttempts": -2}, "InvalidParameterValueException", "MaximumRetryAttempts"),
        ({"MaximumRecordAgeInSeconds": 30}, "InvalidParameterValueException", "MaximumRecordAgeInSeconds"),
        ({"StartingPosition": "SOMETIME"}, "InvalidParameterValueException", "starting position"),
        ({"StartingPosition": None}, "InvalidParameterValueException", "StartingPosition is required"),
        ({"FunctionResponseTypes": ["Everything"]}, "InvalidParameterValueException", "FunctionResponseTypes"),
        ({"FilterCriteria": {"Filters": [{"Pattern": "{not json"}]}}, "InvalidParameterValueException", "filter pattern"),
        ({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:dlq"}}}, "InvalidParameterValueException", "function"),
        ({"DestinationConfig": {"OnFailure": {"Destination": fn_arn}}}, "InvalidParameterValueException", "own function"),
        ({"SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["k:9092"]}}, "StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": 1}, "InvalidParameterValueException", "Kafka"),
        ({"SelfManagedEventSource": {"Endpoints": {"SMTP": ["x"]}}}, "InvalidParameterValueException", "Unknown endpoint type"),
        ({"SelfManagedEventSource": None, "EventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/s"}, "InvalidParameterValueException", "self-managed"),
        ({"Topics": ["a", "b"]}, "InvalidParameterValueException", "exactly one"),
        ({"FunctionName": "nope"}, "ResourceNotFoundException", "Function not found"),
    ]:
        params = {k: v for k, v in {**base, **change}.items() if v is not None}
        with pytest.raises(ClientError) as e:
            raw.create_event_source_mapping(**params)
        c, msg = err(e)
        assert c == code and words in msg, (change, c, msg)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)
    with pytest.raises(ClientError) as e:
        lam.get_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000")
    assert err(e)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        raw.update_event_source_mapping(UUID=uuid, BatchSize=0)
    assert err(e)[0] == "InvalidParameterValueException"

    # Delete answers with the mapping, Deleting; then it is gone.
    assert lam.delete_event_source_mapping(UUID=uuid)["State"] == "Deleting"
    lam.delete_event_source_mapping(UUID=other)
    with pytest.raises(ClientError) as e:
        lam.delete_event_source_mapping(UUID=uuid)
    assert err(e)[0] == "ResourceNotFoundException"
    assert lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"] == []


def test_filters_partial_batches_and_iterator_age(fresh_server, nats_server, redis_server, recorder):
    """FilterCriteria drop what matches no filter (decoded JSON `data`); ReportBatchItemFailures
    retries from the lowest reported record; IteratorAge is reported."""
    server = fresh_server()
    lam = server.client()

    # Filters (NATS: the record's data is JSON).
    src = Nats(nats_server)
    fn, _ = function(lam, recorder)
    m = lam.create_event_source_mapping(
        FunctionName=fn, BatchSize=100, MaximumBatchingWindowInSeconds=1, **src.mapping(),
        FilterCriteria={"Filters": [
            {"Pattern": json.dumps({"data": {"kind": ["order"], "total": [{"numeric": [">", 10]}]}})},
            {"Pattern": json.dumps({"nats": {"subject": [{"suffix": ".b"}]}, "data": {"kind": ["refund"]}})},
        ]},
    )
    wait_enabled(lam, m["UUID"])
    values = [json.dumps({"kind": k, "total": t, "n": i}) for i, (k, t) in enumerate(
        [("order", 50), ("order", 5), ("refund", 1), ("refund", 2), ("other", 99), ("order", 11)])]
    src.produce(values)  # alternating subjects .a/.b
    # Kept: 0 (order 50), 3 (refund on .b), 5 (order 11); dropped: 1 (total 5), 2 (refund on .a), 4.
    assert wait_for(lambda: len(values_seen(recorder)) >= 3, 30)
    time.sleep(1.5)
    assert sorted(json.loads(v)["n"] for v in values_seen(recorder)) == [0, 3, 5]
    lam.delete_event_source_mapping(UUID=m["UUID"])

    # Partial batch responses (Redis): the function reports the poison record; the records
    # before it are done, the rest is retried, and the poison one ends at the destination.
    rec2 = Recorder()
    try:
        src = Redis(redis_server)
        fn, _ = function(lam, rec2, REPORT="1")
        dest, dest_arn = function(lam, rec2, DESTINATION)
        src.produce([f"r{i}" for i in range(6)])
        src.produce(["r6-poison"] + [f"r{i}" for i in range(7, 10)])
        m = lam.create_event_source_mapping(
            FunctionName=fn, BatchSize=10, MaximumBatchingWindowInSeconds=1, **src.mapping(),
            FunctionResponseTypes=["ReportBatchItemFailures"], MaximumRetryAttempts=1,
            DestinationConfig={"OnFailure": {"Destination": dest_arn}},
        )
        dests = wait_for(lambda: [r["destination"] for r in rec2.snapshot() if "destination" in r], 60)
        assert len(dests) == 1, dests
        calls = [[v for _, v in r["records"]] for r in rec2.snapshot() if "records" in r]
        # One batch of ten; then twice from the poison record on (the retry, then after the
        # retry limit the records past it alone).
        assert calls[0] == [f"r{i}" for i in range(6)] + ["r6-poison", "r7", "r8", "r9"], calls
        assert calls[1] == ["r6-poison", "r7", "r8", "r9"], calls
        info = dests[0]["RedisStreamBatchInfo"]
        assert info["batchSize"] == 4 and dests[0]["requestContext"]["approximateInvokeCount"] == 2
        lam.delete_event_source_mapping(UUID=m["UUID"])
    finally:
        rec2.close()

    # IteratorAge and the record counters are on /metrics.
    with urllib.request.urlopen(server.endpoint + "/metrics", timeout=30) as r:
        text = r.read().decode()
    assert f'lambda_iterator_age_milliseconds_count{{account="000000000000",function="{fn}"}}' in text, text[-2000:]
    assert "esm_records_total" in text


SLOW = r'''
import json, os, time, urllib.request
def handler(e, c):
    start = time.time()
    time.sleep(1.0)
    subjects = sorted({r["nats"]["subject"] for r in e["Records"]})
    body = json.dumps({"par": subjects, "start": start, "end": time.time()}).encode()
    urllib.request.urlopen(urllib.request.Request(os.environ["RECORDER"], data=body, method="POST"), timeout=10)
'''


def test_parallelization_factor_runs_partitions_side_by_side(fresh_server, nats_server, recorder):
    """ParallelizationFactor 2: the batches of two subjects run at the same time, each subject
    still in order (a batch per subject here)."""
    server = fresh_server()
    lam = server.client()
    src = Nats(nats_server)
    fn, _ = function(lam, recorder, SLOW)
    src.produce(["x0", "y0"])  # one on .a, one on .b
    lam.create_event_source_mapping(FunctionName=fn, BatchSize=10, MaximumBatchingWindowInSeconds=1,
                                    ParallelizationFactor=2, **src.mapping())
    calls = wait_for(lambda: (c := [r for r in recorder.snapshot() if "par" in r]) and len(c) >= 2 and c, 60)
    assert sorted(c["par"][0] for c in calls) == src.partitions(), calls
    assert all(len(c["par"]) == 1 for c in calls), calls
    a, b = calls
    assert a["start"] < b["end"] and b["start"] < a["end"], f"the two batches did not overlap: {calls}"


def test_batches_over_the_payload_limit_are_split(fresh_server, redis_server, recorder):
    """Eight 1 MB records with BatchSize 10 make a 8 MB batch, over the 6 MB invocation limit:
    the poller splits it (as Lambda trims batches to fit) and every record arrives once."""
    server = fresh_server()
    lam = server.client()
    src = Redis(redis_server)
    fn, _ = function(lam, recorder)
    src.produce([f"big{i}-" + "x" * (1 << 20) for i in range(8)])
    lam.create_event_source_mapping(FunctionName=fn, BatchSize=10, MaximumBatchingWindowInSeconds=1, **src.mapping())
    assert wait_for(lambda: len(values_seen(recorder)) >= 8, 60), len(values_seen(recorder))
    time.sleep(1)
    seen = [v.split("-")[0] for v in values_seen(recorder)]
    assert seen == [f"big{i}" for i in range(8)], seen
    assert max(len(b) for b in delivered(recorder)) <= 5, [len(b) for b in delivered(recorder)]


def test_records_older_than_the_maximum_age_go_to_the_destination(fresh_server, redis_server, recorder):
    """MaximumRecordAgeInSeconds: a Redis entry's id is its arrival time, so entries written
    with ids from 1970 are older than any limit; they skip the function and reach the
    on-failure destination as RecordAgeExceeded, and the fresh one is delivered."""
    server = fresh_server()
    lam = server.client()
    src = Redis(redis_server)
    fn, _ = function(lam, recorder)
    dest, dest_arn = function(lam, recorder, DESTINATION)
    r = redis_client(redis_server.url)
    r.xadd(src.id, {"v": "ancient-1"}, id="1000-0")
    r.xadd(src.id, {"v": "ancient-2"}, id="2000-0")
    r.xadd(src.id, {"v": "fresh"})
    r.close()
    lam.create_event_source_mapping(FunctionName=fn, BatchSize=10, MaximumBatchingWindowInSeconds=1,
                                    MaximumRecordAgeInSeconds=60, DestinationConfig={"OnFailure": {"Destination": dest_arn}},
                                    **src.mapping())
    dests = wait_for(lambda: [r["destination"] for r in recorder.snapshot() if "destination" in r], 60)
    assert wait_for(lambda: values_seen(recorder) == ["fresh"], 30), values_seen(recorder)
    assert len(dests) == 1 and dests[0]["requestContext"]["condition"] == "RecordAgeExceeded", dests
    info = dests[0]["RedisStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("1000-0", "2000-0", 2)
    assert dests[0]["requestContext"]["approximateInvokeCount"] == 0 and "responseContext" not in dests[0]


def test_postgres_slot_follows_other_tables_and_is_dropped_with_the_mapping(fresh_server, postgres, recorder):
    """A mapping's replication slot must not pin WAL while its table is quiet and others are
    busy; deleting the mapping drops the slot."""
    server = fresh_server()
    lam = server.client()
    src = Pg(postgres)
    other = unique("busy").replace("-", "_")
    pg_execute(postgres.url, f"CREATE TABLE {other} (id serial PRIMARY KEY, v text)")
    fn, _ = function(lam, recorder)
    uuid = lam.create_event_source_mapping(FunctionName=fn, BatchSize=10, **src.mapping())["UUID"]
    wait_enabled(lam, uuid)
    slot = "stratus_" + uuid.replace("-", "")
    for i in range(20):
        pg_execute(postgres.url, f"INSERT INTO {other} (v) VALUES ('x{i}')")
    target = pg_execute(postgres.url, "SELECT pg_current_wal_lsn()")[0][0]

    def caught_up():
        return pg_execute(postgres.url, "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                          (str(target), slot))[0][0]
    assert wait_for(caught_up, 30), pg_execute(postgres.url, "SELECT slot_name, confirmed_flush_lsn FROM pg_replication_slots")
    assert values_seen(recorder) == []
    lam.delete_event_source_mapping(UUID=uuid)
    assert wait_for(lambda: not pg_execute(postgres.url, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)), 30)
