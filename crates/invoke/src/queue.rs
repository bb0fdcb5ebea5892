//! The asynchronous (Event) queue's dispatcher.
//!
//! Events are committed to the database before the API answers 202. The dispatcher claims due
//! events under a lease (leases are released at start-up, so a crash leads to redelivery, never
//! to loss), invokes the function, and then deletes the event, schedules a retry (function
//! errors: up to MaximumRetryAttempts, default 2, after the configured delay and twice that), or
//! backs off (throttles: 1 s growing to 5 min) until MaximumEventAgeInSeconds (default 6 h).
//! Delivery is at least once, with the same request id on every attempt. A finished event's
//! record goes to its on-success or on-failure destination (docs/lambda-contract.md §5.1),
//! and a failed event to the function's dead-letter target.

use std::sync::Arc;
use std::time::Duration;

use model::logfmt::{iso_timestamp, now_ms};
use model::{ErrorCode, ThrottleReason};
use serde_json::{Value, json};
use store::AsyncEvent;
use tokio::sync::{Notify, Semaphore};

use crate::Invoker;

/// How long a claimed event stays invisible to other claims: longer than any invocation.
const LEASE: Duration = Duration::from_secs(900 + 120);
/// Deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 256;

#[derive(Default)]
pub struct Queue {
    notify: Notify,
}

impl Queue {
    /// Wakes the dispatcher (an event was queued).
    pub fn notify(&self) {
        self.notify.notify_one();
    }
}

