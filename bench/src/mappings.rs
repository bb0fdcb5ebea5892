//! `mappings`: records per second through event source mappings, per source, against a plain
//! client consuming the same broker in the same run.
//!
//! For each source given (a broker URL per flag or environment variable; `bench/brokers.py`
//! starts private ones), in each round, two separate streams, queues, topics or tables
//! (PostgreSQL: two databases) are filled with the same number of small JSON records before
//! anything is timed: one copy for the plain client, one for Stratus. Then, one after the
//! other (the plain client first in odd rounds, Stratus in even ones):
//!
//! - Plain: this process consumes its copy with the crate the poller uses, in batches of
//!   [`BATCH`], doing the poller's durability step once per batch (below). Timed from
//!   connecting to the last batch's step.
//! - Stratus: a mapping with `BatchSize` [`BATCH`] (created disabled, so the backlog waits)
//!   is enabled with `UpdateEventSourceMapping`; it invokes a warm no-op Rust function
//!   (`examples/rust-echo` with `RUST_ECHO_NOOP`: the `lambda_runtime` crate reads the event
//!   as `serde::de::IgnoredAny` and the function returns null). Timed from that request until the
//!   function's `esm_records_total` on `/metrics` (counted as each batch's invocation returns,
//!   before the poller's commit) has grown by the number of records, read every
//!   [`METRICS_POLL`]; its `esm_batches_total` gives the batches.
//!
//! The step per batch, per source, as the pollers do it (`crates/triggers/src/esm`):
//!
//! | source | plain client |
//! |---|---|
//! | NATS JetStream | ordered consumer; the batch's last sequence upserted in a SQLite checkpoint table (WAL, `synchronous=NORMAL`, on a blocking thread), as Stratus keeps its checkpoint |
//! | Redis | `XREADGROUP COUNT 100` (new entries, `BLOCK` 5 s) + `XACK` of the batch's ids |
//! | RabbitMQ | `basic.qos` prefetch 100, `basic.ack` multiple of the batch's last tag |
//! | MQTT | QoS 1, persistent session (`clean_session = false`), manual `PUBACK`s of the batch's messages after it |
//! | PostgreSQL | `pg_logical_slot_peek_changes` (wal2json, the poller's options) + `pg_replication_slot_advance` to the end of the batch's transaction |
//! | Kafka (tansu) | a consumer-group member; the batch's next offset committed asynchronously, as the poller commits it |
//!
//! The plain clients of NATS, Redis, RabbitMQ and PostgreSQL take full batches (the backlog is
//! there; PostgreSQL's rows are inserted in transactions of [`BATCH`] rows, so one peek is one
//! batch). The MQTT client batches as the poller does without a batching window (a first
//! message, then what has arrived), since the broker decides how many it sends ahead of the
//! acknowledgements; unlike the poller, its request channel has room for every
//! acknowledgement (see `mqtt::consume`). A side that makes no progress for [`STALL`] is
//! reported as failed, with how far it got.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::json;

use super::{EVENT, Stratus, cpu_seconds, request, zip_of};

/// Records per batch: the mapping's `BatchSize` and the plain client's batch.
const BATCH: usize = 100;
/// How often `/metrics` is read while Stratus consumes.
const METRICS_POLL: Duration = Duration::from_millis(25);
/// Longest time without progress before a side is given up.
const STALL: Duration = Duration::from_secs(30);

/// The brokers to measure (`None`: skipped).
pub struct Brokers {
    pub nats: Option<String>,
    pub redis: Option<String>,
    pub postgres: Option<String>,
    pub rabbitmq: Option<String>,
    pub mqtt: Option<String>,
    pub kafka: Option<String>,
}

impl Brokers {
    pub fn any(&self) -> bool {
        self.list().next().is_some()
    }

    fn list(&self) -> impl Iterator<Item = (Kind, &str)> {
        [
            (Kind::Nats, &self.nats),
            (Kind::Redis, &self.redis),
            (Kind::RabbitMq, &self.rabbitmq),
            (Kind::Mqtt, &self.mqtt),
            (Kind::Kafka, &self.kafka),
            (Kind::Postgres, &self.postgres),
        ]
        .into_iter()
        .filter_map(|(k, u)| u.as_deref().map(|u| (k, u)))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Nats,
    Redis,
    Postgres,
    RabbitMq,
    Mqtt,
    Kafka,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Nats => "NATS JetStream",
            Kind::Redis => "Redis Streams",
            Kind::Postgres => "PostgreSQL (wal2json)",
            Kind::RabbitMq => "RabbitMQ",
            Kind::Mqtt => "MQTT (Mosquitto)",
            Kind::Kafka => "Kafka (tansu)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
            Kind::RabbitMq => "rabbitmq",
            Kind::Mqtt => "mqtt",
            Kind::Kafka => "kafka",
        }
    }
}

