//! Object notifications: the relay that hands the object store's committed events to the
//! functions they name, as asynchronous invocations carrying S3's event record (§4.3).
//!
//! An event leaves the store's outbox only once the function's queue holds it, so a crash in
//! between delivers it twice, never zero times (S3 notifications are at-least-once too).
//! Events of a chain of invocations deeper than Lambda's limit are dropped: a function that
//! writes into the bucket that triggers it stops after 16 generations.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use invoke::Invoker;
use model::LambdaError;
use model::invoke::Trigger;
use model::objects::{MAX_RECURSION_DEPTH, ObjectEvent};
use model::trace::TraceContext;
use store::objects::ObjectStore;

/// Finds an account's invoker (starting the account if needed): `None` when the account does
/// not exist, `Err` when it cannot be reached now.
pub type InvokerLookup = Arc<dyn Fn(String) -> BoxFuture<'static, Result<Option<Invoker>, LambdaError>> + Send + Sync>;

/// How a delivery went.
enum Delivery {
    /// Queued for the function, or dropped on purpose: forget the event.
    Done,
    /// Try again later (the queue could not take it now).
    Later,
}

/// Starts the relay; the returned notifier wakes it after a commit.
pub fn start_relay(store: ObjectStore, region: String, lookup: InvokerLookup) -> Arc<tokio::sync::Notify> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let w = wake.clone();
    tokio::spawn(async move {
        loop {
            let pending = match store.run(|s| Ok(s.pending_events(256)?)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the object event outbox");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if pending.is_empty() {
                // Woken by the next commit (a wake-up before this wait is kept as a permit), or
                // after a while: in a cluster, events another node could not hand over.
                let _ = tokio::time::timeout(Duration::from_secs(2), w.notified()).await;
                continue;
            }
            let mut done = Vec::with_capacity(pending.len());
            let mut stalled = false;
            for (id, event) in pending {
                match deliver(&event, &region, &lookup).await {
                    Delivery::Done => done.push(id),
                    Delivery::Later => {
                        stalled = true;
                        break;
                    }
                }
            }
            if let Err(e) = store.run(move |s| Ok(s.events_done(&done)?)).await {
                tracing::error!(error = %e, "cannot clear delivered object events");
            }
            if stalled {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    wake
}

async fn deliver(ev: &ObjectEvent, region: &str, lookup: &InvokerLookup) -> Delivery {
    if ev.depth >= MAX_RECURSION_DEPTH {
        tracing::warn!(
            bucket = %ev.bucket, key = %ev.key, function = %ev.function_arn, depth = ev.depth,
            "recursive loop detected: the function writes into the bucket that triggers it; this event is dropped after {MAX_RECURSION_DEPTH} invocations in the chain (Lambda's recursive loop detection)"
        );
        return Delivery::Done;
    }
    let target = match model::FunctionRef::parse(&ev.function_arn, model::NameUse::Reference) {
        Ok(t) if t.account.as_deref().is_none_or(|a| a == ev.account) => t,
        _ => {
            tracing::warn!(bucket = %ev.bucket, function = %ev.function_arn, "object event dropped: the target is not a function of the bucket owner");
            return Delivery::Done;
        }
    };
    let invoker = match lookup(ev.account.clone()).await {
        Ok(Some(invoker)) => invoker,
        Ok(None) => {
            tracing::warn!(account = %ev.account, "object event dropped: the bucket owner's account is gone");
            return Delivery::Done;
        }
        Err(e) => {
            tracing::warn!(account = %ev.account, error = %e.message, "cannot reach the bucket owner's account yet; retrying");
            return Delivery::Later;
        }
    };
    let mut trace = ev.trace.as_deref().and_then(TraceContext::parse).unwrap_or_else(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        TraceContext::new(secs, false)
    });
    trace.depth = ev.depth + 1;
    let header = trace.header(&model::trace::new_span_id());
    let payload = serde_json::to_vec(&record(ev, region)).unwrap_or_default();
    let request_id = model::invoke::new_request_id();
    match invoker
        .enqueue(&target.name, target.qualifier.as_deref(), payload.into(), &request_id, Some(header), Trigger::S3)
        .await
    {
        Ok(()) => {
            tracing::debug!(bucket = %ev.bucket, key = %ev.key, function = %target.name, %request_id, "object event queued");
            Delivery::Done
        }
        // The queue could not take it now (its database, or the account's limits): retry.
        Err(e) if matches!(e.code, model::ErrorCode::Service | model::ErrorCode::TooManyRequests) => {
            tracing::warn!(error = %e.message, "cannot queue an object event yet; retrying");
            Delivery::Later
        }
        // Retrying cannot help (no such function, a runtime this host lacks, …).
        Err(e) => {
            tracing::warn!(bucket = %ev.bucket, function = %ev.function_arn, error = %e.message, "object event dropped: the function cannot take it");
            Delivery::Done
        }
    }
}

/// Keys in event records are URL-encoded as S3 writes them (form style: a space is `+`).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `Records` event S3 sends a function for one change.
pub fn record(ev: &ObjectEvent, region: &str) -> serde_json::Value {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ev.time_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_default();
    let mut object = serde_json::json!({ "key": encode_key(&ev.key), "sequencer": ev.sequencer });
    if ev.event_name.starts_with("ObjectCreated") {
        object["size"] = ev.size.into();
        object["eTag"] = ev.etag.clone().into();
    }
    serde_json::json!({ "Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": time,
        "eventName": ev.event_name,
        "userIdentity": { "principalId": ev.principal },
        "requestParameters": { "sourceIPAddress": ev.source_ip },
        "responseElements": {
            "x-amz-request-id": ev.request_id,
            "x-amz-id-2": format!("{}/{}", ev.request_id, ev.sequencer),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": ev.configuration_id,
            "bucket": {
                "name": ev.bucket,
                "ownerIdentity": { "principalId": ev.account },
                "arn": format!("arn:aws:s3:::{}", ev.bucket),
            },
            "object": object,
        }
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_s3s_shape() {
        let ev = ObjectEvent {
            account: "000000000000".into(),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            configuration_id: "c".into(),
            event_name: "ObjectCreated:Put".into(),
            bucket: "b".into(),
            key: "dir/Happy Face+1%.jpg".into(),
            size: 1024,
            etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
            sequencer: "000000000000000A".into(),
            time_ms: 123,
            source_ip: "127.0.0.1".into(),
            principal: "AWS:AKIA".into(),
            request_id: "C3D13FE58DE4C810".into(),
            depth: 0,
            trace: None,
        };
        let r = &record(&ev, "us-east-1")["Records"][0];
        assert_eq!(r["eventTime"], "1970-01-01T00:00:00.123Z");
        assert_eq!(r["eventName"], "ObjectCreated:Put");
        assert_eq!(r["s3"]["object"]["key"], "dir/Happy+Face%2B1%25.jpg");
        assert_eq!(r["s3"]["object"]["size"], 1024);
        assert_eq!(r["s3"]["bucket"]["arn"], "arn:aws:s3:::b");
        assert_eq!(r["requestParameters"]["sourceIPAddress"], "127.0.0.1");
        let removed = ObjectEvent { event_name: "ObjectRemoved:Delete".into(), ..ev };
        assert!(record(&removed, "us-east-1")["Records"][0]["s3"]["object"].get("size").is_none());
        assert_eq!(encode_key("ünï"), "%C3%BCn%C3%AF");
    }
}
