//! The ledger: one append-only row per invocation attempt, in its own database
//! (`<data-dir>/ledger.db`) so metering never waits on the metadata database's lock.
//!
//! The invoke path hands a row to [`Ledger::record`] and goes on; a writer thread wakes for
//! the first row, lets more gather for [`LINGER`], and commits them all in one transaction, so a
//! row is on disk within about 5 ms of its invocation ending. Committing each row as it came
//! cost ~35 µs of CPU per invocation (SQLite's per-commit work, and a thread woken per row,
//! competing with functions for the cores: BENCHMARKS.md); in batches it is a few µs.
//! [`Ledger::flush`] waits for every row recorded before it (shutdown calls it). Triggers
//! refuse UPDATE and DELETE: the ledger is only ever appended to.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use model::ledger::{GroupBy, Outcome, Record, Usage};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invocations (
    seq           INTEGER PRIMARY KEY,
    request_id    TEXT NOT NULL,
    account       TEXT NOT NULL,
    function      TEXT NOT NULL,
    version       TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    architecture  TEXT NOT NULL,
    start_us      INTEGER NOT NULL,
    end_us        INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    init_us       INTEGER,
    billed_ms     INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    max_memory_mb INTEGER NOT NULL,
    cold          INTEGER NOT NULL,
    outcome       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_by_account_time ON invocations (account, start_us);
-- No index on request_id: inserting into a B-tree of random UUIDs cost ~9 µs per row (4x the
-- rest of the row); looking a request up scans from the newest row instead.
DROP INDEX IF EXISTS invocations_by_request;
CREATE TRIGGER IF NOT EXISTS invocations_no_update BEFORE UPDATE ON invocations
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS invocations_no_delete BEFORE DELETE ON invocations
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
";

enum Op {
    Record(Record),
    Flush(oneshot::Sender<()>),
}

/// Handle to the ledger (this data directory's `ledger.db`, or the cluster's). Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sqlite {
        tx: mpsc::Sender<Op>,
        /// Connection for reports (WAL: readers never block the writer).
        reader: Arc<Mutex<Connection>>,
    },
    Pg(crate::pg::PgLedger),
}

/// The most rows one transaction carries.
const BATCH: usize = 4096;
/// How long the writer lets rows gather after the first before committing them.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = connect(path)?;
        conn.execute_batch(SCHEMA)?;
        let reader = connect(path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("stratus-ledger".into()).spawn(move || run(conn, rx))?;
        Ok(Self { inner: Inner::Sqlite { tx, reader: Arc::new(Mutex::new(reader)) } })
    }

    /// The cluster's ledger (every node writes its own rows in batches).
    pub fn cluster(ledger: crate::pg::PgLedger) -> Self {
        Self { inner: Inner::Pg(ledger) }
    }

    fn pg(&self) -> Option<&crate::pg::PgLedger> {
        match &self.inner {
            Inner::Pg(l) => Some(l),
            Inner::Sqlite { .. } => None,
        }
    }

    /// Appends a row; returns at once (the writer commits it within one batch).
    pub fn record(&self, record: Record) {
        match &self.inner {
            Inner::Sqlite { tx, .. } => {
                if tx.send(Op::Record(record)).is_err() {
                    tracing::error!("the ledger writer stopped; an invocation was not recorded");
                }
            }
            Inner::Pg(l) => l.record(record),
        }
    }

    /// Waits until every row recorded before this call is committed.
    pub async fn flush(&self) {
        match &self.inner {
            Inner::Sqlite { tx, .. } => {
                let (done, rx) = oneshot::channel();
                if tx.send(Op::Flush(done)).is_ok() {
                    let _ = rx.await;
                }
            }
            Inner::Pg(l) => l.flush().await,
        }
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> {
        let reader = match &self.inner {
            Inner::Sqlite { reader, .. } => Some(reader.clone()),
            Inner::Pg(_) => None,
        };
        async move {
            let Some(reader) = reader else { return Err(StoreError::WorkerGone) };
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
                f(&conn).map_err(StoreError::from)
            })
            .await
            .map_err(|_| StoreError::WorkerGone)?
        }
    }

    /// Usage between `from_us` (inclusive) and `to_us` (exclusive), of one account or all,
    /// one row per group and architecture (`group: None` gives the totals by account).
    pub async fn usage(
        &self,
        account: Option<String>,
        from_us: i64,
        to_us: i64,
        group: Option<GroupBy>,
    ) -> Result<Vec<Usage>, StoreError> {
        if let Some(l) = self.pg() {
            return l.usage(account, from_us, to_us, group).await;
        }
        self.read(move |c| usage(c, account.as_deref(), from_us, to_us, group)).await
    }

    /// The rows of one request id (an async event retried has several; at most 16), oldest
    /// first. Scans from the newest row: quick for recent requests, a full scan for unknown ones.
    pub async fn by_request(&self, request_id: String) -> Result<Vec<Record>, StoreError> {
        if let Some(l) = self.pg() {
            return l.by_request(request_id).await;
        }
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM invocations WHERE request_id = ?1 ORDER BY seq DESC LIMIT 16"
            ))?;
            let rows = stmt.query_map([request_id], row)?;
            let mut rows = rows.collect::<Result<Vec<_>, _>>()?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    /// The newest rows of an account (or all), newest first.
    pub async fn recent(&self, account: Option<String>, limit: usize) -> Result<Vec<Record>, StoreError> {
        if let Some(l) = self.pg() {
            return l.recent(account, limit).await;
        }
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM invocations WHERE (?1 IS NULL OR account = ?1) ORDER BY seq DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![account, limit as i64], row)?;
            rows.collect()
        })
        .await
    }

    /// The number of rows (for tests and diagnostics).
    pub async fn count(&self) -> Result<i64, StoreError> {
        if let Some(l) = self.pg() {
            return l.count().await;
        }
        self.read(|c| c.query_row("SELECT count(*) FROM invocations", [], |r| r.get(0))).await
    }
}

