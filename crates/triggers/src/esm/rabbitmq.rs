//! RabbitMQ queues (AMQP 0-9-1): a consumer with prefetch = 3 × `BatchSize`, acknowledged
//! (`basic.ack`, multiple) after the batch succeeded or went to the on-failure destination.
//! Unacknowledged messages (a crash, a lost connection) go back to the queue and come again,
//! in order, to the next consumer.
//!
//! The event is Amazon MQ for RabbitMQ's:
//!
//! ```json
//! {"eventSource": "aws:rmq", "eventSourceArn": "arn:stratus:rabbitmq:us-east-1:000000000000:orders",
//!  "rmqMessagesByQueue": {"orders::/": [
//!    {"basicProperties": {"contentType": "text/plain", "contentEncoding": null, "headers": {},
//!                         "deliveryMode": 2, "priority": null, "correlationId": null, "replyTo": null,
//!                         "expiration": null, "messageId": null, "timestamp": null, "type": null,
//!                         "userId": null, "appId": null, "clusterId": null, "bodySize": 5},
//!     "redelivered": false, "data": "aGVsbG8="}]}}
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use model::esm::Mapping;
use serde_json::{Map, Value, json};

use super::{Error, Record, Source, Token, b64, gather, now_ms};

pub(crate) struct RabbitMq {
    _conn: Connection,
    channel: Channel,
    consumer: Consumer,
    queue: String,
}

/// The virtual host an AMQP URL names (`/` when none).
pub fn vhost(url: &str) -> String {
    let path = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    match path.split_once('/') {
        Some((_, v)) if !v.is_empty() => {
            percent_encoding::percent_decode_str(v.split('?').next().unwrap_or(v)).decode_utf8_lossy().into_owned()
        }
        _ => "/".into(),
    }
}

impl RabbitMq {
    pub(crate) async fn connect(mapping: Arc<Mapping>, _scope: &model::Scope) -> Result<Self, Error> {
        let url = &mapping.source.endpoints[0];
        let conn =
            tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, ConnectionProperties::default()))
                .await
                .map_err(|_| "timed out connecting to RabbitMQ")??;
        let channel = conn.create_channel().await?;
        // Three batches: one delivered, the one before it being acknowledged meanwhile, and
        // the next one arriving.
        let prefetch = (mapping.batch_size * 3).min(u32::from(u16::MAX)) as u16;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let queue = mapping.source.name.clone();
        let consumer = channel
            .basic_consume(
                ShortString::from(queue.as_str()),
                ShortString::from(format!("stratus-{}", mapping.uuid)),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self { _conn: conn, channel, consumer, queue })
    }

    fn record(&self, d: lapin::message::Delivery) -> Record {
        let p = &d.properties;
        let s =
            |v: &Option<ShortString>| v.as_ref().map(|s| Value::String(s.as_str().to_string())).unwrap_or(Value::Null);
        let headers: Map<String, Value> = p
            .headers()
            .as_ref()
            .map(|h| h.inner().iter().map(|(k, v)| (k.as_str().to_string(), amqp_json(v))).collect())
            .unwrap_or_default();
        // A producer's timestamp (seconds) may be anything: out of range means unknown.
        let sent_ms = p.timestamp().and_then(|t| i64::try_from(t).ok()).and_then(|t| t.checked_mul(1000));
        let arrival_ms = sent_ms.unwrap_or_else(now_ms);
        let tag = d.delivery_tag;
        let id = p.message_id().as_ref().map(|m| m.as_str().to_string()).unwrap_or_else(|| tag.to_string());
        let body = json!({
            "basicProperties": {
                "contentType": s(p.content_type()),
                "contentEncoding": s(p.content_encoding()),
                "headers": headers,
                "deliveryMode": p.delivery_mode(),
                "priority": p.priority(),
                "correlationId": s(p.correlation_id()),
                "replyTo": s(p.reply_to()),
                "expiration": s(p.expiration()),
                "messageId": s(p.message_id()),
                "timestamp": sent_ms.map(super::iso),
                "type": s(p.kind()),
                "userId": s(p.user_id()),
                "appId": s(p.app_id()),
                "clusterId": s(p.cluster_id()),
                "bodySize": d.data.len(),
            },
            "redelivered": d.redelivered,
            "data": b64(&d.data),
        });
        Record { partition: self.queue.clone(), id, arrival_ms, body: body.to_string(), token: Token::Tag(tag) }
    }
}

fn amqp_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => {
            Value::Object(t.inner().iter().map(|(k, v)| (k.as_str().to_string(), amqp_json(v))).collect())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        other => json!(format!("{other:?}")),
    }
}

impl Source for RabbitMq {
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let deliveries = gather(&mut self.consumer, max, window, idle).await?;
            Ok(deliveries.into_iter().map(|d| self.record(d)).collect())
        })
    }

    fn commit(&mut self, done: &[Record]) -> BoxFuture<'static, Result<(), Error>> {
        let last = match done.last().map(|r| &r.token) {
            Some(Token::Tag(last)) => *last,
            _ => return Box::pin(async { Ok(()) }),
        };
        let channel = self.channel.clone();
        Box::pin(async move {
            channel.basic_ack(last, BasicAckOptions { multiple: true }).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vhosts() {
        assert_eq!(super::vhost("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(super::vhost("amqp://127.0.0.1:5672"), "/");
        assert_eq!(super::vhost("amqp://127.0.0.1:5672/prod"), "prod");
    }
}
