//! Event source mappings: pollers that read the streams, queues, topics and tables of the
//! brokers and databases users run, and invoke functions with batches of their records, as
//! Lambda's event source mappings do for Kinesis, DynamoDB Streams, Amazon MQ and Kafka.
//!
//! One task per mapping ([`Pollers`]) connects to its source, fetches up to `BatchSize`
//! records (waiting up to `MaximumBatchingWindowInSeconds` to fill a batch), drops the ones
//! no filter matches, delivers the rest ([`deliver`]: synchronous invocations, retries,
//! bisection, partial batch responses, the on-failure destination) and only then commits:
//! a checkpoint, an acknowledgement or a replication slot's advance, so delivery is at least
//! once. A lost connection is retried with backoff; the batch in hand is kept, so nothing is
//! skipped.
//!
//! Each source's record shape is the closest AWS one (see the module of each source); the
//! shapes are this crate's, never the control plane's.

mod deliver;
mod kafka;
mod mqtt;
mod nats;
mod postgres;
mod rabbitmq;
mod redis;
mod text;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use invoke::Invoker;
use model::esm::{Mapping, SourceKind};
use serde_json::Value;
use store::Store;
use tokio::sync::watch;

/// Batches delivered, by outcome.
pub const BATCHES: &str = "esm_batches_total";
/// Records delivered to functions.
pub const RECORDS: &str = "esm_records_total";
/// Records sent to an on-failure destination.
pub const FAILED_RECORDS: &str = "esm_failed_records_total";
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (BATCHES, "Event source mappings: batches delivered, by outcome (ok, retried, failed)"),
    (RECORDS, "Event source mappings: records delivered to functions"),
    (FAILED_RECORDS, "Event source mappings: records sent to an on-failure destination (or dropped)"),
];

/// How long a fetch waits for a first record before looking again (and at its mapping).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How long the fetch of the next batch, while one is delivered, waits for a first record
/// (the delivery's outcome is looked at only after it).
const PREFETCH_IDLE: Duration = Duration::from_millis(50);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One record read from a source.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// The subject, stream, table, queue or topic it came from (order is kept per partition).
    pub partition: String,
    /// Its position: the `itemIdentifier` of partial batch responses.
    pub id: String,
    /// When the broker received it (Unix ms).
    pub arrival_ms: i64,
    /// The record as the function sees it, as JSON text (batches are assembled from it as
    /// is; filters parse it only when the mapping has some).
    pub body: String,
    /// What the source needs to acknowledge or checkpoint it.
    pub token: Token,
}

