//! Metering: every invocation attempt becomes one ledger row and updates the metrics.
//!
//! Both are off the warm path's critical section: the ledger row is handed to the ledger's
//! writer thread (which batches commits) and the metrics are atomic updates through the
//! `metrics` facade (a no-op until the binary installs a recorder). Metric names follow
//! CloudWatch's `AWS/Lambda` namespace in Prometheus's spelling (`Invocations` →
//! `lambda_invocations_total`), labelled by account, function and version.

use std::time::Duration;

use model::invoke::Trigger;
use model::ledger::{Outcome, Record};
use model::logfmt::{Report, ReportStatus};
use model::trace::TraceContext;

use crate::env::Blueprint;
use crate::otel::{Attr, Exporter, Span};

pub const INVOCATIONS: &str = "lambda_invocations_total";
pub const ERRORS: &str = "lambda_errors_total";
pub const THROTTLES: &str = "lambda_throttles_total";
pub const DURATION: &str = "lambda_duration_milliseconds";
pub const INIT_DURATION: &str = "lambda_init_duration_milliseconds";
pub const CONCURRENT_EXECUTIONS: &str = "lambda_concurrent_executions";
pub const PROVISIONED_CONCURRENT_EXECUTIONS: &str = "lambda_provisioned_concurrent_executions";
pub const PROVISIONED_UTILIZATION: &str = "lambda_provisioned_concurrency_utilization";
pub const ASYNC_EVENTS_RECEIVED: &str = "lambda_async_events_received_total";
pub const ASYNC_EVENT_AGE: &str = "lambda_async_event_age_milliseconds";
pub const ASYNC_EVENTS_DROPPED: &str = "lambda_async_events_dropped_total";
pub const DEAD_LETTER_ERRORS: &str = "lambda_dead_letter_errors_total";
pub const ITERATOR_AGE: &str = "lambda_iterator_age_milliseconds";

/// Every metric, its kind and what it means (for `# HELP`).
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (INVOCATIONS, "AWS/Lambda Invocations: billed invocation attempts, errors included, throttles not"),
    (ERRORS, "AWS/Lambda Errors: invocations that ended in a function error, a crash or a timeout"),
    (THROTTLES, "AWS/Lambda Throttles: invocation requests refused for concurrency or scaling"),
    (DURATION, "AWS/Lambda Duration: time spent running the handler (init excluded), in ms"),
    (INIT_DURATION, "Init Duration of cold starts, in ms"),
    (CONCURRENT_EXECUTIONS, "AWS/Lambda ConcurrentExecutions: invocations in flight"),
    (PROVISIONED_CONCURRENT_EXECUTIONS, "AWS/Lambda ProvisionedConcurrentExecutions: provisioned environments busy"),
    (
        PROVISIONED_UTILIZATION,
        "AWS/Lambda ProvisionedConcurrencyUtilization: busy / allocated provisioned environments",
    ),
    (ASYNC_EVENTS_RECEIVED, "AWS/Lambda AsyncEventsReceived: events accepted for asynchronous invocation"),
    (ASYNC_EVENT_AGE, "AWS/Lambda AsyncEventAge: time from queueing to each invocation attempt, in ms"),
    (ASYNC_EVENTS_DROPPED, "AWS/Lambda AsyncEventsDropped: events discarded without a successful invocation"),
    (DEAD_LETTER_ERRORS, "AWS/Lambda DeadLetterErrors: failed deliveries to a dead-letter target"),
    (ITERATOR_AGE, "AWS/Lambda IteratorAge: age of the last record of a stream batch, in ms"),
];

