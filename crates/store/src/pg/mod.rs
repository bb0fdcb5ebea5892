//! The PostgreSQL implementation of the store, for a cluster: every node connects to one
//! database, which holds every account's metadata (each row keyed by its account), the async
//! queue, the ledger, accounts and keys, code packages, membership and leases.
//!
//! The metadata interface ([`crate::meta`]) is synchronous and runs on blocking threads; a
//! [`PgDb`] drives its async connection from there with the runtime's handle. The queue writer
//! and the ledger are async tasks of their own.
//!
//! The schema is created and migrated by the binary ([`migrate`]): numbered migrations,
//! applied under an advisory lock so two nodes starting together apply each once; a database
//! whose schema is newer than the binary is refused.

mod accounts;
pub mod cluster;
mod code;
mod functions;
mod ledger;
mod objects;
mod queue;

pub use accounts::PgAccounts;
pub use code::CodeBlobs;
pub use ledger::PgLedger;
pub use objects::PgObjects;
pub use queue::PgQueue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::StoreError;

/// The migrations, in order: (version, what it does, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", include_str!("migrations/0001_initial.sql")),
    (2, "object storage", include_str!("migrations/0002_objects.sql")),
    (3, "change log and concurrency grants", include_str!("migrations/0003_changes_and_quotas.sql")),
];

/// The schema version this binary writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Any key for the advisory lock held while migrating (the same on every node).
const MIGRATION_LOCK: i64 = 0x0053_5452_4154_5553; // "STRATUS"

/// The most connections one node opens for metadata.
const MAX_CONNECTIONS: usize = 16;

/// A parameter of a statement.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

struct PoolInner {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// Connections to the cluster's database. Cheap to clone.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<PoolInner>,
}

/// An open connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A connection taken from the pool; it goes back when dropped (unless it broke).
pub(crate) struct Pooled {
    conn: Option<Conn>,
    pool: Arc<PoolInner>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }
}

impl Pooled {
    fn conn(&mut self) -> &mut Conn {
        // Set at creation and taken only by drop.
        self.conn.as_mut().expect("a pooled connection is present until dropped")
    }

    /// The statement for `sql`, prepared once per connection.
    pub(crate) async fn prepare(&mut self, sql: &str) -> Result<Statement, StoreError> {
        let conn = self.conn();
        if let Some(s) = conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = conn.client.prepare(sql).await?;
        conn.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub(crate) async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let s = self.prepare(sql).await?;
        Ok(self.conn().client.query(&s, params).await?)
    }

    pub(crate) async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let s = self.prepare(sql).await?;
        Ok(self.conn().client.execute(&s, params).await?)
    }

    pub(crate) async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.conn().client.batch_execute(sql).await?)
    }

    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.conn().client
    }
}

impl PgPool {
    /// Connects to `url` (`postgres://user:password@host:port/database`), migrates the schema
    /// (or refuses a newer one) and returns the pool.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| StoreError::Config(format!("bad database URL: {e}")))?;
        // A database that cannot be reached is an error soon, not a connection attempt that
        // hangs for minutes; a dead connection is noticed by keepalives.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.keepalives_idle(std::time::Duration::from_secs(10));
        let pool = Self {
            inner: Arc::new(PoolInner {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            }),
        };
        let mut conn = pool.get().await?;
        migrate(conn.client()).await?;
        Ok(pool)
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        let (client, connection) = self.inner.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a database connection closed");
            }
        });
        Ok(Conn { client, statements: HashMap::new() })
    }

    /// A connection of its own (for a writer task that keeps it).
    pub(crate) async fn dedicated(&self) -> Result<Client, StoreError> {
        Ok(self.open().await?.client)
    }

    pub(crate) async fn get(&self) -> Result<Pooled, StoreError> {
        let permit = self.inner.permits.clone().acquire_owned().await.map_err(|_| StoreError::WorkerGone)?;
        let idle = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.client.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let conn = match idle {
            Some(c) => c,
            None => self.open().await?,
        };
        Ok(Pooled { conn: Some(conn), pool: self.inner.clone(), _permit: permit })
    }

    /// An account's view of the metadata, for a blocking thread.
    pub(crate) fn db(&self, account: &Arc<str>) -> Result<PgDb, StoreError> {
        let conn = block(self.get())?;
        Ok(PgDb { conn: std::cell::RefCell::new(conn), account: account.clone() })
    }
}

impl PgPool {
    /// The cluster-wide secret `name`, made from `initial` by the first node that asks.
    pub async fn secret(&self, name: &str, initial: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let mut c = self.get().await?;
        c.execute(
            "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &initial],
        )
        .await?;
        let rows = c.query("SELECT value FROM cluster_secrets WHERE name = $1", &[&name]).await?;
        rows.first().map(|r| col(r, 0)).ok_or_else(|| StoreError::Corrupt(format!("secret {name} is missing")))?
    }
}

/// Runs `f` to completion from synchronous code: on a blocking thread directly, on a runtime
/// worker by first moving the worker's other tasks elsewhere (`block_in_place`).
pub(crate) fn block<F: std::future::Future>(f: F) -> F::Output {
    match Handle::try_current() {
        Ok(h) => tokio::task::block_in_place(|| h.block_on(f)),
        // Every caller runs under the server's (or the CLI's) runtime.
        Err(_) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(f),
            Err(e) => panic!("cannot start a runtime for a database call: {e}"),
        },
    }
}

/// Applies the migrations the database lacks, under an advisory lock.
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = migrate_locked(client).await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version     BIGINT PRIMARY KEY,
                description TEXT NOT NULL,
                applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let current: i64 =
        client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.try_get(0)?;
    let latest = schema_version();
    if current > latest {
        return Err(StoreError::SchemaTooNew { database: current, binary: latest });
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, description) VALUES ($1, $2)", &[version, description])
            .await?;
        tx.commit().await?;
        tracing::info!(version, description, "applied a database migration");
    }
    Ok(())
}

/// One account's metadata in the cluster's database, used from a blocking thread.
pub struct PgDb {
    conn: std::cell::RefCell<Pooled>,
    account: Arc<str>,
}

impl PgDb {
    fn acct(&self) -> &str {
        &self.account
    }

    pub(crate) fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut conn = self.conn.borrow_mut();
        block(conn.query(sql, params))
    }

    pub(crate) fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub(crate) fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut conn = self.conn.borrow_mut();
        block(conn.execute(sql, params))
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    pub(crate) fn transaction<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.batch("BEGIN")?;
        match f() {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.borrow_mut();
        block(conn.batch(sql))
    }
}

/// A column of a row, with a typed error instead of a panic.
pub(crate) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    Ok(row.try_get(idx)?)
}

#[cfg(test)]
pub(crate) mod testing;
