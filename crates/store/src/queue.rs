//! Group commit for the asynchronous event queue.
//!
//! Every accepted event must be durable before the caller hears 202, and one transaction per
//! event caps the queue at the rate of SQLite commits. The queue writer owns its own connection
//! on a thread of its own, takes whatever operations are waiting (inserts, deletions of
//! delivered events, reschedules), commits them in one transaction, and only then answers each
//! insert. Under load a commit carries many events; alone, an event waits for one commit.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::{AsyncEvent, StoreError};

enum Op {
    Insert(AsyncEvent, oneshot::Sender<Result<i64, StoreError>>),
    Claim {
        now_ms: i64,
        limit: usize,
        lease_until_ms: i64,
        reply: oneshot::Sender<Result<Vec<AsyncEvent>, StoreError>>,
    },
    Delete(i64),
    Reschedule {
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
    },
}

/// Handle to the queue writer (this data directory's thread, or the cluster node's task).
/// Cheap to clone.
#[derive(Clone)]
pub struct QueueWriter {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sqlite(mpsc::Sender<Op>),
    /// The node's writer to the cluster's database, for one account.
    Pg(crate::pg::PgQueue, std::sync::Arc<str>),
}

/// The most operations one transaction carries.
const BATCH: usize = 512;

impl QueueWriter {
    /// Starts the writer on the database at `path` (already created by [`crate::Db::open`]).
    pub fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("stratus-queue".into()).spawn(move || run(conn, rx))?;
        Ok(Self { inner: Inner::Sqlite(tx) })
    }

    /// The cluster's queue, as one account sees it.
    pub fn cluster(queue: crate::pg::PgQueue, account: std::sync::Arc<str>) -> Self {
        Self { inner: Inner::Pg(queue, account) }
    }

    /// Durably queues an event; returns its id once committed. Fails with `NotFound` if the
    /// function does not exist.
    pub async fn insert(&self, event: AsyncEvent) -> Result<i64, StoreError> {
        let sender = match &self.inner {
            Inner::Sqlite(sender) => sender,
            Inner::Pg(q, account) => return q.insert(account, event).await,
        };
        let (tx, rx) = oneshot::channel();
        sender.send(Op::Insert(event, tx)).map_err(|_| StoreError::WorkerGone)?;
        rx.await.map_err(|_| StoreError::WorkerGone)?
    }

    /// Takes up to `limit` due events and pushes their next attempt to `lease_until_ms`, in the
    /// same transaction, so they are not handed out twice while in flight. If the process dies,
    /// the lease expires (or is released at the next start) and they are delivered again (at
    /// least once). Claims go through this writer too: one connection writing the queue means no waiting on
    /// SQLite's lock between two writers.
    pub async fn claim(&self, now_ms: i64, limit: usize, lease_until_ms: i64) -> Result<Vec<AsyncEvent>, StoreError> {
        let sender = match &self.inner {
            Inner::Sqlite(sender) => sender,
            Inner::Pg(q, account) => return q.claim(account, now_ms, limit, lease_until_ms).await,
        };
        let (tx, rx) = oneshot::channel();
        sender.send(Op::Claim { now_ms, limit, lease_until_ms, reply: tx }).map_err(|_| StoreError::WorkerGone)?;
        rx.await.map_err(|_| StoreError::WorkerGone)?
    }

    /// Removes a delivered (or finally discarded) event. Not waited for: if the process dies
    /// first, the event is delivered again (at least once).
    pub fn delete(&self, id: i64) {
        match &self.inner {
            Inner::Sqlite(sender) => {
                let _ = sender.send(Op::Delete(id));
            }
            Inner::Pg(q, account) => q.delete(account, id),
        }
    }

    /// Schedules an event's next attempt and releases its lease.
    pub fn reschedule(&self, id: i64, attempts: u32, next_attempt_ms: i64) {
        match &self.inner {
            Inner::Sqlite(sender) => {
                let _ = sender.send(Op::Reschedule { id, attempts, next_attempt_ms });
            }
            Inner::Pg(q, account) => q.reschedule(account, id, attempts, next_attempt_ms),
        }
    }
}

fn claim(
    tx: &rusqlite::Transaction<'_>,
    now_ms: i64,
    limit: usize,
    lease_until_ms: i64,
) -> Result<Vec<AsyncEvent>, rusqlite::Error> {
    let events = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms, trace, trigger, delivery
             FROM async_events WHERE next_attempt_ms <= ?1 ORDER BY next_attempt_ms, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
            Ok(AsyncEvent {
                id: r.get(0)?,
                request_id: r.get(1)?,
                function: r.get(2)?,
                qualifier: r.get(3)?,
                payload: r.get(4)?,
                received_ms: r.get(5)?,
                attempts: r.get(6)?,
                next_attempt_ms: r.get(7)?,
                trace: r.get(8)?,
                trigger: r.get(9)?,
                delivery: r.get::<_, Option<String>>(10)?.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let mut lease = tx.prepare_cached("UPDATE async_events SET next_attempt_ms = ?2, leased = 1 WHERE id = ?1")?;
    for e in &events {
        lease.execute(params![e.id, lease_until_ms])?;
    }
    Ok(events)
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut replies = Vec::new();
        let mut claims = Vec::new();
        let result = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO async_events (request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms, trace, trigger, delivery)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 WHERE EXISTS (SELECT 1 FROM functions WHERE name = ?2)",
                )?;
                let mut delete = tx.prepare_cached("DELETE FROM async_events WHERE id = ?1")?;
                let mut reschedule = tx.prepare_cached(
                    "UPDATE async_events SET attempts = ?2, next_attempt_ms = ?3, leased = 0 WHERE id = ?1",
                )?;
                for op in ops.drain(..) {
                    match op {
                        Op::Insert(e, reply) => {
                            let n = insert.execute(params![
                                e.request_id,
                                e.function,
                                e.qualifier,
                                e.payload,
                                e.received_ms,
                                e.attempts,
                                e.next_attempt_ms,
                                e.trace,
                                e.trigger,
                                e.delivery.as_ref().map(|d| serde_json::to_string(d).unwrap_or_default())
                            ])?;
                            let outcome = if n == 0 { Err(StoreError::NotFound) } else { Ok(tx.last_insert_rowid()) };
                            replies.push((reply, outcome));
                        }
                        Op::Delete(id) => {
                            delete.execute([id])?;
                        }
                        Op::Reschedule { id, attempts, next_attempt_ms } => {
                            reschedule.execute(params![id, attempts, next_attempt_ms])?;
                        }
                        Op::Claim { now_ms, limit, lease_until_ms, reply } => {
                            let events = claim(&tx, now_ms, limit, lease_until_ms)?;
                            claims.push((reply, events));
                        }
                    }
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                for (reply, outcome) in replies {
                    let _ = reply.send(outcome);
                }
                for (reply, events) in claims {
                    let _ = reply.send(Ok(events));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot commit the async queue");
                for (reply, _) in replies {
                    let _ = reply.send(Err(StoreError::Corrupt(format!("queue commit failed: {e}"))));
                }
                for (reply, _) in claims {
                    let _ = reply.send(Err(StoreError::Corrupt(format!("queue commit failed: {e}"))));
                }
            }
        }
    }
}
