import os


def handler(event, context):
    return {
        "event": event,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "function_version": context.function_version,
        "log_group_name": context.log_group_name,
        "tz": os.environ["TZ"],
        "cwd_is_task_root": os.getcwd() == os.environ["LAMBDA_TASK_ROOT"],
        "region": os.environ["AWS_REGION"],
        "exec_env": os.environ["AWS_EXECUTION_ENV"],
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 3000,
        "request_id_matches": context.aws_request_id == os.environ.get("STRATUS_TEST_NEVER_SET", context.aws_request_id),
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "trace_set": "_X_AMZN_TRACE_ID" in os.environ,
    }
