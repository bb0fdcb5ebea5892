//! Event source mappings: what a poller reads (a stream, queue, topic or table on a broker or
//! database the user runs), which function it invokes with batches of records, and how it
//! retries. The settings and their limits are Lambda's (`CreateEventSourceMapping`).
//!
//! Sources are named the way Lambda names self-managed ones: `SelfManagedEventSource.Endpoints`
//! keyed by the kind of server, and `Topics` (or `Queues` for RabbitMQ) naming what to read:
//!
//! | Endpoints key | Topics / Queues | reads |
//! |---|---|---|
//! | `NATS_SERVERS` (`nats://host:4222`) | `STREAM` or `STREAM:subject.filter` | a JetStream stream |
//! | `REDIS_SERVERS` (`redis://host:6379`) | the stream's key | a Redis stream, through a consumer group |
//! | `POSTGRES_SERVERS` (`postgres://user@host/db`) | `schema.table` | a table's changes (logical replication) |
//! | `RABBITMQ_BROKERS` (`amqp://user:pass@host:5672/vhost`) | `Queues`: the queue | a RabbitMQ queue |
//! | `MQTT_BROKERS` (`mqtt://host:1883`) | a topic filter (`sensors/#`) | MQTT messages (QoS 1, persistent session) |
//! | `KAFKA_BOOTSTRAP_SERVERS` (`host:9092`) | the topic | a Kafka topic, through a consumer group |

use serde::{Deserialize, Serialize};

use crate::filter::Pattern;

/// The kind of server a mapping reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Nats,
    Redis,
    Postgres,
    RabbitMq,
    Mqtt,
    Kafka,
}

impl SourceKind {
    /// The `SelfManagedEventSource.Endpoints` key naming this kind.
    pub fn endpoints_key(self) -> &'static str {
        match self {
            Self::Nats => "NATS_SERVERS",
            Self::Redis => "REDIS_SERVERS",
            Self::Postgres => "POSTGRES_SERVERS",
            Self::RabbitMq => "RABBITMQ_BROKERS",
            Self::Mqtt => "MQTT_BROKERS",
            Self::Kafka => "KAFKA_BOOTSTRAP_SERVERS",
        }
    }

    pub fn from_endpoints_key(key: &str) -> Option<Self> {
        [Self::Nats, Self::Redis, Self::Postgres, Self::RabbitMq, Self::Mqtt, Self::Kafka]
            .into_iter()
            .find(|k| k.endpoints_key() == key)
    }

    /// Ordered streams that keep their records (`StartingPosition` applies; failures block the
    /// partition, as Kinesis's). The others are queues: a record taken is gone from the broker.
    pub fn is_stream(self) -> bool {
        matches!(self, Self::Nats | Self::Redis | Self::Postgres | Self::Kafka)
    }

    /// The `eventSource` of its records.
    pub fn event_source(self) -> &'static str {
        match self {
            Self::Nats => "stratus:nats",
            Self::Redis => "stratus:redis",
            Self::Postgres => "stratus:postgres",
            Self::RabbitMq => "aws:rmq",
            Self::Mqtt => "stratus:mqtt",
            Self::Kafka => "SelfManagedKafka",
        }
    }
}

/// Where a stream mapping starts reading when it has no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartingPosition {
    #[serde(rename = "TRIM_HORIZON")]
    TrimHorizon,
    #[serde(rename = "LATEST")]
    Latest,
    #[serde(rename = "AT_TIMESTAMP")]
    AtTimestamp,
}

impl StartingPosition {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TRIM_HORIZON" => Self::TrimHorizon,
            "LATEST" => Self::Latest,
            "AT_TIMESTAMP" => Self::AtTimestamp,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrimHorizon => "TRIM_HORIZON",
            Self::Latest => "LATEST",
            Self::AtTimestamp => "AT_TIMESTAMP",
        }
    }
}

/// What a mapping reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub kind: SourceKind,
    /// Server URLs (the first reachable one is used).
    pub endpoints: Vec<String>,
    /// The stream, stream key, table, queue or topic filter.
    pub name: String,
}

impl Source {
    /// The part of `name` naming the stream, and a subject filter (`STREAM:subject`, NATS).
    pub fn stream_and_filter(&self) -> (&str, Option<&str>) {
        match self.name.split_once(':') {
            Some((s, f)) => (s, Some(f)),
            None => (&self.name, None),
        }
    }

