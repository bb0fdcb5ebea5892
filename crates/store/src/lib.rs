//! Persistence behind a narrow interface: the metadata database (SQLite, embedded default),
//! content-addressed code packages, and function logs, all under one data directory:
//!
//! ```text
//! <data-dir>/stratus.db        functions, versions, tags, the async event queue, schedules,
//!                              event source mappings (WAL mode)
//! <data-dir>/ledger.db         one append-only row per invocation attempt, every account's
//! <data-dir>/accounts.db       accounts and their access keys (secrets sealed with secrets.key)
//! <data-dir>/accounts/<id>/    every other account's own stores, laid out as here
//! <data-dir>/code/blobs/       deployment packages by SHA-256
//! <data-dir>/code/trees/       the same packages unpacked, used as task roots and layers
//! <data-dir>/code/layers/      merged `/opt` trees of functions with several layers
//! <data-dir>/logs/<function>/  log segments
//! <data-dir>/objects/          buckets and objects of every account (see [`objects`])
//! ```
//!
//! The database is reached through [`Store::run`], which hops to a blocking thread so no
//! async task waits on SQLite. Nothing here knows HTTP or Lambda's wire shapes.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod accounts;
pub mod code;
#[cfg(test)]
mod conformance;
pub mod db;
pub mod layers;
pub mod ledger;
pub mod logs;
pub mod mappings;
pub mod meta;
pub mod objects;
pub mod pg;
pub mod policies;
pub mod queue;
pub mod routes;
pub mod schedules;
pub mod urls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use code::{CodeError, CodeStore, StoredCode};
pub use db::{AsyncEvent, Db};
pub use logs::{LogCursor, LogEvent, LogLimits, LogRecord, LogSink, LogStore};
pub use meta::Meta;
pub use queue::QueueWriter;

static BACKGROUND_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what the store's background writer threads (ledger, logs) run first, e.g. to lower
/// their scheduling priority. Call before opening a store.
pub fn set_background_thread_hook(hook: fn()) {
    let _ = BACKGROUND_HOOK.set(hook);
}

pub(crate) fn background_thread_started() {
    if let Some(hook) = BACKGROUND_HOOK.get() {
        hook();
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("the revision id does not match")]
    RevisionMismatch,
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "the database schema is at version {database}, newer than this binary's {binary}: upgrade stratus before starting it against this database"
    )]
    SchemaTooNew { database: i64, binary: i64 },
    #[error("{0}")]
    Config(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Code(#[from] CodeError),
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    #[error("the database worker stopped")]
    WorkerGone,
    /// A change was refused by a rule the caller broke (reported to them as is).
    #[error("{0}")]
    Rejected(model::LambdaError),
}

/// Where an account's metadata lives.
#[derive(Clone)]
enum Backend {
    /// Its own SQLite database in the data directory.
    Sqlite(Arc<Mutex<Db>>),
    /// The cluster's PostgreSQL database, keyed by the account.
    Pg { pool: pg::PgPool, account: Arc<str> },
}

/// What every account of a cluster node shares: the database, the queue writer, the ledger
/// and the cluster's copy of code packages.
#[derive(Clone)]
pub struct ClusterStores {
    pub pool: pg::PgPool,
    pub queue: pg::PgQueue,
    pub ledger: ledger::Ledger,
    pub code: pg::CodeBlobs,
}

impl ClusterStores {
    /// Connects to the cluster's database (migrating it), and starts this node's queue and
    /// ledger writers; claims of async events are made in the name of `incarnation`.
    pub async fn connect(url: &str, incarnation: &str) -> Result<Self, StoreError> {
        let pool = pg::PgPool::connect(url).await?;
        Ok(Self {
            queue: pg::PgQueue::start(pool.clone(), incarnation.to_string()),
            ledger: ledger::Ledger::cluster(pg::PgLedger::start(pool.clone())),
            code: pg::CodeBlobs::new(pool.clone()),
            pool,
        })
    }
}

/// An account's stores: its metadata (SQLite or the cluster's PostgreSQL), its code
/// packages as unpacked on this node, its logs, the async queue and the ledger.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    pub code: CodeStore,
    pub logs: LogStore,
    /// Group-committing writer of the async event queue.
    pub queue: QueueWriter,
    /// The metering ledger.
    pub ledger: ledger::Ledger,
    /// The cluster's copy of code packages (cluster mode only): every package ingested here
    /// is stored there too, and one this node lacks is fetched from there.
    shared_code: Option<(pg::CodeBlobs, Arc<str>)>,
    root: PathBuf,
}

