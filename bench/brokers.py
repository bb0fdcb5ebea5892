"""Starts private brokers for `stratus-bench mappings`, runs a command with their URLs in the
environment, and stops them.

    .venv/bin/python bench/brokers.py target/release/stratus-bench mappings
    .venv/bin/python bench/brokers.py --only nats,redis target/release/stratus-bench mappings

The brokers are the end-to-end tests' (tests/e2e/brokers.py): NATS with JetStream file storage,
Mosquitto with persistence, Redis with the append-only file, RabbitMQ, PostgreSQL with
wal_level=logical (and fsync=off), each on a free loopback port in a temporary directory, run
as their own system users when this runs as root. The command gets STRATUS_BENCH_NATS,
STRATUS_BENCH_REDIS, STRATUS_BENCH_POSTGRES, STRATUS_BENCH_RABBITMQ, STRATUS_BENCH_MQTT and
STRATUS_BENCH_KAFKA (tansu, a Kafka-compatible broker) for
the brokers that started; one that is not installed (or PostgreSQL without wal2json) is left
out with a note, and the bench skips that source.

Mosquitto gets one setting the tests' broker does not have, `max_queued_messages 0`: by default
it keeps at most 1,000 messages for a disconnected session and drops the rest, so a backlog could
not be pre-produced.
"""

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import threading

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "e2e"))

import brokers  # noqa: E402  (needs the path above)


class BenchMqttBroker(brokers.MqttBroker):
    """The tests' Mosquitto, keeping a disconnected session's whole backlog."""

    def prepare(self):
        super().prepare()
        with open(self.config_path, "a") as f:
            f.write("max_queued_messages 0\n")


KINDS = {
    "nats": brokers.NatsServer,
    "redis": brokers.RedisServer,
    "rabbitmq": brokers.RabbitMQ,
    "mqtt": BenchMqttBroker,
    "postgres": brokers.Postgres,
    "kafka": brokers.KafkaBroker,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated kinds to start (default: all): " + ",".join(KINDS))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args()
    # A TERM (timeout, kill) stops the brokers too: it unwinds through the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.command:
        parser.error("give the command to run, e.g. target/release/stratus-bench mappings")
    kinds = args.only.split(",") if args.only else list(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}")

    started, errors = {}, {}

    def start(kind):
        cls = KINDS[kind]
        why = cls.missing()
        if why:
            errors[kind] = why
            return
        b = cls()
        try:
            if kind == "postgres" and not b.has_wal2json:
                errors[kind] = "wal2json is not installed (apt-get install postgresql-15-wal2json)"
                b.close()
                return
            started[kind] = b.start()
        except Exception as e:  # reported below; the other brokers still run
            errors[kind] = str(e).splitlines()[0]
            b.close()

    threads = [threading.Thread(target=start, args=(k,)) for k in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        for kind, why in errors.items():
            print(f"brokers.py: {kind} left out: {why}", file=sys.stderr)
        env = dict(os.environ)
        for kind, b in started.items():
            env[f"STRATUS_BENCH_{kind.upper()}"] = b.url
            print(f"brokers.py: {kind} at {b.url}", file=sys.stderr)
        return subprocess.run(args.command, env=env).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        for b in started.values():
            b.close()


if __name__ == "__main__":
    sys.exit(main())
