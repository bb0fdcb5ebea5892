//! Delivering a batch: synchronous invocations with Lambda's stream semantics.
//!
//! - Records of one partition are delivered in order. With `ParallelizationFactor` N, the
//!   batch is split by partition into up to N groups delivered concurrently.
//! - A function error retries the batch (`MaximumRetryAttempts`, -1 = until it succeeds or
//!   its records pass `MaximumRecordAgeInSeconds`); the partition waits meanwhile.
//! - `BisectBatchOnFunctionError` splits a failing batch in two and retries each half, so a
//!   poison record ends up alone.
//! - With `ReportBatchItemFailures`, `{"batchItemFailures":[{"itemIdentifier":…}]}` marks the
//!   records before the lowest reported one done and retries from it; an identifier that is
//!   empty, null or not in the batch fails the whole batch.
//! - Records that exhaust their retries or age go to `DestinationConfig.OnFailure` (an
//!   asynchronous invocation of a function) with AWS's invocation record shape
//!   (`condition: RetryAttemptsExhausted | RecordAgeExceeded`), then the batch moves on.
//! - Throttling and other platform errors are retried with backoff and count no attempt.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use model::esm::SourceKind;
use model::invoke::{InvokeRequest, Trigger};
use model::{FunctionRef, NameUse};
use serde_json::{Value, json};

use super::{FAILED_RECORDS, Poller, RECORDS, Record, iso, now_ms};

/// The longest pause between two attempts of a failing batch.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

enum Outcome {
    /// Every record is done.
    Done,
    /// The records from this index on failed (a function error, or a partial batch response).
    FailedFrom(usize),
    /// The platform could not invoke (throttled, function missing): retried, not counted.
    Unavailable,
    /// The batch is over the invocation payload limit: halves are tried (Lambda trims batches
    /// to fit); a single record that is too large fails.
    TooLarge,
}

/// Delivers `records` (in fetch order); returns when each is done or sent to the destination
/// (`true`), or when the poller is told to stop first (`false`: commit nothing).
pub(super) async fn deliver(p: &Poller, records: Vec<Record>) -> bool {
    let factor = p.mapping.parallelization as usize;
    if factor <= 1 {
        return deliver_group(p, records).await;
    }
    // Partitions are dealt to groups in the order they first appear: each partition's records
    // stay together (in order), and up to `factor` partitions run side by side.
    let mut groups: Vec<Vec<Record>> = vec![Vec::new(); factor];
    let mut slots: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in records {
        let next = slots.len() % factor;
        let slot = *slots.entry(r.partition.clone()).or_insert(next);
        groups[slot].push(r);
    }
    futures_util::future::join_all(groups.into_iter().filter(|g| !g.is_empty()).map(|g| deliver_group(p, g)))
        .await
        .into_iter()
        .all(|done| done)
}