#[derive(Debug, Clone)]
pub(crate) enum Token {
    Seq(u64),
    Tag(u64),
    Mqtt(Arc<rumqttc::Publish>),
    Kafka { topic: String, partition: i32, offset: i64 },
    None,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A connected source.
pub(crate) trait Source: Send {
    /// Up to `max` records: waits up to `idle` for a first one (returning none), then up to
    /// `window` for more.
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>>;
    /// Whether the next batch may be fetched while the last one is still being delivered
    /// (committing a batch then must not depend on what was fetched after it).
    fn prefetches(&self) -> bool {
        true
    }
    /// `done` (everything a fetch returned, in order) is processed: notes it and returns the
    /// work that makes it durable at the source, which may run while the source fetches
    /// more. If that fails, the poller drops this source and connects anew.
    fn commit(&mut self, done: &[Record]) -> BoxFuture<'static, Result<(), Error>>;
}

/// Reads a batch from a source's stream of messages: waits up to `idle` for the first (none:
/// an empty batch), then up to `window` for more, at most `max` (without a window, only what
/// has already arrived). The stream ending, or failing, is an error: nothing of the batch was
/// committed, so it comes again.
pub(crate) async fn gather<S, T, E>(
    stream: &mut S,
    max: usize,
    window: Duration,
    idle: Duration,
) -> Result<Vec<T>, Error>
where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
    E: Into<Error>,
{
    use futures_util::{FutureExt, StreamExt};
    let mut out = Vec::with_capacity(max.min(1024));
    let first = match tokio::time::timeout(idle, stream.next()).await {
        Err(_) => return Ok(out),
        Ok(None) => return Err("the connection to the source ended".into()),
        Ok(Some(m)) => m.map_err(Into::into)?,
    };
    out.push(first);
    let deadline = tokio::time::Instant::now() + window;
    let mut yielded = false;
    while out.len() < max {
        // What has already arrived is taken without a timer.
        match stream.next().now_or_never() {
            Some(Some(m)) => {
                out.push(m.map_err(Into::into)?);
                continue;
            }
            Some(None) => return Err("the connection to the source ended".into()),
            None if window.is_zero() => {
                // Not ready, or this task used up its turn: one yield tells which.
                if std::mem::replace(&mut yielded, true) {
                    break;
                }
                tokio::task::yield_now().await;
                continue;
            }
            None => {}
        }
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_micros(1));
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(m)) => out.push(m.map_err(Into::into)?),
            Ok(None) => return Err("the connection to the source ended".into()),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// What the API shows of a running mapping.
#[derive(Debug, Clone)]
pub struct Status {
    /// `Creating` until the poller first reached its source, then `Enabled`.
    pub state: &'static str,
    pub last_result: String,
}

struct Running {
    /// Tells the poller to stop after the batch in hand (or at once when it is waiting).
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    status: Arc<Mutex<Status>>,
    /// The configuration it runs.
    mapping: Arc<Mapping>,
}

/// The pollers of one account.
#[derive(Clone)]
pub struct Pollers {
    inner: Arc<Inner>,
}

struct Inner {
    invoker: Invoker,
    store: Store,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    /// Mappings the API changed since start-up (the start-up list must not undo that).
    touched: std::collections::HashSet<String>,
}

impl Pollers {
    /// Starts the pollers of every enabled mapping of the account.
    pub fn start(invoker: Invoker, store: Store) -> Self {
        let p = Self { inner: Arc::new(Inner { invoker, store, state: Mutex::new(State::default()) }) };
        let me = p.clone();
        tokio::spawn(async move {
            match me.inner.store.run(|db| db.list_mappings(None, None, usize::MAX >> 1)).await {
                Ok(all) => {
                    for m in all {
                        let mut st = me.state();
                        if m.enabled && !st.touched.contains(&m.uuid) && !st.running.contains_key(&m.uuid) {
                            me.spawn(&mut st, &m, None);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the event source mappings; none is polled"),
            }
        });
        p
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `m`'s poller once `previous` (the poller it replaces) has finished.
    fn spawn(&self, st: &mut State, m: &Mapping, previous: Option<tokio::task::JoinHandle<()>>) {
        let status = Arc::new(Mutex::new(Status { state: "Creating", last_result: "No records processed".into() }));
        let (stop, stopped) = watch::channel(false);
        let mapping = Arc::new(m.clone());
        let poller = Poller {
            invoker: self.inner.invoker.clone(),
            store: self.inner.store.clone(),
            mapping: mapping.clone(),
            status: status.clone(),
            stop: stopped,
            fence: None,
        };
        let cluster = self.inner.invoker.cluster();
        let task = tokio::spawn(async move {
            // One poller per mapping at a time: the old one finishes its batch first.
            if let Some(t) = previous {
                let _ = t.await;
            }
            match cluster {
                Some(c) => leased(poller, c).await,
                None => poller.supervise().await,
            }
        });
        st.running.insert(m.uuid.clone(), Running { stop, task, status, mapping });
    }

    /// Another node changed a mapping (`uuid`) or created one (`None`): brings the pollers
    /// here in line with the store.
    pub fn refresh(&self, uuid: Option<String>) {
        let me = self.clone();
        tokio::spawn(async move {
            let all = match me.inner.store.run(|db| db.list_mappings(None, None, usize::MAX >> 1)).await {
                Ok(all) => all,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-read the event source mappings");
                    return;
                }
            };
            let mut st = me.state();
            let wanted: HashMap<String, Mapping> =
                all.into_iter().filter(|m| m.enabled).map(|m| (m.uuid.clone(), m)).collect();
            let gone: Vec<String> = st.running.keys().filter(|u| !wanted.contains_key(*u)).cloned().collect();
            for u in gone {
                Self::stop(&mut st, &u);
            }
            for (u, m) in wanted {
                let same = st.running.get(&u).is_some_and(|r| *r.mapping == m);
                if same && uuid.as_deref() != Some(u.as_str()) {
                    continue;
                }
                if !same {
                    let previous = Self::stop(&mut st, &u);
                    me.spawn(&mut st, &m, previous);
                }
            }
        });
    }

    /// Stops a mapping's poller (after its batch in hand); its task, to wait for.
    fn stop(st: &mut State, uuid: &str) -> Option<tokio::task::JoinHandle<()>> {
        st.touched.insert(uuid.to_string());
        st.running.remove(uuid).map(|r| {
            let _ = r.stop.send(true);
            r.task
        })
    }

    /// A mapping was created or updated: (re)starts its poller, or stops it when disabled.
    pub fn changed(&self, m: &Mapping) {
        let mut st = self.state();
        let previous = Self::stop(&mut st, &m.uuid);
        if m.enabled {
            self.spawn(&mut st, m, previous);
        }
    }

    /// A mapping was deleted: stops its poller and lets go of what it held on the source
    /// (a PostgreSQL replication slot would keep WAL forever).
    pub fn deleted(&self, m: &Mapping) {
        let previous = Self::stop(&mut self.state(), &m.uuid);
        if m.source.kind != SourceKind::Postgres {
            return;
        }
        let m = m.clone();
        tokio::spawn(async move {
            if let Some(t) = previous {
                let _ = t.await;
            }
            let mut wait = Duration::from_secs(1);
            for attempt in 1..=5 {
                match postgres::drop_slot(&m).await {
                    Ok(()) => {
                        tracing::info!(mapping = %m.uuid, "replication slot dropped");
                        return;
                    }
                    Err(e) if attempt == 5 => {
                        tracing::warn!(mapping = %m.uuid, slot = %postgres::slot_name(&m.uuid), error = %e, "cannot drop the replication slot; drop it by hand (it keeps WAL)")
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        });
    }

    /// The running poller's status, if it runs.
    pub fn status(&self, uuid: &str) -> Option<Status> {
        self.state().running.get(uuid).map(|r| r.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Tells every poller to stop after its batch in hand (a cluster node draining: each gives
    /// its lease up as it stops, and another node takes the mapping over).
    pub fn stop_all(&self) {
        for (_, r) in self.state().running.drain() {
            let _ = r.stop.send(true);
        }
    }

    /// Stops every poller (at shutdown: a batch cut short is not committed, so it comes again).
    pub fn shutdown(&self) {
        for (_, r) in self.state().running.drain() {
            let _ = r.stop.send(true);
            r.task.abort();
        }
    }
}

/// One mapping's poller.
#[derive(Clone)]
pub(crate) struct Poller {
    pub invoker: Invoker,
    pub store: Store,
    pub mapping: Arc<Mapping>,
    pub status: Arc<Mutex<Status>>,
    pub stop: watch::Receiver<bool>,
    /// In a cluster, the token of the mapping's lease: checkpoints Stratus keeps are written
    /// only while it is current.
    pub fence: Option<i64>,
}

/// How often a lease holder renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How long a holder goes on without a successful renewal: two failed renewals (the lease
/// lasts 10 s, so it stops before another node can take it over).
const SELF_FENCE_AFTER: Duration = Duration::from_secs(6);

/// Runs a mapping's poller in a cluster: only while this node holds the mapping's lease, so
/// one node polls it at a time. The node rendezvous hashing prefers tries at once and every
/// second; the others every few seconds, so they take over when the holder dies (its lease
/// is released when it is declared dead, or expires).
async fn leased(template: Poller, cluster: invoke::ClusterHandle) {
    let m = template.mapping.clone();
    let account = template.invoker.scope().account.clone();
    let name = store::pg::cluster::mapping_lease(&account, &m.uuid);
    let key = format!("mappings/{account}/{}", m.uuid);
    let api_stop = template.stop.clone();
    let started = tokio::time::Instant::now();
    template.status.lock().unwrap_or_else(|p| p.into_inner()).state = "Enabled";
    let mut attempts: u64 = 0;
    loop {
        if *api_stop.borrow() {
            return;
        }
        attempts += 1;
        let preferred = cluster.0.preferred(&key);
        let eager = preferred || (started.elapsed() > Duration::from_secs(5) && attempts.is_multiple_of(3));
        let token = if eager { cluster.0.acquire(&name).await } else { None };
        let Some(token) = token else {
            if template.pause(Duration::from_secs(1)).await {
                return;
            }
            continue;
        };
        tracing::info!(mapping = %m.uuid, token, "took the mapping's lease");
        let (term_tx, term_rx) = watch::channel(false);
        let term_tx = Arc::new(term_tx);
        let forward_stop = {
            let (t, mut api) = (term_tx.clone(), api_stop.clone());
            tokio::spawn(async move {
                let _ = api.wait_for(|s| *s).await;
                let _ = t.send(true);
            })
        };
        let renewer = {
            let (t, c, name) = (term_tx.clone(), cluster.clone(), name.clone());
            let uuid = m.uuid.clone();
            tokio::spawn(async move {
                let mut last_ok = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    match c.0.renew(&name, token).await {
                        Some(true) => last_ok = tokio::time::Instant::now(),
                        Some(false) => {
                            tracing::warn!(mapping = %uuid, "lost the mapping's lease; stopping its poller");
                            let _ = t.send(true);
                            return;
                        }
                        None if last_ok.elapsed() > SELF_FENCE_AFTER => {
                            tracing::warn!(mapping = %uuid, "cannot renew the mapping's lease; stopping its poller before another node takes it");
                            let _ = t.send(true);
                            return;
                        }
                        None => {}
                    }
                }
            })
        };
        let mut poller = template.clone();
        poller.stop = term_rx.clone();
        poller.fence = Some(token);
        cluster.0.holding("mappings", &m.uuid, true);
        poller.supervise().await;
        cluster.0.holding("mappings", &m.uuid, false);
        forward_stop.abort();
        renewer.abort();
        if *api_stop.borrow() || cluster.0.draining() {
            cluster.0.release(&name, token).await;
            return;
        }
        if !*term_rx.borrow() {
            // The poller ended by itself (a configuration it cannot run): keep the lease
            // from others, who could not run it either, and look again later.
            if template.pause(Duration::from_secs(5)).await {
                cluster.0.release(&name, token).await;
                return;
            }
        }
    }
}

impl Poller {
    pub(crate) fn set_result(&self, result: impl Into<String>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.last_result = result.into();
    }

    /// Resolves when the poller is told to stop.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stop.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps `d`; `true` if told to stop meanwhile.
    pub(crate) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stopped() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }

    async fn connect(&self) -> Result<Box<dyn Source>, Error> {
        let m = self.mapping.clone();
        let scope = self.invoker.scope();
        Ok(match m.source.kind {
            SourceKind::Nats => Box::new(nats::Nats::connect(m, self.store.clone(), scope, self.fence).await?),
            SourceKind::Redis => Box::new(redis::Redis::connect(m, scope).await?),
            SourceKind::Postgres => Box::new(postgres::Postgres::connect(m, scope).await?),
            SourceKind::RabbitMq => Box::new(rabbitmq::RabbitMq::connect(m, scope).await?),
            SourceKind::Mqtt => Box::new(mqtt::Mqtt::connect(m, scope).await?),
            SourceKind::Kafka => Box::new(kafka::Kafka::connect(m).await?),
        })
    }

    /// Runs the poller, restarting it if it panics.
    async fn supervise(self) {
        loop {
            match tokio::spawn(self.clone().run()).await {
                Err(e) if e.is_panic() => {
                    tracing::error!(mapping = %self.mapping.uuid, "the event source poller failed; restarting it");
                    self.set_result("PROBLEM: Internal error; the poller restarts");
                    if self.pause(Duration::from_secs(5)).await {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    async fn run(self) {
        let m = self.mapping.clone();
        let filters = match m.filters.iter().map(|f| model::filter::Pattern::parse(f)).collect::<Result<Vec<_>, _>>() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(mapping = %m.uuid, error = %e, "a stored filter is invalid; the mapping does not poll");
                self.set_result(format!("PROBLEM: {e}"));
                return;
            }
        };
        let window = Duration::from_secs(m.batching_window_s.into());
        let mut backoff = Duration::from_millis(250);
        'connect: loop {
            let connected = tokio::select! {
                _ = self.stopped() => return,
                c = self.connect() => c,
            };
            let mut source = match connected {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(mapping = %m.uuid, source = %m.source.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach the event source");
                    self.set_result(format!("PROBLEM: Connection error. {e}"));
                    if self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            tracing::info!(mapping = %m.uuid, function = %m.function, source = %m.source.name, kind = ?m.source.kind, "event source mapping polling");
            self.status.lock().unwrap_or_else(|p| p.into_inner()).state = "Enabled";
            // A batch fetched while the previous one was delivered.
            let mut next: Option<Vec<Record>> = None;
            // A delivered batch whose commit runs alongside the next batch's invocation.
            let mut uncommitted: Option<Vec<Record>> = None;
            loop {
                let batch = match next.take() {
                    Some(b) => b,
                    None => {
                        // Nothing is in hand: what is done is committed before waiting for more.
                        if let Some(done) = uncommitted.take()
                            && let Err(e) = source.commit(&done).await
                        {
                            if self.lost_source(&e, backoff).await {
                                return;
                            }
                            continue 'connect;
                        }
                        let fetched = tokio::select! {
                            // Nothing fetched is committed yet: stopping here loses nothing.
                            _ = self.stopped() => return,
                            f = source.fetch(m.batch_size as usize, window, IDLE_POLL) => f,
                        };
                        match fetched {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::warn!(mapping = %m.uuid, error = %e, "lost the event source; reconnecting");
                                self.set_result(format!("PROBLEM: Connection error. {e}"));
                                if self.pause(backoff).await {
                                    return;
                                }
                                backoff = (backoff * 2).min(MAX_BACKOFF);
                                continue 'connect;
                            }
                        }
                    }
                };
                backoff = Duration::from_millis(250);
                let wanted: Vec<Record> = if filters.is_empty() {
                    batch.clone()
                } else {
                    batch.iter().filter(|r| passes(&filters, &r.body)).cloned().collect()
                };
                let mut lost = None;
                let delivered = !wanted.is_empty();
                if delivered {
                    let p = self.clone();
                    let delivery = tokio::spawn(async move { deliver::deliver(&p, wanted).await });
                    // The invocation starts first; the work below overlaps with the function.
                    tokio::task::yield_now().await;
                    // The last batch is committed while the next one is read (and made into
                    // records); a failed commit drops what was read (it comes again).
                    let commit = uncommitted.take().map(|done| source.commit(&done));
                    let prefetch = source.prefetches();
                    let (committed, fetched) = tokio::join!(
                        async move {
                            match commit {
                                Some(c) => c.await,
                                None => Ok(()),
                            }
                        },
                        async {
                            match prefetch {
                                true => source.fetch(m.batch_size as usize, window, PREFETCH_IDLE).await,
                                false => Ok(Vec::new()),
                            }
                        }
                    );
                    match (committed, fetched) {
                        (Err(e), _) | (Ok(()), Err(e)) => lost = Some(e),
                        (Ok(()), Ok(b)) if !b.is_empty() => next = Some(b),
                        (Ok(()), Ok(_)) => {}
                    }
                    match delivery.await {
                        Ok(true) => {}
                        // Told to stop mid-batch: nothing of it is committed, so it comes again.
                        Ok(false) => return,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => return,
                    }
                }
                if delivered && lost.is_none() && source.prefetches() {
                    // Committed while the next batch runs, or before the next wait for records.
                    uncommitted = Some(batch);
                    continue;
                }
                // Also after an empty fetch: a source may have passed over records of no
                // interest (PostgreSQL: other tables' transactions) and should say so.
                let mut committed = Ok(());
                if let Some(done) = uncommitted.take() {
                    committed = source.commit(&done).await;
                }
                if committed.is_ok() {
                    committed = source.commit(&batch).await;
                }
                if let Some(e) = committed.err().or(lost) {
                    if self.lost_source(&e, backoff).await {
                        return;
                    }
                    continue 'connect;
                }
            }
        }
    }

    /// Reports a source lost after a batch was delivered (it may come again: at least once)
    /// and waits `backoff` before reconnecting; `true` if told to stop meanwhile.
    async fn lost_source(&self, e: &Error, backoff: Duration) -> bool {
        tracing::warn!(mapping = %self.mapping.uuid, error = %e, "lost the event source; reconnecting (the last batch may be delivered again)");
        self.set_result(format!("PROBLEM: Connection error. {e}"));
        self.pause(backoff).await
    }
}

/// Whether a record (JSON text) passes the mapping's filters.
fn passes(filters: &[model::filter::Pattern], body: &str) -> bool {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => model::filter::passes(filters, &filter_view(&v)),
        Err(_) => false,
    }
}

/// What filters see of a record: `data` payloads that are JSON are decoded (wherever the
/// record keeps them, and also as a top-level `data`), as Lambda does for Kinesis and MQ.
pub(crate) fn filter_view(body: &Value) -> Value {
    let mut view = body.clone();
    let decode = |v: &Value| -> Option<Value> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let mut lifted = None;
    if let Some(obj) = view.as_object_mut() {
        for key in ["data", "value"] {
            if let Some(d) = obj.get(key).and_then(decode) {
                obj.insert(key.into(), d);
            }
        }
        for (_, inner) in obj.iter_mut() {
            if let Some(io) = inner.as_object_mut()
                && let Some(d) = io.get("data").and_then(decode)
            {
                io.insert("data".into(), d.clone());
                lifted = Some(d);
            }
        }
        if let Some(d) = lifted
            && !obj.contains_key("data")
        {
            obj.insert("data".into(), d);
        }
    }
    view
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    model::logfmt::now_ms()
}

/// RFC 3339 with milliseconds, as AWS's records write times.
pub(crate) fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn gather_takes_at_most_max_and_fails_on_errors() {
        let mut s = futures_util::stream::iter((0..5).map(Ok::<_, Error>));
        assert_eq!(gather(&mut s, 3, Duration::ZERO, IDLE_POLL).await.unwrap(), [0, 1, 2]);
        // The stream ending mid-batch is the connection going: nothing of it counts.
        assert!(gather(&mut s, 3, Duration::from_millis(10), IDLE_POLL).await.is_err());
        assert!(gather(&mut s, 3, Duration::ZERO, IDLE_POLL).await.is_err());
        let mut bad = futures_util::stream::iter(vec![Ok(1), Err::<i32, Error>("lost".into())]);
        assert!(gather(&mut bad, 3, Duration::from_millis(10), IDLE_POLL).await.is_err());
    }

    #[test]
    fn filters_see_decoded_data() {
        let data = b64(br#"{"kind":"order"}"#);
        let view = filter_view(&json!({"nats": {"data": data, "subject": "s"}}));
        assert_eq!(view["nats"]["data"]["kind"], "order");
        assert_eq!(view["data"]["kind"], "order");
        let raw = b64(b"not json");
        let view = filter_view(&json!({"data": raw}));
        assert_eq!(view["data"], raw);
    }
}
