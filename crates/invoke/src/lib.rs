//! The invocation path. Every invocation — from the API, a function URL, a trigger or the
//! async queue — goes through [`Invoker`]; nothing else starts an environment.
//!
//! The warm path: resolve the function from the in-memory cache (no database read), pop an
//! idle environment, hand it the event, return the answer. A cold start happens only when no
//! environment is idle; over the per-function cap the call is throttled (429). The cache is
//! invalidated by the control plane on every change, which retires the old pool.
//!
//! This crate speaks `model` types; it knows nothing of HTTP or Lambda's JSON wire shapes
//! (except the error JSON the platform itself produces for a function, which is part of the
//! function's answer).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admission;
mod capture;
pub mod cluster;
mod env;
pub mod meter;
pub mod otel;
mod pool;
mod provisioned;
mod queue;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use admission::{Account, FunctionConcurrency, ScalingRate};
use bytes::Bytes;
use model::invoke::{InvokeRequest, InvokeResult, Trigger};
use model::versions::{AliasConfig, Qualifier};
use model::{FunctionConfig, LambdaError, Scope, ThrottleReason};
use runtimes::{Catalogue, Paths};
use sandbox::Backend;
use store::{LogSink, Store};
use tokio::sync::{mpsc, oneshot};

pub use env::FunctionFailure;
use env::{Blueprint, Environment};
use pool::{Pool, Slot};

/// The tag that gives a function's environments an isolated network (value `isolated`):
/// only their own Runtime API is reachable. Without it they share the host's network, as
/// Lambda functions reach the internet.
pub const NETWORK_TAG: &str = "stratus:network";

/// How long an environment stays idle before it is frozen, by default (see BENCHMARKS.md: an
/// immediate freeze puts the runtime's `/next` request behind the thaw on every warm call).
pub const DEFAULT_FREEZE_AFTER: Duration = Duration::from_millis(50);

/// The start of the message of a forwarding error that means the node could not be reached
/// (the caller may try another node).
pub const UNREACHABLE: &str = "node unreachable: ";

/// Settings of the invocation path.
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    pub scope: Scope,
    /// Host directory holding the runtime bootstraps.
    pub runtime_dir: PathBuf,
    /// Host directory under which environments get their private directories.
    pub envs_dir: PathBuf,
    /// How long an idle environment is kept before it is stopped.
    pub keep_alive: Duration,
    /// The most environments one function may run at once.
    pub max_envs_per_function: usize,
    /// The longest a runtime may take to initialise.
    pub init_timeout: Duration,
    /// Address the Runtime API endpoints listen on.
    pub runtime_api_ip: IpAddr,
    /// Delay before the first retry of a failed async event (the second waits twice as long).
    pub async_retry_delay: Duration,
    /// Freeze environments idle for this long (`Some(0)`: as soon as an invocation ends;
    /// `None`: never).
    pub freeze_after: Option<Duration>,
    /// Invocations the account may have in flight (Lambda's default: 1,000).
    pub account_concurrency: usize,
    /// New environments a function may start per `scaling_window` (Lambda: 1,000 per 10 s).
    pub scaling_burst: u32,
    pub scaling_window: Duration,
    /// Record every attempt in the ledger and the metrics (off only to measure what it costs).
    pub metering: bool,
    /// Export a span per invocation to this OTLP/HTTP traces URL, as this service name.
    pub otlp: Option<(String, String)>,
    /// Variables every function of the account gets and cannot override: the platform's
    /// service endpoints (`AWS_ENDPOINT_URL_S3`, …) and the account's function credentials.
    pub service_env: Arc<Vec<(String, String)>>,
    /// The cluster this node belongs to (`None` in embedded mode): invocations run on the
    /// node that owns their function version.
    pub cluster: Option<ClusterHandle>,
}

/// The node's cluster, shared by every account's invoker.
#[derive(Clone)]
pub struct ClusterHandle(pub Arc<dyn cluster::Cluster>);

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.0.node_id())
    }
}

impl InvokerConfig {
    pub fn new(scope: Scope, data_dir: &std::path::Path) -> Self {
        Self {
            scope,
            runtime_dir: data_dir.join("runtimes"),
            envs_dir: data_dir.join("envs"),
            keep_alive: Duration::from_secs(300),
            max_envs_per_function: 100,
            init_timeout: Duration::from_secs(10),
            runtime_api_ip: IpAddr::from([127, 0, 0, 1]),
            async_retry_delay: Duration::from_secs(60),
            freeze_after: Some(DEFAULT_FREEZE_AFTER),
            account_concurrency: 1000,
            scaling_burst: 1000,
            scaling_window: Duration::from_secs(10),
            metering: true,
            otlp: None,
            service_env: Arc::default(),
            cluster: None,
        }
    }
}

