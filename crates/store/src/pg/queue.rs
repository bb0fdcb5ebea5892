//! The async event queue on PostgreSQL: one writer task per node with a connection of its
//! own, committing whatever operations wait in one transaction (group commit, as the SQLite
//! writer does), and answering an insert only after its commit: a 202 means a committed row.
//!
//! Claims take due rows with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never take
//! the same event, and mark them with this node's incarnation; if the node dies, whoever
//! declares it dead makes its events due again (at least once, never lost).

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Statement};

use super::{PgPool, col};
use crate::{AsyncEvent, StoreError};

enum Op {
    Insert(String, AsyncEvent, oneshot::Sender<Result<i64, StoreError>>),
    Claim {
        account: String,
        now_ms: i64,
        limit: usize,
        lease_until_ms: i64,
        reply: oneshot::Sender<Result<Vec<AsyncEvent>, StoreError>>,
    },
    Delete(String, i64),
    Reschedule {
        account: String,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
    },
}

/// Handle to the node's queue writer. Cheap to clone.
#[derive(Clone)]
pub struct PgQueue {
    tx: mpsc::UnboundedSender<Op>,
}

/// The most operations one transaction carries.
const BATCH: usize = 512;

const COLUMNS: &str =
    "id, request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms, trace, trigger, delivery";

impl PgQueue {
    /// Starts the writer; claims are made in the name of `incarnation`.
    pub fn start(pool: PgPool, incarnation: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, incarnation, rx));
        Self { tx }
    }

    pub(crate) async fn insert(&self, account: &str, event: AsyncEvent) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Insert(account.to_string(), event, tx)).map_err(|_| StoreError::WorkerGone)?;
        rx.await.map_err(|_| StoreError::WorkerGone)?
    }

    pub(crate) async fn claim(
        &self,
        account: &str,
        now_ms: i64,
        limit: usize,
        lease_until_ms: i64,
    ) -> Result<Vec<AsyncEvent>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let op = Op::Claim { account: account.to_string(), now_ms, limit, lease_until_ms, reply: tx };
        self.tx.send(op).map_err(|_| StoreError::WorkerGone)?;
        rx.await.map_err(|_| StoreError::WorkerGone)?
    }

    pub(crate) fn delete(&self, account: &str, id: i64) {
        let _ = self.tx.send(Op::Delete(account.to_string(), id));
    }

    pub(crate) fn reschedule(&self, account: &str, id: i64, attempts: u32, next_attempt_ms: i64) {
        let _ = self.tx.send(Op::Reschedule { account: account.to_string(), id, attempts, next_attempt_ms });
    }
}

fn event(r: &tokio_postgres::Row) -> Result<AsyncEvent, StoreError> {
    Ok(AsyncEvent {
        id: col(r, 0)?,
        request_id: col(r, 1)?,
        function: col(r, 2)?,
        qualifier: col(r, 3)?,
        payload: col(r, 4)?,
        received_ms: col(r, 5)?,
        attempts: col::<i64>(r, 6)? as u32,
        next_attempt_ms: col(r, 7)?,
        trace: col(r, 8)?,
        trigger: col(r, 9)?,
        delivery: col::<Option<String>>(r, 10)?.and_then(|d| serde_json::from_str(&d).ok()),
    })
}

/// The writer's connection and its statements, prepared once.
struct Writer {
    client: Client,
    insert: Statement,
    claim: Statement,
    delete: Statement,
    reschedule: Statement,
}

impl Writer {
    async fn connect(pool: &PgPool) -> Result<Self, StoreError> {
        let client = pool.dedicated().await?;
        let insert = client
            .prepare(
                "INSERT INTO async_events (account, request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms, trace, trigger, delivery)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
                 WHERE EXISTS (SELECT 1 FROM functions WHERE account = $1 AND name = $3)
                 RETURNING id",
            )
            .await?;
        let returning = COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ");
        let claim = client
            .prepare(&format!(
                "WITH due AS MATERIALIZED (
                     SELECT id FROM async_events WHERE account = $1 AND next_attempt_ms <= $2
                     ORDER BY next_attempt_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 UPDATE async_events e SET next_attempt_ms = $4, leased_by = $5 FROM due WHERE e.id = due.id
                 RETURNING {returning}"
            ))
            .await?;
        let delete = client.prepare("DELETE FROM async_events WHERE account = $1 AND id = $2").await?;
        let reschedule = client
            .prepare(
                "UPDATE async_events SET attempts = $3, next_attempt_ms = $4, leased_by = NULL WHERE account = $1 AND id = $2",
            )
            .await?;
        Ok(Self { client, insert, claim, delete, reschedule })
    }
}

type Replies = Vec<(oneshot::Sender<Result<i64, StoreError>>, Result<i64, StoreError>)>;
type Claims = Vec<(oneshot::Sender<Result<Vec<AsyncEvent>, StoreError>>, Vec<AsyncEvent>)>;