const COLUMNS: &str = "request_id, account, function, version, trigger, architecture, start_us, end_us, duration_us, \
                       init_us, billed_ms, memory_mb, max_memory_mb, cold, outcome";

fn row(r: &rusqlite::Row<'_>) -> Result<Record, rusqlite::Error> {
    let outcome: String = r.get(14)?;
    Ok(Record {
        request_id: r.get(0)?,
        account: r.get::<_, String>(1)?.into(),
        function: r.get::<_, String>(2)?.into(),
        version: r.get::<_, String>(3)?.into(),
        trigger: r.get::<_, String>(4)?.into(),
        architecture: r.get::<_, String>(5)?.into(),
        start_us: r.get(6)?,
        end_us: r.get(7)?,
        duration_us: r.get(8)?,
        init_us: r.get(9)?,
        billed_ms: r.get(10)?,
        memory_mb: r.get(11)?,
        max_memory_used_mb: r.get::<_, i64>(12)?.max(0) as u64,
        cold: r.get(13)?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(14, rusqlite::types::Type::Text, "unknown outcome".into())
        })?,
    })
}

fn usage(
    c: &Connection,
    account: Option<&str>,
    from_us: i64,
    to_us: i64,
    group: Option<GroupBy>,
) -> Result<Vec<Usage>, rusqlite::Error> {
    let key = match group {
        None | Some(GroupBy::Account) => "''",
        Some(GroupBy::Function) => "function",
        Some(GroupBy::Version) => "function || ':' || version",
        Some(GroupBy::Day) => "strftime('%Y-%m-%d', start_us / 1000000, 'unixepoch')",
        Some(GroupBy::Trigger) => "trigger",
    };
    let sql = format!(
        "SELECT account, {key} AS k, architecture,
                sum(outcome != 'throttled'),
                sum(outcome IN ('handled_error', 'unhandled', 'timeout')),
                sum(outcome = 'throttled'),
                sum(outcome = 'timeout'),
                sum(cold),
                sum(billed_ms),
                sum(memory_mb * billed_ms)
         FROM invocations
         WHERE (?1 IS NULL OR account = ?1) AND start_us >= ?2 AND start_us < ?3
         GROUP BY account, k, architecture ORDER BY account, k, architecture"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![account, from_us, to_us], |r| {
        Ok(Usage {
            account: r.get(0)?,
            key: r.get(1)?,
            architecture: r.get(2)?,
            requests: r.get(3)?,
            errors: r.get(4)?,
            throttles: r.get(5)?,
            timeouts: r.get(6)?,
            cold_starts: r.get(7)?,
            billed_ms: r.get(8)?,
            mb_ms: r.get(9)?,
        })
    })?;
    rows.collect()
}