/// What one side measured.
struct Timing {
    /// From the start to the first batch done.
    first: Duration,
    /// From the start to the last record done.
    total: Duration,
    /// Batches it took.
    batches: f64,
    /// CPU seconds of the consumer (this process, or the Stratus server) over the run.
    cpu: f64,
    /// CPU seconds of the function processes (Stratus only).
    function_cpu: f64,
}

/// The JSON every record carries (about 60 bytes).
fn payload(i: usize) -> Vec<u8> {
    format!(r#"{{"n":{i},"kind":"bench","note":"a small record"}}"#).into_bytes()
}

/// What a side's records live in: a stream, key, table, queue or topic.
struct Names {
    /// NATS stream, Redis key, RabbitMQ queue, PostgreSQL table.
    name: String,
    /// MQTT topic the records are published to (the subscription is `<base>/#`).
    base: String,
}

impl Names {
    fn new(side: &str, tag: &str) -> Self {
        Self { name: format!("bench_{side}_{tag}"), base: format!("bench/{side}-{tag}") }
    }
}

pub async fn mappings(
    bin_dir: &Path,
    brokers: &Brokers,
    records: usize,
    pg_records: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    if !brokers.any() {
        bail!(
            "no broker given: pass --nats/--redis/--postgres/--rabbitmq/--mqtt URLs, or run it under bench/brokers.py"
        );
    }
    let stratus = Stratus::start(bin_dir)?;
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    let zip = zip_of(&[("bootstrap", &echo, 0o755)])?;
    let mut rows = Vec::new();
    for (kind, url) in brokers.list() {
        let n = if kind == Kind::Postgres { pg_records } else { records };
        let n = n.div_ceil(BATCH) * BATCH;
        let function = format!("esm-{}", kind.short());
        stratus.create(&function, "provided.al2023", "bootstrap", &zip).await?;
        // A no-op: the function reads each event without keeping it and returns null.
        stratus.set_env(&function, serde_json::json!({ "RUST_ECHO_NOOP": "1" })).await?;
        // Warm: the first batch should not pay for a cold start (the plain side has none).
        let (status, _) =
            request(&stratus.client, "POST", &stratus.invoke_url(&function), Bytes::from_static(EVENT.as_bytes()))
                .await?;
        if status != 200 {
            bail!("warm-up invoke of {function}: {status}");
        }
        let mut row = Row { label: kind.label(), n, rounds: Vec::new() };
        for round in 0..rounds.max(1) {
            eprintln!("mappings: {}, round {} ({n} records per side)...", kind.label(), round + 1);
            let tag = format!(
                "{}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 1_000_000_000
            );
            // Alternating, so neither side always runs on a warmer (or more tired) broker.
            let (plain, ours) = match source(&stratus, kind, url, &function, &tag, n, round % 2 == 1).await {
                Ok(sides) => sides,
                Err(e) => (Err(e), Err(anyhow::anyhow!("not run"))),
            };
            let (plain, ours) = (plain.map_err(|e| format!("{e:#}")), ours.map_err(|e| format!("{e:#}")));
            for (side, r) in [("plain client", &plain), ("Stratus", &ours)] {
                if let Err(e) = r {
                    eprintln!("mappings: {}: {side}: {e}", kind.label());
                }
            }
            if (plain.is_err() || ours.is_err())
                && let Some(status) = stratus.exited()
            {
                eprintln!("mappings: the Stratus server has exited: {status}");
            }
            let failed = plain.is_err() || ours.is_err();
            row.rounds.push((plain, ours));
            if failed {
                break;
            }
        }
        rows.push(row);
    }
    stratus.stop();
    print_table(&rows);
    Ok(())
}

/// One line of the table: a source's rounds.
struct Row {
    label: &'static str,
    /// Records per side and round.
    n: usize,
    /// (plain client, Stratus) of each round.
    rounds: Vec<(Result<Timing, String>, Result<Timing, String>)>,
}

/// The rounds of one side added up (`Err`: the first failure).
fn pooled<'a>(rounds: impl Iterator<Item = &'a Result<Timing, String>>) -> Result<Timing, String> {
    let mut sum = Timing { first: Duration::ZERO, total: Duration::ZERO, batches: 0.0, cpu: 0.0, function_cpu: 0.0 };
    for r in rounds {
        let t = r.as_ref().map_err(Clone::clone)?;
        sum.first += t.first;
        sum.total += t.total;
        sum.batches += t.batches;
        sum.cpu += t.cpu;
        sum.function_cpu += t.function_cpu;
    }
    Ok(sum)
}