    /// `arn:stratus:<kind>:<region>:<account>:<name>`, the `eventSourceARN` of its records.
    pub fn arn(&self, scope: &crate::Scope) -> String {
        let kind = match self.kind {
            SourceKind::RabbitMq => "rabbitmq",
            SourceKind::Kafka => "kafka",
            other => other.event_source().trim_start_matches("stratus:"),
        };
        format!("arn:stratus:{kind}:{}:{}:{}", scope.region, scope.account, self.name)
    }
}

/// One event source mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub uuid: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub source: Source,
    pub enabled: bool,
    pub batch_size: u32,
    pub batching_window_s: u32,
    pub starting_position: Option<StartingPosition>,
    /// Epoch seconds, for `AT_TIMESTAMP`.
    pub starting_timestamp: Option<f64>,
    /// -1: until the record expires (or forever).
    pub max_retries: i64,
    /// -1: no limit.
    pub max_record_age_s: i64,
    pub bisect: bool,
    pub parallelization: u32,
    /// `FunctionResponseTypes: ["ReportBatchItemFailures"]`.
    pub report_failures: bool,
    /// `DestinationConfig.OnFailure.Destination` (a function ARN).
    pub on_failure: Option<String>,
    /// `FilterCriteria.Filters[].Pattern`, as given.
    pub filters: Vec<String>,
    /// Redis's consumer group (`SelfManagedKafkaEventSourceConfig.ConsumerGroupId` names it).
    pub consumer_group: Option<String>,
    /// Epoch seconds.
    pub last_modified: f64,
}

/// Limits (Lambda's).
pub const MAX_BATCH: u32 = 10_000;
pub const MAX_WINDOW_S: u32 = 300;
pub const MAX_RETRIES: i64 = 10_000;
pub const MAX_RECORD_AGE_S: i64 = 604_800;
pub const MAX_FILTERS: usize = 5;

impl Mapping {
    /// A mapping of `function` to `source` with Lambda's defaults for everything else.
    pub fn new(uuid: String, function: String, source: Source, starting_position: Option<StartingPosition>) -> Self {
        Self {
            uuid,
            function,
            qualifier: None,
            source,
            enabled: true,
            batch_size: 100,
            batching_window_s: 0,
            starting_position,
            starting_timestamp: None,
            max_retries: -1,
            max_record_age_s: -1,
            bisect: false,
            parallelization: 1,
            report_failures: false,
            on_failure: None,
            filters: vec![],
            consumer_group: None,
            last_modified: 0.0,
        }
    }