async fn deliver_group(p: &Poller, records: Vec<Record>) -> bool {
    let m = &p.mapping;
    let account = p.invoker.scope().account.clone();
    let mut queue: VecDeque<(Vec<Record>, u32)> = VecDeque::from([(records, 0)]);
    let mut platform_backoff = Duration::from_millis(100);
    while let Some((mut batch, attempts)) = queue.pop_front() {
        if m.max_record_age_s >= 0 {
            let oldest_allowed = now_ms() - m.max_record_age_s * 1000;
            let expired = batch.iter().take_while(|r| r.arrival_ms < oldest_allowed).count();
            if expired > 0 {
                let rest = batch.split_off(expired);
                if !on_failure(p, &batch, "RecordAgeExceeded", attempts, None).await {
                    return false;
                }
                batch = rest;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (outcome, request_id) = invoke(p, &batch).await;
        match outcome {
            Outcome::Done => {
                platform_backoff = Duration::from_millis(100);
                metrics::counter!(super::BATCHES, "account" => account.clone(), "function" => m.function.clone(), "outcome" => "ok").increment(1);
                metrics::counter!(RECORDS, "account" => account.clone(), "function" => m.function.clone())
                    .increment(batch.len() as u64);
                p.set_result("OK");
            }
            Outcome::TooLarge if batch.len() > 1 => {
                let second = batch.split_off(batch.len() / 2);
                queue.push_front((second, attempts));
                queue.push_front((batch, attempts));
            }
            Outcome::TooLarge => {
                if !on_failure(p, &batch, "RetryAttemptsExhausted", attempts + 1, None).await {
                    return false;
                }
            }
            Outcome::Unavailable => {
                if p.pause(platform_backoff).await {
                    return false;
                }
                platform_backoff = (platform_backoff * 2).min(Duration::from_secs(30));
                queue.push_front((batch, attempts));
            }
            Outcome::FailedFrom(i) => {
                let failed = batch.split_off(i.min(batch.len()));
                if !batch.is_empty() {
                    metrics::counter!(RECORDS, "account" => account.clone(), "function" => m.function.clone())
                        .increment(batch.len() as u64);
                }
                let attempts = attempts + 1;
                p.set_result("PROBLEM: Function call failed");
                metrics::counter!(super::BATCHES, "account" => account.clone(), "function" => m.function.clone(), "outcome" => "failed").increment(1);
                if m.max_retries >= 0 && i64::from(attempts) > m.max_retries {
                    if !on_failure(p, &failed, "RetryAttemptsExhausted", attempts, Some(&request_id)).await {
                        return false;
                    }
                    continue;
                }
                if m.bisect && failed.len() > 1 {
                    // Each half starts its own count, so a poison record ends up alone.
                    let mut first = failed;
                    let second = first.split_off(first.len() / 2);
                    tracing::info!(mapping = %m.uuid, halves = ?(first.len(), second.len()), "batch failed; bisecting");
                    queue.push_front((second, 0));
                    queue.push_front((first, 0));
                    continue;
                }
                let pause = Duration::from_millis(100 * 2u64.saturating_pow(attempts.min(16))).min(MAX_RETRY_PAUSE);
                tracing::info!(mapping = %m.uuid, attempts, records = failed.len(), retry_in_ms = pause.as_millis() as u64, "batch failed; retrying");
                if p.pause(pause).await {
                    return false;
                }
                queue.push_front((failed, attempts));
            }
        }
    }
    true
}

/// The event a batch becomes (JSON text, assembled from the records' own text).
pub(super) fn event(p: &Poller, batch: &[Record]) -> String {
    let m = &p.mapping;
    match m.source.kind {
        SourceKind::RabbitMq => {
            // Amazon MQ for RabbitMQ: messages grouped by `queue::vhost`.
            let vhost = super::rabbitmq::vhost(&m.source.endpoints[0]);
            let key = format!("{}::{vhost}", m.source.name);
            format!(
                r#"{{"eventSource":"aws:rmq","eventSourceArn":{},"rmqMessagesByQueue":{{{}:{}}}}}"#,
                Value::from(m.source.arn(p.invoker.scope())),
                Value::from(key),
                json_array(batch.iter())
            )
        }
        SourceKind::Kafka => super::kafka::event(m, batch),
        _ => {
            let mut out = String::with_capacity(16 + batch.iter().map(|r| r.body.len() + 1).sum::<usize>());
            out.push_str(r#"{"Records":"#);
            push_array(&mut out, batch.iter());
            out.push('}');
            out
        }
    }
}

/// `[body,body,…]`.
pub(super) fn json_array<'a>(records: impl Iterator<Item = &'a Record> + Clone) -> String {
    let mut out = String::with_capacity(2 + records.clone().map(|r| r.body.len() + 1).sum::<usize>());
    push_array(&mut out, records);
    out
}

fn push_array<'a>(out: &mut String, records: impl Iterator<Item = &'a Record>) {
    out.push('[');
    for (i, r) in records.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&r.body);
    }
    out.push(']');
}

