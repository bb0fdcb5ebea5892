//! Cluster mode: several `stratus serve` processes acting as one platform, on PostgreSQL (the
//! state, membership and leases: the one arbiter every node agrees on) and NATS (signals
//! between nodes). This crate is the node's view of the cluster:
//!
//! - **Membership**: the node registers its incarnation, heartbeats every second, and
//!   declares dead any node silent for `store::pg::cluster::DEAD_AFTER` (releasing, in the
//!   same transaction, the async events it had claimed and the leases it held).
//! - **Placement**: rendezvous hashing over the live nodes ranks them for a key (an account's
//!   function version), the same way on every node, so invocations of one version meet on
//!   one node and reuse its warm environments.
//! - **Forwarding**: an invocation is sent to its owner over HTTP, signed with a key every node
//!   reads from the database ([`hop`]).
//! - **Leases** for singletons (a mapping's poller), with tokens that fence their writes.
//! - **Changes**: a control-plane write through one node is published on NATS so the others
//!   drop what they cached.
//!
//! It implements [`invoke::cluster::Cluster`], which is all the invocation path and the
//! triggers know of it. It must not run functions or know Lambda's wire shapes.

pub mod hop;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use invoke::cluster::{Change, Cluster, Peer};
use model::LambdaError;
use model::invoke::{InvokeRequest, InvokeResult};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::ClusterStores;
use store::pg::cluster::DEAD_AFTER;

/// How often a node heartbeats and looks at the others.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// The longest a membership or lease statement may take before it counts as failed (a
/// database cut off must not stall a lease holder past the moment it has to stop).
const DB_CALL: Duration = Duration::from_secs(3);

/// `f`, or an error if it takes longer than [`DB_CALL`].
async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, store::StoreError>>,
) -> Result<T, store::StoreError> {
    tokio::time::timeout(DB_CALL, f)
        .await
        .unwrap_or_else(|_| Err(store::StoreError::Config("the database did not answer in time".into())))
}

/// The NATS subject of control-plane changes.
const CHANGES: &str = "stratus.changes";

/// How a node joins.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `postgres://…` of the cluster's database.
    pub database_url: String,
    /// `nats://…` of the cluster's NATS servers.
    pub nats_url: String,
    /// This node's stable id (kept in its data directory).
    pub node_id: String,
    /// This node's API as the other nodes reach it (`http://host:port`).
    pub address: String,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use the cluster's database")]
    Store(#[from] store::StoreError),
    #[error("cannot reach NATS: {0}")]
    Nats(String),
}

/// A live node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    node_id: String,
    address: String,
}

type ChangeHandler = Box<dyn Fn(Change) + Send + Sync>;
type LoadReport = Box<dyn Fn() -> Value + Send + Sync>;

struct Inner {
    node_id: String,
    incarnation: String,
    address: String,
    stores: ClusterStores,
    /// Signs and checks node-to-node requests.
    hop_key: Vec<u8>,
    http: reqwest::Client,
    /// The live, non-draining nodes, this one included unless it drains.
    members: RwLock<Arc<Vec<Member>>>,
    /// Every node still running (live or draining): an invocation forwarded to one of these
    /// is waited for.
    running: RwLock<std::collections::HashSet<String>>,
    nats: async_nats::Client,
    draining: AtomicBool,
    /// What this node holds, by kind (`mappings`, `schedules`), for status reports.
    holdings: Mutex<BTreeMap<String, BTreeSet<String>>>,
    on_change: OnceLock<ChangeHandler>,
    load: OnceLock<LoadReport>,
    /// Nodes a forwarded invocation could not reach lately, by when: placement passes over
    /// them until [`SUSPECT_FOR`] has passed (or the heartbeats show them gone).
    suspects: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The last change of the change log this node has looked at, and the ones it applied
    /// from NATS after it (not applied twice: a second invalidation would retire a new pool).
    changes_seen: Mutex<(i64, BTreeSet<i64>)>,
}

/// How long a node that could not be reached is passed over.
const SUSPECT_FOR: Duration = Duration::from_secs(3);