fn print_table(rows: &[Row]) {
    println!(
        "## event source mappings: records/s into a no-op Rust function (BatchSize {BATCH}) vs a plain client of the same broker"
    );
    println!();
    println!(
        "| source | records per round | plain client | Stratus | Stratus / plain | by round | records per batch (plain / Stratus) | first batch done (plain / Stratus) | CPU per 1,000 records: plain client / Stratus server + function |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (n, k) = (r.n, r.rounds.len());
        let all = (n * k) as f64;
        let plain = pooled(r.rounds.iter().map(|x| &x.0));
        let ours = pooled(r.rounds.iter().map(|x| &x.1));
        let per_k = |cpu: f64| format!("{:.1} ms", cpu / all * 1e6);
        let rate = |t: &Result<Timing, String>| match t {
            Ok(t) => format!("{:.0}/s", all / t.total.as_secs_f64()),
            Err(e) => format!("failed: {}", e.replace('|', "/")),
        };
        let field = |t: &Result<Timing, String>, f: &dyn Fn(&Timing) -> String| t.as_ref().map_or("–".into(), f);
        let ratio = match (&plain, &ours) {
            (Ok(p), Ok(s)) => format!("{:.2}", p.total.as_secs_f64() / s.total.as_secs_f64()),
            _ => "–".into(),
        };
        let by_round: Vec<String> = r
            .rounds
            .iter()
            .filter_map(|(p, s)| {
                Some(format!("{:.2}", p.as_ref().ok()?.total.as_secs_f64() / s.as_ref().ok()?.total.as_secs_f64()))
            })
            .collect();
        let per_batch = |t: &Timing| format!("{:.0}", all / t.batches.max(1.0));
        let first = |t: &Timing| format!("{:.0} ms", super::ms(t.first) / k as f64);
        let plain_cpu = |t: &Timing| per_k(t.cpu);
        let our_cpu = |t: &Timing| format!("{} + {}", per_k(t.cpu), per_k(t.function_cpu));
        println!(
            "| {} | {n} | {} | {} | {ratio} | {} | {} / {} | {} / {} | {} / {} |",
            r.label,
            rate(&plain),
            rate(&ours),
            by_round.join(", "),
            field(&plain, &per_batch),
            field(&ours, &per_batch),
            field(&plain, &first),
            field(&ours, &first),
            field(&plain, &plain_cpu),
            field(&ours, &our_cpu),
        );
    }
    println!();
}

/// One round of a source: both copies filled, then the plain client and Stratus timed in turn
/// (Stratus first if `stratus_first`).
///
/// Setting up fails the whole round; either side failing (a stall) fails that side only.
async fn source(
    stratus: &Stratus,
    kind: Kind,
    url: &str,
    function: &str,
    tag: &str,
    n: usize,
    stratus_first: bool,
) -> anyhow::Result<(anyhow::Result<Timing>, anyhow::Result<Timing>)> {
    let plain = Names::new("plain", tag);
    let ours = Names::new("stratus", tag);
    // PostgreSQL: a database per side, so neither slot decodes the other side's rows.
    let (plain_url, our_url) = match kind {
        Kind::Postgres => (postgres::database(url, &plain.name).await?, postgres::database(url, &ours.name).await?),
        _ => (url.to_string(), url.to_string()),
    };
    let uuid = create_mapping(stratus, kind, &our_url, function, &ours).await?;
    let mqtt_ids = [format!("bench-plain-{tag}"), format!("stratus-{uuid}")];
    let pg_slots = [format!("{}_slot", plain.name), format!("stratus_{}", uuid.replace('-', "").to_lowercase())];
    let result: anyhow::Result<_> = async {
        let (plain_url, our_url) = (plain_url.as_str(), our_url.as_str());
        let plain_run: BoxFuture<'_, anyhow::Result<(Duration, Duration, usize)>> = match kind {
            Kind::Nats => {
                nats::produce(plain_url, &plain.name, n).await?;
                nats::produce(our_url, &ours.name, n).await?;
                Box::pin(nats::consume(plain_url, &plain.name, n))
            }
            Kind::Redis => {
                redis_source::produce(plain_url, &plain.name, n).await?;
                redis_source::produce(our_url, &ours.name, n).await?;
                Box::pin(redis_source::consume(plain_url, &plain.name, n))
            }
            Kind::RabbitMq => {
                rabbitmq::produce(plain_url, &plain.name, n).await?;
                rabbitmq::produce(our_url, &ours.name, n).await?;
                Box::pin(rabbitmq::consume(plain_url, &plain.name, n))
            }
            Kind::Mqtt => {
                // The persistent sessions exist before anything is published, so the broker
                // keeps the backlog for them (the mapping's client id is `stratus-<UUID>`).
                mqtt::session(plain_url, &mqtt_ids[0], &plain.base).await?;
                mqtt::session(our_url, &mqtt_ids[1], &ours.base).await?;
                mqtt::produce(plain_url, &plain.base, n).await?;
                mqtt::produce(our_url, &ours.base, n).await?;
                Box::pin(mqtt::consume(plain_url, &mqtt_ids[0], n))
            }
            Kind::Kafka => {
                kafka::produce(plain_url, &plain.name, n).await?;
                kafka::produce(our_url, &ours.name, n).await?;
                Box::pin(kafka::consume(plain_url, &plain.name, n))
            }
            Kind::Postgres => {
                // The slots exist before the rows are written (the mapping's is `stratus_<UUID>`).
                postgres::prepare(plain_url, &plain.name, &pg_slots[0]).await?;
                postgres::prepare(our_url, &ours.name, &pg_slots[1]).await?;
                postgres::produce(plain_url, &plain.name, n).await?;
                postgres::produce(our_url, &ours.name, n).await?;
                Box::pin(postgres::consume(plain_url, &pg_slots[0], &plain.name, n))
            }
        };
        Ok(if stratus_first {
            let s = stratus_side(stratus, &uuid, function, n).await;
            (measured(plain_run).await, s)
        } else {
            let p = measured(plain_run).await;
            (p, stratus_side(stratus, &uuid, function, n).await)
        })
    }
    .await;
    let _ = request(
        &stratus.client,
        "DELETE",
        &stratus.proc.url(&format!("/2015-03-31/event-source-mappings/{uuid}")),
        Bytes::new(),
    )
    .await;
    if kind == Kind::Kafka {
        // The poller stops after its batch in hand, a moment after DeleteEventSourceMapping
        // answers. A Kafka consumer still fetching when tansu deletes its topic crashes the
        // server: librdkafka 2.12.1 reads tansu's fetch response (a leader update naming the
        // topic by a zero id) and looks the topic up by a NULL name (BENCHMARKS.md).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Best effort: what either side left on the broker.
    match kind {
        Kind::Nats => nats::delete(url, &[&plain.name, &ours.name]).await,
        Kind::Redis => redis_source::delete(url, &[&plain.name, &ours.name]).await,
        Kind::RabbitMq => rabbitmq::delete(url, &[&plain.name, &ours.name]).await,
        Kind::Mqtt => {
            for id in &mqtt_ids {
                mqtt::forget(url, id).await;
            }
        }
        Kind::Postgres => postgres::delete(url, &[(&plain.name, &pg_slots[0]), (&ours.name, &pg_slots[1])]).await,
        Kind::Kafka => kafka::delete(url, &[&plain.name, &ours.name]).await,
    }
    result
}