/// One invocation of `batch`; its outcome and request id.
async fn invoke(p: &Poller, batch: &[Record]) -> (Outcome, String) {
    let m = &p.mapping;
    let request_id = model::invoke::new_request_id();
    if let Some(last) = batch.last() {
        let age = (now_ms() - last.arrival_ms).max(0) as f64;
        metrics::histogram!(invoke::meter::ITERATOR_AGE, "account" => p.invoker.scope().account.clone(), "function" => m.function.clone()).record(age);
    }
    let payload = event(p, batch).into_bytes();
    if payload.len() > model::invoke::MAX_SYNC_PAYLOAD {
        // Lambda trims batches to the synchronous invocation limit; so does this.
        tracing::info!(mapping = %m.uuid, records = batch.len(), bytes = payload.len(), "batch over the 6 MB payload limit; splitting");
        return (Outcome::TooLarge, request_id);
    }
    let req = InvokeRequest {
        function: m.function.clone(),
        qualifier: m.qualifier.clone(),
        payload: Bytes::from(payload),
        tail: false,
        client_context: None,
        request_id: request_id.clone(),
        trigger: Trigger::Esm,
        trace: None,
    };
    let result = match p.invoker.invoke(req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(mapping = %m.uuid, function = %m.function, error = %e, "cannot invoke the mapping's function; retrying");
            p.set_result(format!("PROBLEM: {}", e.message));
            return (Outcome::Unavailable, request_id);
        }
    };
    if result.function_error.is_some() {
        return (Outcome::FailedFrom(0), request_id);
    }
    if !m.report_failures {
        return (Outcome::Done, request_id);
    }
    match failed_from(batch, &result.payload) {
        Ok(None) => (Outcome::Done, request_id),
        Ok(Some(i)) => (Outcome::FailedFrom(i), request_id),
        Err(why) => {
            tracing::info!(mapping = %m.uuid, why, "invalid partial batch response; the whole batch failed");
            (Outcome::FailedFrom(0), request_id)
        }
    }
}

/// Reads a partial batch response: `None` when every record succeeded, else the index of
/// the lowest reported record. `Err` fails the whole batch.
fn failed_from(batch: &[Record], payload: &[u8]) -> Result<Option<usize>, &'static str> {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else { return Ok(None) };
    let Some(list) = v.get("batchItemFailures") else { return Ok(None) };
    let items = match list {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => return Err("batchItemFailures is not a list"),
    };
    let mut lowest: Option<usize> = None;
    for item in items {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(Value::Number(n)) => {
                find(batch, &n.to_string(), &mut lowest)?;
                continue;
            }
            _ => return Err("an itemIdentifier is missing, null or empty"),
        };
        find(batch, id, &mut lowest)?;
    }
    Ok(lowest)
}

fn find(batch: &[Record], id: &str, lowest: &mut Option<usize>) -> Result<Option<usize>, &'static str> {
    let i = batch.iter().position(|r| r.id == id).ok_or("an itemIdentifier names no record of the batch")?;
    *lowest = Some(lowest.map_or(i, |l| l.min(i)));
    Ok(*lowest)
}