    /// Checks every setting; the message says what is wrong (an `InvalidParameterValueException`).
    pub fn validate(&self) -> Result<Vec<Pattern>, String> {
        if self.source.endpoints.is_empty() || self.source.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(format!("{} needs at least one server address", self.source.kind.endpoints_key()));
        }
        if self.source.name.is_empty() {
            return Err(if self.source.kind == SourceKind::RabbitMq {
                "Queues must name one queue".into()
            } else {
                "Topics must name one stream, table or topic".into()
            });
        }
        if self.source.kind == SourceKind::Mqtt {
            check_topic_filter(&self.source.name)?;
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return Err(format!("BatchSize must be between 1 and {MAX_BATCH}"));
        }
        if self.batching_window_s > MAX_WINDOW_S {
            return Err(format!("MaximumBatchingWindowInSeconds must be between 0 and {MAX_WINDOW_S}"));
        }
        if !(-1..=MAX_RETRIES).contains(&self.max_retries) {
            return Err(format!("MaximumRetryAttempts must be between -1 and {MAX_RETRIES}"));
        }
        if self.max_record_age_s != -1 && !(60..=MAX_RECORD_AGE_S).contains(&self.max_record_age_s) {
            return Err(format!("MaximumRecordAgeInSeconds must be -1 or between 60 and {MAX_RECORD_AGE_S}"));
        }
        if !(1..=10).contains(&self.parallelization) {
            return Err("ParallelizationFactor must be between 1 and 10".into());
        }
        let kind = self.source.kind;
        match (kind.is_stream(), self.starting_position) {
            (true, None) => {
                return Err("StartingPosition is required for a stream (TRIM_HORIZON, LATEST or AT_TIMESTAMP)".into());
            }
            (false, Some(_)) => {
                return Err(format!(
                    "StartingPosition is not valid for {}: a queue is read from its head",
                    kind.endpoints_key()
                ));
            }
            (_, Some(StartingPosition::AtTimestamp)) if kind == SourceKind::Kafka => {
                return Err(
                    "Unsupported starting position for a Kafka topic: AT_TIMESTAMP (TRIM_HORIZON or LATEST)".into()
                );
            }
            (_, Some(StartingPosition::AtTimestamp)) if kind == SourceKind::Postgres => {
                return Err("Unsupported starting position for a PostgreSQL table: AT_TIMESTAMP (changes are read from the replication slot's creation on)".into());
            }
            (_, Some(StartingPosition::AtTimestamp)) if self.starting_timestamp.is_none() => {
                return Err("StartingPositionTimestamp is required with AT_TIMESTAMP".into());
            }
            _ => {}
        }
        if self.filters.len() > MAX_FILTERS {
            return Err(format!("FilterCriteria may hold at most {MAX_FILTERS} filters"));
        }
        if let Some(d) = &self.on_failure {
            let f = crate::FunctionRef::parse(d, crate::NameUse::Reference).map_err(|_| {
                format!("The destination {d} is not supported: Stratus delivers on-failure records to a function (give its ARN)")
            })?;
            if f.name == self.function {
                return Err("The on-failure destination cannot be the mapping's own function".into());
            }
        }
        self.filters.iter().map(|f| Pattern::parse(f)).collect()
    }

    /// Lambda's `State` at rest.
    pub fn state(&self) -> &'static str {
        if self.enabled { "Enabled" } else { "Disabled" }
    }
}

/// MQTT's topic filter rules: `+` is a whole level, `#` the whole last level.
fn check_topic_filter(f: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("Invalid MQTT topic filter {f:?}: {why}"));
    if f.is_empty() || f.len() > 65_535 || f.contains('\0') {
        return bad("empty, too long or with a NUL character");
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return bad("# must be the whole last level");
        }
        if level.contains('+') && *level != "+" {
            return bad("+ must be a whole level");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(kind: SourceKind) -> Mapping {
        let source = Source { kind, endpoints: vec!["x://h".into()], name: "s".into() };
        Mapping::new("u".into(), "f".into(), source, kind.is_stream().then_some(StartingPosition::TrimHorizon))
    }

    #[test]
    fn limits_are_lambdas() {
        assert!(mapping(SourceKind::Nats).validate().is_ok());
        assert!(mapping(SourceKind::Mqtt).validate().is_ok());
        let bad: [fn(&mut Mapping); 11] = [
            |m| m.batch_size = 0,
            |m| m.batch_size = 10_001,
            |m| m.batching_window_s = 301,
            |m| m.max_retries = -2,
            |m| m.max_record_age_s = 59,
            |m| m.parallelization = 11,
            |m| m.starting_position = None,
            |m| m.filters = vec!["{".into()],
            |m| m.on_failure = Some("arn:aws:sqs:us-east-1:000000000000:q".into()),
            |m| m.on_failure = Some("f".into()),
            |m| m.source.endpoints.clear(),
        ];
        for (i, change) in bad.iter().enumerate() {
            let mut m = mapping(SourceKind::Nats);
            change(&mut m);
            assert!(m.validate().is_err(), "case {i} should be refused");
        }
        let mut pg = mapping(SourceKind::Postgres);
        pg.starting_position = Some(StartingPosition::AtTimestamp);
        pg.starting_timestamp = Some(1.0);
        assert!(pg.validate().unwrap_err().contains("Unsupported starting position"));
        for (filter, ok) in
            [("a/+/c", true), ("a/#", true), ("#", true), ("a/#/c", false), ("a+/b", false), ("", false)]
        {
            let mut m = mapping(SourceKind::Mqtt);
            m.source.name = filter.into();
            assert_eq!(m.validate().is_ok(), ok, "{filter}");
        }
        let mut q = mapping(SourceKind::RabbitMq);
        q.starting_position = Some(StartingPosition::Latest);
        assert!(q.validate().is_err());
    }
}