/// A plain run, with this process's CPU over it.
async fn measured(run: impl Future<Output = anyhow::Result<(Duration, Duration, usize)>>) -> anyhow::Result<Timing> {
    let me = std::process::id();
    let c0 = cpu_seconds(me).0;
    let (first, total, batches) = run.await?;
    let cpu = cpu_seconds(me).0 - c0;
    Ok(Timing { first, total, batches: batches as f64, cpu, function_cpu: 0.0 })
}

async fn create_mapping(
    stratus: &Stratus,
    kind: Kind,
    url: &str,
    function: &str,
    names: &Names,
) -> anyhow::Result<String> {
    let mut body = json!({
        "FunctionName": function,
        "Enabled": false,
        "BatchSize": BATCH,
    });
    let (key, source) = match kind {
        Kind::Nats => ("NATS_SERVERS", json!({"Topics": [names.name]})),
        Kind::Redis => ("REDIS_SERVERS", json!({"Topics": [names.name]})),
        Kind::Postgres => ("POSTGRES_SERVERS", json!({"Topics": [format!("public.{}", names.name)]})),
        Kind::RabbitMq => ("RABBITMQ_BROKERS", json!({"Queues": [names.name]})),
        Kind::Mqtt => ("MQTT_BROKERS", json!({"Topics": [format!("{}/#", names.base)]})),
        Kind::Kafka => ("KAFKA_BOOTSTRAP_SERVERS", json!({"Topics": [names.name]})),
    };
    body["SelfManagedEventSource"] = json!({"Endpoints": {key: [url]}});
    for (k, v) in source.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    if matches!(kind, Kind::Nats | Kind::Redis | Kind::Postgres | Kind::Kafka) {
        body["StartingPosition"] = json!("TRIM_HORIZON");
    }
    let (status, resp) = request(
        &stratus.client,
        "POST",
        &stratus.proc.url("/2015-03-31/event-source-mappings/"),
        body.to_string().into(),
    )
    .await?;
    if status != 202 {
        bail!("create the mapping: {status} {}", String::from_utf8_lossy(&resp));
    }
    let v: serde_json::Value = serde_json::from_slice(&resp)?;
    Ok(v["UUID"].as_str().context("no UUID")?.to_string())
}

