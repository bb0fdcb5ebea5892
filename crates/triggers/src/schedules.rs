//! The scheduler: fires each account's schedules (EventBridge Scheduler semantics) as
//! asynchronous invocations with trigger `schedule`.
//!
//! One task per account sleeps until its earliest next tick (or until the API changes a
//! schedule) and fires what is due. Firing a tick is one transaction (`Db::advance_schedule`):
//! the schedule's last fired tick and next tick move and the invocation is queued, together.
//! So each tick fires once, even across a crash, and a tick whose transaction did not commit
//! is still due after a restart.
//!
//! Ticks missed while Stratus was down: the latest one fires once if it is no older than the
//! schedule's flexible window (one minute when the window is off, Scheduler's precision);
//! the earlier ones, and any older than that, are skipped with a log line.

use std::sync::Arc;
use std::time::Duration;

use invoke::Invoker;
use model::schedule::{Expression, Schedule};
use store::Store;
use store::schedules::{Advance, Fired, StoredSchedule};

/// Seconds from a tick to the commit that fired it (a summary: p50/p90/p99 on `/metrics`).
pub const LATENESS: &str = "scheduler_fire_lateness_seconds";
/// Ticks fired.
pub const FIRED: &str = "scheduler_fired_total";
/// Ticks skipped (missed while Stratus was down, beyond the schedule's window).
pub const SKIPPED: &str = "scheduler_skipped_ticks_total";
/// The scheduler's metrics and their help.
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (LATENESS, "EventBridge Scheduler: seconds from a schedule's tick to the commit that fired it"),
    (FIRED, "EventBridge Scheduler: ticks fired (each queued one asynchronous invocation)"),
    (SKIPPED, "EventBridge Scheduler: ticks skipped, missed beyond the schedule's flexible window"),
];

/// How many due schedules one pass reads.
const BATCH: usize = 512;
/// Ticks looked at when catching up before giving up on finding the latest.
const MAX_CATCH_UP: usize = 10_000;

/// The settings of an account's scheduler.
#[derive(Clone)]
pub struct Scheduler {
    wake: Arc<tokio::sync::Notify>,
    /// Accept `rate(N seconds)` (tests only).
    pub allow_seconds: bool,
}

impl Scheduler {
    /// Starts the account's scheduler.
    pub fn start(invoker: Invoker, store: Store, allow_seconds: bool) -> Self {
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        tokio::spawn(async move { run(invoker, store, w).await });
        Self { wake, allow_seconds }
    }

    /// Tells the scheduler a schedule changed.
    pub fn changed(&self) {
        self.wake.notify_one();
    }
}

fn now_ms() -> i64 {
    model::logfmt::now_ms()
}

/// A request id (UUID-shaped) derived from a schedule and one of its ticks.
fn tick_request_id(arn: &str, tick_ms: i64) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{arn}\n{tick_ms}").as_bytes());
    let h = hex::encode(&d[..16]);
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

