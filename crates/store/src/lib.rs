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
pub mod db;
pub mod layers;
pub mod ledger;
pub mod logs;
pub mod mappings;
pub mod objects;
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

/// The data directory's stores.
#[derive(Clone)]
pub struct Store {
    db: Arc<Mutex<Db>>,
    pub code: CodeStore,
    pub logs: LogStore,
    /// Group-committing writer of the async event queue.
    pub queue: QueueWriter,
    /// The metering ledger.
    pub ledger: ledger::Ledger,
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
            db: Arc::new(Mutex::new(db)),
            queue,
            ledger,
            code: CodeStore::open(root.join("code"))?,
            logs: LogStore::open(root.join("logs"), log_limits)?,
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `f` with the database on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection itself usable.
            let mut guard = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| StoreError::WorkerGone)?
    }

    /// Runs `f` with the database on the current thread (for start-up and tests).
    pub fn run_now<T>(&self, f: impl FnOnce(&mut Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Ingests a package on a blocking thread.
    pub async fn ingest_code(&self, zip: Vec<u8>) -> Result<StoredCode, StoreError> {
        let code = self.code.clone();
        tokio::task::spawn_blocking(move || code.ingest(&zip).map_err(StoreError::from))
            .await
            .map_err(|_| StoreError::WorkerGone)?
    }

    /// Removes packages that no version refers to.
    pub fn collect_garbage(&self) -> Result<usize, StoreError> {
        let (referenced, layer_sets) = self.run_now(|db| Ok((db.referenced_code()?, db.referenced_layer_sets()?)))?;
        Ok(self.code.collect_garbage(&referenced, &layer_sets)?)
    }
}