/// A counter of `/metrics` for `function` (0 when absent); `extra` narrows the labels.
fn counter(metrics: &str, name: &str, function: &str, extra: &str) -> f64 {
    let label = format!("function=\"{function}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(&label) && l.contains(extra))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Enables the mapping and waits until `n` more records reached the function.
async fn stratus_side(stratus: &Stratus, uuid: &str, function: &str, n: usize) -> anyhow::Result<Timing> {
    let metrics_url = stratus.proc.url("/metrics");
    let read = || async {
        let (_, body) = request(&stratus.client, "GET", &metrics_url, Bytes::new()).await?;
        anyhow::Ok(String::from_utf8_lossy(&body).into_owned())
    };
    let records = |m: &str| counter(m, "esm_records_total", function, "");
    let batches = |m: &str| counter(m, "esm_batches_total", function, "outcome=\"ok\"");
    let m0 = read().await?;
    let pid = stratus.proc.child.id();
    let mapping_url = stratus.proc.url(&format!("/2015-03-31/event-source-mappings/{uuid}"));
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let (status, resp) =
        request(&stratus.client, "PUT", &mapping_url, Bytes::from_static(br#"{"Enabled": true}"#)).await?;
    if status != 202 && status != 200 {
        bail!("enable the mapping: {status} {}", String::from_utf8_lossy(&resp));
    }
    let (mut first, mut done, mut progress) = (None, 0.0, Instant::now());
    let result = loop {
        tokio::time::sleep(METRICS_POLL).await;
        let m = read().await?;
        let now = records(&m) - records(&m0);
        if now > done {
            (done, progress) = (now, Instant::now());
            first.get_or_insert_with(|| t0.elapsed());
        }
        if done >= n as f64 {
            break Ok((t0.elapsed(), m));
        }
        if progress.elapsed() > STALL {
            let (_, m) = request(&stratus.client, "GET", &mapping_url, Bytes::new()).await?;
            let v: serde_json::Value = serde_json::from_slice(&m).unwrap_or_default();
            break Err(anyhow::anyhow!(
                "stalled after {done} of {n} records (nothing for {} s; State {}, LastProcessingResult {})",
                STALL.as_secs(),
                v["State"],
                v["LastProcessingResult"]
            ));
        }
    };
    let c1 = cpu_seconds(pid);
    // Stops polling before the next source is measured.
    let _ = request(&stratus.client, "PUT", &mapping_url, Bytes::from_static(br#"{"Enabled": false}"#)).await;
    let (total, m) = result?;
    Ok(Timing {
        first: first.unwrap_or(total),
        total,
        batches: batches(&m) - batches(&m0),
        cpu: c1.0 - c0.0,
        function_cpu: c1.1 - c0.1,
    })
}

/// Counts a plain client's progress: (first batch done, batches) from the start.
struct Progress {
    t0: Instant,
    first: Option<Duration>,
    batches: usize,
}

impl Progress {
    fn start() -> Self {
        Self { t0: Instant::now(), first: None, batches: 0 }
    }

    fn batch(&mut self) {
        self.batches += 1;
        self.first.get_or_insert_with(|| self.t0.elapsed());
    }

    fn end(self) -> (Duration, Duration, usize) {
        let total = self.t0.elapsed();
        (self.first.unwrap_or(total), total, self.batches)
    }
}

/// The next item of a consumer, or an error if none comes within [`STALL`].
async fn next<T>(what: &str, f: impl Future<Output = Option<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(STALL, f).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => bail!("the {what} consumer ended"),
        Err(_) => bail!("the {what} consumer stalled"),
    }
}

mod nats {
    use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, stream};

    use super::*;

    pub async fn produce(url: &str, name: &str, n: usize) -> anyhow::Result<()> {
        let js = jetstream::new(async_nats::connect(url).await?);
        js.create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{name}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create stream {name}: {e}"))?;
        let subject = format!("{name}.records");
        let mut acks = Vec::with_capacity(1000);
        for i in 0..n {
            acks.push(js.publish(subject.clone(), Bytes::from(payload(i))).await?);
            if acks.len() == 1000 || i + 1 == n {
                for a in acks.drain(..) {
                    a.await?;
                }
            }
        }
        Ok(())
    }

    /// The checkpoint table Stratus keeps NATS's positions in (`store::mappings`).
    fn checkpoint_db(dir: &Path) -> anyhow::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(dir.join("checkpoints.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE esm_checkpoints (uuid TEXT NOT NULL, partition TEXT NOT NULL, position TEXT NOT NULL,
               updated_ms INTEGER NOT NULL, PRIMARY KEY (uuid, partition))",
        )?;
        Ok(conn)
    }

    pub async fn consume(url: &str, name: &str, n: usize) -> anyhow::Result<(Duration, Duration, usize)> {
        let dir = tempfile::tempdir()?;
        let db = Arc::new(Mutex::new(checkpoint_db(dir.path())?));
        let mut progress = Progress::start();
        let js = jetstream::new(async_nats::connect(url).await?);
        let stream = js.get_stream(name).await?;
        let consumer =
            stream.create_consumer(OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() }).await?;
        let mut messages = consumer.messages().await?;
        let mut done = 0;
        while done < n {
            let mut last = 0;
            let mut got = 0;
            while got < BATCH && done + got < n {
                let m = next("NATS", messages.next()).await??;
                last = m.info().map_err(|e| anyhow::anyhow!("message info: {e}"))?.stream_sequence;
                got += 1;
            }
            let db = db.clone();
            tokio::task::spawn_blocking(move || {
                let conn = db.lock().unwrap_or_else(|p| p.into_inner());
                conn.execute(
                    "INSERT INTO esm_checkpoints (uuid, partition, position, updated_ms) VALUES ('plain', 'stream', ?1, ?2)
                     ON CONFLICT (uuid, partition) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
                    rusqlite::params![last.to_string(), 0i64],
                )
            })
            .await??;
            done += got;
            progress.batch();
        }
        Ok(progress.end())
    }

    pub async fn delete(url: &str, names: &[&str]) {
        if let Ok(client) = async_nats::connect(url).await {
            let js = jetstream::new(client);
            for name in names {
                let _ = js.delete_stream(name).await;
            }
        }
    }
}

mod kafka {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Message};

    use super::*;

    fn admin(url: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        Ok(ClientConfig::new().set("bootstrap.servers", url).create()?)
    }

    /// A one-partition topic with `n` records (order is per partition, as the poller keeps it).
    pub async fn produce(url: &str, topic: &str, n: usize) -> anyhow::Result<()> {
        let created = admin(url)?
            .create_topics(&[NewTopic::new(topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await?;
        for r in created {
            r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
        }
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", url).set("linger.ms", "5").create()?;
        let mut pending = Vec::with_capacity(1000);
        for i in 0..n {
            let body = payload(i);
            pending.push(producer.send_result(FutureRecord::<(), _>::to(topic).payload(&body)).map_err(|(e, _)| e)?);
            if pending.len() == 1000 {
                for d in pending.drain(..) {
                    d.await?.map_err(|(e, _)| e)?;
                }
            }
        }
        for d in pending {
            d.await?.map_err(|(e, _)| e)?;
        }
        Ok(())
    }

    /// A consumer group reading batches of 100 and committing each, as the poller does.
    pub async fn consume(url: &str, topic: &str, n: usize) -> anyhow::Result<(Duration, Duration, usize)> {
        let mut progress = Progress::start();
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", url)
            .set("group.id", format!("plain-{topic}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[topic])?;
        let mut done = 0;
        while done < n {
            let mut last = None;
            let mut got = 0;
            while got < BATCH && done + got < n {
                let m = next("Kafka", async { consumer.recv().await.ok() }).await?;
                last = Some((m.partition(), m.offset()));
                got += 1;
            }
            if let Some((p, o)) = last {
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(o + 1))?;
                consumer.commit(&tpl, CommitMode::Async)?;
            }
            done += got;
            progress.batch();
        }
        Ok(progress.end())
    }

    pub async fn delete(url: &str, topics: &[&str]) {
        if let Ok(a) = admin(url) {
            let _ = a.delete_topics(topics, &AdminOptions::new()).await;
        }
    }
}

mod redis_source {
    use redis::AsyncCommands;
    use redis::streams::{StreamReadOptions, StreamReadReply};

    use super::*;

    pub async fn produce(url: &str, key: &str, n: usize) -> anyhow::Result<()> {
        let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        let mut i = 0;
        while i < n {
            let mut pipe = redis::pipe();
            for j in i..(i + 1000).min(n) {
                pipe.cmd("XADD").arg(key).arg("*").arg("v").arg(payload(j)).ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
            i += 1000;
        }
        Ok(())
    }

    pub async fn consume(url: &str, key: &str, n: usize) -> anyhow::Result<(Duration, Duration, usize)> {
        let mut progress = Progress::start();
        let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        let group = "plain";
        let () = conn.xgroup_create_mkstream(key, group, "0").await?;
        let opts = StreamReadOptions::default().group(group, "plain").count(BATCH).block(5000);
        let mut done = 0;
        let started = Instant::now();
        while done < n {
            let reply: Option<StreamReadReply> = conn.xread_options(&[key], &[">"], &opts).await?;
            let ids: Vec<String> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).map(|e| e.id).collect();
            if ids.is_empty() {
                if started.elapsed() > STALL {
                    bail!("the Redis consumer stalled at {done} of {n}");
                }
                continue;
            }
            let _: i64 = conn.xack(key, group, &ids).await?;
            done += ids.len();
            progress.batch();
        }
        Ok(progress.end())
    }

    pub async fn delete(url: &str, keys: &[&str]) {
        if let Ok(mut conn) = async { redis::Client::open(url)?.get_multiplexed_async_connection().await }.await {
            let _: redis::RedisResult<i64> = conn.del(keys).await;
        }
    }
}

mod rabbitmq {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{FieldTable, ShortString};
    use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

    use super::*;

    async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        Ok((conn, channel))
    }

    pub async fn produce(url: &str, queue: &str, n: usize) -> anyhow::Result<()> {
        let (_conn, ch) = channel(url).await?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(ShortString::from(queue), durable, FieldTable::default()).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut confirms = Vec::with_capacity(1000);
        for i in 0..n {
            // Persistent (delivery mode 2) into a durable queue, confirmed by the broker.
            let props = BasicProperties::default().with_delivery_mode(2);
            let c = ch
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(queue),
                    BasicPublishOptions::default(),
                    &payload(i),
                    props,
                )
                .await?;
            confirms.push(c);
            if confirms.len() == 1000 || i + 1 == n {
                for c in confirms.drain(..) {
                    c.await?;
                }
            }
        }
        Ok(())
    }

    pub async fn consume(url: &str, queue: &str, n: usize) -> anyhow::Result<(Duration, Duration, usize)> {
        let mut progress = Progress::start();
        let (_conn, ch) = channel(url).await?;
        ch.basic_qos(BATCH as u16, BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(
                ShortString::from(queue),
                ShortString::from("plain"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut done = 0;
        while done < n {
            let mut last = 0;
            let mut got = 0;
            while got < BATCH && done + got < n {
                last = next("RabbitMQ", consumer.next()).await??.delivery_tag;
                got += 1;
            }
            ch.basic_ack(last, BasicAckOptions { multiple: true }).await?;
            done += got;
            progress.batch();
        }
        Ok(progress.end())
    }

    pub async fn delete(url: &str, queues: &[&str]) {
        if let Ok((_conn, ch)) = channel(url).await {
            for q in queues {
                let _ = ch.queue_delete(ShortString::from(*q), QueueDeleteOptions::default()).await;
            }
        }
    }
}

mod mqtt {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    use super::*;

    fn options(url: &str, client_id: &str) -> anyhow::Result<MqttOptions> {
        let rest = url.strip_prefix("mqtt://").unwrap_or(url).trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').context("MQTT URL without a port")?;
        let mut opts = MqttOptions::new(client_id, host, port.parse::<u16>()?);
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_max_packet_size(8 << 20, 8 << 20);
        Ok(opts)
    }

    /// Creates a persistent session subscribed (QoS 1) to `<base>/#`.
    pub async fn session(url: &str, client_id: &str, base: &str) -> anyhow::Result<()> {
        let mut opts = options(url, client_id)?;
        opts.set_clean_session(false);
        let (client, mut events) = AsyncClient::new(opts, 16);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if Instant::now() > until {
                bail!("MQTT subscribe timed out");
            }
            match tokio::time::timeout(Duration::from_secs(10), events.poll()).await?? {
                Event::Incoming(Packet::ConnAck(_)) => client.subscribe(format!("{base}/#"), QoS::AtLeastOnce).await?,
                Event::Incoming(Packet::SubAck(_)) => break,
                _ => {}
            }
        }
        client.disconnect().await?;
        while tokio::time::timeout(Duration::from_secs(5), events.poll()).await.is_ok_and(|e| e.is_ok()) {}
        Ok(())
    }

    /// Ends a persistent session (a clean connection discards it).
    pub async fn forget(url: &str, client_id: &str) {
        let Ok(mut opts) = options(url, client_id) else { return };
        opts.set_clean_session(true);
        let (client, mut events) = AsyncClient::new(opts, 16);
        for _ in 0..10 {
            match tokio::time::timeout(Duration::from_secs(2), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    let _ = client.disconnect().await;
                }
                Ok(Ok(_)) => {}
                _ => return,
            }
        }
    }

    pub async fn produce(url: &str, base: &str, n: usize) -> anyhow::Result<()> {
        let opts = options(url, &format!("bench-producer-{}-{}", std::process::id(), base.replace('/', "-")))?;
        let (client, mut events) = AsyncClient::new(opts, 1000);
        let topic = format!("{base}/records");
        let publisher = tokio::spawn(async move {
            for i in 0..n {
                client.publish(topic.clone(), QoS::AtLeastOnce, false, payload(i)).await?;
            }
            anyhow::Ok(client)
        });
        let mut acked = 0;
        while acked < n {
            match tokio::time::timeout(STALL, events.poll()).await?? {
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                _ => continue,
            }
        }
        let client = publisher.await??;
        client.disconnect().await?;
        while tokio::time::timeout(Duration::from_secs(5), events.poll()).await.is_ok_and(|e| e.is_ok()) {}
        Ok(())
    }

    /// As the poller does: the event loop on a task of its own handing publishes over a
    /// channel, acknowledged (manually) once their batch is done.
    pub async fn consume(url: &str, client_id: &str, n: usize) -> anyhow::Result<(Duration, Duration, usize)> {
        let mut progress = Progress::start();
        let mut opts = options(url, client_id)?;
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        // Room for every acknowledgement. The poller's request channel holds a batch: when the
        // broker hands over more than that and the channel of publishes is full too, the event
        // loop waits for this to take a publish while this waits for it to take an
        // acknowledgement.
        let (client, mut events) = AsyncClient::new(opts, n + BATCH);
        let (tx, mut rx) = tokio::sync::mpsc::channel(BATCH);
        let driver = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let mut done = 0;
        while done < n {
            // The poller's rule (`triggers::esm::gather` without a batching window): wait for a
            // first message, then take what has arrived, up to a batch. How many the broker
            // sends ahead of the acknowledgements is its own setting.
            let mut batch = vec![next("MQTT", rx.recv()).await.with_context(|| format!("after {done} of {n}"))?];
            while batch.len() < BATCH {
                match tokio::time::timeout(Duration::from_micros(1), rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    Ok(None) => bail!("the MQTT consumer ended after {done} of {n}"),
                    Err(_) => break,
                }
            }
            for p in batch.drain(..) {
                client.ack(&p).await?;
                done += 1;
            }
            progress.batch();
        }
        let end = progress.end();
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
        Ok(end)
    }
}

mod postgres {
    use tokio_postgres::{Client, NoTls};

    use super::*;

    async fn connect(url: &str) -> anyhow::Result<Client> {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub async fn prepare(url: &str, table: &str, slot: &str) -> anyhow::Result<()> {
        let c = connect(url).await?;
        c.batch_execute(&format!("CREATE TABLE {table} (id bigserial PRIMARY KEY, v text NOT NULL)")).await?;
        c.execute("SELECT pg_create_logical_replication_slot($1, 'wal2json')", &[&slot]).await?;
        Ok(())
    }

    /// `n` rows, [`BATCH`] per transaction.
    pub async fn produce(url: &str, table: &str, n: usize) -> anyhow::Result<()> {
        let c = connect(url).await?;
        let insert = format!(
            "INSERT INTO {table} (v) SELECT '{{\"n\":' || g || ',\"kind\":\"bench\",\"note\":\"a small record\"}}'
             FROM generate_series($1::int, $2::int) g"
        );
        for start in (0..n).step_by(BATCH) {
            let (a, b) = (start as i32, (start + BATCH).min(n) as i32 - 1);
            c.execute(&insert, &[&a, &b]).await?;
        }
        Ok(())
    }

    /// `url` with its database replaced by `name`, created first.
    pub async fn database(url: &str, name: &str) -> anyhow::Result<String> {
        connect(url).await?.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        Ok(with_database(url, name))
    }

    pub(super) fn with_database(url: &str, name: &str) -> String {
        let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
        let mut out = format!("{}/{name}", &base[..host_end]);
        if let Some(q) = query {
            out = format!("{out}?{q}");
        }
        out
    }

    /// Drops the slots (once no poller holds them) and the sides' databases.
    pub async fn delete(url: &str, sides: &[(&str, &str)]) {
        let Ok(c) = connect(url).await else { return };
        for (db, slot) in sides {
            for _ in 0..20 {
                let gone = c
                    .execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                        &[slot],
                    )
                    .await;
                let left = c.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[slot]).await;
                if gone.is_ok() && matches!(left, Ok(None)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).await;
        }
    }

    /// Peeks one transaction (a batch) at a time with the poller's options, and advances the
    /// slot to its end.
    pub async fn consume(url: &str, slot: &str, table: &str, n: usize) -> anyhow::Result<(Duration, Duration, usize)> {
        let mut progress = Progress::start();
        let c = connect(url).await?;
        let peek = c
            .prepare(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2,
                   'format-version', '2', 'include-pk', 'true', 'include-timestamp', 'true',
                   'include-transaction', 'true', 'add-tables', $3)",
            )
            .await?;
        let table = format!("public.{table}");
        let mut done = 0;
        let mut pause = Duration::from_millis(20);
        let mut idle = Instant::now();
        while done < n {
            let rows = c.query(&peek, &[&slot, &(BATCH as i32), &table]).await?;
            let mut got = 0;
            let mut end = None;
            for row in &rows {
                let data: serde_json::Value = serde_json::from_str(row.get::<_, &str>(1))?;
                match data.get("action").and_then(serde_json::Value::as_str) {
                    Some("C") => end = Some(row.get::<_, String>(0)),
                    Some("I" | "U" | "D") => got += 1,
                    _ => {}
                }
            }
            let Some(lsn) = end else {
                if idle.elapsed() > STALL {
                    bail!("the PostgreSQL consumer stalled at {done} of {n}");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
                continue;
            };
            c.execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&slot, &lsn]).await?;
            done += got;
            (pause, idle) = (Duration::from_millis(20), Instant::now());
            if got > 0 {
                progress.batch();
            }
        }
        Ok(progress.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_per_function() {
        let metrics = "# TYPE esm_records_total counter\n\
            esm_records_total{account=\"000000000000\",function=\"esm-nats\"} 1200\n\
            esm_records_total{account=\"000000000000\",function=\"esm-nats-2\"} 7\n\
            esm_records_total_other{function=\"esm-nats\"} 9\n\
            esm_batches_total{account=\"000000000000\",function=\"esm-nats\",outcome=\"ok\"} 12\n\
            esm_batches_total{account=\"000000000000\",function=\"esm-nats\",outcome=\"failed\"} 3\n";
        assert_eq!(counter(metrics, "esm_records_total", "esm-nats", ""), 1200.0);
        assert_eq!(counter(metrics, "esm_batches_total", "esm-nats", "outcome=\"ok\""), 12.0);
        assert_eq!(counter(metrics, "esm_records_total", "esm-redis", ""), 0.0);
    }

    #[test]
    fn postgres_urls_name_another_database() {
        let with = postgres::with_database;
        assert_eq!(with("postgres://postgres@127.0.0.1:5432/app", "b"), "postgres://postgres@127.0.0.1:5432/b");
        assert_eq!(with("postgres://u:p@h/app?sslmode=disable", "b"), "postgres://u:p@h/b?sslmode=disable");
        assert_eq!(with("postgres://h:5432", "b"), "postgres://h:5432/b");
    }
}
