"""Schedules: EventBridge Scheduler's API (boto3 `scheduler`, `aws scheduler`, `stratus
schedules`), and ticks that fire functions once each, across a crash of the server."""

import json
import os
import subprocess
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import AWS, CREDS, create, unique, zip_files
from test_versions import Recorder, recorder, wait_for  # noqa: F401  (recorder is a fixture)

RECORD = (
    "import json, os, urllib.request\n"
    "def handler(e, c):\n"
    "    body = json.dumps({'event': e, 'fn': c.function_name, 'request_id': c.aws_request_id}).encode()\n"
    "    urllib.request.urlopen(urllib.request.Request(os.environ['RECORDER'], data=body, method='POST'), timeout=10)\n"
)


def scheduler(server):
    return boto3.client(
        "scheduler", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 0}),
    )


def err(e):
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def target(arn, **extra):
    return {"Arn": arn, "RoleArn": "arn:aws:iam::000000000000:role/scheduler", **extra}


OFF = {"Mode": "OFF"}


def test_the_scheduler_api_with_boto3_and_the_cli(server, lam):
    sch = scheduler(server)
    name = unique("sched")
    create(lam, name, zip_files({"app.py": "def handler(e, c):\n    return e\n"}))
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]

    out = sch.create_schedule(Name=name, ScheduleExpression="rate(5 minutes)", FlexibleTimeWindow=OFF,
                              Target=target(arn, Input='{"x": 1}'), Description="every five")
    assert out["ScheduleArn"] == f"arn:aws:scheduler:us-east-1:000000000000:schedule/default/{name}"
    got = sch.get_schedule(Name=name)
    assert got["ScheduleExpression"] == "rate(5 minutes)" and got["State"] == "ENABLED"
    assert got["Target"]["Arn"] == arn and got["Target"]["Input"] == '{"x": 1}'
    assert got["Target"]["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    assert got["GroupName"] == "default" and got["ActionAfterCompletion"] == "NONE"
    assert got["CreationDate"].year >= 2026, "timestamps parse as dates"

    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name=name, ScheduleExpression="rate(5 minutes)", FlexibleTimeWindow=OFF, Target=target(arn))
    assert err(e)[0] == "ConflictException"
    for expr, words in [
        ("rate(5 minute)", "plural"),
        ("cron(0 12 * * * *)", "'?'"),
        ("cron(0 25 * * ? *)", "cron(0 25 * * ? *)"),
        ("every day", "rate(value unit)"),
    ]:
        with pytest.raises(ClientError) as e:
            sch.create_schedule(Name=unique("bad"), ScheduleExpression=expr, FlexibleTimeWindow=OFF, Target=target(arn))
        code, message = err(e)
        assert code == "ValidationException" and words in message, (expr, message)
    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name=unique("tz"), ScheduleExpression="cron(0 9 * * ? *)", ScheduleExpressionTimezone="Mars/Base",
                            FlexibleTimeWindow=OFF, Target=target(arn))
    assert err(e)[0] == "ValidationException" and "Mars/Base" in err(e)[1]
    with pytest.raises(ClientError) as e:
        sch.get_schedule(Name="never-made")
    assert err(e)[0] == "ResourceNotFoundException"

    # Groups, listing by prefix, state and page.
    group = unique("grp")
    sch.create_schedule_group(Name=group)
    assert group in [g["Name"] for g in sch.list_schedule_groups()["ScheduleGroups"]]
    for i in range(5):
        sch.create_schedule(Name=f"{name}-{i}", GroupName=group, ScheduleExpression="cron(0 9 ? * MON-FRI *)",
                            ScheduleExpressionTimezone="Europe/Paris", FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
                            Target=target(arn), State="DISABLED" if i % 2 else "ENABLED")
    names = [s["Name"] for p in sch.get_paginator("list_schedules").paginate(GroupName=group, PaginationConfig={"PageSize": 2}) for s in p["Schedules"]]
    assert names == [f"{name}-{i}" for i in range(5)]
    disabled = [s["Name"] for s in sch.list_schedules(GroupName=group, State="DISABLED")["Schedules"]]
    assert disabled == [f"{name}-1", f"{name}-3"]
    assert [s["Name"] for s in sch.list_schedules(NamePrefix=f"{name}-4")["Schedules"]] == [f"{name}-4"]

    sch.update_schedule(Name=name, ScheduleExpression="rate(1 hour)", FlexibleTimeWindow=OFF, Target=target(arn), State="DISABLED")
    got = sch.get_schedule(Name=name)
    assert got["ScheduleExpression"] == "rate(1 hour)" and got["State"] == "DISABLED"

    # The AWS CLI and `stratus schedules` see the same.
    out = subprocess.run([str(AWS), "--endpoint-url", server.endpoint, "scheduler", "list-schedules", "--group-name", group],
                         capture_output=True, text=True, env={**os.environ, **CREDS}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["Schedules"]) == 5
    listing = server.cli("schedules", "list", "--group", group).stdout
    assert f"{name}-0" in listing and "DISABLED" in listing

    sch.delete_schedule_group(Name=group)
    with pytest.raises(ClientError) as e:
        sch.get_schedule(Name=f"{name}-0", GroupName=group)
    assert err(e)[0] == "ResourceNotFoundException", "deleting a group deletes its schedules"
    sch.delete_schedule(Name=name)
    with pytest.raises(ClientError) as e:
        sch.delete_schedule(Name=name)
    assert err(e)[0] == "ResourceNotFoundException"


