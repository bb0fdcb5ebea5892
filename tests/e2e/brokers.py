"""Real message brokers for the end-to-end tests of event source mappings.

Each class starts a private server on 127.0.0.1, on a free port, in its own temporary
directory, and waits until the server really accepts clients (polling it with the broker's own
Python client). `stop()` and `start()` keep the port and the data directory, so `restart()`
shows what survives; `close()` stops the server and removes the directory.

    NatsServer   nats-server with JetStream file storage      .url  nats://127.0.0.1:PORT
    MqttBroker   mosquitto with persistence                   .url  mqtt://127.0.0.1:PORT, .address 127.0.0.1:PORT
    RedisServer  redis-server with the append-only file       .url  redis://127.0.0.1:PORT
    RabbitMQ     rabbitmq-server (own epmd, own node name)    .url  amqp://guest:guest@127.0.0.1:PORT/%2f
    Postgres     PostgreSQL, wal_level=logical, database app  .url  postgres://postgres@127.0.0.1:PORT/app

Servers that refuse to run as root (PostgreSQL) or would switch user themselves (RabbitMQ,
mosquitto) run as their own system user when the tests run as root; their directories are made
under /tmp with tempfile, because pytest's tmp_path (/tmp/pytest-of-root, mode 0700) is closed
to them. Ports come from the kernel's ephemeral range, so these never collide with system
daemons the packages may have started on the standard ports (4222, 1883, 6379, 5672, 5432).

Fixtures: the session-scoped `nats_server`, `mqtt_broker`, `redis_server`, `rabbitmq`,
`postgres` (one server each for the whole run, whichever modules import them), and the
function-scoped factory `fresh_broker` for a test that wants a server of its own. A test may
`restart()` a session server: it comes back on the same port with the same data. A missing
server binary skips the test, except under CI (CI set), where it fails: .ci/run installs them.

Use them from a test module like the other shared fixtures:

    from brokers import nats_server, nats_publish, nats_fetch  # noqa: F401
"""

import asyncio
import atexit
import contextlib
import glob
import logging
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import pytest

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def which(name):
    """`name` on PATH, or in the sbin directories (where Debian puts most servers, and which a
    normal user's PATH lacks)."""
    return shutil.which(name, path=SBIN_PATH)


def _service_user(name):
    """The user a server runs as: None (ourselves) unless we are root, else `name` (or `nobody`
    when that user does not exist)."""
    if os.geteuid() != 0:
        return None
    for user in (name, "nobody"):
        try:
            return pwd.getpwnam(user)
        except KeyError:
            pass
    raise RuntimeError(f"neither user {name} nor nobody exists")


def _chown_tree(path, user):
    if user is None:
        return
    for p in [path, *pathlib.Path(path).rglob("*")]:
        os.lchown(p, user.pw_uid, user.pw_gid)


_LIVE = set()  # every started broker, so an interrupted run still stops them


@atexit.register
def _stop_all():
    for b in list(_LIVE):
        with contextlib.suppress(Exception):
            b.stop(timeout=10)