struct Inner {
    config: InvokerConfig,
    store: Store,
    sink: LogSink,
    catalogue: Catalogue,
    backend: Arc<dyn Backend>,
    /// What the invoker knows of each function it has seen.
    functions: std::sync::Mutex<HashMap<String, Arc<FunctionState>>>,
    account: Arc<Account>,
    queue: queue::Queue,
    provisioned: provisioned::Provisioner,
    meter: meter::Meter,
}

/// One function's cached state: its pools (one per version), aliases, reservation, counters.
struct FunctionState {
    concurrency: Arc<FunctionConcurrency>,
    /// `None` until read from the store; then the reservation (itself optional).
    reserved: std::sync::Mutex<Option<Option<u32>>>,
    pools: std::sync::Mutex<HashMap<String, Arc<Pool>>>,
    aliases: std::sync::Mutex<HashMap<String, Arc<AliasConfig>>>,
    /// Asynchronous-invocation settings by qualifier.
    event_configs: std::sync::Mutex<HashMap<String, model::versions::EventInvokeConfig>>,
    /// Bumped by every invalidation; a pool or alias read before a bump is not cached.
    epoch: AtomicU64,
    scaling: std::sync::Mutex<ScalingRate>,
    /// Async deliveries in flight for this function, at most its concurrency (its
    /// reservation, or the per-function cap), and the size it was made with.
    async_slots: std::sync::Mutex<(usize, Arc<tokio::sync::Semaphore>)>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is plain and stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FunctionState {
    fn all_pools(&self) -> Vec<Arc<Pool>> {
        lock(&self.pools).values().cloned().collect()
    }
}

/// The invocation service. Cheap to clone.
#[derive(Clone)]
pub struct Invoker {
    inner: Arc<Inner>,
}

/// One message of a streamed invocation, in order: `Start`, any number of `Chunk`s, `End`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMsg {
    Start {
        content_type: Option<String>,
        executed_version: String,
        /// False when the runtime answered in one piece (it arrives as a single chunk).
        streamed: bool,
    },
    Chunk(Bytes),
    /// `error` is the error type and body when the function failed (before or during the
    /// stream); `log_tail` the last 4 KB of the log when asked for.
    End {
        error: Option<(String, Bytes)>,
        log_tail: Option<String>,
    },
}

/// An invocation whose answer is being read as it is produced.
#[derive(Debug)]
pub struct Streamed {
    pub content_type: Option<String>,
    pub executed_version: String,
    pub streamed: bool,
    /// The chunks, then `End`.
    pub messages: mpsc::Receiver<StreamMsg>,
}

impl Invoker {
    /// Builds the invoker and starts its background tasks (idle reaper, async queue).
    pub fn start(config: InvokerConfig, store: Store, catalogue: Catalogue, backend: Arc<dyn Backend>) -> Self {
        let sink = store.logs.start_writer();
        let _ = std::fs::remove_dir_all(&config.envs_dir);
        let account = Arc::new(Account::new(config.account_concurrency));
        if let Some(c) = &config.cluster {
            // A fair share until the first grant arrives.
            account.grant.store((config.account_concurrency / c.0.live_nodes().max(1)).max(1), Ordering::Release);
        }
        match store.run_now(|db| db.all_reserved()) {
            Ok(all) => {
                let sum: usize = all.iter().map(|(_, r)| *r as usize).sum();
                account.reserved_sum.store(sum, Ordering::Release);
            }
            Err(e) => tracing::error!(error = %e, "cannot read reserved concurrency"),
        }
        let exporter = config.otlp.clone().map(|(url, service)| otel::Exporter::start(url, service));
        let meter = meter::Meter { ledger: config.metering.then(|| store.ledger.clone()), exporter };
        let inner = Arc::new(Inner {
            meter,
            config,
            store,
            sink,
            catalogue,
            backend,
            functions: std::sync::Mutex::new(HashMap::new()),
            account,
            queue: queue::Queue::default(),
            provisioned: provisioned::Provisioner::default(),
        });
        let invoker = Self { inner };
        if let Some(c) = invoker.inner.config.cluster.clone() {
            invoker.spawn_grants(c);
        }
        invoker.spawn_reaper();
        invoker.spawn_freezer();
        queue::spawn_dispatcher(invoker.clone());
        provisioned::spawn(invoker.clone());
        invoker
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.inner.catalogue
    }