impl Store {
    /// Opens every store under `root`, creating what is missing.
    pub fn open(root: &Path, log_limits: LogLimits) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)?;
        let ledger = ledger::Ledger::open(&root.join("ledger.db"))?;
        Self::open_with_ledger(root, log_limits, ledger)
    }

    /// Opens the stores under `root` but records invocations in `ledger` (one ledger serves
    /// every account).
    pub fn open_with_ledger(root: &Path, log_limits: LogLimits, ledger: ledger::Ledger) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)?;
        let db = Db::open(&root.join("stratus.db"))?;
        let queue = QueueWriter::start(&root.join("stratus.db"))?;
        Ok(Self {
            backend: Backend::Sqlite(Arc::new(Mutex::new(db))),
            queue,
            ledger,
            code: CodeStore::open(root.join("code"))?,
            logs: LogStore::open(root.join("logs"), log_limits)?,
            shared_code: None,
            root: root.to_path_buf(),
        })
    }

    /// One account's stores in a cluster: metadata, queue and ledger in the cluster's
    /// database; code (cached), logs and environments under `root` on this node.
    pub fn open_cluster(
        root: &Path,
        log_limits: LogLimits,
        cluster: &ClusterStores,
        account: &str,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)?;
        let account: Arc<str> = account.into();
        Ok(Self {
            backend: Backend::Pg { pool: cluster.pool.clone(), account: account.clone() },
            queue: QueueWriter::cluster(cluster.queue.clone(), account.clone()),
            ledger: cluster.ledger.clone(),
            code: CodeStore::open(root.join("code"))?,
            logs: LogStore::open(root.join("logs"), log_limits)?,
            shared_code: Some((cluster.code.clone(), account)),
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the metadata is the cluster's (PostgreSQL).
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Pg { .. })
    }

    /// Runs `f` with the account's metadata on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Meta) -> Result<T, StoreError> + Send + 'static,
    {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || with_meta(&backend, f)).await.map_err(|_| StoreError::WorkerGone)?
    }

    /// Runs `f` with the metadata on the current thread (for start-up and tests).
    pub fn run_now<T>(&self, f: impl FnOnce(&mut dyn Meta) -> Result<T, StoreError>) -> Result<T, StoreError> {
        with_meta(&self.backend, f)
    }

    /// Ingests a package on a blocking thread (and, in a cluster, stores it for every node).
    pub async fn ingest_code(&self, zip: Vec<u8>) -> Result<StoredCode, StoreError> {
        let code = self.code.clone();
        let (stored, zip) = tokio::task::spawn_blocking(move || code.ingest(&zip).map(|s| (s, zip)))
            .await
            .map_err(|_| StoreError::WorkerGone)??;
        if let Some((blobs, account)) = &self.shared_code {
            blobs.put(account, &stored.sha256_hex, &zip).await?;
        }
        Ok(stored)
    }

    /// Makes sure these packages are unpacked on this node, fetching from the cluster the
    /// ones it lacks (a no-op outside a cluster, where every package is local).
    pub async fn ensure_code(&self, shas: &[String]) -> Result<(), StoreError> {
        let Some((blobs, account)) = &self.shared_code else { return Ok(()) };
        for sha in shas {
            if self.code.tree(sha).is_dir() && self.code.blob(sha).is_file() {
                continue;
            }
            let Some(bytes) = blobs.get(account, sha).await? else {
                return Err(StoreError::Corrupt(format!("code package {sha} is not in the cluster's database")));
            };
            let code = self.code.clone();
            let stored = tokio::task::spawn_blocking(move || code.ingest(&bytes))
                .await
                .map_err(|_| StoreError::WorkerGone)??;
            if stored.sha256_hex != *sha {
                return Err(StoreError::Corrupt(format!(
                    "code package {sha} arrived with digest {}",
                    stored.sha256_hex
                )));
            }
        }
        Ok(())
    }

    /// Removes packages that no version refers to.
    pub fn collect_garbage(&self) -> Result<usize, StoreError> {
        let (referenced, layer_sets) = self.run_now(|db| Ok((db.referenced_code()?, db.referenced_layer_sets()?)))?;
        Ok(self.code.collect_garbage(&referenced, &layer_sets)?)
    }
}

fn with_meta<T>(backend: &Backend, f: impl FnOnce(&mut dyn Meta) -> Result<T, StoreError>) -> Result<T, StoreError> {
    match backend {
        Backend::Sqlite(db) => {
            // A panic while holding the lock leaves the connection itself usable.
            let mut guard = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut *guard)
        }
        Backend::Pg { pool, account } => {
            let mut db = pool.db(account)?;
            f(&mut db)
        }
    }
}
