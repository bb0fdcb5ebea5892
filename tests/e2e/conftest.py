"""Fixtures for the end-to-end tests: a real `stratus serve` on a free port with a fresh data
directory, driven by boto3 and the AWS CLI exactly as a user would."""

import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile

import boto3
import pytest
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("STRATUS_BIN", ROOT / "target" / "debug" / "stratus"))
AWS = pathlib.Path(sys.executable).parent / "aws"
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
CREDS = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
ISOLATED = os.geteuid() == 0 and not os.environ.get("STRATUS_TEST_UNISOLATED")


def pytest_report_header(config):
    if ISOLATED:
        return "stratus: functions run isolated (root: namespaces, cgroups, seccomp)"
    return "stratus: NOT root, so functions run --unisolated and the isolation tests are skipped"


class Server:
    """One `stratus serve` process."""

    def __init__(self, data_dir, *extra, env=None):
        self.data_dir = pathlib.Path(data_dir)
        self.extra = list(extra)
        self.env = env or {}
        self.proc = None
        self.endpoint = None
        self.http_endpoint = None
        self.s3_endpoint = None
        self.log_path = self.data_dir.parent / (self.data_dir.name + ".server.log")

    def start(self, timeout=20):
        assert BIN.exists(), f"{BIN} is missing: run `cargo build` first (scripts/test does)"
        log = open(self.log_path, "ab")
        # Isolation needs root; elsewhere the suite runs functions unisolated (and the isolation
        # tests skip, saying so).
        isolation = [] if ISOLATED else ["--unisolated"]
        self.proc = subprocess.Popen(
            [
                str(BIN), "serve", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", *isolation, *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "STRATUS_LOG": os.environ.get("STRATUS_LOG", "info"), **self.env},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if line.startswith("Stratus listening on "):
                self.endpoint = line.split()[-1]
            elif line.startswith("Stratus HTTP front ") and self.endpoint:
                # The function URLs and HTTP routes (`http://127.0.0.1:PORT`).
                self.http_endpoint = line.split()[-1]
            elif line.startswith("Stratus S3 API on ") and self.http_endpoint:
                self.s3_endpoint = line.split()[-1]
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"stratus did not start; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, kill=False):
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, read_timeout=120, validate=True):
        return boto3.client(
            "lambda",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 0}, read_timeout=read_timeout, parameter_validation=validate),
        )

    def aws(self, *args, check=True):
        out = subprocess.run(
            [str(AWS), "--endpoint-url", self.endpoint, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **CREDS},
            timeout=120,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def cli(self, *args, check=True, timeout=60):
        out = subprocess.run(
            [str(BIN), *args, "--endpoint", self.endpoint], capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            raise AssertionError(f"stratus {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def access_key(self, account="000000000000"):
        """A new access key of `account` (the object API verifies every key it is given)."""
        out = subprocess.run(
            [str(BIN), "accounts", "keys", "create", account, "--data-dir", str(self.data_dir), "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        )
        key = json.loads(out.stdout)
        return key["access_key_id"], key["secret_access_key"]

    def s3(self, account="000000000000", **config):
        key, secret = self.access_key(account)
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 0}, **config),
        )

    def server_log(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("stratus") / "data", "--keep-alive", "60").start()
    yield s
    s.stop()


@pytest.fixture
def fresh_server(tmp_path):
    servers = []

    def make(*extra, data_dir=None):
        s = Server(data_dir or tmp_path / "data", *extra).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop(kill=True)


@pytest.fixture(scope="session")
def lam(server):
    return server.client()


def unique(prefix="fn"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def zip_files(files, modes=None):
    """A zip of {path: text-or-bytes}, with unix modes from `modes` (default 0644)."""
    modes = modes or {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | modes.get(name, 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def zip_dir(path):
    files, modes = {}, {}
    for p in sorted(pathlib.Path(path).rglob("*")):
        if p.is_file() and p.name != "case.json":
            rel = str(p.relative_to(path))
            files[rel] = p.read_bytes()
            modes[rel] = p.stat().st_mode & 0o777
    return zip_files(files, modes)


def create(lam, name, zip_bytes, runtime="python3.11", handler="app.handler", **kw):
    resp = lam.create_function(
        FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": zip_bytes}, **kw
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return resp


def invoke_json(lam, name, event=None, **kw):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event if event is not None else {}), **kw)
    body = resp["Payload"].read()
    return resp, (json.loads(body) if body else None)


def allow_public_url(lam, name, qualifier=None):
    """The resource-policy statement a function URL with AuthType NONE needs (the console adds
    it when it creates such a URL; the API and the CLI do not)."""
    kw = {"Qualifier": qualifier} if qualifier else {}
    lam.add_permission(
        FunctionName=name, StatementId="FunctionURLAllowPublicAccess", Action="lambda:InvokeFunctionUrl",
        Principal="*", FunctionUrlAuthType="NONE", **kw,
    )
