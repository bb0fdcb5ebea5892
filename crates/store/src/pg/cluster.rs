//! Membership and leases in the cluster's database, PostgreSQL being the one arbiter every
//! node agrees on (its clock included: every expiry is computed by `now()` on the server).
//!
//! - A node incarnation (one run of `stratus serve`) has a row in `nodes` it refreshes every
//!   second. A row not refreshed for [`DEAD_AFTER`] is declared dead by the first live node that
//!   sees it, in one statement, and the dead incarnation's queue claims and leases are released
//!   in the same transaction, so its work moves at once.
//! - A lease (`leases`) names a singleton (a mapping's poller). Acquiring it bumps its token;
//!   the holder renews it, and writes it protects check the token, so a holder that lost it
//!   (paused, partitioned, declared dead) can no longer write.

use std::time::Duration;

use super::{PgPool, col};
use crate::StoreError;

/// A node whose heartbeat is older than this is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(6);

/// The lease name of an event source mapping.
pub fn mapping_lease(account: &str, uuid: &str) -> String {
    format!("esm/{account}/{uuid}")
}

/// A node as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub incarnation: String,
    pub node_id: String,
    pub address: String,
    /// `live`, `draining` or `dead`.
    pub state: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub silent_ms: i64,
    /// What it reports of itself (JSON).
    pub report: String,
}

/// A lease and its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub name: String,
    pub holder: Option<String>,
    pub token: i64,
    /// Milliseconds until it expires (negative: expired).
    pub remaining_ms: i64,
}

impl PgPool {
    /// Adds this incarnation as a live node. Earlier incarnations of the same node (a restart
    /// before the others noticed it was gone) are declared dead at once, and what they held
    /// is released: a node's id belongs to one data directory, so they cannot be running.
    pub async fn register_node(&self, incarnation: &str, node_id: &str, address: &str) -> Result<(), StoreError> {
        let mut c = self.get().await?;
        let tx = c.client().transaction().await?;
        let earlier = tx
            .query(
                "UPDATE nodes SET state = 'dead' WHERE node_id = $1 AND incarnation <> $2 AND state <> 'dead'
                 RETURNING incarnation",
                &[&node_id, &incarnation],
            )
            .await?;
        for row in &earlier {
            let gone: String = col(row, 0)?;
            tracing::info!(incarnation = %gone, "an earlier run of this node is superseded; what it held is released");
            release(&tx, &gone).await?;
        }
        tx.execute(
            "INSERT INTO nodes (incarnation, node_id, address, state) VALUES ($1, $2, $3, 'live')
             ON CONFLICT (incarnation) DO UPDATE SET address = excluded.address, state = 'live', heartbeat_at = now()",
            &[&incarnation, &node_id, &address],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refreshes this incarnation's heartbeat, state and report. False if it was declared
    /// dead meanwhile (it must then stop acting for the cluster and register anew).
    pub async fn heartbeat(&self, incarnation: &str, state: &str, report: &str) -> Result<bool, StoreError> {
        let mut c = self.get().await?;
        let n = c
            .execute(
                "UPDATE nodes SET heartbeat_at = now(), state = $2, report = $3 WHERE incarnation = $1 AND state <> 'dead'",
                &[&incarnation, &state, &report],
            )
            .await?;
        Ok(n > 0)
    }

    /// Every node the database remembers, live ones first.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let mut c = self.get().await?;
        let rows = c
            .query(
                "SELECT incarnation, node_id, address, state,
                        (EXTRACT(EPOCH FROM (now() - heartbeat_at)) * 1000)::bigint, report
                 FROM nodes ORDER BY state = 'dead', node_id, started_at DESC",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    incarnation: col(r, 0)?,
                    node_id: col(r, 1)?,
                    address: col(r, 2)?,
                    state: col(r, 3)?,
                    silent_ms: col(r, 4)?,
                    report: col(r, 5)?,
                })
            })
            .collect()
    }

    /// Declares dead every node silent for longer than [`DEAD_AFTER`], and in the same
    /// transaction makes its claimed async events due now and expires its leases. Returns the
    /// incarnations declared dead.
    pub async fn declare_dead(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.get().await?;
        let tx = c.client().transaction().await?;
        let rows = tx
            .query(
                "UPDATE nodes SET state = 'dead'
                 WHERE state <> 'dead' AND heartbeat_at < now() - $1::bigint::float8 * interval '1 millisecond'
                 RETURNING incarnation",
                &[&(DEAD_AFTER.as_millis() as i64)],
            )
            .await?;
        let dead: Vec<String> = rows.iter().map(|r| col(r, 0)).collect::<Result<_, _>>()?;
        for incarnation in &dead {
            release(&tx, incarnation).await?;
        }
        // Dead rows are kept an hour for `cluster status`, then forgotten; so are changes.
        tx.execute("DELETE FROM changes WHERE at < now() - interval '1 hour'", &[]).await?;
        tx.execute("DELETE FROM nodes WHERE state = 'dead' AND heartbeat_at < now() - interval '1 hour'", &[]).await?;
        tx.commit().await?;
        Ok(dead)
    }

    /// Leaves the cluster after a clean stop: releases what the incarnation still holds and
    /// removes its row.
    pub async fn leave(&self, incarnation: &str) -> Result<(), StoreError> {
        let mut c = self.get().await?;
        let tx = c.client().transaction().await?;
        release(&tx, incarnation).await?;
        tx.execute("DELETE FROM nodes WHERE incarnation = $1", &[&incarnation]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes the lease `name` for `holder` if it is free, expired or already `holder`'s,
    /// for `ttl`. Returns its new token.
    pub async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<i64>, StoreError> {
        let mut c = self.get().await?;
        let rows = c
            .query(
                "INSERT INTO leases (name, holder, token, expires_at) VALUES ($1, $2, 1, now() + $3::bigint::float8 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = leases.token + 1, expires_at = excluded.expires_at
                 WHERE leases.holder IS NULL OR leases.expires_at < now() OR leases.holder = excluded.holder
                 RETURNING token",
                &[&name, &holder, &(ttl.as_millis() as i64)],
            )
            .await?;
        rows.first().map(|r| col(r, 0)).transpose()
    }

    /// Extends a lease still held (same holder and token, not expired). False if it was lost.
    pub async fn renew_lease(&self, name: &str, holder: &str, token: i64, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.get().await?;
        let n = c
            .execute(
                "UPDATE leases SET expires_at = now() + $4::bigint::float8 * interval '1 millisecond'
                 WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()",
                &[&name, &holder, &token, &(ttl.as_millis() as i64)],
            )
            .await?;
        Ok(n > 0)
    }

    /// Gives a lease up (so another node may take it at once).
    pub async fn release_lease(&self, name: &str, holder: &str, token: i64) -> Result<(), StoreError> {
        let mut c = self.get().await?;
        c.execute(
            "UPDATE leases SET holder = NULL, expires_at = now() WHERE name = $1 AND holder = $2 AND token = $3",
            &[&name, &holder, &token],
        )
        .await?;
        Ok(())
    }

    /// Leases whose name starts with `prefix`.
    pub async fn leases(&self, prefix: &str) -> Result<Vec<LeaseRow>, StoreError> {
        let mut c = self.get().await?;
        let rows = c
            .query(
                "SELECT name, holder, token, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint
                 FROM leases WHERE starts_with(name, $1) ORDER BY name",
                &[&prefix],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(LeaseRow { name: col(r, 0)?, holder: col(r, 1)?, token: col(r, 2)?, remaining_ms: col(r, 3)? }))
            .collect()
    }
}

/// A control-plane change as the change log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    pub seq: i64,
    pub origin: String,
    pub account: String,
    pub function: Option<String>,
    pub path: String,
}