async fn run(pool: PgPool, incarnation: String, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut writer: Option<Writer> = None;
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        if writer.as_ref().is_none_or(|w| w.client.is_closed()) {
            writer = match Writer::connect(&pool).await {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "cannot connect the async queue's writer to the database");
                    fail(ops, &e);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
        }
        let Some(w) = writer.as_mut() else { continue };
        let mut replies = Replies::new();
        let mut claims = Claims::new();
        match apply(w, &incarnation, ops, &mut replies, &mut claims).await {
            Ok(()) => {
                for (reply, outcome) in replies {
                    let _ = reply.send(outcome);
                }
                for (reply, events) in claims {
                    let _ = reply.send(Ok(events));
                }
            }
            Err((e, unanswered)) => {
                // Nothing of the batch was committed: every insert fails (its caller hears an
                // error, never a 202), every claim took nothing.
                tracing::error!(error = %e, "cannot commit the async queue");
                let msg = format!("queue commit failed: {e}");
                for (reply, _) in replies {
                    let _ = reply.send(Err(StoreError::Corrupt(msg.clone())));
                }
                for (reply, _) in claims {
                    let _ = reply.send(Err(StoreError::Corrupt(msg.clone())));
                }
                fail(unanswered, &e);
            }
        }
    }
}

/// Answers every operation with `e` (the writer could not reach the database).
fn fail(ops: Vec<Op>, e: &StoreError) {
    for op in ops {
        match op {
            Op::Insert(_, _, reply) => {
                let _ = reply.send(Err(StoreError::Corrupt(format!("cannot queue: {e}"))));
            }
            Op::Claim { reply, .. } => {
                let _ = reply.send(Err(StoreError::Corrupt(format!("cannot claim: {e}"))));
            }
            Op::Delete(..) | Op::Reschedule { .. } => {}
        }
    }
}

/// Applies `ops` in one transaction. On failure, returns the error and the operations not
/// yet applied (the transaction is rolled back, so none of the batch took effect).
async fn apply(
    w: &mut Writer,
    incarnation: &str,
    ops: Vec<Op>,
    replies: &mut Replies,
    claims: &mut Claims,
) -> Result<(), (StoreError, Vec<Op>)> {
    let Writer { client, insert, claim, delete, reschedule } = w;
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return Err((e.into(), ops)),
    };
    let mut ops = ops.into_iter();
    while let Some(op) = ops.next() {
        let step: Result<(), StoreError> = async {
            match op {
                Op::Insert(account, e, reply) => {
                    let delivery = e.delivery.as_ref().map(|d| serde_json::to_string(d).unwrap_or_default());
                    let rows = tx
                        .query(
                            &*insert,
                            &[
                                &account,
                                &e.request_id,
                                &e.function,
                                &e.qualifier,
                                &e.payload,
                                &e.received_ms,
                                &i64::from(e.attempts),
                                &e.next_attempt_ms,
                                &e.trace,
                                &e.trigger,
                                &delivery,
                            ],
                        )
                        .await;
                    match rows {
                        Ok(rows) => {
                            let outcome = match rows.first() {
                                Some(r) => col(r, 0),
                                None => Err(StoreError::NotFound),
                            };
                            replies.push((reply, outcome));
                            Ok(())
                        }
                        Err(e) => {
                            let _ = reply.send(Err(StoreError::Corrupt(format!("cannot queue: {e}"))));
                            Err(e.into())
                        }
                    }
                }
                Op::Claim { account, now_ms, limit, lease_until_ms, reply } => {
                    let rows =
                        tx.query(&*claim, &[&account, &now_ms, &(limit as i64), &lease_until_ms, &incarnation]).await;
                    match rows
                        .map_err(StoreError::from)
                        .and_then(|rows| rows.iter().map(event).collect::<Result<Vec<_>, _>>())
                    {
                        Ok(mut events) => {
                            events.sort_by_key(|e| e.id);
                            claims.push((reply, events));
                            Ok(())
                        }
                        Err(e) => {
                            let _ = reply.send(Err(StoreError::Corrupt(format!("cannot claim: {e}"))));
                            Err(e)
                        }
                    }
                }
                Op::Delete(account, id) => tx.execute(&*delete, &[&account, &id]).await.map(|_| ()).map_err(Into::into),
                Op::Reschedule { account, id, attempts, next_attempt_ms } => tx
                    .execute(&*reschedule, &[&account, &id, &i64::from(attempts), &next_attempt_ms])
                    .await
                    .map(|_| ())
                    .map_err(Into::into),
            }
        }
        .await;
        if let Err(e) = step {
            return Err((e, ops.collect()));
        }
    }
    tx.commit().await.map_err(|e| (e.into(), Vec::new()))
}
