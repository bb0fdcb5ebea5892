//! The metering ledger on PostgreSQL: each node batches its rows (whatever arrived within
//! [`LINGER`] of the first, at most [`BATCH`]) into one `INSERT … SELECT FROM unnest(…)`, so
//! a warm invocation never waits on the database and the database sees a few statements a
//! second per node, not one per invocation. Rows are append-only (a trigger refuses changes).

use model::ledger::{GroupBy, Outcome, Record, Usage};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use super::{PgPool, col};
use crate::StoreError;

/// How long rows gather after the first before they are written.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(20);
/// The most rows one statement carries.
const BATCH: usize = 4096;

enum Op {
    Record(Record),
    Flush(oneshot::Sender<()>),
}

/// Handle to the node's ledger writer and reader. Cheap to clone.
#[derive(Clone)]
pub struct PgLedger {
    tx: mpsc::UnboundedSender<Op>,
    pool: PgPool,
}

const COLUMNS: &str = "request_id, account, function, version, trigger, architecture, start_us, end_us, duration_us, \
                       init_us, billed_ms, memory_mb, max_memory_mb, cold, outcome";

impl PgLedger {
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool.clone(), rx));
        Self { tx, pool }
    }

    pub(crate) fn record(&self, record: Record) {
        if self.tx.send(Op::Record(record)).is_err() {
            tracing::error!("the ledger writer stopped; an invocation was not recorded");
        }
    }

    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) async fn usage(
        &self,
        account: Option<String>,
        from_us: i64,
        to_us: i64,
        group: Option<GroupBy>,
    ) -> Result<Vec<Usage>, StoreError> {
        let key = match group {
            None | Some(GroupBy::Account) => "''",
            Some(GroupBy::Function) => "function",
            Some(GroupBy::Version) => "function || ':' || version",
            Some(GroupBy::Day) => "to_char(to_timestamp(start_us / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            Some(GroupBy::Trigger) => "trigger",
        };
        let sql = format!(
            "SELECT account, {key} AS k, architecture,
                    count(*) FILTER (WHERE outcome <> 'throttled'),
                    count(*) FILTER (WHERE outcome IN ('handled_error', 'unhandled', 'timeout')),
                    count(*) FILTER (WHERE outcome = 'throttled'),
                    count(*) FILTER (WHERE outcome = 'timeout'),
                    count(*) FILTER (WHERE cold),
                    COALESCE(sum(billed_ms), 0)::bigint,
                    COALESCE(sum(memory_mb * billed_ms), 0)::bigint
             FROM invocations
             WHERE ($1::text IS NULL OR account = $1) AND start_us >= $2 AND start_us < $3
             GROUP BY account, k, architecture ORDER BY account, k, architecture"
        );
        let mut c = self.pool.get().await?;
        let rows = c.query(&sql, &[&account, &from_us, &to_us]).await?;
        rows.iter()
            .map(|r| {
                Ok(Usage {
                    account: col(r, 0)?,
                    key: col(r, 1)?,
                    architecture: col(r, 2)?,
                    requests: col(r, 3)?,
                    errors: col(r, 4)?,
                    throttles: col(r, 5)?,
                    timeouts: col(r, 6)?,
                    cold_starts: col(r, 7)?,
                    billed_ms: col(r, 8)?,
                    mb_ms: col(r, 9)?,
                })
            })
            .collect()
    }

    pub(crate) async fn by_request(&self, request_id: String) -> Result<Vec<Record>, StoreError> {
        let mut c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {COLUMNS} FROM invocations WHERE request_id = $1 ORDER BY seq DESC LIMIT 16"),
                &[&request_id],
            )
            .await?;
        let mut out = rows.iter().map(row).collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    pub(crate) async fn recent(&self, account: Option<String>, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM invocations WHERE ($1::text IS NULL OR account = $1) ORDER BY seq DESC LIMIT $2"
                ),
                &[&account, &(limit as i64)],
            )
            .await?;
        rows.iter().map(row).collect()
    }

    pub(crate) async fn count(&self) -> Result<i64, StoreError> {
        let mut c = self.pool.get().await?;
        let rows = c.query("SELECT count(*) FROM invocations", &[]).await?;
        rows.first().map(|r| col(r, 0)).unwrap_or(Ok(0))
    }
}

