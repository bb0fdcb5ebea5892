//! OpenTelemetry trace export: one span per invocation, sent to an OTLP/HTTP collector as
//! JSON (`POST <endpoint>/v1/traces`), batched off the invoke path.
//!
//! The span's trace id is the invocation's X-Ray root (the caller's, from `X-Amzn-Trace-Id`,
//! or a new one), and the function sees this span as its parent in `_X_AMZN_TRACE_ID`, so spans
//! the function exports itself join the same trace. Attributes follow OpenTelemetry's FaaS
//! conventions (`faas.invocation_id`, `faas.name`, `faas.coldstart`, …).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One finished invocation span.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent: Option<String>,
    pub name: String,
    pub start_unix_ns: u128,
    pub end_unix_ns: u128,
    pub attributes: Vec<(&'static str, Attr)>,
    /// Set when the invocation failed (its error type).
    pub error: Option<String>,
}

/// Handle to the exporter task. Cheap to clone.
#[derive(Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
}

/// Spans waiting beyond this are dropped (a collector that is down must not grow memory).
const QUEUE: usize = 8192;
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(200);

impl Exporter {
    /// Starts exporting to `url` (the full traces URL, e.g. `http://127.0.0.1:4318/v1/traces`).
    pub fn start(url: String, service_name: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, url, service_name));
        Self { tx }
    }

    pub fn export(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            tracing::debug!("trace export queue full; a span was dropped");
        }
    }
}

fn attr_json(key: &str, v: &Attr) -> Value {
    let value = match v {
        Attr::Str(s) => json!({ "stringValue": s }),
        Attr::Int(i) => json!({ "intValue": i.to_string() }),
        Attr::Bool(b) => json!({ "boolValue": b }),
    };
    json!({ "key": key, "value": value })
}

/// The OTLP/JSON body of a batch.
pub fn body(service_name: &str, spans: &[Span]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut v = json!({
                "traceId": s.trace_id,
                "spanId": s.span_id,
                "name": s.name,
                "kind": 2,
                "startTimeUnixNano": s.start_unix_ns.to_string(),
                "endTimeUnixNano": s.end_unix_ns.to_string(),
                "attributes": s.attributes.iter().map(|(k, a)| attr_json(k, a)).collect::<Vec<_>>(),
                "status": match &s.error {
                    Some(e) => json!({ "code": 2, "message": e }),
                    None => json!({ "code": 1 }),
                },
            });
            if let Some(p) = &s.parent {
                v["parentSpanId"] = json!(p);
            }
            v
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                attr_json("service.name", &Attr::Str(service_name.to_string())),
                attr_json("cloud.provider", &Attr::Str("stratus".into())),
            ]},
            "scopeSpans": [{
                "scope": { "name": "stratus", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

async fn run(mut rx: mpsc::Receiver<Span>, url: String, service_name: String) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the trace exporter");
            return;
        }
    };
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                _ => break,
            }
        }
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body(&service_name, &batch).to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                if failing {
                    tracing::info!(%url, "trace export recovered");
                }
                failing = false;
            }
            Ok(r) => {
                if !failing {
                    tracing::warn!(%url, status = %r.status(), "the trace collector refused spans; dropping them");
                }
                failing = true;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(%url, error = %e, "cannot reach the trace collector; dropping spans");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_otlp_json() {
        let span = Span {
            trace_id: "5759e988bd862e3fe1be46a994272793".into(),
            span_id: "53995c3f42cd8ad8".into(),
            parent: Some("0123456789abcdef".into()),
            name: "f".into(),
            start_unix_ns: 1,
            end_unix_ns: 2,
            attributes: vec![("faas.coldstart", Attr::Bool(true)), ("faas.max_memory", Attr::Int(134217728))],
            error: Some("Runtime.ExitError".into()),
        };
        let b = body("stratus", &[span]);
        let s = &b["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "5759e988bd862e3fe1be46a994272793");
        assert_eq!(s["parentSpanId"], "0123456789abcdef");
        assert_eq!(s["startTimeUnixNano"], "1");
        assert_eq!(s["attributes"][1]["value"]["intValue"], "134217728");
        assert_eq!(s["status"]["code"], 2);
    }
}