pub fn spawn_dispatcher(invoker: Invoker) {
    tokio::spawn(async move {
        // Whoever held leases before (a previous run of this server) is gone.
        match invoker.inner.store.run(|db| db.release_leases(now_ms())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "re-queued async events that were in flight when the server stopped"),
            Err(e) => tracing::error!(error = %e, "cannot re-queue in-flight async events"),
        }
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let available = slots.available_permits();
            let now = now_ms();
            let lease_until = now + LEASE.as_millis() as i64;
            let claimed = if available > 0 {
                invoker.inner.store.queue.claim(now, available, lease_until).await
            } else {
                Ok(Vec::new())
            };
            match claimed {
                Ok(events) => {
                    for ev in events {
                        let Ok(permit) = slots.clone().acquire_owned().await else { return };
                        let inv = invoker.clone();
                        tokio::spawn(async move {
                            deliver(&inv, ev).await;
                            drop(permit);
                            inv.inner.queue.notify();
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the async queue"),
            }
            let next = invoker.inner.store.run(|db| db.next_due()).await.ok().flatten();
            let wait = match next {
                Some(t) if slots.available_permits() > 0 => Duration::from_millis((t - now_ms()).clamp(0, 1000) as u64),
                _ => Duration::from_secs(1),
            };
            if wait > Duration::ZERO {
                tokio::select! {
                    _ = invoker.inner.queue.notify.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
    });
}

enum Next {
    Done,
    Retry { attempts: u32, at_ms: i64 },
}

/// Why an event left the queue without success, as destination records say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
    ZeroReservedConcurrency,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::RetriesExhausted => "RetriesExhausted",
            Self::EventAgeExceeded => "EventAgeExceeded",
            Self::ZeroReservedConcurrency => "ZeroReservedConcurrency",
        }
    }
}

/// The outcome of the last attempt, for the destination record.
struct LastAttempt {
    executed_version: String,
    function_error: Option<&'static str>,
    payload: bytes::Bytes,
}

async fn deliver(invoker: &Invoker, ev: AsyncEvent) {
    let qualifier = ev.qualifier.clone().unwrap_or_else(|| model::LATEST.to_string());
    let config = invoker.event_invoke_config(&ev.function, &qualifier).await;
    // A scheduler's event is kept as long as its schedule's policy says.
    let max_age = Duration::from_secs(u64::from(ev.delivery.as_ref().map_or(config.max_age_s(), |d| d.max_age_s)));
    let now = now_ms();
    let age = Duration::from_millis((now - ev.received_ms).max(0) as u64);
    let (next, finished) = if age > max_age {
        tracing::warn!(function = %ev.function, request_id = %ev.request_id, "async event discarded: older than the maximum event age");
        (Next::Done, Some((Condition::EventAgeExceeded, ev.attempts, None)))
    } else {
        let attempt = ev.attempts + 1;
        crate::meter::async_attempt(&invoker.scope().account, &ev.function, age);
        match invoker.invoke_async(&ev).await {
            Ok(res) if res.function_error.is_none() => {
                let last =
                    LastAttempt { executed_version: res.executed_version, function_error: None, payload: res.payload };
                (Next::Done, Some((Condition::Success, attempt, Some(last))))
            }
            Ok(res) => {
                let last = LastAttempt {
                    executed_version: res.executed_version,
                    function_error: res.function_error,
                    payload: res.payload,
                };
                let delay = invoker.inner.config.async_retry_delay * attempt;
                let too_old = (now_ms() - ev.received_ms) as u128 + delay.as_millis() > max_age.as_millis();
                if attempt > config.retries() {
                    tracing::warn!(function = %ev.function, request_id = %ev.request_id, attempts = attempt, "async event discarded: retries exhausted");
                    (Next::Done, Some((Condition::RetriesExhausted, attempt, Some(last))))
                } else if too_old {
                    tracing::warn!(function = %ev.function, request_id = %ev.request_id, attempts = attempt, "async event discarded: a retry would exceed the maximum event age");
                    (Next::Done, Some((Condition::EventAgeExceeded, attempt, Some(last))))
                } else {
                    tracing::info!(function = %ev.function, request_id = %ev.request_id, attempt, "async invocation failed; retrying in {delay:?}");
                    (Next::Retry { attempts: attempt, at_ms: now_ms() + delay.as_millis() as i64 }, None)
                }
            }
            Err(e) if e.code == ErrorCode::ResourceNotFound && ev.delivery.is_some() => {
                // A scheduler's delivery that failed: retried by its policy, then dead-lettered.
                let policy = ev.delivery.as_ref().map(|d| (d.max_retries, d.dead_letter.clone()));
                let (max_retries, dead_letter) = policy.unwrap_or((0, None));
                let backoff = Duration::from_secs(1 << ev.attempts.min(8)).min(Duration::from_secs(300));
                let too_old = (now_ms() - ev.received_ms) as u128 + backoff.as_millis() > max_age.as_millis();
                if ev.attempts >= max_retries || too_old {
                    tracing::warn!(function = %ev.function, request_id = %ev.request_id, attempts = attempt, "scheduled event not delivered: the function does not exist and the schedule's retry policy is spent");
                    if let Some(dlq) = dead_letter {
                        send(invoker, &dlq, ev.payload.clone(), "schedule dead-letter").await;
                    }
                    (Next::Done, None)
                } else {
                    tracing::info!(function = %ev.function, request_id = %ev.request_id, attempt, "scheduled event not delivered (no such function); retrying in {backoff:?}");
                    (Next::Retry { attempts: attempt, at_ms: now_ms() + backoff.as_millis() as i64 }, None)
                }
            }
            Err(e) if e.code == ErrorCode::ResourceNotFound => {
                tracing::warn!(function = %ev.function, request_id = %ev.request_id, "async event discarded: the function no longer exists");
                (Next::Done, None)
            }
            Err(e)
                if e.reason == Some(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded)
                    && invoker.reserved_now(&ev.function).await == Some(0) =>
            {
                tracing::warn!(function = %ev.function, request_id = %ev.request_id, "async event discarded: the function's reserved concurrency is 0");
                (Next::Done, Some((Condition::ZeroReservedConcurrency, 0, None)))
            }
            Err(e) => {
                // Throttled or a system error: back off (1 s doubling to 5 min) without
                // spending an attempt.
                let backoff = (age / 2).clamp(Duration::from_secs(1), Duration::from_secs(300));
                tracing::debug!(function = %ev.function, request_id = %ev.request_id, error = %e, "async invocation deferred for {backoff:?}");
                (Next::Retry { attempts: ev.attempts, at_ms: now_ms() + backoff.as_millis() as i64 }, None)
            }
        }
    };
    if let Some((condition, _, _)) = &finished
        && *condition != Condition::Success
    {
        crate::meter::async_dropped(&invoker.scope().account, &ev.function);
    }
    if let Some((condition, count, last)) = finished {
        route(invoker, &ev, &qualifier, &config, condition, count, last).await;
    }
    match next {
        Next::Done => invoker.inner.store.queue.delete(ev.id),
        Next::Retry { attempts, at_ms } => invoker.inner.store.queue.reschedule(ev.id, attempts, at_ms),
    }
}

/// Sends the invocation record to the on-success or on-failure destination, and a failed
/// event to the function's dead-letter target.
async fn route(
    invoker: &Invoker,
    ev: &AsyncEvent,
    qualifier: &str,
    config: &model::versions::EventInvokeConfig,
    condition: Condition,
    count: u32,
    last: Option<LastAttempt>,
) {
    let failed = condition != Condition::Success;
    let destination = if failed { config.on_failure.as_ref() } else { config.on_success.as_ref() };
    if let Some(dest) = destination {
        let scope = invoker.scope();
        let version = last.as_ref().map(|l| l.executed_version.clone()).unwrap_or_else(|| qualifier.to_string());
        let as_json = |b: &[u8]| {
            serde_json::from_slice::<Value>(b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
        };
        let mut record = json!({
            "version": "1.0",
            "timestamp": iso_timestamp(now_ms()),
            "requestContext": {
                "requestId": ev.request_id,
                "functionArn": scope.qualified_arn(&ev.function, &version),
                "condition": condition.as_str(),
                "approximateInvokeCount": count,
            },
            "requestPayload": as_json(&ev.payload),
        });
        if let Some(last) = &last {
            let mut ctx = json!({ "statusCode": 200, "executedVersion": last.executed_version });
            if let Some(fe) = last.function_error {
                ctx["functionError"] = json!(fe);
            }
            record["responseContext"] = ctx;
            record["responsePayload"] = as_json(&last.payload);
        }
        send(invoker, dest, record.to_string().into_bytes(), "destination").await;
    }
    if failed
        && let Some(dlq) = invoker.dead_letter_target(&ev.function, qualifier).await
        && !send(invoker, &dlq, ev.payload.clone(), "dead-letter").await
    {
        crate::meter::dead_letter_error(&invoker.scope().account, &ev.function);
    }
}

/// Queues `payload` for the function named by `arn` (destinations and dead letters are
/// functions; other targets are not available yet). Says whether it was delivered.
async fn send(invoker: &Invoker, arn: &str, payload: Vec<u8>, what: &str) -> bool {
    let target =
        model::FunctionRef::parse(arn, model::NameUse::Reference).and_then(|r| r.resolve(invoker.scope(), None));
    let result = match target {
        Ok(r) if arn.contains(":function:") => {
            invoker
                .enqueue(
                    &r.name,
                    r.qualifier.as_deref(),
                    bytes::Bytes::from(payload),
                    &model::invoke::new_request_id(),
                    None,
                    model::invoke::Trigger::Async,
                )
                .await
        }
        _ => Err(model::LambdaError::invalid_parameter(format!("{arn} is not a function"))),
    };
    if let Err(e) = &result {
        tracing::warn!(target = %arn, error = %e, "cannot deliver to the {what} target; only Lambda functions are supported so far");
    }
    result.is_ok()
}