fn row(r: &tokio_postgres::Row) -> Result<Record, StoreError> {
    let outcome: String = col(r, 14)?;
    Ok(Record {
        request_id: col(r, 0)?,
        account: col::<String>(r, 1)?.into(),
        function: col::<String>(r, 2)?.into(),
        version: col::<String>(r, 3)?.into(),
        trigger: col::<String>(r, 4)?.into(),
        architecture: col::<String>(r, 5)?.into(),
        start_us: col(r, 6)?,
        end_us: col(r, 7)?,
        duration_us: col(r, 8)?,
        init_us: col(r, 9)?,
        billed_ms: col(r, 10)?,
        memory_mb: col::<i64>(r, 11)? as u32,
        max_memory_used_mb: col::<i64>(r, 12)?.max(0) as u64,
        cold: col(r, 13)?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt(format!("unknown outcome {outcome:?}")))?,
    })
}

async fn write(client: &Client, rows: &[Record]) -> Result<(), StoreError> {
    let text = |f: &dyn Fn(&Record) -> &str| rows.iter().map(|r| f(r).to_string()).collect::<Vec<String>>();
    let int = |f: &dyn Fn(&Record) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let request_id = text(&|r| &r.request_id);
    let account = text(&|r| &r.account);
    let function = text(&|r| &r.function);
    let version = text(&|r| &r.version);
    let trigger = text(&|r| &r.trigger);
    let architecture = text(&|r| &r.architecture);
    let outcome = text(&|r| r.outcome.as_str());
    let start = int(&|r| r.start_us);
    let end = int(&|r| r.end_us);
    let duration = int(&|r| r.duration_us);
    let billed = int(&|r| r.billed_ms);
    let memory = int(&|r| i64::from(r.memory_mb));
    let max_memory = int(&|r| r.max_memory_used_mb as i64);
    let init: Vec<Option<i64>> = rows.iter().map(|r| r.init_us).collect();
    let cold: Vec<bool> = rows.iter().map(|r| r.cold).collect();
    client
        .execute(
            &format!(
                "INSERT INTO invocations ({COLUMNS})
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[],
                     $14::boolean[], $15::text[])"
            ),
            &[
                &request_id,
                &account,
                &function,
                &version,
                &trigger,
                &architecture,
                &start,
                &end,
                &duration,
                &init,
                &billed,
                &memory,
                &max_memory,
                &cold,
                &outcome,
            ],
        )
        .await?;
    Ok(())
}

async fn run(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut client: Option<Client> = None;
    // Rows that could not be written yet (the database was away): kept and retried, so an
    // outage delays billing rows instead of losing them (bounded, in memory).
    let mut backlog: Vec<Record> = Vec::new();
    loop {
        let first = if backlog.is_empty() {
            match rx.recv().await {
                Some(op) => Some(op),
                None => break,
            }
        } else {
            match tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv()).await {
                Ok(Some(op)) => Some(op),
                Ok(None) => break,
                Err(_) => None,
            }
        };
        if matches!(first, Some(Op::Record(_))) {
            tokio::time::sleep(LINGER).await;
        }
        let mut flushes = Vec::new();
        for op in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match op {
                Op::Record(r) => backlog.push(r),
                Op::Flush(done) => flushes.push(done),
            }
            if backlog.len() >= BATCH * 16 {
                break;
            }
        }
        while !backlog.is_empty() {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = pool
                    .dedicated()
                    .await
                    .inspect_err(|e| tracing::error!(error = %e, "cannot reach the ledger's database"))
                    .ok();
            }
            let Some(c) = client.as_ref() else { break };
            let n = backlog.len().min(BATCH);
            match write(c, &backlog[..n]).await {
                Ok(()) => {
                    backlog.drain(..n);
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = backlog.len(), "cannot write ledger rows; will retry");
                    client = None;
                    break;
                }
            }
        }
        if backlog.len() > 1_000_000 {
            let lost = backlog.len() - 1_000_000;
            backlog.drain(..lost);
            tracing::error!(lost, "the ledger's backlog is full; the oldest rows are lost");
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}
