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

/// Handle to the queue writer thread. Cheap to clone.
#[derive(Clone)]
pub struct QueueWriter {
    tx: mpsc::Sender<Op>,
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
        Ok(Self { tx })
    }

    /// Durably queues an event; returns its id once committed. Fails with `NotFound` if the
    /// function does not exist.
    pub async fn insert(&self, event: AsyncEvent) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Insert(event, tx)).map_err(|_| StoreError::WorkerGone)?;
        rx.await.map_err(|_| StoreError::WorkerGone)?
    }

    /// Takes up to `limit` due events and pushes their next attempt to `lease_until_ms`, in the
    /// same transaction, so they are not handed out twice while in flight. If the process dies,
    /// the lease expires (or is released at the next start) and they are delivered again (at
    /// least once). Claims go through this writer too: one connection writing the queue means no waiting on
    /// SQLite's lock between two writers.
    pub async fn claim(&self, now_ms: i64, limit: usize, lease_until_ms: i64) -> Result<Vec<AsyncEvent>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Claim { now_ms, limit, lease_until_ms, reply: tx }).map_err(|_| StoreError::WorkerGone)?;
        rx.await.map_err(|_| StoreError::WorkerGone)?
    }

    /// Removes a delivered (or finally discarded) event. Not waited for: if the process dies
    /// first, the event is delivered again (at least once).
    pub fn delete(&self, id: i64) {
        let _ = self.tx.send(Op::Delete(id));
    }

    /// Schedules an event's next attempt and releases its lease.
    pub fn reschedule(&self, id: i64, attempts: u32, next_attempt_ms: i64) {
        let _ = self.tx.send(Op::Reschedule { id, attempts, next_attempt_ms });
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Db;

    fn event(function: &str) -> AsyncEvent {
        AsyncEvent {
            id: 0,
            request_id: "r".into(),
            function: function.into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            received_ms: 1,
            trace: None,
            trigger: None,
            delivery: None,
            attempts: 0,
            next_attempt_ms: 1,
        }
    }

    #[tokio::test]
    async fn claims_lease_and_deleting_the_function_drops_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut db = Db::open(&path).unwrap();
        db.create_function(&crate::db::tests::config("f"), &BTreeMap::new()).unwrap();
        let q = QueueWriter::start(&path).unwrap();
        assert!(matches!(q.insert(event("missing")).await, Err(StoreError::NotFound)));
        let id = q.insert(event("f")).await.unwrap();
        let claimed = q.claim(10, 10, 1000).await.unwrap();
        assert_eq!(claimed.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
        assert!(q.claim(10, 10, 1000).await.unwrap().is_empty(), "a claimed event is leased");
        assert_eq!(q.claim(1000, 10, 2000).await.unwrap().len(), 1, "the lease expires");
        q.reschedule(id, 1, 5000);
        assert!(q.claim(4999, 10, 9000).await.unwrap().is_empty(), "rescheduled to later");
        assert_eq!(db.next_due().unwrap(), Some(5000));
        assert!(db.delete_function("f").unwrap());
        assert!(q.claim(i64::MAX, 10, 0).await.unwrap().is_empty());
        assert_eq!(db.queued_events().unwrap(), 0);
    }
}
