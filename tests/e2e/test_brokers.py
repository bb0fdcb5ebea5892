"""The real brokers of brokers.py: each starts, carries a message with its own client, and keeps
what it persists across a restart. (The event source mapping tests build on these.)"""

import uuid

from brokers import (  # noqa: F401  (the fixtures)
    MqttSubscription,
    amqp_consume,
    amqp_declare_queue,
    amqp_get,
    amqp_publish,
    amqp_queue_count,
    mqtt_broker,
    mqtt_publish,
    mqtt_subscribe,
    nats_add_stream,
    nats_fetch,
    nats_publish,
    nats_server,
    nats_stream_info,
    pg_execute,
    postgres,
    rabbitmq,
    redis_server,
    redis_xack,
    redis_xadd,
    redis_xreadgroup,
)


def name(prefix):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_nats_jetstream_round_trip_survives_restart(nats_server):
    url, stream = nats_server.url, name("S")
    nats_add_stream(url, stream, [f"{stream}.>"])
    assert nats_publish(url, f"{stream}.a", b"one") == 1
    assert nats_publish(url, f"{stream}.b", "two") == 2
    assert nats_fetch(url, stream, f"{stream}.>", durable="c1") == [b"one", b"two"]
    assert nats_fetch(url, stream, f"{stream}.>", durable="c1", timeout=0.5) == []

    nats_server.restart()
    assert nats_stream_info(url, stream).state.messages == 2
    assert nats_publish(url, f"{stream}.a", b"three") == 3
    # The durable consumer kept its position; a new one starts from the beginning.
    assert nats_fetch(url, stream, f"{stream}.>", durable="c1") == [b"three"]
    assert nats_fetch(url, stream, f"{stream}.>", durable="c2") == [b"one", b"two", b"three"]


def test_mqtt_round_trip_and_retained_survives_restart(mqtt_broker):
    topic = name("t/")
    with MqttSubscription(mqtt_broker.address, f"{topic}/#") as sub:
        mqtt_publish(mqtt_broker.address, f"{topic}/x", b"hello")
        mqtt_publish(mqtt_broker.url, f"{topic}/y", "world")
        assert sub.wait(2) == [(f"{topic}/x", b"hello"), (f"{topic}/y", b"world")]

    mqtt_publish(mqtt_broker.address, f"{topic}/kept", b"retained", retain=True)
    mqtt_broker.restart()
    assert mqtt_subscribe(mqtt_broker.address, f"{topic}/kept") == [(f"{topic}/kept", b"retained")]


def test_redis_stream_round_trip_survives_restart(redis_server):
    url, stream = redis_server.url, name("s-")
    first = redis_xadd(url, stream, {"n": "1"})
    redis_xadd(url, stream, {"n": "2"})
    got = redis_xreadgroup(url, stream, "g")
    assert [fields for _id, fields in got] == [{"n": "1"}, {"n": "2"}]
    assert redis_xack(url, stream, "g", first) == 1

    redis_server.restart()
    redis_xadd(url, stream, {"n": "3"})
    # The group kept its position (only the new entry is new) and its pending entry.
    assert [fields for _id, fields in redis_xreadgroup(url, stream, "g")] == [{"n": "3"}]
    assert [fields for _id, fields in redis_xreadgroup(url, stream, "fresh")] == [{"n": "1"}, {"n": "2"}, {"n": "3"}]


def test_rabbitmq_round_trip_durable_queue_survives_restart(rabbitmq):
    url, queue = rabbitmq.url, name("q-")
    assert amqp_declare_queue(url, queue) == 0
    amqp_publish(url, queue, b"one")
    amqp_publish(url, queue, "two", headers={"h": "v"})
    assert amqp_get(url, queue) == b"one"
    amqp_publish(url, queue, b"three")

    rabbitmq.restart()
    assert amqp_queue_count(url, queue) == 2
    assert amqp_consume(url, queue, 5, timeout=1) == [b"two", b"three"]
    assert amqp_get(url, queue) is None


def test_postgres_round_trip_survives_restart(postgres):
    url, table = postgres.url, name("t_")
    assert pg_execute(url, "SHOW wal_level") == [("logical",)]
    pg_execute(url, f"CREATE TABLE {table} (id serial PRIMARY KEY, body text)")
    pg_execute(url, f"INSERT INTO {table} (body) VALUES (%s), (%s)", ("one", "two"))
    assert pg_execute(url, f"SELECT id, body FROM {table} ORDER BY id") == [(1, "one"), (2, "two")]

    postgres.restart()
    assert pg_execute(url, f"SELECT body FROM {table} ORDER BY id") == [("one",), ("two",)]
    if postgres.has_wal2json:
        slot = name("slot_")
        pg_execute(url, "SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (slot,))
        pg_execute(url, f"INSERT INTO {table} (body) VALUES ('three')")
        changes = pg_execute(url, "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)", (slot,))
        assert "three" in "".join(row[0] for row in changes)
        pg_execute(url, "SELECT pg_drop_replication_slot(%s)", (slot,))
