"""Accounts, authentication and resource policies end to end: SigV4 verified as AWS does it
(boto3 with wrong secrets, expired and replayed signatures, tampered bodies, unsigned
requests), accounts that cannot see or invoke each other's functions until AddPermission
grants it, keys revoked with `stratus accounts`, and function URLs that need a policy."""

import datetime
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import AWS, BIN, create, unique, zip_files

ECHO = zip_files({"app.py": "import os\ndef handler(event, context):\n    return {'event': event, 'arn': context.invoked_function_arn}\n"})
A, B = "111111111111", "222222222222"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)


def accounts_cli(server, *args):
    out = subprocess.run(
        [str(BIN), "accounts", "--data-dir", str(server.data_dir), "--json", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip().startswith(("{", "[")) else out.stdout


def new_key(server, account):
    existing = [a["id"] for a in accounts_cli(server, "list")]
    if account not in existing:
        accounts_cli(server, "create", "--id", account, "--name", f"team-{account[:3]}")
    return accounts_cli(server, "keys", "create", account)


def client(server, key=None, secret=None, unsigned=False):
    cfg = Config(retries={"max_attempts": 0}, signature_version=botocore.UNSIGNED if unsigned else None)
    return boto3.client(
        "lambda", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=key or "test", aws_secret_access_key=secret or "test", config=cfg,
    )


def as_client(server, key):
    return client(server, key["access_key_id"], key["secret_access_key"])


def error_of(e):
    r = e.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def send(server, method, path, body=b"", key=None, when=None, tamper=None, presign=None, headers=None):
    """A request signed by botocore's own signer (optionally at another time, presigned, or
    changed after signing); returns (status, error type, body)."""
    req = AWSRequest(method=method, url=server.endpoint + path, data=body, headers=dict(headers or {}))
    creds = Credentials(key["access_key_id"], key["secret_access_key"])
    signer = (
        botocore.auth.SigV4QueryAuth(creds, "lambda", "us-east-1", expires=presign)
        if presign else botocore.auth.SigV4Auth(creds, "lambda", "us-east-1")
    )
    real = botocore.auth.get_current_datetime
    if when is not None:
        botocore.auth.get_current_datetime = lambda: when
    try:
        signer.add_auth(req)
    finally:
        botocore.auth.get_current_datetime = real
    prepared = req.prepare()
    data, url = prepared.body, prepared.url
    if tamper:
        data, url = tamper(data, url)
    r = urllib.request.Request(url, data=data, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, None, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType"), e.read()


@pytest.fixture(scope="module")
def enforced(tmp_path_factory):
    from conftest import Server

    s = Server(tmp_path_factory.mktemp("auth") / "data", "--auth", "enforced").start()
    yield s
    s.stop()


def test_every_kind_of_bad_signature_is_refused_as_aws_refuses_it(enforced):
    key = new_key(enforced, A)
    good = as_client(enforced, key)
    assert good.list_functions()["Functions"] == []

    with pytest.raises(ClientError) as e:
        client(enforced, unsigned=True).list_functions()
    assert error_of(e) == ("MissingAuthenticationTokenException", "Missing Authentication Token", 403)

    with pytest.raises(ClientError) as e:
        client(enforced, "AKIANOSUCHKEY0000000", "whatever").list_functions()
    assert error_of(e) == ("UnrecognizedClientException", "The security token included in the request is invalid.", 403)

    with pytest.raises(ClientError) as e:
        client(enforced, key["access_key_id"], "x" * 40).list_functions()
    assert error_of(e) == ("InvalidSignatureException", MISMATCH, 403)

    # Signed twenty minutes ago: expired, whatever else is right.
    old = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    status, etype, body = send(enforced, "GET", "/2015-03-31/functions/", key=key, when=old)
    assert (status, etype) == (403, "InvalidSignatureException")
    assert json.loads(body)["message"].startswith(f"Signature expired: {old.strftime('%Y%m%dT%H%M%SZ')} is now earlier than")
    future = old + datetime.timedelta(minutes=40)
    status, etype, body = send(enforced, "GET", "/2015-03-31/functions/", key=key, when=future)
    assert (status, etype) == (403, "InvalidSignatureException") and b"not yet current" in body

    # A signature is good for the request it signed only: a changed body or path is refused.
    name = unique("authfn")
    create(good, name, ECHO)
    path = f"/2015-03-31/functions/{name}/invocations"
    assert send(enforced, "POST", path, b'{"n": 1}', key=key)[0] == 200
    status, etype, body = send(enforced, "POST", path, b'{"n": 1}', key=key, tamper=lambda d, u: (b'{"n": 2}', u))
    assert (status, etype, json.loads(body)["message"]) == (403, "InvalidSignatureException", MISMATCH)
    status, etype, _ = send(
        enforced, "POST", path, b"{}", key=key, tamper=lambda d, u: (d, u.replace(name, name + "x"))
    )
    assert (status, etype) == (403, "InvalidSignatureException")
    # Replaying a captured request after its time window is refused.
    status, etype, _ = send(enforced, "POST", path, b'{"n": 1}', key=key, when=old)
    assert (status, etype) == (403, "InvalidSignatureException")

    # Presigned URLs: good until they expire, and only for what they sign.
    assert send(enforced, "GET", "/2015-03-31/functions/", key=key, presign=60)[0] == 200
    status, etype, _ = send(
        enforced, "GET", "/2015-03-31/functions/?MaxItems=1", key=key, presign=60,
        tamper=lambda d, u: (d, u.replace("MaxItems=1", "MaxItems=2")),
    )
    assert (status, etype) == (403, "InvalidSignatureException")
    status, etype, body = send(enforced, "GET", "/2015-03-31/functions/", key=key, presign=1, when=old)
    assert (status, etype) == (403, "InvalidSignatureException") and b"Signature expired" in body

    # The AWS CLI signs the same way.
    out = subprocess.run(
        [str(AWS), "--endpoint-url", enforced.endpoint, "lambda", "list-functions"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": key["access_key_id"],
             "AWS_SECRET_ACCESS_KEY": key["secret_access_key"]},
    )
    assert out.returncode == 0 and name in out.stdout, out.stderr

    # Revoked keys stop working (within the server's one-second key cache).
    accounts_cli(enforced, "keys", "revoke", key["access_key_id"])
    time.sleep(1.2)
    with pytest.raises(ClientError) as e:
        good.list_functions()
    assert error_of(e)[0] == "UnrecognizedClientException"
    # Secrets are sealed: the database never holds one in the clear.
    raw = (enforced.data_dir / "accounts.db").read_bytes()
    raw += (enforced.data_dir / "accounts.db-wal").read_bytes() if (enforced.data_dir / "accounts.db-wal").exists() else b""
    assert key["secret_access_key"].encode() not in raw
    assert key["secret_access_key"] not in enforced.server_log()


def test_accounts_are_apart_until_a_policy_grants_access(enforced):
    ka, kb = new_key(enforced, A), new_key(enforced, B)
    a, b = as_client(enforced, ka), as_client(enforced, kb)
    fa, fb = unique("mine-a"), unique("mine-b")
    arn_a = create(a, fa, ECHO)["FunctionArn"]
    arn_b = create(b, fb, ECHO)["FunctionArn"]
    assert arn_a == f"arn:aws:lambda:us-east-1:{A}:function:{fa}"
    assert arn_b.split(":")[4] == B
    assert fb not in [f["FunctionName"] for f in a.list_functions()["Functions"]]
    assert fa not in [f["FunctionName"] for f in b.list_functions()["Functions"]]
    with pytest.raises(ClientError) as e:
        b.get_function(FunctionName=fa)
    assert error_of(e)[0] == "ResourceNotFoundException"

    with pytest.raises(ClientError) as e:
        b.invoke(FunctionName=arn_a, Payload=b"{}")
    code, message, status = error_of(e)
    assert (code, status) == ("AccessDeniedException", 403)
    assert message == (
        f"User: arn:aws:iam::{B}:user/{b._request_signer._credentials.access_key} is not authorized to perform: "
        f"lambda:InvokeFunction on resource: {arn_a} because no resource-based policy allows the lambda:InvokeFunction action"
    )
    with pytest.raises(ClientError) as e:
        a.get_policy(FunctionName=fa)
    assert error_of(e) == ("ResourceNotFoundException", "The resource you requested does not exist.", 404)

    added = a.add_permission(FunctionName=fa, StatementId="let-b", Action="lambda:InvokeFunction", Principal=B)
    assert json.loads(added["Statement"]) == {
        "Sid": "let-b", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
        "Action": "lambda:InvokeFunction", "Resource": arn_a,
    }
    policy = a.get_policy(FunctionName=fa)
    assert json.loads(policy["Policy"])["Statement"][0]["Sid"] == "let-b" and policy["RevisionId"]
    with pytest.raises(ClientError) as e:
        a.add_permission(FunctionName=fa, StatementId="let-b", Action="lambda:InvokeFunction", Principal=B)
    assert error_of(e)[0] == "ResourceConflictException"

    resp = b.invoke(FunctionName=arn_a, Payload=json.dumps({"from": "b"}))
    body = json.loads(resp["Payload"].read())
    assert body == {"event": {"from": "b"}, "arn": arn_a}
    # The owner pays: the ledger row is A's.
    rid = resp["ResponseMetadata"]["RequestId"]
    for _ in range(50):
        rows = json.loads(send(enforced, "GET", f"/_stratus/ledger?request_id={rid}", key=ka)[2])["records"]
        if rows:
            break
        time.sleep(0.05)
    assert [(r["account"], r["function"]) for r in rows] == [(A, fa)]
    assert json.loads(send(enforced, "GET", f"/_stratus/ledger?request_id={rid}", key=kb)[2])["records"] == []
    # B may invoke, but not read the function.
    with pytest.raises(ClientError) as e:
        b.get_function(FunctionName=arn_a)
    assert error_of(e)[0] == "AccessDeniedException"

    # Even a grant of everything lets another account invoke and read, never change.
    a.add_permission(FunctionName=fa, StatementId="all", Action="lambda:*", Principal=B)
    assert b.get_function_configuration(FunctionName=arn_a)["FunctionArn"] == arn_a
    with pytest.raises(ClientError) as e:
        b.delete_function(FunctionName=arn_a)
    assert error_of(e)[0] == "AccessDeniedException"
    assert a.get_function(FunctionName=fa)
    a.remove_permission(FunctionName=fa, StatementId="all")
    a.remove_permission(FunctionName=fa, StatementId="let-b")
    with pytest.raises(ClientError) as e:
        b.invoke(FunctionName=arn_a, Payload=b"{}")
    assert error_of(e)[0] == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        a.remove_permission(FunctionName=fa, StatementId="let-b")
    assert error_of(e) == ("ResourceNotFoundException", "Statement sid is not found in resource policy.", 404)

    # Usage is per account: B sees only its own.
    b.invoke(FunctionName=fb, Payload=b"{}")
    for _ in range(50):
        usage = json.loads(send(enforced, "GET", f"/_stratus/usage?account={A}", key=kb)[2])
        if usage["accounts"]:
            break
        time.sleep(0.05)
    assert [(x["account"], x["requests"]) for x in usage["accounts"]] == [(B, 1)]


def test_development_mode_still_verifies_known_keys(server):
    key = new_key(server, "333333333333")
    with pytest.raises(ClientError) as e:
        client(server, key["access_key_id"], "y" * 40).list_functions()
    assert error_of(e)[0] == "InvalidSignatureException"
    mine = as_client(server, key)
    name = unique("dev-acct")
    create(mine, name, ECHO)
    assert [f["FunctionName"] for f in mine.list_functions()["Functions"]] == [name]
    # Dummy credentials are the default account, which does not see it.
    assert name not in [f["FunctionName"] for f in client(server).list_functions()["Functions"]]


def test_development_mode_is_refused_off_loopback(tmp_path):
    out = subprocess.run(
        [str(BIN), "serve", "--data-dir", str(tmp_path / "d"), "--listen", "0.0.0.0:0", "--http-listen",
         "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", "--auth", "development", "--unisolated"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "only allowed when listening on loopback" in out.stderr


def test_function_urls_with_auth_none_need_a_resource_policy(lam, server):
    name = unique("urlpolicy")
    create(lam, name, ECHO)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    host = urllib.parse.urlsplit(url).netloc
    port = urllib.parse.urlsplit(server.http_endpoint).port

    def get():
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()

    assert get() == (403, b'{"Message":"Forbidden"}')
    lam.add_permission(FunctionName=name, StatementId="public", Action="lambda:InvokeFunctionUrl", Principal="*",
                       FunctionUrlAuthType="NONE")
    assert get()[0] == 200
    lam.remove_permission(FunctionName=name, StatementId="public")
    assert get()[0] == 403


def test_iam_function_urls_verify_the_signature_and_the_policy(enforced):
    import http.client

    ka, kb = new_key(enforced, A), new_key(enforced, B)
    a = as_client(enforced, ka)
    name = unique("iam-url")
    create(a, name, ECHO)
    url = a.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    host = urllib.parse.urlsplit(url).netloc
    port = urllib.parse.urlsplit(enforced.http_endpoint).port

    def call(key, secret=None, body=b'{"x": 1}', tamper=False):
        req = AWSRequest(method="POST", url=f"http://{host}/path", data=body)
        creds = Credentials(key["access_key_id"], secret or key["secret_access_key"])
        botocore.auth.SigV4Auth(creds, "lambda", "us-east-1").add_auth(req)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {**dict(req.prepare().headers), "Host": host}
        c.request("POST", "/path", body=b'{"x": 2}' if tamper else body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()

    first = call(ka)
    assert first[0] == 200, first
    assert call(ka, secret="z" * 40) == (403, b'{"Message":"Forbidden"}')
    assert call(ka, tamper=True)[0] == 403
    assert call(kb)[0] == 403
    a.add_permission(FunctionName=name, StatementId="b-url", Action="lambda:InvokeFunctionUrl", Principal=B,
                     FunctionUrlAuthType="AWS_IAM")
    assert call(kb)[0] == 200


def test_the_stratus_cli_signs_with_the_environments_credentials(enforced):
    import os

    key = new_key(enforced, A)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run = lambda env, *args: subprocess.run(  # noqa: E731
        [str(BIN), *args, "--endpoint", enforced.endpoint], capture_output=True, text=True, timeout=60, env=env
    )
    unsigned = run(base, "usage", "--output", "json")
    assert unsigned.returncode != 0 and "MissingAuthenticationTokenException" in unsigned.stderr
    signed_env = {**base, "AWS_ACCESS_KEY_ID": key["access_key_id"], "AWS_SECRET_ACCESS_KEY": key["secret_access_key"]}
    out = run(signed_env, "usage", "--output", "json")
    assert out.returncode == 0, out.stderr
    assert {a["account"] for a in json.loads(out.stdout)["accounts"]} <= {A}
    assert run(signed_env, "functions").returncode == 0


def test_code_location_is_a_signed_url_that_needs_no_credentials(enforced):
    a = as_client(enforced, new_key(enforced, A))
    name = unique("code-url")
    create(a, name, ECHO)
    location = a.get_function(FunctionName=name)["Code"]["Location"]
    assert "X-Stratus-Signature=" in location and f"X-Stratus-Account={A}" in location
    with urllib.request.urlopen(location, timeout=30) as r:
        assert r.read() == ECHO
    for bad in [location.replace(f"X-Stratus-Account={A}", f"X-Stratus-Account={B}"),
                location[:-4] + ("0000" if not location.endswith("0000") else "1111"),
                location.split("?")[0]]:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=30)
        assert e.value.code == 403, bad


def test_development_mode_is_refused_when_the_object_api_is_exposed(tmp_path):
    out = subprocess.run(
        [str(BIN), "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--http-listen",
         "127.0.0.1:0", "--s3-listen", "0.0.0.0:0", "--auth", "development", "--unisolated"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "only allowed when listening on loopback (not 0.0.0.0:0)" in out.stderr
