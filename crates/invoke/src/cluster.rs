//! What the invocation path (and the triggers above it) ask of the cluster a node belongs to.
//! In embedded mode there is none; in a cluster, `stratus`'s `cluster` crate implements
//! [`Cluster`] over PostgreSQL (membership, leases) and node-to-node HTTP (forwarding).
//!
//! Placement is advisory: a stale view of the members only costs locality. Admission stays
//! where the environments are: an invocation runs on the node that owns its function
//! version, whose own limits (reserved concurrency included) then apply.

use async_trait::async_trait;
use model::LambdaError;
use model::invoke::{InvokeRequest, InvokeResult};

/// Another node, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_id: String,
    /// Its API's base URL (`http://host:port`).
    pub address: String,
    /// True for this node itself.
    pub local: bool,
}

/// A control-plane change made through one node, for the others to drop what they cached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub account: String,
    /// The function the change was about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The API path that changed it (`/2015-03-31/event-source-mappings/…`, `/schedules/…`).
    pub path: String,
}

#[async_trait]
pub trait Cluster: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The live nodes in their order of preference for `key` (rendezvous hashing): the first
    /// owns it, the next take what it cannot. Never empty (this node alone, before it knows
    /// any other).
    fn rank(&self, key: &str) -> Vec<Peer>;
    /// Whether this node is the first of [`Cluster::rank`] for `key`.
    fn preferred(&self, key: &str) -> bool {
        self.rank(key).first().is_some_and(|p| p.local)
    }
    /// Runs `req` on `peer` as version `version` of its function, in `account`.
    async fn forward(
        &self,
        peer: &Peer,
        account: &str,
        version: &str,
        req: &InvokeRequest,
    ) -> Result<InvokeResult, LambdaError>;
    /// Runs `req` on `peer` with its answer streamed: `Start` and the chunks go to `sink` as
    /// they come; the result carries what follows them (the error, the log tail).
    async fn forward_stream(
        &self,
        peer: &Peer,
        account: &str,
        version: &str,
        req: &InvokeRequest,
        sink: &tokio::sync::mpsc::Sender<crate::StreamMsg>,
    ) -> Result<InvokeResult, LambdaError>;
    /// Tells the other nodes about a change (best effort; their caches also expire).
    fn changed(&self, change: Change);
    /// Takes the lease `name` (free, expired, or ours); its token when held.
    async fn acquire(&self, name: &str) -> Option<i64>;
    /// Extends a held lease: `Some(true)` renewed, `Some(false)` lost, `None` the database
    /// could not be reached (the holder decides how long to go on without it).
    async fn renew(&self, name: &str, token: i64) -> Option<bool>;
    /// Gives a lease up.
    async fn release(&self, name: &str, token: i64);
    /// Sets this node's share of `account`'s unreserved concurrency to as much of `want` as
    /// the other nodes leave under `limit`; `None` when the database cannot be reached.
    async fn grant(&self, account: &str, want: usize, limit: usize) -> Option<usize>;
    /// How many nodes are live (for a fair share before the first grant).
    fn live_nodes(&self) -> usize;
    /// Records what this node holds, for `stratus cluster status` (`kind`: `mappings`, …).
    fn holding(&self, kind: &str, name: &str, held: bool);
    /// True while this node drains (it takes no new singletons).
    fn draining(&self) -> bool;
}