/// Histogram buckets (ms) for the duration metrics.
pub const DURATION_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    900000.0,
];

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn labels(bp: &Blueprint) -> [(&'static str, String); 3] {
    [
        ("account", bp.scope.account.clone()),
        ("function", bp.config.name.clone()),
        ("version", bp.config.version.clone()),
    ]
}

/// Labels of the metrics kept per function (not per version).
fn function_labels(account: &str, function: &str) -> [(&'static str, String); 2] {
    [("account", account.to_string()), ("function", function.to_string())]
}

/// One function version's metrics, registered once (looking a metric up by its labels on
/// every invocation costs more than updating it).
#[derive(Debug)]
pub struct Handles {
    invocations: metrics::Counter,
    errors: metrics::Counter,
    throttles: metrics::Counter,
    duration: metrics::Histogram,
    init_duration: metrics::Histogram,
    /// The names every ledger row of this version repeats.
    account: std::sync::Arc<str>,
    function: std::sync::Arc<str>,
    version: std::sync::Arc<str>,
    architecture: std::sync::Arc<str>,
}

impl Handles {
    fn new(bp: &Blueprint) -> Self {
        let labels = labels(bp);
        Self {
            account: bp.scope.account.as_str().into(),
            function: bp.config.name.as_str().into(),
            version: bp.config.version.as_str().into(),
            architecture: bp.config.architecture.as_str().into(),
            invocations: metrics::counter!(INVOCATIONS, &labels),
            errors: metrics::counter!(ERRORS, &labels),
            throttles: metrics::counter!(THROTTLES, &labels),
            duration: metrics::histogram!(DURATION, &labels),
            init_duration: metrics::histogram!(INIT_DURATION, &labels),
        }
    }
}

impl Handles {
    /// A ledger row of this version ending at `end_us`: zero time, not billed, throttled
    /// (callers that ran override what they measured).
    fn row(&self, bp: &Blueprint, request_id: &str, trigger: Trigger, end_us: i64) -> Record {
        Record {
            request_id: request_id.to_string(),
            account: self.account.clone(),
            function: self.function.clone(),
            version: self.version.clone(),
            trigger: trigger.as_str().into(),
            architecture: self.architecture.clone(),
            start_us: end_us,
            end_us,
            duration_us: 0,
            init_us: None,
            billed_ms: 0,
            memory_mb: bp.config.memory_mb,
            max_memory_used_mb: 0,
            cold: false,
            outcome: Outcome::Throttled,
        }
    }
}

/// How an invocation ended, for the ledger.
pub fn outcome(report: &Report, function_error: bool) -> Outcome {
    match &report.status {
        ReportStatus::Timeout => Outcome::Timeout,
        ReportStatus::Error(_) => Outcome::Unhandled,
        ReportStatus::Success if function_error => Outcome::HandledError,
        ReportStatus::Success => Outcome::Success,
    }
}

/// Where metering goes. `None` ledger: metering is off (benchmarks compare the two); `None`
/// exporter: no traces are exported.
#[derive(Clone)]
pub struct Meter {
    pub ledger: Option<store::ledger::Ledger>,
    pub exporter: Option<Exporter>,
}

/// An invocation's trace context and its own span id.
pub struct Traced {
    pub context: TraceContext,
    pub span_id: String,
}

impl Traced {
    /// What the function sees as `_X_AMZN_TRACE_ID`: this invocation's span is its parent.
    pub fn header(&self) -> String {
        self.context.header(&self.span_id)
    }
}

/// The OpenTelemetry FaaS trigger of an invocation.
fn faas_trigger(t: Trigger) -> &'static str {
    match t {
        Trigger::Http => "http",
        Trigger::S3 => "datasource",
        Trigger::Schedule => "timer",
        Trigger::Esm => "pubsub",
        Trigger::Api | Trigger::Async => "other",
    }
}

impl Meter {
    /// The trace an invocation joins (the caller's, or a new one) and its span id. A new
    /// trace is sampled when traces are exported; a caller's says itself.
    pub fn trace(&self, header: Option<&str>) -> Traced {
        let context = header.and_then(TraceContext::parse).unwrap_or_else(|| {
            let secs =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            TraceContext::new(secs, self.exporter.is_some())
        });
        Traced { context, span_id: model::trace::new_span_id() }
    }

    /// An attempt that ran (or failed to start, `cold` then): its REPORT gives the figures.
    #[allow(clippy::too_many_arguments)]
    pub fn ran(
        &self,
        bp: &Blueprint,
        request_id: &str,
        trigger: Trigger,
        report: &Report,
        outcome: Outcome,
        cold: bool,
        traced: &Traced,
    ) {
        if let Some(exporter) = &self.exporter
            && traced.context.sampled
        {
            exporter.export(span(bp, request_id, trigger, report, outcome, cold, traced));
        }
        let Some(ledger) = &self.ledger else { return };
        let m = bp.metrics.get_or_init(|| Handles::new(bp));
        m.invocations.increment(1);
        if outcome.is_error() {
            m.errors.increment(1);
        }
        m.duration.record(report.duration.as_secs_f64() * 1000.0);
        if let Some(init) = report.init_duration {
            m.init_duration.record(init.as_secs_f64() * 1000.0);
        }
        let end_us = now_us();
        let init_us = report.init_duration.map(|d| d.as_micros() as i64);
        let duration_us = report.duration.as_micros() as i64;
        ledger.record(Record {
            start_us: end_us - duration_us - init_us.unwrap_or(0),
            duration_us,
            init_us,
            billed_ms: report.billed_ms() as i64,
            max_memory_used_mb: report.max_memory_used_mb,
            cold: cold || report.init_duration.is_some(),
            outcome,
            ..m.row(bp, request_id, trigger, end_us)
        });
    }

    /// An attempt refused for concurrency or scaling.
    pub fn throttled(&self, bp: &Blueprint, request_id: &str, trigger: Trigger) {
        let Some(ledger) = &self.ledger else { return };
        let m = bp.metrics.get_or_init(|| Handles::new(bp));
        m.throttles.increment(1);
        ledger.record(m.row(bp, request_id, trigger, now_us()));
    }
}

/// The span of one invocation, timed by its REPORT (INIT included).
fn span(
    bp: &Blueprint,
    request_id: &str,
    trigger: Trigger,
    report: &Report,
    outcome: Outcome,
    cold: bool,
    traced: &Traced,
) -> Span {
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let took = (report.duration + report.init_duration.unwrap_or_default()).as_nanos();
    let error = match &report.status {
        ReportStatus::Success if outcome == Outcome::HandledError => Some("Unhandled".to_string()),
        ReportStatus::Success => None,
        ReportStatus::Timeout => Some("Sandbox.Timedout".to_string()),
        ReportStatus::Error(t) => Some(t.clone()),
    };
    Span {
        trace_id: traced.context.trace_id.clone(),
        span_id: traced.span_id.clone(),
        parent: traced.context.parent.clone(),
        name: bp.config.name.clone(),
        start_unix_ns: end.saturating_sub(took),
        end_unix_ns: end,
        attributes: vec![
            ("faas.invocation_id", Attr::Str(request_id.to_string())),
            ("faas.name", Attr::Str(bp.config.name.clone())),
            ("faas.version", Attr::Str(bp.config.version.clone())),
            ("faas.trigger", Attr::Str(faas_trigger(trigger).into())),
            ("faas.coldstart", Attr::Bool(cold || report.init_duration.is_some())),
            ("faas.max_memory", Attr::Int(i64::from(bp.config.memory_mb) * 1024 * 1024)),
            ("cloud.account.id", Attr::Str(bp.scope.account.clone())),
            ("cloud.region", Attr::Str(bp.scope.region.clone())),
            ("cloud.resource_id", Attr::Str(bp.arn.clone())),
            ("stratus.outcome", Attr::Str(outcome.as_str().into())),
            ("stratus.billed_ms", Attr::Int(report.billed_ms() as i64)),
        ],
        error,
    }
}

/// An asynchronous event was accepted.
pub fn async_received(account: &str, function: &str) {
    metrics::counter!(ASYNC_EVENTS_RECEIVED, &function_labels(account, function)).increment(1);
}

/// An asynchronous event is about to be attempted, `age` after it was queued.
pub fn async_attempt(account: &str, function: &str, age: Duration) {
    metrics::histogram!(ASYNC_EVENT_AGE, &function_labels(account, function)).record(age.as_secs_f64() * 1000.0);
}

/// An asynchronous event was discarded without success.
pub fn async_dropped(account: &str, function: &str) {
    metrics::counter!(ASYNC_EVENTS_DROPPED, &function_labels(account, function)).increment(1);
}

/// A delivery to a dead-letter target failed.
pub fn dead_letter_error(account: &str, function: &str) {
    metrics::counter!(DEAD_LETTER_ERRORS, &function_labels(account, function)).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: ReportStatus) -> Report {
        Report {
            request_id: "r".into(),
            duration: Duration::from_millis(3),
            memory_mb: 128,
            max_memory_used_mb: 10,
            init_duration: None,
            status,
        }
    }

    #[test]
    fn outcomes_follow_the_report() {
        assert_eq!(outcome(&report(ReportStatus::Success), false), Outcome::Success);
        assert_eq!(outcome(&report(ReportStatus::Success), true), Outcome::HandledError);
        assert_eq!(outcome(&report(ReportStatus::Timeout), true), Outcome::Timeout);
        assert_eq!(outcome(&report(ReportStatus::Error("Runtime.ExitError".into())), true), Outcome::Unhandled);
    }
}
