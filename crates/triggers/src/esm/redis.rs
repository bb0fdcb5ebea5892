//! Redis Streams, read through a consumer group (`XREADGROUP`) and acknowledged (`XACK`)
//! after success. The group keeps the checkpoint: entries delivered but not acknowledged (a
//! crash mid-batch) are read again first, from the group's pending list, so nothing is lost
//! and order holds. The group is `SelfManagedKafkaEventSourceConfig.ConsumerGroupId`, or
//! `stratus-<mapping UUID>`; `StartingPosition` decides where a new group starts.
//!
//! The record (Kinesis-like, under `redis`):
//!
//! ```json
//! {"eventSource": "stratus:redis", "eventVersion": "1.0", "eventID": "orders:1700000000000-0",
//!  "eventName": "stratus:redis:record", "awsRegion": "us-east-1",
//!  "eventSourceARN": "arn:stratus:redis:us-east-1:000000000000:orders",
//!  "redis": {"stream": "orders", "sequenceNumber": "1700000000000-0",
//!            "fields": {"k": "v"}, "approximateArrivalTimestamp": 1700000000.0}}
//! ```
//! Field values are strings (binary values are base64 under `binaryFields`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use model::esm::{Mapping, StartingPosition};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};

use super::text::Obj;
use super::{Error, IDLE_POLL, Record, Source, Token};

pub(crate) struct Redis {
    conn: MultiplexedConnection,
    key: String,
    group: String,
    consumer: String,
    /// Whether the pending list (read again after a restart) is drained.
    pending_done: bool,
    /// The members every record has: `eventSource` … `eventSourceARN`.
    shared: String,
}

impl Redis {
    pub(crate) async fn connect(mapping: Arc<Mapping>, scope: &model::Scope) -> Result<Self, Error> {
        let url = &mapping.source.endpoints[0];
        let client = redis::Client::open(url.as_str())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(IDLE_POLL + Duration::from_secs(10)));
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let key = mapping.source.name.clone();
        let group = mapping.consumer_group.clone().unwrap_or_else(|| format!("stratus-{}", mapping.uuid));
        let start = match mapping.starting_position {
            Some(StartingPosition::Latest) => "$".to_string(),
            // The group starts after this id: the last possible one of the millisecond before.
            Some(StartingPosition::AtTimestamp) => match (mapping.starting_timestamp.unwrap_or(0.0) * 1000.0) as u64 {
                0 => "0".to_string(),
                ms => format!("{}-{}", ms - 1, u64::MAX),
            },
            _ => "0".to_string(),
        };
        let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(&key, &group, &start).await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e.into());
        }
        let mut shared = Obj::new(256);
        shared.str("eventSource", "stratus:redis").str("eventVersion", "1.0").str("eventName", "stratus:redis:record");
        shared.str("awsRegion", &scope.region).str("eventSourceARN", &mapping.source.arn(scope));
        Ok(Self { conn, key, group, consumer: "stratus".into(), pending_done: false, shared: shared.rendered() })
    }

    async fn read(&mut self, count: usize, block: Option<Duration>) -> Result<Vec<Record>, Error> {
        let id = if self.pending_done { ">" } else { "0" };
        let mut opts = StreamReadOptions::default().group(&self.group, &self.consumer).count(count);
        if let Some(b) = block.filter(|_| self.pending_done) {
            opts = opts.block(b.as_millis().max(1) as usize);
        }
        let reply: Option<StreamReadReply> = self.conn.xread_options(&[&self.key], &[id], &opts).await?;
        let entries: Vec<redis::streams::StreamId> =
            reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        if !self.pending_done && entries.is_empty() {
            self.pending_done = true;
        }
        Ok(entries.into_iter().map(|e| self.record(e)).collect())
    }

    fn record(&self, e: redis::streams::StreamId) -> Record {
        let ms: i64 = e.id.split('-').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        let mut o = Obj::new(384);
        o.members(&self.shared)
            .str2("eventID", &self.key, ':', &e.id)
            .begin("redis")
            .str("stream", &self.key)
            .str("sequenceNumber", &e.id)
            .begin("fields");
        let mut binary = Vec::new();
        for (k, v) in &e.map {
            if let redis::Value::BulkString(bytes) = v {
                match std::str::from_utf8(bytes) {
                    Ok(s) => {
                        o.field(k, s);
                    }
                    Err(_) => binary.push((k, bytes)),
                }
            }
        }
        o.end().seconds("approximateArrivalTimestamp", ms);
        if !binary.is_empty() {
            o.begin("binaryFields");
            for (k, bytes) in binary {
                o.field_b64(k, bytes);
            }
            o.end();
        }
        Record { partition: self.key.clone(), id: e.id, arrival_ms: ms, body: o.finish(), token: Token::None }
    }
}

impl Source for Redis {
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            // Entries pending since before a restart come first, as one batch.
            let pending = !self.pending_done;
            let mut out = self.read(max, Some(idle)).await?;
            if out.is_empty() || window.is_zero() || pending {
                return Ok(out);
            }
            let deadline = tokio::time::Instant::now() + window;
            while out.len() < max {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                // Each wait stays under the connection's response timeout.
                out.extend(self.read(max - out.len(), Some(left.min(IDLE_POLL))).await?);
            }
            Ok(out)
        })
    }

    /// While the pending list is read (after a restart), reading again before acknowledging
    /// would return the same entries.
    fn prefetches(&self) -> bool {
        self.pending_done
    }

    fn commit(&mut self, done: &[Record]) -> BoxFuture<'static, Result<(), Error>> {
        let ids: Vec<String> = done.iter().map(|r| r.id.clone()).collect();
        let (mut conn, key, group) = (self.conn.clone(), self.key.clone(), self.group.clone());
        Box::pin(async move {
            if !ids.is_empty() {
                let _: i64 = conn.xack(&key, &group, &ids).await?;
            }
            Ok(())
        })
    }
}
