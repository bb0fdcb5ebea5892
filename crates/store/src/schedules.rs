//! Schedules and schedule groups in the metadata database. A schedule row keeps its
//! configuration, its next tick and the last tick it fired; firing a tick moves both and
//! queues the invocation in one transaction, so a tick fires once even across a crash.

use model::schedule::Schedule;
use rusqlite::{OptionalExtension, params};

use crate::StoreError;
use crate::db::{AsyncEvent, Db};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schedule_groups (
    name        TEXT PRIMARY KEY,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    group_name  TEXT NOT NULL,
    name        TEXT NOT NULL,
    config      TEXT NOT NULL,
    -- the next tick to fire (Unix ms); NULL when disabled or finished
    next_ms     INTEGER,
    -- the last tick fired
    last_fired_ms INTEGER,
    -- bumped by every update, so a tick planned from an older configuration is not applied
    version     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_name, name)
);
CREATE INDEX IF NOT EXISTS schedules_next ON schedules(next_ms) WHERE next_ms IS NOT NULL;
";

/// The group every account has.
pub const DEFAULT_GROUP: &str = "default";

/// A stored schedule and its progress.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    pub schedule: Schedule,
    pub next_ms: Option<i64>,
    pub last_fired_ms: Option<i64>,
    /// Changes with every update of the configuration.
    pub version: i64,
}

/// One schedule's move to its next tick (see [`Db::advance_schedules`]).
#[derive(Debug, Clone)]
pub struct Advance {
    pub group: String,
    pub name: String,
    /// The tick the schedule was read at (the move is skipped if it changed since).
    pub expected_next: i64,
    /// The configuration the move was planned from (skipped if it was updated since).
    pub version: i64,
    /// The tick fired, if one is.
    pub fired: Option<i64>,
    pub new_next: Option<i64>,
    pub event: Option<AsyncEvent>,
    /// Delete the schedule (its last tick, with ActionAfterCompletion DELETE).
    pub delete: bool,
}

/// What firing a tick did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fired {
    /// The tick was recorded and its invocation queued.
    Queued,
    /// The schedule changed (or went) since it was read: nothing was done.
    Stale,
}