    pub fn scope(&self) -> &Scope {
        &self.inner.config.scope
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<ClusterHandle> {
        self.inner.config.cluster.clone()
    }

    /// Every pool of every function.
    fn all_pools(inner: &Inner) -> Vec<Arc<Pool>> {
        let states: Vec<Arc<FunctionState>> = lock(&inner.functions).values().cloned().collect();
        states.iter().flat_map(|s| s.all_pools()).collect()
    }

    fn state(&self, function: &str) -> Arc<FunctionState> {
        let cfg = &self.inner.config;
        lock(&self.inner.functions)
            .entry(function.to_string())
            .or_insert_with(|| {
                Arc::new(FunctionState {
                    concurrency: Arc::default(),
                    reserved: std::sync::Mutex::new(None),
                    pools: std::sync::Mutex::new(HashMap::new()),
                    aliases: std::sync::Mutex::new(HashMap::new()),
                    event_configs: std::sync::Mutex::new(HashMap::new()),
                    epoch: AtomicU64::new(0),
                    scaling: std::sync::Mutex::new(ScalingRate::new(cfg.scaling_burst, cfg.scaling_window)),
                    async_slots: std::sync::Mutex::new((0, Arc::new(tokio::sync::Semaphore::new(1)))),
                })
            })
            .clone()
    }

    /// In a cluster, keeps this node's grant of the account's unreserved concurrency sized to
    /// its demand: every second it asks for twice its peak (and what it refused) plus a little
    /// room, and gets what the other nodes' grants leave. It never asks for less than it runs,
    /// and others take only what no grant holds, so the invocations running on all nodes
    /// never add up to more than the account's limit. Until the first answer, and after 6 s
    /// without one, it holds a fair share (the limit over the live nodes).
    fn spawn_grants(&self, cluster: ClusterHandle) {
        let weak = Arc::downgrade(&self.inner);
        let account_id = self.inner.config.scope.account.clone();
        tokio::spawn(async move {
            let mut last_ok = std::time::Instant::now();
            loop {
                let Some(inner) = weak.upgrade() else { break };
                let a = inner.account.clone();
                drop(inner);
                let limit = a.unreserved();
                let nodes = cluster.0.live_nodes().max(1);
                let fair = (limit / nodes).max(1);
                let peak = a.peak.swap(a.unreserved_in_flight.load(Ordering::Acquire), Ordering::AcqRel);
                let refused = a.refused.swap(0, Ordering::AcqRel);
                // Room for a little more than was used, small next to the limit so idle nodes
                // do not hold what busy ones need.
                let room = (limit / (4 * nodes)).clamp(1, 8);
                let want = (2 * (peak + refused) + room).min(limit);
                match cluster.0.grant(&account_id, want, limit).await {
                    Some(g) => {
                        a.grant.store(g, Ordering::Release);
                        last_ok = std::time::Instant::now();
                    }
                    None if last_ok.elapsed() > Duration::from_secs(6) => a.grant.store(fair, Ordering::Release),
                    None if a.grant.load(Ordering::Acquire) == usize::MAX => a.grant.store(fair, Ordering::Release),
                    None => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn spawn_reaper(&self) {
        let weak = Arc::downgrade(&self.inner);
        let keep_alive = self.inner.config.keep_alive;
        let period = (keep_alive / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { break };
                for pool in Self::all_pools(&inner) {
                    let n = pool.reap(keep_alive);
                    if n > 0 {
                        tracing::debug!(function = %pool.blueprint.config.name, stopped = n, "stopped idle environments");
                    }
                }
            }
        });
    }

    fn spawn_freezer(&self) {
        let Some(after) = self.inner.config.freeze_after else { return };
        if after.is_zero() {
            return; // frozen on release instead
        }
        let weak = Arc::downgrade(&self.inner);
        let period = (after / 2).max(Duration::from_millis(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { break };
                for pool in Self::all_pools(&inner) {
                    pool.freeze_idle(after);
                }
            }
        });
    }

    /// Drops cached state of `function` after its code, configuration, versions or aliases
    /// changed: idle environments stop now, busy ones when their invocation ends (so in-flight
    /// invocations finish on the old code).
    pub fn invalidate(&self, function: &str) {
        let state = lock(&self.inner.functions).get(function).cloned();
        if let Some(st) = state {
            st.epoch.fetch_add(1, Ordering::AcqRel);
            let pools: Vec<Arc<Pool>> = lock(&st.pools).drain().map(|(_, p)| p).collect();
            lock(&st.aliases).clear();
            lock(&st.event_configs).clear();
            for p in pools {
                p.retire();
            }
        }
        self.inner.provisioned.changed();
    }

    /// The asynchronous-invocation settings of a qualifier (cached; defaults if none).
    pub async fn event_invoke_config(&self, function: &str, qualifier: &str) -> model::versions::EventInvokeConfig {
        let st = self.state(function);
        if let Some(c) = lock(&st.event_configs).get(qualifier) {
            return c.clone();
        }
        let (f, q) = (function.to_string(), qualifier.to_string());
        let found =
            self.inner.store.run(move |db| db.get_event_invoke_config(&f, &q)).await.ok().flatten().unwrap_or_default();
        lock(&st.event_configs).insert(qualifier.to_string(), found.clone());
        found
    }

    /// A provisioned-concurrency configuration changed.
    pub fn invalidate_provisioned(&self) {
        self.inner.provisioned.changed();
    }

    /// Forgets cached asynchronous-invocation settings after a change.
    pub fn invalidate_event_configs(&self, function: &str) {
        if let Some(st) = lock(&self.inner.functions).get(function) {
            lock(&st.event_configs).clear();
        }
    }

    /// The dead-letter target of the version a qualifier names.
    async fn dead_letter_target(&self, function: &str, qualifier: &str) -> Option<String> {
        let st = self.state(function);
        let version = self.resolve(function, &st, Some(qualifier)).await.ok()?;
        let pool = self.pool_for(function, &st, &version).await.ok()?;
        pool.blueprint.config.dead_letter_target.clone()
    }

    /// The semaphore bounding a function's async deliveries, sized to its concurrency now.
    async fn async_slots(&self, function: &str) -> Arc<tokio::sync::Semaphore> {
        let st = self.state(function);
        let cap = self.inner.config.max_envs_per_function.min(self.inner.config.account_concurrency);
        let size = match self.reserved(function, &st).await {
            Ok(Some(r)) => (r as usize).clamp(1, cap.max(1)),
            _ => cap.max(1),
        };
        let mut slots = lock(&st.async_slots);
        if slots.0 != size {
            *slots = (size, Arc::new(tokio::sync::Semaphore::new(size)));
        }
        slots.1.clone()
    }

    /// The reservation as the invoker currently knows it.
    async fn reserved_now(&self, function: &str) -> Option<u32> {
        let st = self.state(function);
        self.reserved(function, &st).await.ok().flatten()
    }

    /// Another node changed `function` (or deleted it): drops everything cached of it, its
    /// reservation included, and recounts the account's reservations from the store.
    pub fn reload(&self, function: &str) {
        // Not `forget`: invocations in flight keep counting against the same counters.
        self.invalidate(function);
        self.reload_reserved(function);
    }

    /// Another node changed `function`'s reserved concurrency: reads it (and the account's
    /// sum of reservations) again, leaving its environments alone.
    pub fn reload_reserved(&self, function: &str) {
        if let Some(st) = lock(&self.inner.functions).get(function) {
            *lock(&st.reserved) = None;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.inner.store.run(|db| db.all_reserved()).await {
                Ok(all) => {
                    let sum: usize = all.iter().map(|(_, r)| *r as usize).sum();
                    this.inner.account.reserved_sum.store(sum, Ordering::Release);
                }
                Err(e) => tracing::warn!(error = %e, "cannot recount reserved concurrency"),
            }
        });
    }

    /// Invocations running on this node now, in every function of the account.
    pub fn in_flight(&self) -> usize {
        let states: Vec<Arc<FunctionState>> = lock(&self.inner.functions).values().cloned().collect();
        states.iter().map(|s| s.concurrency.in_flight.load(Ordering::Acquire)).sum()
    }

    /// Forgets a deleted function entirely.
    pub fn forget(&self, function: &str) {
        self.invalidate(function);
        lock(&self.inner.functions).remove(function);
    }

    /// Records a changed reservation (the store has it already).
    pub fn set_reserved(&self, function: &str, old: Option<u32>, new: Option<u32>) {
        let sum = &self.inner.account.reserved_sum;
        sum.fetch_sub(old.unwrap_or(0) as usize, Ordering::AcqRel);
        sum.fetch_add(new.unwrap_or(0) as usize, Ordering::AcqRel);
        *lock(&self.state(function).reserved) = Some(new);
    }

    /// The account's limit and what its reservations leave unreserved.
    pub fn account_concurrency(&self) -> (usize, usize) {
        (self.inner.account.limit, self.inner.account.unreserved())
    }

    /// Stops every environment (at shutdown).
    pub fn shutdown(&self) {
        for p in Self::all_pools(&self.inner) {
            p.retire();
        }
    }

    /// Sets the gauges (concurrency, provisioned utilisation) from the invoker's state; called
    /// when the metrics are read.
    pub fn update_gauges(&self) {
        let account = self.inner.config.scope.account.clone();
        let states: Vec<(String, Arc<FunctionState>)> =
            lock(&self.inner.functions).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (function, st) in states {
            let in_flight = st.concurrency.in_flight.load(Ordering::Acquire);
            metrics::gauge!(meter::CONCURRENT_EXECUTIONS, "account" => account.clone(), "function" => function.clone())
                .set(in_flight as f64);
            for pool in st.all_pools() {
                let provisioned = pool.provisioned_count();
                if provisioned == 0 {
                    continue;
                }
                let busy = provisioned.saturating_sub(pool.idle_provisioned());
                let labels = [
                    ("account", account.clone()),
                    ("function", function.clone()),
                    ("version", pool.blueprint.config.version.clone()),
                ];
                metrics::gauge!(meter::PROVISIONED_CONCURRENT_EXECUTIONS, &labels).set(busy as f64);
                metrics::gauge!(meter::PROVISIONED_UTILIZATION, &labels).set(busy as f64 / provisioned as f64);
            }
        }
    }

    /// Waits until every ledger row of the invocations finished so far is on disk.
    pub async fn flush_ledger(&self) {
        if let Some(l) = &self.inner.meter.ledger {
            l.flush().await;
        }
    }

    /// Environments alive for `function` (idle, busy or starting), how many are idle, and how
    /// many are provisioned.
    pub fn environments(&self, function: &str) -> (usize, usize, usize) {
        let state = lock(&self.inner.functions).get(function).cloned();
        state
            .map(|st| {
                st.all_pools().iter().fold((0, 0, 0), |(l, i, p), pool| {
                    (l + pool.live(), i + pool.idle_count(), p + pool.provisioned_count())
                })
            })
            .unwrap_or((0, 0, 0))
    }

    fn not_found(&self, name: &str, qualifier: Option<&str>) -> LambdaError {
        let scope = &self.inner.config.scope;
        LambdaError::not_found(format!(
            "Function not found: {}",
            scope.qualified_arn(name, qualifier.unwrap_or(model::LATEST))
        ))
    }

    /// The pool serving one version of a function, built from the store on a cache miss.
    async fn pool_for(&self, name: &str, st: &FunctionState, version: &str) -> Result<Arc<Pool>, LambdaError> {
        loop {
            if let Some(p) = lock(&st.pools).get(version) {
                return Ok(p.clone());
            }
            let epoch = st.epoch.load(Ordering::Acquire);
            let (n, v) = (name.to_string(), version.to_string());
            let (config, tags) = self
                .inner
                .store
                .run(move |db| Ok(db.get_version(&n, &v)?.zip(db.tags(&n)?)))
                .await
                .map_err(|e| LambdaError::service(format!("cannot read the function: {e}")))?
                .ok_or_else(|| self.not_found(name, Some(version)))?;
            // In a cluster, the package may not be on this node yet.
            let mut packages = vec![config.code_sha256.clone()];
            packages.extend(config.layers.iter().map(|l| l.code_sha256.clone()));
            self.inner
                .store
                .ensure_code(&packages)
                .await
                .map_err(|e| LambdaError::service(format!("cannot fetch the function's code: {e}")))?;
            let pool = Arc::new(Pool::new(self.blueprint(config, &tags)?, self.inner.config.max_envs_per_function));
            let mut pools = lock(&st.pools);
            if st.epoch.load(Ordering::Acquire) != epoch {
                continue; // changed while we read it; read again
            }
            return Ok(pools.entry(version.to_string()).or_insert(pool).clone());
        }
    }

    /// The alias `alias` of `name`, from the cache or the store.
    async fn alias(&self, name: &str, st: &FunctionState, alias: &str) -> Result<Arc<AliasConfig>, LambdaError> {
        if let Some(a) = lock(&st.aliases).get(alias) {
            return Ok(a.clone());
        }
        let epoch = st.epoch.load(Ordering::Acquire);
        let (n, a) = (name.to_string(), alias.to_string());
        let found = self
            .inner
            .store
            .run(move |db| db.get_alias(&n, &a))
            .await
            .map_err(|e| LambdaError::service(format!("cannot read the alias: {e}")))?;
        let function_arn = self.inner.config.scope.function_arn(name);
        let Some(config) = found else {
            return Err(model::versions::no_such_qualifier(&function_arn, &Qualifier::Alias(alias.to_string())));
        };
        let config = Arc::new(config);
        if st.epoch.load(Ordering::Acquire) == epoch {
            lock(&st.aliases).insert(alias.to_string(), config.clone());
        }
        Ok(config)
    }

    /// The version an invocation of `qualifier` runs (an alias picks by its weights).
    async fn resolve(&self, name: &str, st: &FunctionState, qualifier: Option<&str>) -> Result<String, LambdaError> {
        match Qualifier::parse(qualifier) {
            Qualifier::Latest => Ok(model::LATEST.to_string()),
            Qualifier::Version(n) => Ok(n.to_string()),
            Qualifier::Alias(a) => Ok(self.alias(name, st, &a).await?.pick(fastrand::f64()).to_string()),
        }
    }

    /// The reservation of a function, read once and then cached.
    async fn reserved(&self, name: &str, st: &FunctionState) -> Result<Option<u32>, LambdaError> {
        if let Some(r) = *lock(&st.reserved) {
            return Ok(r);
        }
        let n = name.to_string();
        let r = self
            .inner
            .store
            .run(move |db| db.reserved_concurrency(&n))
            .await
            .map_err(|e| LambdaError::service(format!("cannot read the function: {e}")))?
            .ok_or_else(|| self.not_found(name, None))?;
        *lock(&st.reserved) = Some(r);
        Ok(r)
    }

    fn blueprint(
        &self,
        config: FunctionConfig,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<Blueprint>, LambdaError> {
        let cfg = &self.inner.config;
        let code_dir = self.inner.store.code.tree(&config.code_sha256);
        // Paths only matter for the launch command's own files (the bootstrap scripts), which
        // every backend shows at the layout's runtime directory.
        let layout = self.inner.backend.layout(&sandbox::Mounts {
            task_root: code_dir.clone(),
            runtime_dir: cfg.runtime_dir.clone(),
            opt: None,
            tmp: cfg.envs_dir.clone(),
            extra_ro: Vec::new(),
        });
        let launch = self.inner.catalogue.launch(
            &config.runtime,
            &Paths { task_root: &layout.task_root, runtime_dir: &layout.runtime_dir, opt: &layout.opt },
        )?;
        let host_dirs = self.inner.catalogue.get(&config.runtime)?.host_dirs();
        let layer_shas: Vec<String> = config.layers.iter().map(|l| l.code_sha256.clone()).collect();
        let opt_dir = self
            .inner
            .store
            .code
            .opt_tree(&layer_shas)
            .map_err(|e| LambdaError::service(format!("cannot prepare the function's layers: {e}")))?;
        Ok(Arc::new(Blueprint {
            host_dirs,
            opt_dir,
            isolated_network: tags.get(NETWORK_TAG).is_some_and(|v| v == "isolated"),
            arn: cfg.scope.function_arn(&config.name),
            config: Arc::new(config),
            scope: cfg.scope.clone(),
            code_dir,
            runtime_dir: cfg.runtime_dir.clone(),
            envs_dir: cfg.envs_dir.clone(),
            launch,
            init_timeout: cfg.init_timeout,
            runtime_api_ip: cfg.runtime_api_ip,
            service_env: cfg.service_env.clone(),
            metrics: std::sync::OnceLock::new(),
        }))
    }

    /// Runs one synchronous invocation. Function errors are results, not `Err`; `Err` is for
    /// the caller's mistakes and throttling. A streamed response is collected (up to 6 MB).
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResult, LambdaError> {
        self.invoke_with(req, None).await.map(|(result, _)| result)
    }

    /// Runs one invocation whose answer is read as it is produced: `Start` arrives as soon as
    /// the runtime begins a streamed response (or, for a buffered one, once it is complete),
    /// then the chunks, then `End`. `Err` is for the caller's mistakes and throttling, as for
    /// [`Invoker::invoke`].
    pub async fn invoke_stream(&self, req: InvokeRequest) -> Result<Streamed, LambdaError> {
        self.stream_with(req, None).await
    }

    /// [`Invoker::invoke_stream`], here as `version` when given (a forwarded invocation).
    async fn stream_with(&self, req: InvokeRequest, version: Option<String>) -> Result<Streamed, LambdaError> {
        let (tx, mut rx) = mpsc::channel(8);
        let (fail_tx, fail_rx) = oneshot::channel::<LambdaError>();
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = match version {
                Some(v) => {
                    let st = this.state(&req.function);
                    this.run_here(req, Some(tx.clone()), st, v).await
                }
                None => this.invoke_with(req, Some(tx.clone())).await,
            };
            match outcome {
                Err(e) => {
                    let _ = fail_tx.send(e);
                }
                Ok((res, streamed)) => {
                    if !streamed {
                        let start = StreamMsg::Start {
                            content_type: res.content_type.clone(),
                            executed_version: res.executed_version.clone(),
                            streamed: false,
                        };
                        let _ = tx.send(start).await;
                        if res.function_error.is_none() {
                            let _ = tx.send(StreamMsg::Chunk(res.payload.clone())).await;
                        }
                    }
                    let error = res.function_error.map(|_| {
                        let error_type = serde_json::from_slice::<serde_json::Value>(&res.payload)
                            .ok()
                            .and_then(|v| v.get("errorType").and_then(|t| t.as_str()).map(str::to_string))
                            .unwrap_or_else(|| "Unhandled".into());
                        (error_type, res.payload)
                    });
                    let _ = tx.send(StreamMsg::End { error, log_tail: res.log_tail }).await;
                }
            }
        });
        match rx.recv().await {
            Some(StreamMsg::Start { content_type, executed_version, streamed }) => {
                Ok(Streamed { content_type, executed_version, streamed, messages: rx })
            }
            Some(_) => Err(LambdaError::service("the invocation's stream began without its start")),
            None => {
                Err(fail_rx.await.unwrap_or_else(|_| LambdaError::service("the invocation ended without an answer")))
            }
        }
    }

    /// The invocation path; with `sink`, a streamed response is forwarded there as it comes
    /// (and the boolean says it was).
    async fn invoke_with(
        &self,
        req: InvokeRequest,
        sink: Option<mpsc::Sender<StreamMsg>>,
    ) -> Result<(InvokeResult, bool), LambdaError> {
        let st = self.state(&req.function);
        let version = self.resolve(&req.function, &st, req.qualifier.as_deref()).await?;
        if let Some(cluster) = &self.inner.config.cluster {
            let key = format!("{}/{}/{version}", self.inner.config.scope.account, req.function);
            let ranked = cluster.0.rank(&key);
            if ranked.first().is_some_and(|p| !p.local) {
                let reserved = self.reserved(&req.function, &st).await?;
                return self.forward(cluster, ranked, &version, req, reserved, sink).await;
            }
        }
        self.run_here(req, sink, st, version).await
    }

    /// Runs an invocation another node forwarded here, as version `version` (which the
    /// forwarding node picked when it resolved the qualifier).
    pub async fn invoke_forwarded(&self, req: InvokeRequest, version: String) -> Result<InvokeResult, LambdaError> {
        let st = self.state(&req.function);
        self.run_here(req, None, st, version).await.map(|(r, _)| r)
    }

    /// As [`Invoker::invoke_forwarded`], with the answer read as it is produced (as
    /// [`Invoker::invoke_stream`]).
    pub async fn invoke_forwarded_stream(&self, req: InvokeRequest, version: String) -> Result<Streamed, LambdaError> {
        self.stream_with(req, Some(version)).await
    }

    /// Sends an invocation to the nodes `ranked` prefers, in order: the owner first; the next
    /// ones when the owner cannot be reached, or (for a function without reserved concurrency,
    /// whose limit the owner alone enforces) when it is full.
    async fn forward(
        &self,
        cluster: &ClusterHandle,
        ranked: Vec<cluster::Peer>,
        version: &str,
        req: InvokeRequest,
        reserved: Option<u32>,
        sink: Option<mpsc::Sender<StreamMsg>>,
    ) -> Result<(InvokeResult, bool), LambdaError> {
        let account = &self.inner.config.scope.account;
        let mut refused = None;
        for peer in ranked.iter().take(3) {
            let outcome = match (&sink, peer.local) {
                (_, true) => {
                    let st = self.state(&req.function);
                    self.run_here(req.clone(), sink.clone(), st, version.to_string()).await
                }
                (Some(sink), false) => {
                    cluster.0.forward_stream(peer, account, version, &req, sink).await.map(|r| (r, true))
                }
                (None, false) => cluster.0.forward(peer, account, version, &req).await.map(|r| (r, false)),
            };
            match outcome {
                Err(e) if e.code == model::ErrorCode::Service && e.message.starts_with(UNREACHABLE) => {
                    tracing::warn!(node = %peer.node_id, error = %e.message, "a node could not be reached; trying the next");
                    refused.get_or_insert(e);
                }
                Err(e) if reserved.is_none() && e.reason == Some(ThrottleReason::ConcurrentInvocationLimitExceeded) => {
                    refused = Some(e);
                }
                other => return other,
            }
        }
        Err(refused.unwrap_or_else(|| LambdaError::service("no node could run the invocation")))
    }

    /// Runs an invocation on this node.
    async fn run_here(
        &self,
        req: InvokeRequest,
        sink: Option<mpsc::Sender<StreamMsg>>,
        st: Arc<FunctionState>,
        version: String,
    ) -> Result<(InvokeResult, bool), LambdaError> {
        let pool = self.pool_for(&req.function, &st, &version).await?;
        let reserved = self.reserved(&req.function, &st).await?;
        let bp = pool.blueprint.clone();
        let meter = &self.inner.meter;
        let _permit = admission::admit(&self.inner.account, &st.concurrency, reserved)
            .inspect_err(|_| meter.throttled(&bp, &req.request_id, req.trigger))?;
        let traced = meter.trace(req.trace.as_deref());
        let invoked_arn = match &req.qualifier {
            Some(q) => format!("{}:{q}", bp.arn),
            None => bp.arn.clone(),
        };
        let mut env = match pool.acquire() {
            Slot::Warm(env) => env,
            Slot::Full => {
                meter.throttled(&bp, &req.request_id, req.trigger);
                return Err(LambdaError::throttled(ThrottleReason::ConcurrentInvocationLimitExceeded));
            }
            Slot::Cold if !lock(&st.scaling).try_start() => {
                pool.forget();
                meter.throttled(&bp, &req.request_id, req.trigger);
                return Err(LambdaError::throttled(ThrottleReason::FunctionInvocationRateLimitExceeded));
            }
            Slot::Cold => {
                match Environment::start(
                    bp.clone(),
                    self.inner.backend.as_ref(),
                    self.inner.sink.clone(),
                    &req.request_id,
                    req.tail,
                    false,
                )
                .await
                {
                    Ok(env) => env,
                    Err(start) => {
                        pool.forget();
                        tracing::info!(function = %bp.config.name, request_id = %req.request_id, error = %start.failure.error_type, "environment failed to start");
                        let report = start.report.unwrap_or_else(|| model::logfmt::Report {
                            request_id: req.request_id.clone(),
                            duration: Duration::ZERO,
                            memory_mb: bp.config.memory_mb,
                            max_memory_used_mb: 0,
                            init_duration: None,
                            status: model::logfmt::ReportStatus::Error(start.failure.error_type.clone()),
                        });
                        meter.ran(
                            &bp,
                            &req.request_id,
                            req.trigger,
                            &report,
                            meter::outcome(&report, true),
                            true,
                            &traced,
                        );
                        let result = InvokeResult {
                            payload: start.failure.body,
                            function_error: Some("Unhandled"),
                            executed_version: bp.config.version.clone(),
                            log_tail: start.log_tail,
                            content_type: Some("application/json".into()),
                        };
                        return Ok((result, false));
                    }
                }
            }
        };
        let done = env
            .invoke(
                &req.request_id,
                &invoked_arn,
                traced.header(),
                req.payload,
                req.client_context,
                req.tail,
                sink.as_ref(),
            )
            .await;
        tracing::debug!(function = %bp.config.name, "{}", done.report.line());
        let outcome = meter::outcome(&done.report, done.result.is_err());
        meter.ran(&bp, &req.request_id, req.trigger, &done.report, outcome, false, &traced);
        if !done.reusable {
            tracing::info!(function = %bp.config.name, request_id = %req.request_id, env = env.id, "environment stopped after a failed invocation");
        }
        if self.inner.config.freeze_after == Some(Duration::ZERO) && done.reusable {
            env.freeze();
        }
        pool.release(env, done.reusable);
        let (payload, function_error, content_type) = match done.result {
            Ok((body, ct)) => (body, None, ct),
            Err(f) => (f.body, Some("Unhandled"), Some("application/json".into())),
        };
        let result = InvokeResult {
            payload,
            function_error,
            executed_version: bp.config.version.clone(),
            log_tail: done.log_tail,
            content_type,
        };
        Ok((result, done.streamed))
    }

    /// Accepts an asynchronous (Event) invocation: it is committed to the queue before this
    /// returns, and delivered by the dispatcher.
    /// `trace` is the sender's `X-Amzn-Trace-Id` (the invocation joins it); `trigger` says
    /// what sent the event when it was not an Invoke call.
    pub async fn enqueue(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: Bytes,
        request_id: &str,
        trace: Option<String>,
        trigger: Trigger,
    ) -> Result<(), LambdaError> {
        // The qualifier must name something now; which version runs is decided at delivery.
        let st = self.state(function);
        let version = self.resolve(function, &st, qualifier).await?;
        self.pool_for(function, &st, &version).await?;
        let now = model::logfmt::now_ms();
        let event = store::AsyncEvent {
            id: 0,
            request_id: request_id.to_string(),
            function: function.to_string(),
            qualifier: qualifier.map(str::to_string),
            payload: payload.to_vec(),
            received_ms: now,
            attempts: 0,
            next_attempt_ms: now,
            trace,
            trigger: (trigger != Trigger::Async).then(|| trigger.as_str().to_string()),
            delivery: None,
        };
        match self.inner.store.queue.insert(event).await {
            Ok(_) => {
                meter::async_received(&self.inner.config.scope.account, function);
                self.inner.queue.notify();
                Ok(())
            }
            Err(store::StoreError::NotFound) => Err(self.not_found(function, qualifier)),
            Err(e) => Err(LambdaError::service(format!("cannot queue the event: {e}"))),
        }
    }

    /// Wakes the async dispatcher after events were queued directly in the store (a
    /// schedule's tick is queued in the same transaction that records it).
    pub fn notify_queue(&self) {
        self.inner.queue.notify();
    }

    /// Used by the async dispatcher.
    fn invoke_async(
        &self,
        ev: &store::AsyncEvent,
    ) -> impl std::future::Future<Output = Result<InvokeResult, LambdaError>> + Send + 'static {
        let this = self.clone();
        let req = InvokeRequest {
            function: ev.function.clone(),
            qualifier: ev.qualifier.clone(),
            payload: Bytes::from(ev.payload.clone()),
            tail: false,
            client_context: None,
            request_id: ev.request_id.clone(),
            trigger: ev.trigger.as_deref().and_then(Trigger::parse).unwrap_or(Trigger::Async),
            trace: ev.trace.clone(),
        };
        async move {
            // Deliveries wait their turn for the function's concurrency instead of being
            // throttled by their own dispatcher.
            let slots = this.async_slots(&req.function).await;
            let _slot = slots.acquire_owned().await;
            this.invoke(req).await
        }
    }
}
