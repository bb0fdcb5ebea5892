//! The asynchronous (Event) queue's dispatcher.
//!
//! Events are committed to the database before the API answers 202. The dispatcher claims due
//! events under a lease (so a crash leads to redelivery, never to loss), invokes the function,
//! and then deletes the event, schedules a retry (function errors: up to 2 retries, after the
//! configured delay and twice that), or backs off (throttles: 1 s growing to 5 min) until the
//! event is 6 hours old. Delivery is at least once, with the same request id on every attempt.

use std::sync::Arc;
use std::time::Duration;

use model::ErrorCode;
use model::logfmt::now_ms;
use store::AsyncEvent;
use tokio::sync::{Notify, Semaphore};

use crate::Invoker;

/// Retries after a function error (Lambda's default MaximumRetryAttempts).
const MAX_RETRIES: u32 = 2;
/// Oldest an event may get (Lambda's default MaximumEventAgeInSeconds).
const MAX_EVENT_AGE: Duration = Duration::from_secs(6 * 3600);
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
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let available = slots.available_permits();
            let now = now_ms();
            let lease_until = now + LEASE.as_millis() as i64;
            let claimed = if available > 0 {
                invoker.inner.store.run(move |db| db.claim_due_events(now, available, lease_until)).await
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

async fn deliver(invoker: &Invoker, ev: AsyncEvent) {
    let now = now_ms();
    let age = Duration::from_millis((now - ev.received_ms).max(0) as u64);
    let next = if age > MAX_EVENT_AGE {
        tracing::warn!(function = %ev.function, request_id = %ev.request_id, "async event discarded: older than the maximum event age");
        Next::Done
    } else {
        let attempt = ev.attempts + 1;
        match invoker.invoke_async(&ev).await {
            Ok(res) if res.function_error.is_none() => Next::Done,
            Ok(_) if attempt <= MAX_RETRIES => {
                let delay = invoker.inner.config.async_retry_delay * attempt;
                tracing::info!(function = %ev.function, request_id = %ev.request_id, attempt, "async invocation failed; retrying in {delay:?}");
                Next::Retry { attempts: attempt, at_ms: now_ms() + delay.as_millis() as i64 }
            }
            Ok(_) => {
                tracing::warn!(function = %ev.function, request_id = %ev.request_id, attempts = attempt, "async event discarded: retries exhausted");
                Next::Done
            }
            Err(e) if e.code == ErrorCode::ResourceNotFound => {
                tracing::warn!(function = %ev.function, request_id = %ev.request_id, "async event discarded: the function no longer exists");
                Next::Done
            }
            Err(e) => {
                // Throttled or a system error: back off (1 s doubling to 5 min) without
                // spending an attempt.
                let backoff = (age / 2).clamp(Duration::from_secs(1), Duration::from_secs(300));
                tracing::debug!(function = %ev.function, request_id = %ev.request_id, error = %e, "async invocation deferred for {backoff:?}");
                Next::Retry { attempts: ev.attempts, at_ms: now_ms() + backoff.as_millis() as i64 }
            }
        }
    };
    let id = ev.id;
    let result = match next {
        Next::Done => invoker.inner.store.run(move |db| db.delete_event(id)).await,
        Next::Retry { attempts, at_ms } => {
            invoker.inner.store.run(move |db| db.reschedule_event(id, attempts, at_ms)).await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot update the async queue");
    }
}
