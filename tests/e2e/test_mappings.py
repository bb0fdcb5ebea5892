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
    fresh_broker, mqtt_broker, nats_add_stream, nats_server, pg_execute, postgres, rabbitmq,
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


SOURCES = {"nats": Nats, "redis": Redis, "postgres": Pg, "rabbitmq": Rabbit, "mqtt": Mqtt}


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
    if src.kind in ("nats", "redis", "postgres"):
        assert "payload" not in info  # a stream keeps its records: the record names them only
    else:
        # A queue's records are gone from the broker once acknowledged: the record carries them.
        assert base64.b64encode(b"b017-poison").decode() in json.dumps(info["payload"]), d

    # The event's shape.
    event = next(r["event"] for r in recorder.snapshot() if "event" in r)
    if src.kind == "rabbitmq":
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
    third = [f"c{i:03d}" for i in range(20)]
    src.produce(third)
    assert wait_for(lambda: set(third) <= set(values_seen(recorder)), 90), values_seen(recorder)[-30:]
    assert_in_order(recorder, src.partitions(), good + second + third, exactly_once=False)
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["LastProcessingResult"] == "OK", got
    lam.delete_event_source_mapping(UUID=uuid)