class Broker:
    """One server process. Subclasses say how to start it and how to tell that it is ready."""

    kind = "broker"  # short name, also the fresh_broker key
    binary = None  # what must exist (name on PATH or absolute path)
    package = None  # the Debian package that brings it
    user = None  # system user it runs as when we are root (None: as ourselves)
    stop_signal = signal.SIGTERM
    start_timeout = 30

    def __init__(self, root=None):
        self.dir = pathlib.Path(root or tempfile.mkdtemp(prefix=f"stratus-broker-{self.kind}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_path = self.dir / "server.log"
        self.proc = None
        self.run_as = _service_user(self.user) if self.user else None
        self._prepared = False

    # -- what subclasses provide ------------------------------------------------------------

    @classmethod
    def missing(cls):
        """Why this broker cannot run here (None if it can)."""
        if not cls.binary or (os.path.isabs(cls.binary) and os.access(cls.binary, os.X_OK)) or which(cls.binary):
            return None
        return f"{cls.binary} not installed (apt-get install {cls.package}); .ci/run installs it"

    def prepare(self):
        """One-time setup of the data directory before the first start."""

    def command(self):
        raise NotImplementedError

    def env(self):
        return {**os.environ, "LC_ALL": "C.UTF-8"}

    def ready(self):
        """Returns once a client got a real answer; raises (or returns False) otherwise."""
        raise NotImplementedError

    def extra_logs(self):
        return []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _popen(self, argv, log, **kw):
        user = {}
        if self.run_as is not None:
            user = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
            start_new_session=True, **user, **kw,
        )

    def start(self, timeout=None):
        if self.running:
            return self
        if not self._prepared:
            self.prepare()
            _chown_tree(self.dir, self.run_as)
            self._prepared = True
        timeout = timeout or self.start_timeout
        with open(self.log_path, "ab") as log:
            log.write(f"==> starting {self.kind} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.proc = self._popen(self.command(), log, env=self.env())
        _LIVE.add(self)
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode} while starting:\n{self.log_tail()}"
                )
            if port_open(self.port):
                try:
                    if self.ready() is not False:
                        return self
                except Exception as e:  # not ready yet
                    last = e
            time.sleep(0.1)
        self.stop(kill=True)
        raise RuntimeError(
            f"{self.kind} did not accept clients on port {self.port} within {timeout}s "
            f"(last error: {last!r}):\n{self.log_tail()}"
        )

    def stop(self, timeout=30, kill=False):
        """Stops the server (gracefully unless `kill`), keeping its data directory."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if kill else self.stop_signal)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Anything the server left in its own session (it was started with start_new_session).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def restart(self, timeout=None, kill=False):
        """Same port, same data directory: what the server persisted is still there."""
        self.stop(kill=kill)
        return self.start(timeout)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars=4000):
        parts = []
        for p in [self.log_path, *self.extra_logs()]:
            p = pathlib.Path(p)
            if p.exists():
                parts.append(f"--- {p} ---\n{p.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or "(no log)"

    def __repr__(self):
        return f"<{type(self).__name__} {getattr(self, 'url', '')} {'running' if self.running else 'stopped'}>"


# ---------------------------------------------------------------------------------------------
# NATS


class NatsServer(Broker):
    """nats-server with JetStream, storing streams in files under `store_dir`."""

    kind = "nats"
    binary = "nats-server"
    package = "nats-server"

    def __init__(self, root=None):
        super().__init__(root)
        self.store_dir = self.dir / "jetstream"
        self.url = f"nats://{self.host}:{self.port}"

    def command(self):
        return [which(self.binary), "-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.store_dir)]

    def ready(self):
        async def check():
            nc = await _nats_connect(self.url)
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()

        asyncio.run(check())


async def _nats_connect(url):
    import nats

    async def quiet(_e):
        pass

    return await nats.connect(
        url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0, error_cb=quiet
    )


def _nats_run(url, fn):
    async def main():
        nc = await _nats_connect(url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def nats_add_stream(url, stream, subjects, **config):
    """Creates (or updates to the same config) a JetStream stream with file storage."""
    from nats.js.api import StorageType

    config.setdefault("storage", StorageType.FILE)
    return _nats_run(url, lambda js: js.add_stream(name=stream, subjects=list(subjects), **config))


def nats_publish(url, subject, data, headers=None):
    """Publishes to JetStream and returns the stream sequence number of the message."""
    data = data.encode() if isinstance(data, str) else data
    return _nats_run(url, lambda js: js.publish(subject, data, headers=headers)).seq


def nats_fetch(url, stream, subject, durable="test-consumer", batch=100, timeout=2.0, ack=True):
    """Pull-consumes what is available (up to `batch`) through a durable pull consumer; returns
    the message bodies. Returns [] when nothing arrives within `timeout`."""
    import nats.errors

    async def fn(js):
        sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
        try:
            msgs = await sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []
        if ack:
            for m in msgs:
                await m.ack_sync()
        return [m.data for m in msgs]

    return _nats_run(url, fn)


def nats_stream_info(url, stream):
    """The stream's info (`.state.messages`, `.state.last_seq`, ...)."""
    return _nats_run(url, lambda js: js.stream_info(stream))


# ---------------------------------------------------------------------------------------------
# MQTT


class MqttBroker(Broker):
    """mosquitto, persisting retained messages and durable sessions under `data_dir`."""

    kind = "mqtt"
    binary = "mosquitto"
    package = "mosquitto"
    user = "mosquitto"  # as root it would drop to this user by itself; start it so directly

    def __init__(self, root=None):
        super().__init__(root)
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "mosquitto.conf"
        self.address = f"{self.host}:{self.port}"
        self.url = self.mqtt_url = f"mqtt://{self.address}"

    def prepare(self):
        self.data_dir.mkdir(exist_ok=True)
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.data_dir}/\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )

    def command(self):
        return [which(self.binary), "-c", str(self.config_path)]

    def ready(self):
        c = _mqtt_client(self.address, f"ready-{uuid.uuid4().hex[:8]}", timeout=2)
        c.disconnect()
        c.loop_stop()