fn insert(tx: &rusqlite::Transaction<'_>, r: &Record) -> Result<(), rusqlite::Error> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO invocations (request_id, account, function, version, trigger, architecture, start_us, end_us,
             duration_us, init_us, billed_ms, memory_mb, max_memory_mb, cold, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    stmt.execute(params![
        r.request_id,
        &*r.account,
        &*r.function,
        &*r.version,
        &*r.trigger,
        &*r.architecture,
        r.start_us,
        r.end_us,
        r.duration_us,
        r.init_us,
        r.billed_ms,
        r.memory_mb,
        r.max_memory_used_mb as i64,
        r.cold,
        r.outcome.as_str()
    ])?;
    Ok(())
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    crate::background_thread_started();
    while let Ok(first) = rx.recv() {
        // Sleeping (not waiting on the channel) means senders do not wake this thread per row.
        if matches!(first, Op::Record(_)) {
            std::thread::sleep(LINGER);
        }
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let result = (|| -> Result<usize, rusqlite::Error> {
            let tx = conn.transaction()?;
            let mut n = 0;
            for op in ops.drain(..) {
                match op {
                    Op::Record(r) => {
                        insert(&tx, &r)?;
                        n += 1;
                    }
                    Op::Flush(done) => flushes.push(done),
                }
            }
            tx.commit()?;
            Ok(n)
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot commit ledger rows; they are lost");
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rec(request_id: &str, function: &str, start_us: i64, billed_ms: i64, outcome: Outcome) -> Record {
        Record {
            request_id: request_id.into(),
            account: "000000000000".into(),
            function: function.into(),
            version: "$LATEST".into(),
            trigger: "api".into(),
            architecture: "x86_64".into(),
            start_us,
            end_us: start_us + billed_ms * 1000,
            duration_us: billed_ms * 1000 - 300,
            init_us: None,
            billed_ms,
            memory_mb: 256,
            max_memory_used_mb: 40,
            cold: false,
            outcome,
        }
    }

    #[tokio::test]
    async fn rows_are_summed_by_group_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let l = Ledger::open(&path).unwrap();
        let day = 86_400_000_000;
        l.record(rec("a", "f", 10, 100, Outcome::Success));
        l.record(rec("b", "f", day + 10, 50, Outcome::Timeout));
        l.record(Record { billed_ms: 0, ..rec("c", "g", 20, 0, Outcome::Throttled) });
        l.flush().await;
        drop(l);
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.count().await.unwrap(), 3);
        let by_fn = l.usage(None, 0, i64::MAX, Some(GroupBy::Function)).await.unwrap();
        assert_eq!(by_fn.len(), 2);
        assert_eq!((by_fn[0].key.as_str(), by_fn[0].requests, by_fn[0].errors), ("f", 2, 1));
        assert_eq!(by_fn[0].mb_ms, 256 * 150);
        assert_eq!((by_fn[1].requests, by_fn[1].throttles), (0, 1));
        let by_day = l.usage(None, 0, i64::MAX, Some(GroupBy::Day)).await.unwrap();
        assert_eq!(by_day.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(), ["1970-01-01", "1970-01-02"]);
        let window = l.usage(Some("000000000000".into()), 0, day, None).await.unwrap();
        assert_eq!((window[0].requests, window[0].throttles), (1, 1));
        assert!(l.usage(Some("111111111111".into()), 0, i64::MAX, None).await.unwrap().is_empty());
        assert_eq!(l.by_request("b".into()).await.unwrap()[0].outcome, Outcome::Timeout);
    }

    #[tokio::test]
    async fn rows_cannot_be_changed_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let l = Ledger::open(&path).unwrap();
        l.record(rec("a", "f", 10, 100, Outcome::Success));
        l.flush().await;
        let c = Connection::open(&path).unwrap();
        assert!(c.execute("UPDATE invocations SET billed_ms = 1", []).is_err());
        assert!(c.execute("DELETE FROM invocations", []).is_err());
        assert_eq!(l.count().await.unwrap(), 1);
    }
}
