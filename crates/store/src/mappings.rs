//! Event source mappings and their checkpoints in the account's metadata database.
//!
//! A mapping row keeps its configuration (`model::esm::Mapping` as JSON). A checkpoint row
//! keeps how far a mapping has processed one partition of its source, for sources whose
//! position Stratus keeps itself (NATS JetStream's stream sequence); brokers that keep their
//! own (Redis consumer groups, PostgreSQL replication slots, RabbitMQ and MQTT
//! acknowledgements) need none.

use model::esm::Mapping;
use rusqlite::{OptionalExtension, params};

use crate::StoreError;
use crate::db::Db;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_source_mappings (
    uuid        TEXT PRIMARY KEY,
    function    TEXT NOT NULL,
    config      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS event_source_mappings_function ON event_source_mappings(function);
CREATE TABLE IF NOT EXISTS esm_checkpoints (
    uuid        TEXT NOT NULL,
    partition   TEXT NOT NULL,
    position    TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (uuid, partition)
);
";

fn parse(config: &str) -> Result<Mapping, StoreError> {
    serde_json::from_str(config).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn config(m: &Mapping) -> Result<String, StoreError> {
    serde_json::to_string(m).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl crate::meta::Mappings for Db {
    fn create_mapping(&mut self, m: &Mapping, now_ms: i64) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO event_source_mappings (uuid, function, config, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![m.uuid, m.function, config(m)?, now_ms],
        )?;
        if n == 0 { Err(StoreError::AlreadyExists) } else { Ok(()) }
    }

    fn update_mapping(&mut self, m: &Mapping) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE event_source_mappings SET function = ?2, config = ?3 WHERE uuid = ?1",
            params![m.uuid, m.function, config(m)?],
        )?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    fn get_mapping(&self, uuid: &str) -> Result<Option<Mapping>, StoreError> {
        let c: Option<String> = self
            .conn
            .query_row("SELECT config FROM event_source_mappings WHERE uuid = ?1", [uuid], |r| r.get(0))
            .optional()?;
        c.as_deref().map(parse).transpose()
    }

    /// Deletes a mapping and its checkpoints.
    fn delete_mapping(&mut self, uuid: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM esm_checkpoints WHERE uuid = ?1", [uuid])?;
        let n = tx.execute("DELETE FROM event_source_mappings WHERE uuid = ?1", [uuid])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Mappings in creation order (then by UUID), of one function if given, after `after`
    /// (a UUID), at most `limit`.
    fn list_mappings(
        &self,
        function: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Mapping>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT config FROM event_source_mappings
             WHERE (?1 IS NULL OR function = ?1)
               AND (?2 IS NULL OR (created_ms, uuid) > (SELECT created_ms, uuid FROM event_source_mappings WHERE uuid = ?2))
             ORDER BY created_ms, uuid LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![function, after, limit as i64], |r| r.get::<_, String>(0))?;
        rows.map(|c| parse(&c?)).collect()
    }

    /// A partition's checkpoint.
    fn checkpoint(&self, uuid: &str, partition: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT position FROM esm_checkpoints WHERE uuid = ?1 AND partition = ?2",
                [uuid, partition],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Moves a partition's checkpoint (only if the mapping still exists).
    fn set_checkpoint(
        &mut self,
        uuid: &str,
        partition: &str,
        position: &str,
        now_ms: i64,
        _fence: Option<i64>,
    ) -> Result<bool, StoreError> {
        // One server polls each mapping here: there is no lease to check.
        // Cached: a busy mapping writes its checkpoint after every batch.
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO esm_checkpoints (uuid, partition, position, updated_ms)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM event_source_mappings WHERE uuid = ?1)
                 ON CONFLICT (uuid, partition) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
            )?
            .execute(params![uuid, partition, position, now_ms])?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use model::esm::{Mapping, Source, SourceKind, StartingPosition};

    fn mapping(uuid: &str, function: &str) -> Mapping {
        let source = Source { kind: SourceKind::Nats, endpoints: vec!["nats://h".into()], name: "S".into() };
        Mapping::new(uuid.into(), function.into(), source, Some(StartingPosition::TrimHorizon))
    }

    crate::conformance::both!(mappings_and_checkpoints, |db| {
        db.create_mapping(&mapping("a", "f"), 1).unwrap();
        db.create_mapping(&mapping("b", "g"), 2).unwrap();
        db.create_mapping(&mapping("c", "f"), 3).unwrap();
        assert!(db.create_mapping(&mapping("a", "f"), 4).is_err());
        let all: Vec<String> = db.list_mappings(None, None, 10).unwrap().into_iter().map(|m| m.uuid).collect();
        assert_eq!(all, ["a", "b", "c"]);
        let f: Vec<String> = db.list_mappings(Some("f"), Some("a"), 10).unwrap().into_iter().map(|m| m.uuid).collect();
        assert_eq!(f, ["c"]);
        db.set_checkpoint("a", "p", "41", 5, None).unwrap();
        db.set_checkpoint("a", "p", "42", 6, None).unwrap();
        assert_eq!(db.checkpoint("a", "p").unwrap().as_deref(), Some("42"));
        // A deleted mapping's checkpoint goes with it and is never recreated.
        assert!(db.delete_mapping("a").unwrap());
        assert!(!db.set_checkpoint("a", "p", "43", 7, None).unwrap());
        assert_eq!(db.checkpoint("a", "p").unwrap(), None);
        assert!(db.get_mapping("a").unwrap().is_none());
    });
}
