//! Kafka topics (librdkafka through `rdkafka`): the poller reads every partition of the topic
//! (assigned, as of its connection) and keeps its offsets in a consumer group
//! (`SelfManagedKafkaEventSourceConfig.ConsumerGroupId`, default `stratus-<mapping UUID>`),
//! with automatic commits off; the offsets after a batch are committed once it succeeded or
//! went to the on-failure destination. Order holds per partition. The poller does not join
//! the group, so other consumers of the same group id would read the same records.
//!
//! The event is Lambda's self-managed Kafka shape:
//!
//! ```json
//! {"eventSource": "SelfManagedKafka", "bootstrapServers": "127.0.0.1:9092",
//!  "records": {"orders-0": [{"topic": "orders", "partition": 0, "offset": 15,
//!    "timestamp": 1545084650987, "timestampType": "CREATE_TIME", "key": "a2V5",
//!    "value": "aGVsbG8=", "headers": [{"h": [118, 49]}]}]}}
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use model::esm::{Mapping, StartingPosition};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

use super::{Error, Record, Source, Token, b64, gather, now_ms};

pub(crate) struct Kafka {
    consumer: StreamConsumer,
}

impl Kafka {
    pub(crate) async fn connect(mapping: Arc<Mapping>) -> Result<Self, Error> {
        let group = mapping.consumer_group.clone().unwrap_or_else(|| format!("stratus-{}", mapping.uuid));
        let reset = match mapping.starting_position {
            Some(StartingPosition::Latest) => "latest",
            _ => "earliest",
        };
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", mapping.source.endpoints.join(","));
        // The topic's partitions; this also reports an unreachable cluster or a missing topic.
        let probe = config.clone();
        let topic = mapping.source.name.clone();
        let partitions = tokio::task::spawn_blocking(move || -> Result<Vec<i32>, Error> {
            let c: rdkafka::consumer::BaseConsumer = probe.create()?;
            let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let t = md.topics().first().ok_or_else(|| format!("topic {topic}: no metadata"))?;
            if let Some(e) = t.error() {
                return Err(format!("topic {topic}: {e:?}").into());
            }
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        })
        .await??;
        if partitions.is_empty() {
            return Err(format!("topic {} has no partitions", mapping.source.name).into());
        }
        let consumer: StreamConsumer = config
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", reset)
            .set("socket.timeout.ms", "10000")
            .create()?;
        // Every partition, from the group's committed offsets (else `auto.offset.reset`). The
        // poller is the group's only reader, so it assigns them itself: no group join, no
        // rebalance wait, and a restarted Stratus resumes at once.
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(&mapping.source.name, p, Offset::Stored)?;
        }
        consumer.assign(&tpl)?;
        Ok(Self { consumer })
    }

    fn record(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        let (ts, ts_type) = match m.timestamp() {
            Timestamp::CreateTime(t) => (t, "CREATE_TIME"),
            Timestamp::LogAppendTime(t) => (t, "LOG_APPEND_TIME"),
            Timestamp::NotAvailable => (now_ms(), "NO_TIMESTAMP_TYPE"),
        };
        let headers: Vec<Value> = m
            .headers()
            .map(|h| h.iter().map(|h| json!({ h.key: h.value.map(<[u8]>::to_vec).unwrap_or_default() })).collect())
            .unwrap_or_default();
        let mut body = json!({
            "topic": m.topic(),
            "partition": m.partition(),
            "offset": m.offset(),
            "timestamp": ts,
            "timestampType": ts_type,
            "value": m.payload().map(b64),
            "headers": headers,
        });
        if let Some(k) = m.key() {
            body["key"] = json!(b64(k));
        }
        let partition = format!("{}-{}", m.topic(), m.partition());
        Record {
            id: format!("{partition}:{}", m.offset()),
            partition,
            arrival_ms: ts,
            body: body.to_string(),
            token: Token::Kafka { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset() },
        }
    }

    /// Commits the next offset to read of each (topic, partition).
    fn commit_offsets(&self, next: BTreeMap<(&str, i32), i64>) -> Result<(), Error> {
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), offset) in next {
            tpl.add_partition_offset(topic, p, Offset::Offset(offset))?;
        }
        self.consumer.commit(&tpl, CommitMode::Async)?;
        Ok(())
    }
}

/// The event a batch becomes: records grouped by `topic-partition`.
pub(super) fn event(mapping: &Mapping, batch: &[Record]) -> String {
    let mut by_partition: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in batch {
        by_partition.entry(r.partition.as_str()).or_default().push(r);
    }
    let records: Vec<String> = by_partition
        .into_iter()
        .map(|(p, rs)| format!("{}:{}", Value::from(p), super::deliver::json_array(rs.into_iter())))
        .collect();
    format!(
        r#"{{"eventSource":"SelfManagedKafka","bootstrapServers":{},"records":{{{}}}}}"#,
        Value::from(mapping.source.endpoints.join(",")),
        records.join(",")
    )
}

impl Source for Kafka {
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let mut stream = self.consumer.stream();
            let messages = gather(&mut stream, max, window, idle).await?;
            Ok(messages.iter().map(Self::record).collect())
        })
    }

    fn commit(&mut self, done: &[Record]) -> BoxFuture<'static, Result<(), Error>> {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for r in done {
            let Token::Kafka { topic, partition, offset } = &r.token else { continue };
            let e = next.entry((topic.as_str(), *partition)).or_default();
            *e = (*e).max(offset + 1);
        }
        // librdkafka sends the commit in the background: nothing is left to wait for.
        let committed = self.commit_offsets(next);
        Box::pin(async move { committed })
    }
}