def _hostport(address):
    """("host", port) from "host:port" or "mqtt://host:port"."""
    if "://" in address:
        u = urllib.parse.urlsplit(address)
        return u.hostname, u.port or 1883
    host, _, port = address.rpartition(":")
    return host, int(port)


def _mqtt_client(address, client_id=None, clean_session=True, timeout=5, on_message=None):
    """A connected paho client (network loop running in a thread)."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:12]}",
        clean_session=clean_session, protocol=mqtt.MQTTv311,
    )
    connected = threading.Event()
    result = {}

    def on_connect(_c, _u, _flags, reason_code, _props):
        result["rc"] = reason_code
        connected.set()

    c.on_connect = on_connect
    if on_message:
        c.on_message = on_message
    host, port = _hostport(address)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    if not connected.wait(timeout) or result["rc"].is_failure:
        c.loop_stop()
        raise ConnectionError(f"MQTT connect to {address} failed: {result.get('rc', 'no CONNACK')}")
    return c


def mqtt_publish(address, topic, payload, qos=1, retain=False, timeout=5):
    """Publishes one message and waits for the broker's PUBACK (QoS 1)."""
    c = _mqtt_client(address)
    try:
        info = c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"MQTT publish to {topic} not acknowledged within {timeout}s")
    finally:
        c.disconnect()
        c.loop_stop()


