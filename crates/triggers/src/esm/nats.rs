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

use super::text::Obj;
use super::{Error, Record, Source, Token, gather, now_ms};

const PARTITION: &str = "stream";
/// Why a checkpoint was refused.
const LEASE_LOST: &str = "the checkpoint was refused: the mapping was deleted or another node holds it";

pub(crate) struct Nats {
    mapping: Arc<Mapping>,
    store: Store,
    /// The mapping's lease token in a cluster (checkpoints are refused once it is stale).
    fence: Option<i64>,
    messages: jetstream::consumer::pull::Ordered,
    /// The members every record has: `eventSource` … `eventSourceARN`.
    shared: String,
}

impl Nats {
    pub(crate) async fn connect(
        mapping: Arc<Mapping>,
        store: Store,
        scope: &model::Scope,
        fence: Option<i64>,
    ) -> Result<Self, Error> {
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
                    if !store.run(move |db| db.set_checkpoint(&uuid, PARTITION, &pos, now_ms(), fence)).await? {
                        return Err(LEASE_LOST.into());
                    }
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
        let mut shared = Obj::new(256);
        shared.str("eventSource", "stratus:nats").str("eventVersion", "1.0").str("eventName", "stratus:nats:record");
        shared.str("awsRegion", &scope.region).str("eventSourceARN", &mapping.source.arn(scope));
        Ok(Self { shared: shared.rendered(), mapping, store, messages, fence })
    }

    fn record(&self, msg: jetstream::Message) -> Result<Record, Error> {
        let info = msg.info()?;
        let seq = info.stream_sequence;
        let arrival_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let headers = match msg.headers.as_ref() {
            Some(h) if !h.is_empty() => {
                let map: BTreeMap<&str, Vec<&str>> =
                    h.iter().map(|(k, vs)| (k.as_ref(), vs.iter().map(|v| v.as_str()).collect())).collect();
                serde_json::to_string(&map)?
            }
            _ => "{}".to_string(),
        };
        let seq_text = seq.to_string();
        let mut o = Obj::new(320 + msg.payload.len() * 4 / 3);
        o.members(&self.shared)
            .str2("eventID", info.stream, ':', &seq_text)
            .begin("nats")
            .str("stream", info.stream)
            .str("subject", &msg.subject)
            .str("partitionKey", &msg.subject);
        o.str("sequenceNumber", &seq_text).b64("data", &msg.payload).raw("headers", &headers);
        o.seconds("approximateArrivalTimestamp", arrival_ms);
        let body = o.finish();
        Ok(Record { partition: msg.subject.to_string(), id: seq_text, arrival_ms, body, token: Token::Seq(seq) })
    }
}

impl Source for Nats {
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let messages = gather(&mut self.messages, max, window, idle).await?;
            messages.into_iter().map(|m| self.record(m)).collect()
        })
    }

    fn commit(&mut self, done: &[Record]) -> BoxFuture<'static, Result<(), Error>> {
        let last = match done.last().map(|r| &r.token) {
            Some(Token::Seq(last)) => *last,
            _ => return Box::pin(async { Ok(()) }),
        };
        let (store, uuid, pos, fence) = (self.store.clone(), self.mapping.uuid.clone(), last.to_string(), self.fence);
        Box::pin(async move {
            if !store.run(move |db| db.set_checkpoint(&uuid, PARTITION, &pos, now_ms(), fence)).await? {
                // Deleted, or (in a cluster) another node holds the mapping now: this batch
                // is not recorded here, and the new holder delivers it again (at least once).
                return Err(LEASE_LOST.into());
            }
            Ok(())
        })
    }
}
