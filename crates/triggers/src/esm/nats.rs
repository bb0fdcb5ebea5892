//! NATS JetStream streams, read in stream order through an ordered consumer (so per subject
//! too). Stratus keeps the checkpoint itself (the last stream sequence processed, in the
//! account's database), so a restart resumes exactly after it and nothing on the server
//! needs cleaning up.
//!
//! The record is Kinesis's shape under `nats` (`data` base64, `sequenceNumber` the stream
//! sequence, `partitionKey` the subject):
//!
//! ```json
//! {"eventSource": "stratus:nats", "eventVersion": "1.0", "eventID": "ORDERS:42",
//!  "eventName": "stratus:nats:record", "awsRegion": "us-east-1",
//!  "eventSourceARN": "arn:stratus:nats:us-east-1:000000000000:ORDERS",
//!  "nats": {"stream": "ORDERS", "subject": "orders.eu", "partitionKey": "orders.eu",
//!           "sequenceNumber": "42", "data": "eyJrIjoxfQ==", "headers": {"k": ["v"]},
//!           "approximateArrivalTimestamp": 1545084650.987}}
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures_util::future::BoxFuture;
use model::esm::{Mapping, StartingPosition};
use store::Store;

use super::{Error, Record, Source, Token, b64, gather, now_ms};

const PARTITION: &str = "stream";

pub(crate) struct Nats {
    mapping: Arc<Mapping>,
    store: Store,
    messages: jetstream::consumer::pull::Ordered,
    arn: String,
    region: String,
}

impl Nats {
    pub(crate) async fn connect(mapping: Arc<Mapping>, store: Store, scope: &model::Scope) -> Result<Self, Error> {
        let servers: Vec<async_nats::ServerAddr> =
            mapping.source.endpoints.iter().map(|e| e.parse()).collect::<Result<_, _>>()?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .connect(servers)
            .await?;
        let js = jetstream::new(client);
        let (stream_name, filter) = mapping.source.stream_and_filter();
        let mut stream = js.get_stream(stream_name).await?;
        let uuid = mapping.uuid.clone();
        let checkpoint = store.run(move |db| db.checkpoint(&uuid, PARTITION)).await?;
        let deliver_policy = match checkpoint.and_then(|c| c.parse::<u64>().ok()) {
            Some(done) => DeliverPolicy::ByStartSequence { start_sequence: done + 1 },
            None => match mapping.starting_position {
                Some(StartingPosition::Latest) => {
                    // Fix "latest" now, so records published while the mapping starts are not skipped.
                    let last = stream.info().await?.state.last_sequence;
                    let (uuid, pos) = (mapping.uuid.clone(), last.to_string());
                    store.run(move |db| db.set_checkpoint(&uuid, PARTITION, &pos, now_ms())).await?;
                    DeliverPolicy::ByStartSequence { start_sequence: last + 1 }
                }
                Some(StartingPosition::AtTimestamp) => {
                    let secs = mapping.starting_timestamp.unwrap_or(0.0);
                    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128)?;
                    DeliverPolicy::ByStartTime { start_time }
                }
                _ => DeliverPolicy::All,
            },
        };
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy,
                filter_subject: filter.unwrap_or_default().to_string(),
                ..Default::default()
            })
            .await?;
        let messages = consumer.messages().await?;
        Ok(Self { arn: mapping.source.arn(scope), region: scope.region.clone(), mapping, store, messages })
    }

    fn record(&self, msg: jetstream::Message) -> Result<Record, Error> {
        let info = msg.info()?;
        let seq = info.stream_sequence;
        let arrival_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let headers: BTreeMap<&str, Vec<&str>> = msg
            .headers
            .as_ref()
            .map(|h| h.iter().map(|(k, vs)| (k.as_ref(), vs.iter().map(|v| v.as_str()).collect())).collect())
            .unwrap_or_default();
        let seq_text = seq.to_string();
        let data = b64(&msg.payload);
        // Written straight to JSON text: this is the hot path of a busy stream.
        let body = serde_json::to_string(&NatsRecord {
            event_source: "stratus:nats",
            event_version: "1.0",
            event_id: &format!("{}:{seq}", info.stream),
            event_name: "stratus:nats:record",
            aws_region: &self.region,
            event_source_arn: &self.arn,
            nats: NatsData {
                stream: info.stream,
                subject: &msg.subject,
                partition_key: &msg.subject,
                sequence_number: &seq_text,
                data: &data,
                headers,
                approximate_arrival_timestamp: arrival_ms as f64 / 1000.0,
            },
        })?;
        Ok(Record { partition: msg.subject.to_string(), id: seq_text, arrival_ms, body, token: Token::Seq(seq) })
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NatsRecord<'a> {
    event_source: &'a str,
    event_version: &'a str,
    #[serde(rename = "eventID")]
    event_id: &'a str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "eventSourceARN")]
    event_source_arn: &'a str,
    nats: NatsData<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NatsData<'a> {
    stream: &'a str,
    subject: &'a str,
    partition_key: &'a str,
    sequence_number: &'a str,
    data: &'a str,
    headers: BTreeMap<&'a str, Vec<&'a str>>,
    approximate_arrival_timestamp: f64,
}

impl Source for Nats {
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let messages = gather(&mut self.messages, max, window, idle).await?;
            messages.into_iter().map(|m| self.record(m)).collect()
        })
    }

    fn commit<'a>(&'a mut self, done: &'a [Record]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let Some(Token::Seq(last)) = done.last().map(|r| &r.token) else { return Ok(()) };
            let (uuid, pos) = (self.mapping.uuid.clone(), last.to_string());
            self.store.run(move |db| db.set_checkpoint(&uuid, PARTITION, &pos, now_ms())).await?;
            Ok(())
        })
    }
}
