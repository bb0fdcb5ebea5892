//! A `provided.al2023` function built on AWS's `lambda_runtime` crate.
//!
//! It echoes its event back, except for a few commands the tests use:
//! `{"fail": "msg"}` returns an error; `{"context": true}` returns the context it saw.
//!
//! With `RUST_ECHO_NOOP` set in its environment it is a no-op instead: it reads each event
//! without keeping it (the JSON is still checked) and returns `null`, as a function that does
//! nothing with its records would. The benchmarks use it where the platform's cost is measured.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::de::IgnoredAny;
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    if let Some(msg) = payload.get("fail").and_then(Value::as_str) {
        return Err(msg.into());
    }
    if payload.get("context").is_some() {
        return Ok(json!({
            "request_id": ctx.request_id,
            "invoked_function_arn": ctx.invoked_function_arn,
            "function_name": ctx.env_config.function_name,
            "memory": ctx.env_config.memory,
            "version": ctx.env_config.version,
            "log_stream": ctx.env_config.log_stream,
            "deadline": ctx.deadline,
        }));
    }
    Ok(payload)
}

async fn noop(_: LambdaEvent<IgnoredAny>) -> Result<(), Error> {
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    if std::env::var_os("RUST_ECHO_NOOP").is_some() {
        return lambda_runtime::run(service_fn(noop)).await;
    }
    lambda_runtime::run(service_fn(handler)).await
}
