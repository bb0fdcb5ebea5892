"""Metering end to end: the ledger's rows, the REPORT lines and the usage report agree to the
millisecond and the cent; rows survive a restart; throttles are recorded and not billed;
Prometheus metrics count what happened."""

import base64
import csv
import io
import json
import re
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import create, unique, zip_files

SLEEPER = zip_files(
    {
        "app.py": (
            "import os, time\n"
            "def handler(event, context):\n"
            "    time.sleep(event.get('ms', 0) / 1000)\n"
            "    if event.get('fail') == 'raise':\n"
            "        raise ValueError('asked to fail')\n"
            "    if event.get('fail') == 'exit':\n"
            "        os._exit(3)\n"
            "    return {'slept': event.get('ms', 0)}\n"
        )
    }
)

# Prices high enough that every millisecond shows in the cents.
PRICES = {"default": {"request": 0.001, "x86_64": {"gb_second": 0.5}, "arm64": {"gb_second": 0.25}}}

REPORT = re.compile(
    r"REPORT RequestId: (?P<id>\S+)\tDuration: (?P<duration>[\d.]+) ms\tBilled Duration: (?P<billed>\d+) ms\t"
    r"Memory Size: (?P<memory>\d+) MB\tMax Memory Used: (?P<maxmem>\d+) MB\t(?:Init Duration: (?P<init>[\d.]+) ms\t)?"
)


def get_json(server, path):
    with urllib.request.urlopen(server.endpoint + path, timeout=30) as r:
        return json.loads(r.read())


def invoke_with_report(lam, name, event):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event), LogType="Tail")
    resp["Payload"].read()
    tail = base64.b64decode(resp["LogResult"]).decode()
    m = REPORT.search(tail)
    assert m, tail
    return resp, m


def ledger_row(server, request_id):
    for _ in range(100):
        rows = get_json(server, f"/_stratus/ledger?request_id={request_id}")["records"]
        if rows:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