/// This node's membership of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The rendezvous score of `node` for `key`: the same on every node (no per-process seed).
fn score(node: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl Node {
    /// Connects to the database (migrating it) and NATS, registers this node and starts its
    /// heartbeat and the change listener.
    pub async fn join(config: ClusterConfig) -> Result<Self, ClusterError> {
        let incarnation = format!("{}-{}", config.node_id, uuid::Uuid::new_v4().simple());
        let stores = ClusterStores::connect(&config.database_url, &incarnation).await?;
        let hop_key = stores.pool.secret("node-hop-key", random_key()).await?;
        let nats = async_nats::ConnectOptions::new()
            .name(format!("stratus {}", config.node_id))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        stores.pool.register_node(&incarnation, &config.node_id, &config.address).await?;
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClusterError::Nats(format!("cannot build the node-to-node client: {e}")))?;
        let me = Member { node_id: config.node_id.clone(), address: config.address.clone() };
        let node = Self {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                incarnation,
                address: config.address,
                stores,
                hop_key,
                http,
                members: RwLock::new(Arc::new(vec![me])),
                running: RwLock::new(std::collections::HashSet::new()),
                nats,
                draining: AtomicBool::new(false),
                holdings: Mutex::new(BTreeMap::new()),
                on_change: OnceLock::new(),
                load: OnceLock::new(),
                suspects: Mutex::new(std::collections::HashMap::new()),
                changes_seen: Mutex::new((0, BTreeSet::new())),
            }),
        };
        node.refresh().await;
        let last = node.inner.stores.pool.last_change().await?;
        lock(&node.inner.changes_seen).0 = last;
        tokio::spawn(node.clone().heartbeats());
        tokio::spawn(node.clone().listen());
        tracing::info!(node = %node.inner.node_id, incarnation = %node.inner.incarnation, address = %node.inner.address, "joined the cluster");
        Ok(node)
    }

    /// What every account of this node shares in the cluster's database.
    pub fn stores(&self) -> &ClusterStores {
        &self.inner.stores
    }

    /// This run's incarnation (a restart is a new one).
    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

    /// Sets what to do when another node reports a change (drop cached state).
    pub fn on_change(&self, handler: impl Fn(Change) + Send + Sync + 'static) {
        let _ = self.inner.on_change.set(Box::new(handler));
    }

    /// Sets how this node describes its load in its heartbeat.
    pub fn report_load(&self, load: impl Fn() -> Value + Send + Sync + 'static) {
        let _ = self.inner.load.set(Box::new(load));
    }

    fn hop(&self) -> hop::Hop<'_> {
        hop::Hop { http: &self.inner.http, key: &self.inner.hop_key, node_id: &self.inner.node_id }
    }

    /// The key that signs node-to-node requests.
    pub fn hop_key(&self) -> &[u8] {
        &self.inner.hop_key
    }

    fn report(&self) -> String {
        let holds: serde_json::Map<String, Value> = lock(&self.inner.holdings)
            .iter()
            .map(|(kind, names)| {
                let v = if kind == "schedules" { json!(names.len()) } else { json!(names) };
                (kind.clone(), v)
            })
            .collect();
        let load = self.inner.load.get().map(|l| l()).unwrap_or(Value::Null);
        json!({ "load": load, "holds": holds }).to_string()
    }

    /// Reads the live nodes into the placement view.
    async fn refresh(&self) {
        let nodes = match self.inner.stores.pool.nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's members; keeping the last view");
                return;
            }
        };
        let draining = self.inner.draining.load(Ordering::Acquire);
        let running: std::collections::HashSet<String> = nodes
            .iter()
            .filter(|n| n.state != "dead" && n.silent_ms < DEAD_AFTER.as_millis() as i64)
            .map(|n| n.node_id.clone())
            .collect();
        *self.inner.running.write().unwrap_or_else(|p| p.into_inner()) = running;
        let mut members: Vec<Member> = nodes
            .into_iter()
            .filter(|n| n.state == "live" && n.silent_ms < DEAD_AFTER.as_millis() as i64)
            .filter(|n| n.incarnation != self.inner.incarnation || !draining)
            .map(|n| Member { node_id: n.node_id, address: n.address })
            .collect();
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        members.dedup_by(|a, b| a.node_id == b.node_id);
        if members.is_empty() && !draining {
            members.push(Member { node_id: self.inner.node_id.clone(), address: self.inner.address.clone() });
        }
        let changed = {
            let mut m = self.inner.members.write().unwrap_or_else(|p| p.into_inner());
            let changed = m.as_slice() != members.as_slice();
            *m = Arc::new(members);
            changed
        };
        if changed {
            let ids: Vec<String> = self.members().iter().map(|m| m.node_id.clone()).collect();
            tracing::info!(nodes = %ids.join(", "), "cluster members changed");
        }
    }

    fn members(&self) -> Arc<Vec<Member>> {
        self.inner.members.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn heartbeats(self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let state = if self.inner.draining.load(Ordering::Acquire) { "draining" } else { "live" };
            let pool = &self.inner.stores.pool;
            match bounded(pool.heartbeat(&self.inner.incarnation, state, &self.report())).await {
                Ok(true) => {}
                Ok(false) => {
                    // Declared dead while alive (paused, or cut off longer than DEAD_AFTER):
                    // what it held was released; it comes back as live and takes work anew.
                    tracing::warn!("this node was declared dead by the others; rejoining");
                    if let Err(e) =
                        pool.register_node(&self.inner.incarnation, &self.inner.node_id, &self.inner.address).await
                    {
                        tracing::error!(error = %e, "cannot rejoin the cluster");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot heartbeat to the cluster's database"),
            }
            match bounded(pool.declare_dead()).await {
                Ok(dead) => {
                    for incarnation in dead {
                        tracing::warn!(%incarnation, "declared a silent node dead; its claimed events and leases are released");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot look for dead nodes"),
            }
            self.refresh().await;
            self.catch_up().await;
        }
    }

    /// Applies the changes of the log this node has not applied yet (a NATS signal it
    /// missed, or one still on its way).
    async fn catch_up(&self) {
        let since = lock(&self.inner.changes_seen).0;
        let rows = match self.inner.stores.pool.changes_since(since, 1000).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the change log");
                return;
            }
        };
        for row in rows {
            let fresh = {
                let mut seen = lock(&self.inner.changes_seen);
                seen.0 = seen.0.max(row.seq);
                let applied = seen.1.remove(&row.seq);
                let floor = seen.0;
                seen.1.retain(|s| *s > floor);
                !applied
            };
            if fresh && row.origin != self.inner.incarnation {
                tracing::debug!(seq = row.seq, account = %row.account, path = %row.path, "applying a change a signal did not bring");
                if let Some(handler) = self.inner.on_change.get() {
                    handler(Change { account: row.account, function: row.function, path: row.path });
                }
            }
        }
    }

    async fn listen(self) {
        let mut sub = match self.inner.nats.subscribe(CHANGES).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to the cluster's changes; other nodes' writes reach this one's caches only as they expire");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Ok(signal) = serde_json::from_slice::<Signal>(&msg.payload) else { continue };
            if signal.origin == self.inner.incarnation {
                continue;
            }
            {
                let mut seen = lock(&self.inner.changes_seen);
                if signal.seq <= seen.0 || !seen.1.insert(signal.seq) {
                    continue; // the change log brought it already
                }
            }
            if let Some(handler) = self.inner.on_change.get() {
                handler(signal.change);
            }
        }
    }

    /// Marks this node draining: it leaves every ranking (invocations go elsewhere) and takes
    /// no new leases. Its heartbeat says so at once.
    pub async fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
        let _ = self.inner.stores.pool.heartbeat(&self.inner.incarnation, "draining", &self.report()).await;
        self.refresh().await;
    }

    /// Leaves the cluster after a clean stop: what it still holds is released at once.
    pub async fn leave(&self) {
        if let Err(e) = self.inner.stores.pool.leave(&self.inner.incarnation).await {
            tracing::warn!(error = %e, "cannot leave the cluster cleanly; the others will declare this node dead");
        }
    }

    /// The live nodes: (node id, address, whether it is this one).
    pub fn live_nodes(&self) -> Vec<(String, String, bool)> {
        let mut out: Vec<(String, String, bool)> = self
            .members()
            .iter()
            .map(|m| (m.node_id.clone(), m.address.clone(), m.node_id == self.inner.node_id))
            .collect();
        if !out.iter().any(|n| n.2) {
            out.push((self.inner.node_id.clone(), self.inner.address.clone(), true));
        }
        out
    }

    /// A page of a function's log as kept on another node (`{"events": [...], "cursor": ...}`).
    pub async fn peer_logs(
        &self,
        address: &str,
        account: &str,
        function: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Value, String> {
        let target = format!("{account}/{function}");
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let mut url =
            format!("{address}{}?account={}&function={}&limit={limit}", hop::LOGS_PATH, enc(account), enc(function));
        if let Some(c) = cursor {
            url.push_str(&format!("&cursor={}", enc(c)));
        }
        let mut r = self.inner.http.get(url).timeout(Duration::from_secs(10));
        for (k, v) in hop::sign_read(&self.inner.hop_key, &self.inner.node_id, &target) {
            r = r.header(k, v);
        }
        let resp = r.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        resp.json().await.map_err(|e| e.to_string())
    }

    /// The cluster as `GET /_stratus/cluster` and `stratus cluster status` show it.
    pub async fn status(&self) -> Result<Value, store::StoreError> {
        status(&self.inner.stores.pool).await
    }
}