fn parse(config: &str) -> Result<Schedule, StoreError> {
    serde_json::from_str(config).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The columns every schedule query selects, in this order.
const COLUMNS: &str = "config, next_ms, last_fired_ms, version";

/// Reads the rows of a query selecting [`COLUMNS`].
fn collect(rows: rusqlite::Rows<'_>) -> Result<Vec<StoredSchedule>, StoreError> {
    rows.mapped(|r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map(|row| {
            let (c, next_ms, last_fired_ms, version) = row?;
            Ok(StoredSchedule { schedule: parse(&c)?, next_ms, last_fired_ms, version })
        })
        .collect()
}

impl crate::meta::Schedules for Db {
    fn group_exists(&self, group: &str) -> Result<bool, StoreError> {
        if group == DEFAULT_GROUP {
            return Ok(true);
        }
        Ok(self
            .conn
            .query_row("SELECT 1 FROM schedule_groups WHERE name = ?1", [group], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Groups with their creation time (the default group first).
    fn list_groups(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT name, created_ms FROM schedule_groups ORDER BY name")?;
        let mut out = vec![(DEFAULT_GROUP.to_string(), None)];
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, Some(r.get::<_, i64>(1)?))))? {
            out.push(row?);
        }
        Ok(out)
    }

    fn create_group(&mut self, group: &str, now_ms: i64) -> Result<(), StoreError> {
        if group == DEFAULT_GROUP {
            return Err(StoreError::AlreadyExists);
        }
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO schedule_groups (name, created_ms) VALUES (?1, ?2)",
            params![group, now_ms],
        )?;
        if n == 0 { Err(StoreError::AlreadyExists) } else { Ok(()) }
    }

    /// Deletes a group and its schedules.
    fn delete_group(&mut self, group: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM schedules WHERE group_name = ?1", [group])?;
        let n = tx.execute("DELETE FROM schedule_groups WHERE name = ?1", [group])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn create_schedule(&mut self, s: &Schedule, next_ms: Option<i64>) -> Result<(), StoreError> {
        let config = serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO schedules (group_name, name, config, next_ms) VALUES (?1, ?2, ?3, ?4)",
            params![s.group, s.name, config, next_ms],
        )?;
        if n == 0 { Err(StoreError::AlreadyExists) } else { Ok(()) }
    }

    /// Replaces a schedule's configuration and next tick (its last fired tick stays).
    fn update_schedule(&mut self, s: &Schedule, next_ms: Option<i64>) -> Result<(), StoreError> {
        let config = serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let n = self.conn.execute(
            "UPDATE schedules SET config = ?3, next_ms = ?4, version = version + 1 WHERE group_name = ?1 AND name = ?2",
            params![s.group, s.name, config, next_ms],
        )?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    fn get_schedule(&self, group: &str, name: &str) -> Result<Option<StoredSchedule>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE group_name = ?1 AND name = ?2"))?;
        Ok(collect(stmt.query([group, name])?)?.pop())
    }

    fn delete_schedule(&mut self, group: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM schedules WHERE group_name = ?1 AND name = ?2", [group, name])? > 0)
    }

    /// Schedules ordered by group and name, after `after` (`group/name`), at most `limit`.
    fn list_schedules(
        &self,
        group: Option<&str>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules
             WHERE (?1 IS NULL OR group_name = ?1) AND substr(name, 1, length(?2)) = ?2
               AND (?3 IS NULL OR group_name || '/' || name > ?3)
             ORDER BY group_name || '/' || name LIMIT ?4"
        ))?;
        collect(stmt.query(params![group, prefix, after, limit as i64])?)
    }

    /// The earliest next tick of any schedule.
    fn next_schedule_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row("SELECT MIN(next_ms) FROM schedules WHERE next_ms IS NOT NULL", [], |r| r.get(0))?)
    }

    /// Schedules whose next tick is at or before `now_ms`.
    fn due_schedules(&self, now_ms: i64, limit: usize) -> Result<Vec<StoredSchedule>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE next_ms IS NOT NULL AND next_ms <= ?1 ORDER BY next_ms LIMIT ?2"
        ))?;
        collect(stmt.query(params![now_ms, limit as i64])?)
    }

    /// Applies the moves of several schedules in one transaction: each moves from tick
    /// `expected_next` to `new_next`, records `fired` as its last fired tick and queues its
    /// event, all or nothing (or is deleted, for ActionAfterCompletion DELETE after its last
    /// tick). A schedule that changed since it was read is left alone (`Fired::Stale`).
    fn advance_schedules(&mut self, moves: &[Advance]) -> Result<Vec<Fired>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(moves.len());
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM schedules WHERE group_name = ?1 AND name = ?2 AND next_ms = ?3 AND version = ?4",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE schedules SET next_ms = ?4, last_fired_ms = COALESCE(?5, last_fired_ms)
                 WHERE group_name = ?1 AND name = ?2 AND next_ms = ?3 AND version = ?6",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO async_events (request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms, trace, trigger, delivery)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5, ?6, ?7, ?8)",
            )?;
            for m in moves {
                let n = if m.delete {
                    delete.execute(params![m.group, m.name, m.expected_next, m.version])?
                } else {
                    update.execute(params![m.group, m.name, m.expected_next, m.new_next, m.fired, m.version])?
                };
                if n == 0 {
                    out.push(Fired::Stale);
                    continue;
                }
                if let Some(e) = &m.event {
                    // Queued even if the function is missing now: the delivery policy decides.
                    insert.execute(params![
                        e.request_id,
                        e.function,
                        e.qualifier,
                        e.payload,
                        e.received_ms,
                        e.trace,
                        e.trigger,
                        e.delivery.as_ref().map(|d| serde_json::to_string(d).unwrap_or_default())
                    ])?;
                }
                out.push(Fired::Queued);
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::schedule::{FlexibleWindow, RetryPolicy, Target};

    fn schedule(name: &str) -> Schedule {
        Schedule {
            name: name.into(),
            group: DEFAULT_GROUP.into(),
            expression: "rate(1 minute)".into(),
            timezone: None,
            start_date: None,
            end_date: None,
            window: FlexibleWindow { mode: "OFF".into(), maximum_window_minutes: None },
            state: "ENABLED".into(),
            action_after_completion: "NONE".into(),
            description: None,
            target: Target {
                arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
                role_arn: String::new(),
                input: None,
                retry_policy: RetryPolicy::default(),
                dead_letter: None,
            },
            creation_date: 0.0,
            last_modification_date: 0.0,
        }
    }

    fn event() -> AsyncEvent {
        AsyncEvent {
            id: 0,
            request_id: "r".into(),
            function: "f".into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            received_ms: 1,
            attempts: 0,
            next_attempt_ms: 1,
            trace: None,
            trigger: Some("schedule".into()),
            delivery: None,
        }
    }

    crate::conformance::both!(a_tick_moves_once_and_queues_its_event_with_it, |db| {
        db.create_schedule(&schedule("s"), Some(60_000)).unwrap();
        assert!(matches!(db.create_schedule(&schedule("s"), None), Err(StoreError::AlreadyExists)));
        assert_eq!(db.due_schedules(59_999, 10).unwrap().len(), 0);
        assert_eq!(db.due_schedules(60_000, 10).unwrap().len(), 1);
        let advance = Advance {
            group: DEFAULT_GROUP.into(),
            name: "s".into(),
            expected_next: 60_000,
            version: 0,
            fired: Some(60_000),
            new_next: Some(120_000),
            event: Some(event()),
            delete: false,
        };
        assert_eq!(db.advance_schedules(std::slice::from_ref(&advance)).unwrap(), [Fired::Queued]);
        // The same move again (a second scheduler, or a retry after a crash) finds the
        // schedule already moved: nothing fires twice.
        assert_eq!(db.advance_schedules(std::slice::from_ref(&advance)).unwrap(), [Fired::Stale]);
        // A move planned before an update is not applied after it.
        db.update_schedule(&schedule("s"), Some(120_000)).unwrap();
        let planned = Advance { expected_next: 120_000, fired: Some(120_000), new_next: Some(180_000), ..advance };
        assert_eq!(db.advance_schedules(&[planned]).unwrap(), [Fired::Stale]);
        let st = db.get_schedule(DEFAULT_GROUP, "s").unwrap().unwrap();
        assert_eq!((st.next_ms, st.last_fired_ms), (Some(120_000), Some(60_000)));
        assert_eq!(db.queued_events().unwrap(), 1);
        assert_eq!(db.next_schedule_due().unwrap(), Some(120_000));
        assert!(db.delete_schedule(DEFAULT_GROUP, "s").unwrap());
        assert_eq!(db.next_schedule_due().unwrap(), None);
    });
}