class MqttSubscription:
    """A subscription that collects (topic, payload) pairs in `messages` from the moment it is
    made; use it as a context manager around the publishing."""

    def __init__(self, address, topic, qos=1, client_id=None, clean_session=True, timeout=5):
        self.messages = []
        self._cond = threading.Condition()

        def on_message(_c, _u, msg):
            with self._cond:
                self.messages.append((msg.topic, msg.payload))
                self._cond.notify_all()

        subscribed = threading.Event()
        self.client = _mqtt_client(address, client_id, clean_session, timeout, on_message)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.subscribe(topic, qos=qos)
        if not subscribed.wait(timeout):
            self.close()
            raise TimeoutError(f"MQTT subscribe to {topic} not acknowledged within {timeout}s")

    def wait(self, count=1, timeout=5):
        """The messages so far, once there are at least `count` (or `timeout` passed)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def mqtt_subscribe(address, topic, count=1, qos=1, timeout=5):
    """Subscribes and returns the first `count` (topic, payload) pairs (retained ones included),
    or fewer if `timeout` passes."""
    with MqttSubscription(address, topic, qos=qos, timeout=timeout) as sub:
        return sub.wait(count, timeout)[:count]


# ---------------------------------------------------------------------------------------------
# Redis


class RedisServer(Broker):
    """redis-server with the append-only file (everything written survives a restart)."""

    kind = "redis"
    binary = "redis-server"
    package = "redis-server"

    def __init__(self, root=None):
        super().__init__(root)
        self.url = f"redis://{self.host}:{self.port}"

    def command(self):
        return [
            which(self.binary), "--bind", self.host, "--port", str(self.port), "--dir", str(self.dir),
            "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", "",
            "--protected-mode", "no",
        ]

    def ready(self):
        c = redis_client(self.url, socket_timeout=2)
        try:
            c.ping()
        finally:
            c.close()


def redis_client(url, decode_responses=True, **kw):
    import redis

    return redis.Redis.from_url(url, decode_responses=decode_responses, **kw)


def redis_xadd(url, stream, fields):
    """XADD; returns the entry id."""
    with redis_client(url) as c:
        return c.xadd(stream, fields)


def redis_xreadgroup(url, stream, group, consumer="test-consumer", count=100, block_ms=None, start="0"):
    """XREADGROUP of new entries (`>`) for `group`, which is created (with the stream) at `start`
    if missing. Returns [(id, {field: value})]."""
    import redis

    with redis_client(url) as c:
        try:
            c.xgroup_create(stream, group, id=start, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        resp = c.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
        return [entry for _name, entries in resp for entry in entries]


def redis_xack(url, stream, group, *ids):
    with redis_client(url) as c:
        return c.xack(stream, group, *ids)


# ---------------------------------------------------------------------------------------------
# RabbitMQ


class RabbitMQ(Broker):
    """rabbitmq-server as a node of its own (own node name, own epmd, own directories; no
    plugins), with the default guest user, which may connect from loopback."""

    kind = "rabbitmq"
    binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # not /usr/sbin's wrapper, which su's and redirects
    package = "rabbitmq-server"
    user = "rabbitmq"
    start_timeout = 60

    def __init__(self, root=None):
        super().__init__(root)
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"rabbit-test-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@{self.host}:{self.port}/%2f"
        self.epmd = None

    @classmethod
    def missing(cls):
        if os.access(cls.binary, os.X_OK) and (which("epmd") or glob.glob("/usr/lib/erlang/erts-*/bin/epmd")):
            return None
        return "rabbitmq-server not installed (apt-get install rabbitmq-server); .ci/run installs it"

    def prepare(self):
        for d in ("mnesia", "log", "home"):
            (self.dir / d).mkdir(exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text("")
        (self.dir / "rabbitmq-env.conf").write_text("")

    def env(self):
        d = self.dir
        return {
            **super().env(),
            "HOME": str(d / "home"),  # the Erlang cookie goes here
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),  # default NODE_PORT+20000 may exceed 65535
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        }

    def command(self):
        return [self.binary]

    def start(self, timeout=None):
        if not self.running and (self.epmd is None or self.epmd.poll() is not None):
            # A private epmd: erl would otherwise start a system-wide one that outlives the tests.
            epmd = which("epmd") or sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))[-1]
            with open(self.dir / "epmd.log", "ab") as log:
                self.epmd = self._popen([epmd, "-port", str(self.epmd_port), "-address", self.host], log)
            deadline = time.time() + 10
            while not port_open(self.epmd_port) and time.time() < deadline:
                time.sleep(0.05)
        return super().start(timeout)

    def stop(self, timeout=30, kill=False):
        super().stop(timeout, kill)
        epmd, self.epmd = self.epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.kill()
            epmd.wait()

    def ready(self):
        with _quiet("pika"):
            conn = amqp_connect(self.url, connection_attempts=1, socket_timeout=2)
        conn.close()

    def extra_logs(self):
        return sorted((self.dir / "log").glob("*.log"))


@contextlib.contextmanager
def _quiet(logger):
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def amqp_connect(url, **params):
    import pika

    p = pika.URLParameters(url)
    for k, v in params.items():
        setattr(p, k, v)
    return pika.BlockingConnection(p)


@contextlib.contextmanager
def amqp_channel(url):
    conn = amqp_connect(url)
    try:
        yield conn.channel()
    finally:
        conn.close()


def amqp_declare_queue(url, queue, durable=True, arguments=None):
    """Declares the queue; returns its message count."""
    with amqp_channel(url) as ch:
        return ch.queue_declare(queue, durable=durable, arguments=arguments).method.message_count


def amqp_queue_count(url, queue):
    """Messages ready in an existing queue."""
    with amqp_channel(url) as ch:
        return ch.queue_declare(queue, passive=True).method.message_count


def amqp_publish(url, queue, body, persistent=True, headers=None, exchange="", content_type=None):
    """Publishes (confirmed by the broker) to `exchange` with routing key `queue`."""
    import pika

    body = body.encode() if isinstance(body, str) else body
    props = pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient,
        headers=headers, content_type=content_type,
    )
    with amqp_channel(url) as ch:
        ch.confirm_delivery()
        ch.basic_publish(exchange, queue, body, props, mandatory=True)


def amqp_get(url, queue, ack=True):
    """basic_get one message body, or None if the queue is empty."""
    with amqp_channel(url) as ch:
        method, _props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        if ack:
            ch.basic_ack(method.delivery_tag)
        else:
            ch.basic_nack(method.delivery_tag, requeue=True)
        return body


def amqp_consume(url, queue, count, timeout=5, ack=True):
    """Consumes up to `count` message bodies, waiting at most `timeout` seconds for each."""
    bodies = []
    with amqp_channel(url) as ch:
        for method, _props, body in ch.consume(queue, inactivity_timeout=timeout):
            if method is None:
                break
            if ack:
                ch.basic_ack(method.delivery_tag)
            bodies.append(body)
            if len(bodies) >= count:
                break
        ch.cancel()  # unacked messages go back to the queue
    return bodies


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_bindir():
    env = os.environ.get("STRATUS_PG_BINDIR")
    if env:
        return env
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return dirs[-1] if dirs else None


class Postgres(Broker):
    """A PostgreSQL cluster of its own: wal_level=logical, trust auth, superuser `postgres`,
    database `app` (the `url`). Runs as the `postgres` user when the tests run as root."""

    kind = "postgres"
    package = "postgresql-15"
    user = "postgres"  # initdb and postgres refuse to run as root
    stop_signal = signal.SIGINT  # "fast" shutdown: ends sessions, checkpoints
    start_timeout = 60

    def __init__(self, root=None):
        super().__init__(root)
        self.bindir = _pg_bindir()
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.url = self.url_for("app")

    @classmethod
    def missing(cls):
        bindir = _pg_bindir()
        if bindir and os.access(os.path.join(bindir, "postgres"), os.X_OK):
            return None
        return "PostgreSQL not installed (apt-get install postgresql-15); .ci/run installs it"

    @property
    def has_wal2json(self):
        libdir = subprocess.run(
            [os.path.join(self.bindir, "pg_config"), "--pkglibdir"], capture_output=True, text=True
        ).stdout.strip()
        return bool(libdir) and os.path.exists(os.path.join(libdir, "wal2json.so"))

    def url_for(self, database):
        return f"postgres://postgres@{self.host}:{self.port}/{database}"

    def prepare(self):
        self.socket_dir.mkdir(exist_ok=True)
        _chown_tree(self.dir, self.run_as)
        with open(self.log_path, "ab") as log:
            initdb = self._popen(
                [os.path.join(self.bindir, "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                log, env=self.env(),
            )
            if initdb.wait(timeout=120) != 0:
                raise RuntimeError(f"initdb failed:\n{self.log_tail()}")

    def command(self):
        return [
            os.path.join(self.bindir, "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-k", str(self.socket_dir), "-c", f"listen_addresses={self.host}", "-c", "wal_level=logical",
            "-c", "max_replication_slots=10", "-c", "max_wal_senders=10", "-c", "fsync=off",
        ]

    def ready(self):
        import psycopg

        with psycopg.connect(self.url_for("postgres"), connect_timeout=2, autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'app'").fetchone():
                c.execute("CREATE DATABASE app")


def pg_connect(url, **kw):
    import psycopg

    kw.setdefault("autocommit", True)
    return psycopg.connect(url, **kw)


def pg_execute(url, sql, params=None):
    """Runs one statement (autocommit); returns its rows, or None if it returns none."""
    with pg_connect(url) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else None


# ---------------------------------------------------------------------------------------------
# Kafka (tansu, a Kafka-compatible broker from crates.io: Debian has no Kafka)


def _tansu():
    return which("tansu") or next(
        (p for p in [os.path.expanduser("~/.cargo/bin/tansu")] if os.access(p, os.X_OK)), None)


class KafkaBroker(Broker):
    """tansu, Kafka's protocol with consumer groups; `.ci/run` installs it with cargo."""

    kind = "kafka"
    binary = "tansu"
    package = "cargo install tansu --features dynostore"

    @classmethod
    def missing(cls):
        if _tansu():
            return None
        return "tansu (a Kafka-compatible broker) not installed; .ci/run installs it with cargo install"

    def __init__(self, root=None):
        super().__init__(root)
        self.url = f"127.0.0.1:{self.port}"
        self.storage = self.dir / "storage"

    def command(self):
        self.storage.mkdir(exist_ok=True)
        listener = f"tcp://127.0.0.1:{self.port}"
        return [_tansu(), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/"]

    def ready(self):
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.url}).list_topics(timeout=2)
        return md is not None