def test_every_tick_fires_once_across_a_crash(fresh_server, recorder):
    s = fresh_server("--schedule-seconds")
    lam, sch = s.client(), scheduler(s)
    name = unique("ticker")
    create(lam, name, zip_files({"app.py": RECORD}), Environment={"Variables": {"RECORDER": recorder.url}})
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    period = 3
    sch.create_schedule(
        Name=name, ScheduleExpression=f"rate({period} seconds)", FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 1},
        Target=target(arn, Input='{"tick": "<aws.scheduler.scheduled-time>", "id": "<aws.scheduler.execution-id>"}'),
    )
    # A tick's invocation may be delivered again after a crash (async delivery is at least
    # once, with the same request id); a tick that *fired* twice would have two ids.
    ticks = lambda: sorted({r["event"]["tick"] for r in recorder.snapshot() if r["fn"] == name})  # noqa: E731
    assert wait_for(lambda: len(ticks()) >= 3, timeout=30), ticks()
    s.stop(kill=True)  # a crash, between two ticks or in the middle of one
    time.sleep(1)
    s2 = fresh_server("--schedule-seconds", data_dir=s.data_dir)
    before = len(ticks())
    assert wait_for(lambda: len(ticks()) >= before + 3, timeout=30), ticks()
    sch2 = scheduler(s2)
    sch2.delete_schedule(Name=name)
    time.sleep(period + 1)
    seen = ticks()
    ids = {}
    for r in recorder.snapshot():
        if r["fn"] == name:
            ids.setdefault(r["event"]["tick"], set()).add(r["event"]["id"])
    assert all(len(v) == 1 for v in ids.values()), f"a tick fired twice: {ids}"
    stamps = [time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) for t in seen]
    gaps = {round(b - a) for a, b in zip(stamps, stamps[1:])}
    assert gaps == {period}, f"every tick fired, {period} s apart: {seen}"
    records = [r for r in recorder.snapshot() if r["fn"] == name]
    assert all(r["event"]["id"] == r["request_id"] for r in records), "the execution id is the invocation's request id"
    # Each firing is in the ledger as a `schedule` invocation (but the one that ran just before
    # the kill -9: the ledger's last ~5 ms of rows are lost then, as ARCHITECTURE.md says).
    with urllib.request.urlopen(f"{s2.endpoint}/_stratus/ledger?limit=1000") as r:
        rows = [row for row in json.load(r)["records"] if row["function"] == name]
    assert len(rows) >= len(seen) - 1 and {row["trigger"] for row in rows} == {"schedule"}


def test_one_time_schedules_with_the_scheduled_event_shape(fresh_server, recorder):
    s = fresh_server()
    lam, sch = s.client(), scheduler(s)
    name = unique("once")
    create(lam, name, zip_files({"app.py": RECORD}), Environment={"Variables": {"RECORDER": recorder.url}})
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3))
    s.cli("schedules", "create", name, "--expression", f"at({at})", "--function", name, "--scheduled-event",
          "--delete-after-completion")
    got = wait_for(lambda: [r for r in recorder.snapshot() if r["fn"] == name], timeout=30)
    assert got, "the one-time schedule fired"
    event = got[0]["event"]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["time"] == at + "Z" and event["account"] == "000000000000"
    assert event["resources"] == [f"arn:aws:scheduler:us-east-1:000000000000:schedule/default/{name}"]
    # ActionAfterCompletion DELETE: gone after its only tick, and it never fires again.
    assert wait_for(lambda: name not in s.cli("schedules", "list").stdout, timeout=10)
    time.sleep(2)
    assert len([r for r in recorder.snapshot() if r["fn"] == name]) == 1


def test_undeliverable_ticks_follow_the_retry_policy_to_the_dead_letter_function(fresh_server, recorder):
    s = fresh_server()
    lam, sch = s.client(), scheduler(s)
    dlq = unique("dlq")
    create(lam, dlq, zip_files({"app.py": RECORD}), Environment={"Variables": {"RECORDER": recorder.url}})
    dlq_arn = lam.get_function(FunctionName=dlq)["Configuration"]["FunctionArn"]
    missing = dlq_arn.replace(dlq, unique("missing"))
    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name=unique("sqs"), ScheduleExpression="rate(1 hour)", FlexibleTimeWindow=OFF,
                            Target=target(missing, DeadLetterConfig={"Arn": "arn:aws:sqs:us-east-1:000000000000:q"}))
    assert err(e)[0] == "ValidationException" and "DeadLetterConfig" in err(e)[1]
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 2))
    sch.create_schedule(
        Name=unique("lost"), ScheduleExpression=f"at({at})", FlexibleTimeWindow=OFF,
        Target=target(missing, Input='{"lost": "<aws.scheduler.scheduled-time>"}',
                      RetryPolicy={"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 60},
                      DeadLetterConfig={"Arn": dlq_arn}),
    )
    got = wait_for(lambda: [r for r in recorder.snapshot() if r["fn"] == dlq], timeout=30)
    assert got and got[0]["event"] == {"lost": at + "Z"}, recorder.snapshot()
    log = s.server_log()
    assert log.count("scheduled event not delivered (no such function); retrying") == 2, "two retries, then the dead letter"