impl PgPool {
    /// Appends a change to the log; returns its sequence number.
    pub async fn record_change(
        &self,
        origin: &str,
        account: &str,
        function: Option<&str>,
        path: &str,
    ) -> Result<i64, StoreError> {
        let mut c = self.get().await?;
        let rows = c
            .query(
                "INSERT INTO changes (origin, account, function, path) VALUES ($1, $2, $3, $4) RETURNING seq",
                &[&origin, &account, &function, &path],
            )
            .await?;
        rows.first().map(|r| col(r, 0)).ok_or_else(|| StoreError::Corrupt("no change sequence".into()))?
    }

    /// Changes after `seq`, oldest first.
    pub async fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<ChangeRow>, StoreError> {
        let mut c = self.get().await?;
        let rows = c
            .query(
                "SELECT seq, origin, account, function, path FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&seq, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ChangeRow {
                    seq: col(r, 0)?,
                    origin: col(r, 1)?,
                    account: col(r, 2)?,
                    function: col(r, 3)?,
                    path: col(r, 4)?,
                })
            })
            .collect()
    }

    /// The last change's sequence number (0 without any).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        let mut c = self.get().await?;
        let rows = c.query("SELECT COALESCE(MAX(seq), 0) FROM changes", &[]).await?;
        rows.first().map(|r| col(r, 0)).unwrap_or(Ok(0))
    }

    /// Sets this incarnation's share of `account`'s concurrency to as much of `want` as the
    /// other nodes' grants leave under `limit`; returns the grant. One account's grants are
    /// changed one node at a time (the account's rows are locked), so they never add up to
    /// more than `limit`.
    pub async fn grant(&self, account: &str, incarnation: &str, want: i64, limit: i64) -> Result<i64, StoreError> {
        let mut c = self.get().await?;
        let tx = c.client().transaction().await?;
        // An advisory lock per account serialises grants (rows may not exist yet to lock).
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('quota/' || $1))", &[&account]).await?;
        let others = tx
            .query(
                "SELECT COALESCE(SUM(granted), 0)::bigint FROM quota_grants WHERE account = $1 AND incarnation <> $2",
                &[&account, &incarnation],
            )
            .await?;
        let others: i64 = others.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
        let granted = want.min(limit - others).max(0);
        tx.execute(
            "INSERT INTO quota_grants (account, incarnation, granted) VALUES ($1, $2, $3)
             ON CONFLICT (account, incarnation) DO UPDATE SET granted = excluded.granted",
            &[&account, &incarnation, &granted],
        )
        .await?;
        tx.commit().await?;
        Ok(granted)
    }
}

/// Frees what `incarnation` holds: its claimed async events become due now, its leases expire.
async fn release(tx: &tokio_postgres::Transaction<'_>, incarnation: &str) -> Result<(), StoreError> {
    let now_ms = model::logfmt::now_ms();
    let events = tx
        .execute(
            "UPDATE async_events SET leased_by = NULL, next_attempt_ms = $2 WHERE leased_by = $1",
            &[&incarnation, &now_ms],
        )
        .await?;
    let leases =
        tx.execute("UPDATE leases SET holder = NULL, expires_at = now() WHERE holder = $1", &[&incarnation]).await?;
    tx.execute(
        "UPDATE object_outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1",
        &[&incarnation],
    )
    .await?;
    // Its share of every account's concurrency goes back to the others.
    tx.execute("DELETE FROM quota_grants WHERE incarnation = $1", &[&incarnation]).await?;
    if events > 0 || leases > 0 {
        tracing::info!(incarnation, events, leases, "released what a departed node held");
    }
    Ok(())
}