@pytest.fixture
def priced_server(fresh_server, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    return fresh_server("--prices", str(prices))


def test_ledger_reports_and_usage_agree_to_the_millisecond_and_the_cent(priced_server):
    server = priced_server
    lam = server.client()
    small, big = unique("meter-small"), unique("meter-big")
    create(lam, small, SLEEPER, MemorySize=256, Timeout=1)
    create(lam, big, SLEEPER, MemorySize=1024, Architectures=["arm64"])
    calls = [
        (small, {"ms": 120}, "success"),
        (small, {"ms": 250}, "success"),
        (small, {"ms": 30, "fail": "raise"}, "handled_error"),
        (small, {"ms": 1500}, "timeout"),
        (big, {"ms": 80}, "success"),
        (big, {"ms": 10, "fail": "exit"}, "unhandled"),
        (big, {"ms": 40}, "success"),
    ]
    expected = {}
    for name, event, outcome in calls:
        resp, m = invoke_with_report(lam, name, event)
        rid = resp["ResponseMetadata"]["RequestId"]
        row = ledger_row(server, rid)
        assert len(row) == 1, row
        row = row[0]
        assert row["outcome"] == outcome, (event, row)
        assert row["function"] == name and row["version"] == "$LATEST" and row["trigger"] == "api"
        assert row["account"] == "000000000000"
        # The row is the REPORT line, to the millisecond.
        assert row["billed_ms"] == int(m["billed"]), (row, m.group(0))
        # REPORT prints hundredths of a millisecond; the ledger keeps microseconds.
        assert abs(row["duration_us"] / 1000 - float(m["duration"])) <= 0.0051, (row, m.group(0))
        assert row["memory_mb"] == int(m["memory"])
        assert row["max_memory_used_mb"] == int(m["maxmem"])
        assert row["gb_seconds"] == pytest.approx(row["memory_mb"] / 1024 * row["billed_ms"] / 1000, abs=1e-12)
        if m["init"] is not None:
            assert abs(row["init_us"] / 1000 - float(m["init"])) <= 0.0051, (row, m.group(0))
            assert row["cold"]
        assert row["billed_ms"] >= event["ms"] if outcome != "timeout" else row["billed_ms"] >= 1000
        assert row["end_us"] - row["start_us"] == row["duration_us"] + (row["init_us"] or 0)
        expected.setdefault(name, []).append(row)
    assert expected[small][0]["cold"] and not expected[small][1]["cold"]

    report = get_json(server, "/_stratus/usage?by=function")
    rows = {r["key"]: r for r in report["rows"]}
    total_cost = 0.0
    for name, arch, rate in [(small, "x86_64", 0.5), (big, "arm64", 0.25)]:
        mine = expected[name]
        billed = sum(r["billed_ms"] for r in mine)
        mb_ms = sum(r["billed_ms"] * r["memory_mb"] for r in mine)
        gbs = mb_ms / 1024 / 1000
        cost = len(mine) * 0.001 + gbs * rate
        r = rows[name]
        assert r["architecture"] == arch
        assert r["requests"] == len(mine) and r["billed_ms"] == billed
        assert r["errors"] == sum(x["outcome"] != "success" for x in mine)
        assert r["gb_seconds"] == pytest.approx(gbs, abs=1e-12)
        assert round(r["cost_usd"], 2) == round(cost, 2) and r["cost_usd"] == pytest.approx(cost, abs=1e-9)
        total_cost += cost
    (account,) = report["accounts"]
    assert account["requests"] == len(calls) and account["timeouts"] == 1
    assert account["cost"]["total_usd"] == pytest.approx(total_cost, abs=1e-9)

    # The CLI says the same, as CSV and JSON.
    out = server.cli("usage", "--by", "version", "--output", "csv").stdout
    lines = list(csv.DictReader(io.StringIO(out)))
    by_key = {l["key"]: l for l in lines}
    assert int(by_key[f"{small}:$LATEST"]["billed_ms"]) == rows[small]["billed_ms"]
    assert float(by_key["TOTAL"]["cost_usd"]) == pytest.approx(total_cost, abs=1e-9)
    as_json = json.loads(server.cli("usage", "--output", "json").stdout)
    assert as_json["accounts"][0]["billed_ms"] == account["billed_ms"]
    table = server.cli("usage", "--by", "function").stdout
    assert small in table and f"${total_cost:.2f}" in table

    # A window before these invocations holds none of them.
    empty = get_json(server, "/_stratus/usage?from=2020-01-01&to=2020-02-01")
    assert empty["accounts"] == [] and empty["rows"] == []


def test_bad_usage_queries_are_refused(server):
    for q in ["from=yesterday", "by=colour", "account=12", "from=2026-02-01&to=2026-01-01"]:
        with pytest.raises(urllib.error.HTTPError) as e:
            get_json(server, "/_stratus/usage?" + q)
        assert e.value.code == 400
        assert e.value.headers["x-amzn-ErrorType"] == "InvalidParameterValueException"


def test_throttles_are_recorded_and_not_billed(fresh_server):
    server = fresh_server()
    lam = server.client()
    name = unique("meter-throttle")
    create(lam, name, SLEEPER)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "TooManyRequestsException"
    rid = e.value.response["ResponseMetadata"]["RequestId"]
    (row,) = ledger_row(server, rid)
    assert row["outcome"] == "throttled" and row["billed_ms"] == 0
    (account,) = get_json(server, "/_stratus/usage")["accounts"]
    assert account["throttles"] == 1 and account["requests"] == 0 and account["cost"]["total_usd"] == 0


def test_a_restart_loses_no_ledger_row(fresh_server, tmp_path):
    server = fresh_server()
    lam = server.client()
    name = unique("meter-restart")
    create(lam, name, SLEEPER)
    ids = []
    for _ in range(20):
        resp = lam.invoke(FunctionName=name, Payload=b"{}")
        ids.append(resp["ResponseMetadata"]["RequestId"])
    server.stop()  # SIGTERM straight after the last answer
    server = fresh_server(data_dir=server.data_dir)
    rows = get_json(server, "/_stratus/ledger?limit=1000")["records"]
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    # Killed outright, the rows of invocations answered a moment earlier are on disk too.
    lam = server.client()
    more = [lam.invoke(FunctionName=name, Payload=b"{}")["ResponseMetadata"]["RequestId"] for _ in range(5)]
    time.sleep(0.5)
    server.stop(kill=True)
    server = fresh_server(data_dir=server.data_dir)
    rows = get_json(server, "/_stratus/ledger?limit=1000")["records"]
    assert sorted(r["request_id"] for r in rows) == sorted(ids + more)


def test_prometheus_metrics_count_invocations_errors_and_durations(fresh_server):
    server = fresh_server()
    lam = server.client()
    name = unique("meter-prom")
    create(lam, name, SLEEPER)
    for event in [{"ms": 5}, {"ms": 5}, {"fail": "raise"}]:
        lam.invoke(FunctionName=name, Payload=json.dumps(event))["Payload"].read()
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    with urllib.request.urlopen(server.endpoint + "/metrics", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    labels = f'account="000000000000",function="{name}",version="$LATEST"'

    def value(metric, labels):
        found = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(metric + "{") and all(l in line for l in labels.split(","))
        ]
        assert found, f"{metric} with {labels} not in:\n{text}"
        return sum(found)

    assert "# TYPE lambda_invocations_total counter" in text
    assert value("lambda_invocations_total", labels) >= 3
    assert value("lambda_errors_total", labels) == 1
    assert value("lambda_duration_milliseconds_count", labels) >= 3
    assert value("lambda_duration_milliseconds_bucket", labels + ',le="+Inf"') >= 3
    assert value("lambda_async_events_received_total", f'function="{name}"') == 1
    assert value("lambda_concurrent_executions", f'function="{name}"') >= 0