def kafka_create_topic(url, topic, partitions=2):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": url})  # kept alive until the topic exists
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions)]).values():
        f.result(timeout=30)


# ---------------------------------------------------------------------------------------------
# Fixtures

BROKERS = {cls.kind: cls for cls in (NatsServer, MqttBroker, RedisServer, RabbitMQ, Postgres, KafkaBroker)}


def require(cls):
    """Skips the test when `cls`'s server is not installed; under CI, fails it instead."""
    why = cls.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(why)


_SHARED = {}  # kind -> the session's broker, whichever module's fixture started it


def _session_fixture(cls, name):
    @pytest.fixture(scope="session", name=name)
    def fixture():
        require(cls)
        b = _SHARED.get(cls.kind)
        if b is None:
            b = _SHARED[cls.kind] = cls().start()
        elif not b.running:
            b.start()
        yield b
        b = _SHARED.pop(cls.kind, None)
        if b is not None:
            b.close()

    fixture.__doc__ = f"The session's {cls.__name__} ({cls.kind}), started on first use."
    return fixture


nats_server = _session_fixture(NatsServer, "nats_server")
mqtt_broker = _session_fixture(MqttBroker, "mqtt_broker")
redis_server = _session_fixture(RedisServer, "redis_server")
rabbitmq = _session_fixture(RabbitMQ, "rabbitmq")
postgres = _session_fixture(Postgres, "postgres")


@pytest.fixture
def fresh_broker():
    """`fresh_broker("nats")` (or a Broker class): a started server of the test's own, closed
    (and its directory removed) after the test."""
    made = []

    def make(kind):
        cls = BROKERS[kind] if isinstance(kind, str) else kind
        require(cls)
        b = cls()
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.close()