async fn run(invoker: Invoker, store: Store, wake: Arc<tokio::sync::Notify>) {
    let cluster = invoker.cluster();
    let account = invoker.scope().account.clone();
    let key = format!("schedules/{account}");
    loop {
        // In a cluster, one node (the one rendezvous hashing prefers among the live ones)
        // fires an account's schedules; any other would find each tick already moved.
        if let Some(c) = &cluster {
            let mine = c.0.preferred(&key) && !c.0.draining();
            c.0.holding("schedules", &account, mine);
            if !mine {
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                continue;
            }
        }
        let now = now_ms();
        let due = match store.run(move |db| db.due_schedules(now, BATCH)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read due schedules");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let full = due.len() == BATCH;
        if !due.is_empty() {
            fire(&invoker, &store, due, now).await;
        }
        if full {
            continue;
        }
        let next = store.run(|db| db.next_schedule_due()).await.ok().flatten();
        // In a cluster, look again soon: who fires may change, and others may add schedules.
        let most = if cluster.is_some() { 1_000 } else { 60_000 };
        let wait = match next {
            Some(t) => Duration::from_millis((t - now_ms()).clamp(0, most) as u64),
            None => Duration::from_millis(most as u64),
        };
        if wait.is_zero() {
            continue;
        }
        let _ = tokio::time::timeout(wait, wake.notified()).await;
    }
}

/// The latest tick at or before `now` from `tick` on, and how many earlier ones it passes.
fn catch_up(s: &Schedule, expr: &Expression, tz: model::schedule::Tz, tick: i64, now: i64) -> (Option<i64>, usize) {
    let mut latest = tick;
    for passed in 0..MAX_CATCH_UP {
        match s.next_tick(expr, tz, latest) {
            Some(n) if n <= now => latest = n,
            _ => return (Some(latest), passed),
        }
    }
    (None, MAX_CATCH_UP)
}

/// What to do with one due schedule, and what to say about it afterwards.
struct Plan {
    advance: Advance,
    arn: String,
    finished: bool,
}

/// Decides one due schedule's move: which tick fires (if any), the next tick, the event.
fn plan(scope: &model::Scope, st: StoredSchedule, now: i64) -> Option<Plan> {
    let tick = st.next_ms?;
    let version = st.version;
    let s = st.schedule;
    let arn = schedule_arn(scope, &s.group, &s.name);
    let stop = |arn: String| Plan {
        advance: Advance {
            group: s.group.clone(),
            name: s.name.clone(),
            expected_next: tick,
            version,
            fired: None,
            new_next: None,
            event: None,
            delete: false,
        },
        arn,
        finished: true,
    };
    let (expr, tz) = match s.validate(true) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(schedule = %arn, error = %e, "a stored schedule is invalid; it is stopped");
            return Some(stop(arn));
        }
    };
    let (latest, skipped) = catch_up(&s, &expr, tz, tick, now);
    let fire_at = latest.filter(|t| now - t <= s.window_ms());
    let missed = skipped + usize::from(fire_at.is_none());
    if missed > 0 {
        metrics::counter!(SKIPPED, "account" => scope.account.clone()).increment(missed as u64);
        tracing::warn!(
            schedule = %arn, missed,
            "ticks were missed (Stratus was not running, or was too busy); {}",
            if fire_at.is_some() { "the latest fires now, within the schedule's window" } else { "none is within the schedule's window, so they are skipped" }
        );
    }
    // Every tick up to `latest` is handled now; if catching up gave up, everything up to now is.
    let new_next = s.next_tick(&expr, tz, latest.unwrap_or(now));
    let finished = new_next.is_none();
    let event = match (model::FunctionRef::parse(&s.target.arn, model::NameUse::Reference), fire_at) {
        (Ok(t), Some(at)) => {
            // One execution id per scheduled time: the same on every node that plans it.
            let request_id = tick_request_id(&arn, at);
            let input = s.target.input.as_deref().unwrap_or("{}");
            Some(store::AsyncEvent {
                id: 0,
                request_id: request_id.clone(),
                function: t.name,
                qualifier: t.qualifier,
                payload: model::schedule::render_input(input, &arn, at, &request_id, 1).into_bytes(),
                received_ms: now,
                attempts: 0,
                next_attempt_ms: now,
                trace: None,
                trigger: Some(model::invoke::Trigger::Schedule.as_str().to_string()),
                delivery: Some(model::invoke::DeliveryPolicy {
                    max_retries: s.target.retry_policy.maximum_retry_attempts,
                    max_age_s: s.target.retry_policy.maximum_event_age_secs,
                    dead_letter: s.target.dead_letter.as_ref().map(|d| d.arn.clone()),
                }),
            })
        }
        _ => None,
    };
    Some(Plan {
        advance: Advance {
            group: s.group.clone(),
            name: s.name.clone(),
            expected_next: tick,
            version,
            fired: fire_at,
            new_next,
            event,
            delete: finished && s.action_after_completion == "DELETE",
        },
        arn,
        finished,
    })
}

/// Fires a batch of due schedules in one transaction.
async fn fire(invoker: &Invoker, store: &Store, due: Vec<StoredSchedule>, now: i64) {
    let scope = invoker.scope().clone();
    let plans: Vec<Plan> = due.into_iter().filter_map(|st| plan(&scope, st, now)).collect();
    let moves: Vec<Advance> = plans.iter().map(|p| p.advance.clone()).collect();
    let outcomes = match store.run(move |db| db.advance_schedules(&moves)).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "cannot record the schedules' ticks; they stay due");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
    };
    let committed = now_ms();
    let mut queued = false;
    for (p, outcome) in plans.iter().zip(outcomes) {
        match outcome {
            Fired::Queued if p.advance.event.is_some() => {
                queued = true;
                if let Some(at) = p.advance.fired {
                    let late = (committed - at).max(0) as f64 / 1000.0;
                    metrics::histogram!(LATENESS, "account" => scope.account.clone()).record(late);
                    metrics::counter!(FIRED, "account" => scope.account.clone()).increment(1);
                }
                tracing::debug!(schedule = %p.arn, tick = p.advance.fired, "schedule fired");
                if p.finished {
                    tracing::info!(schedule = %p.arn, deleted = p.advance.delete, "schedule completed its last tick");
                }
            }
            Fired::Queued | Fired::Stale => {}
        }
    }
    if queued {
        invoker.notify_queue();
    }
}

/// `arn:aws:scheduler:<region>:<account>:schedule/<group>/<name>`.
pub fn schedule_arn(scope: &model::Scope, group: &str, name: &str) -> String {
    format!("arn:aws:scheduler:{}:{}:schedule/{group}/{name}", scope.region, scope.account)
}

pub fn group_arn(scope: &model::Scope, group: &str) -> String {
    format!("arn:aws:scheduler:{}:{}:schedule-group/{group}", scope.region, scope.account)
}

/// An EventBridge scheduled event (§4.7) as an Input template, for functions written for
/// EventBridge rules.
pub fn scheduled_event_template(account: &str, region: &str) -> String {
    serde_json::json!({
        "version": "0",
        "id": "<aws.scheduler.execution-id>",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": "<aws.scheduler.scheduled-time>",
        "region": region,
        "resources": ["<aws.scheduler.schedule-arn>"],
        "detail": {}
    })
    .to_string()
}