/// The cluster's nodes as JSON: `{"nodes": [{"id", "address", "state", "load", "holds"}]}`.
pub async fn status(pool: &store::pg::PgPool) -> Result<Value, store::StoreError> {
    let nodes = pool.nodes().await?;
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|n| {
            let report: Value = serde_json::from_str(&n.report).unwrap_or(Value::Null);
            // A silent node is reported as it will be declared, before anyone does.
            let state =
                if n.state != "dead" && n.silent_ms >= DEAD_AFTER.as_millis() as i64 { "dead" } else { &n.state };
            let holds = if state == "dead" { json!({}) } else { report["holds"].clone() };
            json!({
                "id": n.node_id,
                "incarnation": n.incarnation,
                "address": n.address,
                "state": state,
                "last_heartbeat_ms_ago": n.silent_ms,
                "load": report["load"],
                "holds": holds,
            })
        })
        .collect();
    Ok(json!({ "nodes": nodes }))
}

fn random_key() -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    while k.len() < 32 {
        k.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    k.truncate(32);
    k
}

/// A change as published on NATS.
#[derive(serde::Serialize, serde::Deserialize)]
struct Signal {
    origin: String,
    /// Its place in the change log.
    seq: i64,
    change: Change,
}

#[async_trait]
impl Cluster for Node {
    fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    fn rank(&self, key: &str) -> Vec<Peer> {
        let members = self.members();
        let suspects: Vec<String> = {
            let mut s = lock(&self.inner.suspects);
            s.retain(|_, since| since.elapsed() < SUSPECT_FOR);
            s.keys().cloned().collect()
        };
        let mut ranked: Vec<(u64, &Member)> = members
            .iter()
            .filter(|m| !suspects.contains(&m.node_id) || m.node_id == self.inner.node_id)
            .map(|m| (score(&m.node_id, key), m))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.node_id.cmp(&b.1.node_id)));
        let mut out: Vec<Peer> = ranked
            .into_iter()
            .map(|(_, m)| Peer {
                node_id: m.node_id.clone(),
                address: m.address.clone(),
                local: m.node_id == self.inner.node_id,
            })
            .collect();
        if out.is_empty() {
            // Draining, and no other node known: run here rather than nowhere.
            out.push(Peer { node_id: self.inner.node_id.clone(), address: self.inner.address.clone(), local: true });
        }
        out
    }

    async fn forward(
        &self,
        peer: &Peer,
        account: &str,
        version: &str,
        req: &InvokeRequest,
    ) -> Result<InvokeResult, LambdaError> {
        let hop = self.hop();
        let call = hop::forward(&hop, peer, account, version, req);
        tokio::pin!(call);
        // A node that stops answering mid-invocation (paused, cut off) is declared dead within
        // seconds: the caller then tries the next node instead of waiting for the hop's timeout.
        // The invocation may still finish there later: at least once, as a retry would.
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let running = self.inner.running.read().unwrap_or_else(|p| p.into_inner()).contains(&peer.node_id);
                    if !running {
                        break Err(LambdaError::service(format!(
                            "{}{} ({}): it left the cluster while running the invocation",
                            invoke::UNREACHABLE, peer.node_id, peer.address
                        )));
                    }
                }
            }
        };
        if let Err(e) = &result
            && e.message.starts_with(invoke::UNREACHABLE)
        {
            lock(&self.inner.suspects).insert(peer.node_id.clone(), std::time::Instant::now());
        }
        result
    }

    async fn forward_stream(
        &self,
        peer: &Peer,
        account: &str,
        version: &str,
        req: &InvokeRequest,
        sink: &tokio::sync::mpsc::Sender<invoke::StreamMsg>,
    ) -> Result<InvokeResult, LambdaError> {
        let result = hop::forward_stream(&self.hop(), peer, account, version, req, sink).await;
        if let Err(e) = &result
            && e.message.starts_with(invoke::UNREACHABLE)
        {
            lock(&self.inner.suspects).insert(peer.node_id.clone(), std::time::Instant::now());
        }
        result
    }

    fn changed(&self, change: Change) {
        let this = self.clone();
        tokio::spawn(async move {
            // The log first: a node that misses the signal finds it there within a second.
            let pool = &this.inner.stores.pool;
            let seq = match pool
                .record_change(&this.inner.incarnation, &change.account, change.function.as_deref(), &change.path)
                .await
            {
                Ok(seq) => seq,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record a change for the other nodes");
                    return;
                }
            };
            let signal = Signal { origin: this.inner.incarnation.clone(), seq, change };
            let Ok(payload) = serde_json::to_vec(&signal) else { return };
            if let Err(e) = this.inner.nats.publish(CHANGES, payload.into()).await {
                tracing::warn!(error = %e, "cannot signal a change to the other nodes; they read it from the log");
            }
        });
    }

    async fn acquire(&self, name: &str) -> Option<i64> {
        if self.draining() {
            return None;
        }
        match bounded(self.inner.stores.pool.acquire_lease(name, &self.inner.incarnation, LEASE_TTL)).await {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "cannot take a lease");
                None
            }
        }
    }

    async fn renew(&self, name: &str, token: i64) -> Option<bool> {
        match bounded(self.inner.stores.pool.renew_lease(name, &self.inner.incarnation, token, LEASE_TTL)).await {
            Ok(held) => Some(held),
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "cannot renew a lease");
                None
            }
        }
    }

    async fn release(&self, name: &str, token: i64) {
        if let Err(e) = self.inner.stores.pool.release_lease(name, &self.inner.incarnation, token).await {
            tracing::warn!(lease = name, error = %e, "cannot release a lease; it expires by itself");
        }
    }

    async fn grant(&self, account: &str, want: usize, limit: usize) -> Option<usize> {
        if self.draining() {
            // Leaving: what it runs now is all it will run.
            return Some(0);
        }
        match bounded(self.inner.stores.pool.grant(account, &self.inner.incarnation, want as i64, limit as i64)).await {
            Ok(g) => Some(g.max(0) as usize),
            Err(e) => {
                tracing::warn!(account, error = %e, "cannot renew this node's share of the account's concurrency");
                None
            }
        }
    }

    fn live_nodes(&self) -> usize {
        self.members().len().max(1)
    }

    fn holding(&self, kind: &str, name: &str, held: bool) {
        let mut h = lock(&self.inner.holdings);
        let set = h.entry(kind.to_string()).or_default();
        if held {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_node_that_leaves() {
        let nodes = ["a", "b", "c"];
        fn owner(nodes: &[&'static str], key: &str) -> &'static str {
            nodes.iter().copied().max_by_key(|n| score(n, key)).expect("nodes")
        }
        let keys: Vec<String> = (0..300).map(|i| format!("000000000000/f{i}/$LATEST")).collect();
        let before: Vec<&str> = keys.iter().map(|k| owner(&nodes, k)).collect();
        for n in nodes {
            let share = before.iter().filter(|o| **o == n).count();
            assert!(share > 60, "{n} owns {share} of 300 keys");
        }
        let after: Vec<&str> = keys.iter().map(|k| owner(&["a", "c"], k)).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != "b" {
                assert_eq!(b, a, "a key of a surviving node stays where it was");
            }
        }
    }
}