/// Sends records that exhausted their retries or age to the on-failure destination; `false`
/// if the poller was told to stop before it could (the records are then not committed).
async fn on_failure(p: &Poller, records: &[Record], condition: &str, attempts: u32, request_id: Option<&str>) -> bool {
    let m = &p.mapping;
    let account = p.invoker.scope().account.clone();
    metrics::counter!(FAILED_RECORDS, "account" => account, "function" => m.function.clone())
        .increment(records.len() as u64);
    let Some(dest) = &m.on_failure else {
        tracing::warn!(mapping = %m.uuid, records = records.len(), condition, first = %records.first().map(|r| r.id.as_str()).unwrap_or(""), "records skipped: no on-failure destination");
        return true;
    };
    let (Some(first), Some(last)) = (records.first(), records.last()) else { return true };
    let scope = p.invoker.scope();
    let function_arn = format!(
        "arn:aws:lambda:{}:{}:function:{}:{}",
        scope.region,
        scope.account,
        m.function,
        m.qualifier.as_deref().unwrap_or("$LATEST")
    );
    let mut info = json!({
        "partition": first.partition,
        "startSequenceNumber": first.id,
        "endSequenceNumber": last.id,
        "approximateArrivalOfFirstRecord": iso(first.arrival_ms),
        "approximateArrivalOfLastRecord": iso(last.arrival_ms),
        "batchSize": records.len(),
        "eventSourceArn": m.source.arn(scope),
    });
    if !m.source.kind.is_stream() {
        // A queue's records are gone from the broker once acknowledged: the record keeps them.
        info["payload"] = serde_json::from_str(&event(p, records)).unwrap_or(Value::Null);
    }
    let key = match m.source.kind {
        SourceKind::Nats => "NATSBatchInfo",
        SourceKind::Redis => "RedisStreamBatchInfo",
        SourceKind::Postgres => "PostgresBatchInfo",
        SourceKind::RabbitMq => "RabbitMQBatchInfo",
        SourceKind::Mqtt => "MQTTBatchInfo",
        SourceKind::Kafka => "KafkaBatchInfo",
    };
    let mut record = json!({
        "requestContext": {
            "requestId": request_id.unwrap_or(""),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "version": "1.0",
        "timestamp": iso(now_ms()),
    });
    if request_id.is_some() {
        record["responseContext"] = json!({"statusCode": 200, "executedVersion": m.qualifier.as_deref().unwrap_or("$LATEST"), "functionError": "Unhandled"});
    }
    record[key] = info;
    let payload = Bytes::from(record.to_string());
    // The partition waits until the destination has the record: skipping it would lose it.
    let mut wait = Duration::from_millis(200);
    loop {
        let sent = match FunctionRef::parse(dest, NameUse::Reference) {
            Ok(t) => {
                let id = model::invoke::new_request_id();
                p.invoker.enqueue(&t.name, t.qualifier.as_deref(), payload.clone(), &id, None, Trigger::Esm).await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {
                tracing::info!(mapping = %m.uuid, destination = %dest, records = records.len(), condition, "records sent to the on-failure destination");
                return true;
            }
            Err(e) => {
                tracing::warn!(mapping = %m.uuid, destination = %dest, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach the on-failure destination; the partition waits");
                p.set_result(format!("PROBLEM: On-failure destination unreachable. {}", e.message));
                if p.pause(wait).await {
                    return false;
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> Record {
        Record {
            partition: "p".into(),
            id: id.into(),
            arrival_ms: 0,
            body: "null".into(),
            token: super::super::Token::None,
        }
    }

    #[test]
    fn partial_batch_responses() {
        let batch = [rec("1"), rec("2"), rec("3")];
        assert_eq!(failed_from(&batch, b"null"), Ok(None));
        assert_eq!(failed_from(&batch, b""), Ok(None));
        assert_eq!(failed_from(&batch, br#"{"batchItemFailures": []}"#), Ok(None));
        assert_eq!(failed_from(&batch, br#"{"batchItemFailures": null}"#), Ok(None));
        assert_eq!(
            failed_from(&batch, br#"{"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]}"#),
            Ok(Some(1))
        );
        assert!(failed_from(&batch, br#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#).is_err());
        assert!(failed_from(&batch, br#"{"batchItemFailures": [{"itemIdentifier": null}]}"#).is_err());
        assert!(failed_from(&batch, br#"{"batchItemFailures": [{"foo": "1"}]}"#).is_err());
        assert!(failed_from(&batch, br#"{"batchItemFailures": [{"itemIdentifier": "9"}]}"#).is_err());
        // Numbers name records too, and every entry counts.
        assert_eq!(
            failed_from(&batch, br#"{"batchItemFailures": [{"itemIdentifier": 3}, {"itemIdentifier": 2}]}"#),
            Ok(Some(1))
        );
        assert!(
            failed_from(&batch, br#"{"batchItemFailures": [{"itemIdentifier": 3}, {"itemIdentifier": ""}]}"#).is_err()
        );
    }
}
