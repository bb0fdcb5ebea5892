//! The metadata database: functions, their versions' configuration, tags, and the queue of
//! accepted asynchronous events. SQLite in WAL mode; the only module in Stratus with SQL.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use model::FunctionConfig;
use model::versions::{AliasConfig, EventInvokeConfig, ProvisionedConfig};
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS functions (
    name        TEXT PRIMARY KEY,
    created_ms  INTEGER NOT NULL,
    tags        TEXT NOT NULL DEFAULT '{}',
    -- the number of the last published version (versions are never reused)
    last_version INTEGER NOT NULL DEFAULT 0,
    -- PutFunctionConcurrency; NULL when the function has no reservation
    reserved_concurrency INTEGER
);
CREATE TABLE IF NOT EXISTS aliases (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    config      TEXT NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE IF NOT EXISTS event_invoke_configs (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier   TEXT NOT NULL,
    config      TEXT NOT NULL,
    PRIMARY KEY (function, qualifier)
);
CREATE TABLE IF NOT EXISTS provisioned_configs (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier   TEXT NOT NULL,
    requested   INTEGER NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (function, qualifier)
);
CREATE TABLE IF NOT EXISTS versions (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version     TEXT NOT NULL,
    config      TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size   INTEGER NOT NULL,
    PRIMARY KEY (function, version)
);
CREATE TABLE IF NOT EXISTS async_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id      TEXT NOT NULL,
    function        TEXT NOT NULL,
    qualifier       TEXT,
    payload         BLOB NOT NULL,
    received_ms     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    -- 1 while a dispatcher holds it; cleared at start-up (the holder is gone)
    leased          INTEGER NOT NULL DEFAULT 0,
    -- the sender's X-Amzn-Trace-Id, which the invocation joins
    trace           TEXT,
    -- what sent it, when not an Invoke call (`s3`, …)
    trigger         TEXT,
    -- a scheduler's delivery policy (JSON `DeliveryPolicy`), if it has one
    delivery        TEXT
);
CREATE INDEX IF NOT EXISTS async_events_due ON async_events(next_attempt_ms);
CREATE TABLE IF NOT EXISTS function_urls (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    -- the alias, or '' for the unqualified function
    qualifier   TEXT NOT NULL,
    url_id      TEXT NOT NULL UNIQUE,
    config      TEXT NOT NULL,
    PRIMARY KEY (function, qualifier)
);
CREATE TABLE IF NOT EXISTS http_routes (
    -- `METHOD /path` or `$default`
    route_key   TEXT PRIMARY KEY,
    config      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS function_policies (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    -- the qualifier, or '' for the unqualified function
    qualifier   TEXT NOT NULL,
    policy      TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    PRIMARY KEY (function, qualifier)
);
CREATE TABLE IF NOT EXISTS layers (
    name         TEXT PRIMARY KEY,
    -- the number of the last published version (numbers are never reused)
    last_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS layer_versions (
    name        TEXT NOT NULL REFERENCES layers(name),
    version     INTEGER NOT NULL,
    config      TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
"#;

/// An accepted asynchronous event waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncEvent {
    pub id: i64,
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub received_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The sender's `X-Amzn-Trace-Id`.
    pub trace: Option<String>,
    /// What sent it (`Trigger::as_str`), when not an Invoke call.
    pub trigger: Option<String>,
    /// A scheduler's delivery policy.
    pub delivery: Option<model::invoke::DeliveryPolicy>,
}

/// A connection to the metadata database.
pub struct Db {
    pub(crate) conn: Connection,
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Db {
    /// Opens (creating if needed) the database at `path` in WAL mode.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a committed transaction survives a crash of this process.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::schedules::SCHEMA)?;
        conn.execute_batch(crate::mappings::SCHEMA)?;
        // Data directories made before these columns existed.
        for (table, column, decl) in [
            ("functions", "last_version", "INTEGER NOT NULL DEFAULT 0"),
            ("functions", "reserved_concurrency", "INTEGER"),
            ("async_events", "leased", "INTEGER NOT NULL DEFAULT 0"),
            ("async_events", "trace", "TEXT"),
            ("async_events", "trigger", "TEXT"),
            ("async_events", "delivery", "TEXT"),
            ("schedules", "version", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            let present: bool = conn
                .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?
                .exists([column])?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
        }
        Ok(Self { conn })
    }
}

impl crate::meta::Functions for Db {
    /// Creates a function with its `$LATEST` configuration.
    fn create_function(&mut self, config: &FunctionConfig, tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let exists: bool =
            tx.query_row("SELECT 1 FROM functions WHERE name = ?1", [&config.name], |_| Ok(())).optional()?.is_some();
        if exists {
            return Err(StoreError::AlreadyExists);
        }
        tx.execute(
            "INSERT INTO functions (name, created_ms, tags) VALUES (?1, ?2, ?3)",
            params![config.name, config.last_modified_ms, serde_json::to_string(tags).map_err(json_err)?],
        )?;
        insert_version(&tx, config)?;
        tx.commit()?;
        Ok(())
    }

    /// The configuration of one version of a function.
    fn get_version(&self, name: &str, version: &str) -> Result<Option<FunctionConfig>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT config FROM versions WHERE function = ?1 AND version = ?2", [name, version], |r| {
                r.get(0)
            })
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(json_err)).transpose()
    }

    /// Lists `$LATEST` configurations in name order, starting after `after`.
    fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT config FROM versions WHERE version = '$LATEST' AND function > ?1 ORDER BY function LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after.unwrap_or(""), limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?).map_err(json_err)?);
        }
        Ok(out)
    }

    /// Changes `$LATEST` in one transaction. `expected_revision`, if given, must match.
    fn update_latest(
        &mut self,
        name: &str,
        expected_revision: Option<&str>,
        change: crate::meta::Change<'_>,
    ) -> Result<FunctionConfig, StoreError> {
        let tx = self.conn.transaction()?;
        let json: Option<String> = tx
            .query_row("SELECT config FROM versions WHERE function = ?1 AND version = '$LATEST'", [name], |r| r.get(0))
            .optional()?;
        let Some(json) = json else { return Err(StoreError::NotFound) };
        let mut config: FunctionConfig = serde_json::from_str(&json).map_err(json_err)?;
        if let Some(rev) = expected_revision
            && rev != config.revision_id
        {
            return Err(StoreError::RevisionMismatch);
        }
        change(&mut config)?;
        tx.execute(
            "UPDATE versions SET config = ?3, code_sha256 = ?4, code_size = ?5 WHERE function = ?1 AND version = ?2",
            params![
                name,
                config.version,
                serde_json::to_string(&config).map_err(json_err)?,
                config.code_sha256,
                config.code_size as i64
            ],
        )?;
        tx.commit()?;
        Ok(config)
    }

    /// Deletes a function, its versions, aliases, settings and queued events. Returns false if
    /// it did not exist.
    fn delete_function(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        for table in ["versions", "aliases", "event_invoke_configs", "provisioned_configs", "async_events"] {
            tx.execute(&format!("DELETE FROM {table} WHERE function = ?1"), [name])?;
        }
        let n = tx.execute("DELETE FROM functions WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Publishes `$LATEST` as a new version, unless it is unchanged since the last version
    /// (then that version is returned, as Lambda does). `check` sees `$LATEST` first and may
    /// refuse (code hash and revision preconditions).
    fn publish_version(
        &mut self,
        name: &str,
        description: Option<&str>,
        now_ms: i64,
        check: crate::meta::Check<'_>,
    ) -> Result<FunctionConfig, StoreError> {
        let tx = self.conn.transaction()?;
        let latest: Option<String> = tx
            .query_row("SELECT config FROM versions WHERE function = ?1 AND version = '$LATEST'", [name], |r| r.get(0))
            .optional()?;
        let Some(latest) = latest else { return Err(StoreError::NotFound) };
        let latest: FunctionConfig = serde_json::from_str(&latest).map_err(json_err)?;
        check(&latest)?;
        let last: i64 = tx.query_row("SELECT last_version FROM functions WHERE name = ?1", [name], |r| r.get(0))?;
        if last > 0 {
            let prev: Option<String> = tx
                .query_row(
                    "SELECT config FROM versions WHERE function = ?1 AND version = ?2",
                    params![name, last.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(prev) = prev {
                let prev: FunctionConfig = serde_json::from_str(&prev).map_err(json_err)?;
                if same_content(&prev, &latest) {
                    return Ok(prev);
                }
            }
        }
        let number = last + 1;
        let mut version = latest;
        version.version = number.to_string();
        if let Some(d) = description {
            version.description = d.to_string();
        }
        version.last_modified_ms = now_ms;
        version.revision_id = uuid::Uuid::new_v4().to_string();
        insert_version(&tx, &version)?;
        tx.execute("UPDATE functions SET last_version = ?2 WHERE name = ?1", params![name, number])?;
        tx.commit()?;
        Ok(version)
    }

    /// Every version of a function: `$LATEST` first, then by number, after `after`.
    fn list_versions(&self, name: &str) -> Result<Vec<FunctionConfig>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT config FROM versions WHERE function = ?1
             ORDER BY CASE version WHEN '$LATEST' THEN -1 ELSE CAST(version AS INTEGER) END",
        )?;
        let rows = stmt.query_map([name], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?).map_err(json_err)?);
        }
        Ok(out)
    }

    /// Deletes one published version (refused while an alias points to it).
    fn delete_version(&mut self, name: &str, version: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let mut users = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT config FROM aliases WHERE function = ?1")?;
            for json in stmt.query_map([name], |r| r.get::<_, String>(0))? {
                let alias: AliasConfig = serde_json::from_str(&json?).map_err(json_err)?;
                if alias.function_version == version || alias.routing.contains_key(version) {
                    users.push(alias.name);
                }
            }
        }
        if !users.is_empty() {
            return Err(StoreError::Rejected(model::LambdaError::conflict(format!(
                "Unable to delete version because the following aliases reference it: [{}]",
                users.join(", ")
            ))));
        }
        let n = tx.execute("DELETE FROM versions WHERE function = ?1 AND version = ?2", params![name, version])?;
        tx.execute("DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2", params![name, version])?;
        tx.execute("DELETE FROM provisioned_configs WHERE function = ?1 AND qualifier = ?2", params![name, version])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn get_alias(&self, function: &str, alias: &str) -> Result<Option<AliasConfig>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT config FROM aliases WHERE function = ?1 AND name = ?2", [function, alias], |r| r.get(0))
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(json_err)).transpose()
    }

    fn list_aliases(&self, function: &str) -> Result<Vec<AliasConfig>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT config FROM aliases WHERE function = ?1 ORDER BY name")?;
        let rows = stmt.query_map([function], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?).map_err(json_err)?);
        }
        Ok(out)
    }

    /// Creates (`create`) or replaces an alias. Versions it names must exist.
    fn put_alias(&mut self, function: &str, alias: &AliasConfig, create: bool) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM aliases WHERE function = ?1 AND name = ?2", [function, &alias.name], |_| Ok(()))
            .optional()?
            .is_some();
        if create && exists {
            return Err(StoreError::AlreadyExists);
        }
        if !create && !exists {
            return Err(StoreError::NotFound);
        }
        for v in std::iter::once(&alias.function_version).chain(alias.routing.keys()) {
            let found = tx
                .query_row("SELECT 1 FROM versions WHERE function = ?1 AND version = ?2", [function, v], |_| Ok(()))
                .optional()?
                .is_some();
            if !found {
                return Err(StoreError::Rejected(model::LambdaError::not_found(format!(
                    "Function not found: {function}:{v}"
                ))));
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO aliases (function, name, config) VALUES (?1, ?2, ?3)",
            params![function, alias.name, serde_json::to_string(alias).map_err(json_err)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn delete_alias(&mut self, function: &str, alias: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute("DELETE FROM aliases WHERE function = ?1 AND name = ?2", [function, alias])?;
        tx.execute("DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2", [function, alias])?;
        tx.execute("DELETE FROM provisioned_configs WHERE function = ?1 AND qualifier = ?2", [function, alias])?;
        tx.execute("DELETE FROM function_urls WHERE function = ?1 AND qualifier = ?2", [function, alias])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn reserved_concurrency(&self, function: &str) -> Result<Option<Option<u32>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT reserved_concurrency FROM functions WHERE name = ?1", [function], |r| {
                r.get::<_, Option<u32>>(0)
            })
            .optional()?)
    }

    /// Sets (or clears) a function's reserved concurrency. False if there is no such function.
    fn set_reserved_concurrency(&mut self, function: &str, value: Option<u32>) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("UPDATE functions SET reserved_concurrency = ?2 WHERE name = ?1", params![function, value])?
            > 0)
    }

    /// Reserved concurrency of every function that has one.
    fn all_reserved(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, reserved_concurrency FROM functions WHERE reserved_concurrency IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn get_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<EventInvokeConfig>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT config FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                [function, qualifier],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(json_err)).transpose()
    }

    fn list_event_invoke_configs(&self, function: &str) -> Result<Vec<(String, EventInvokeConfig)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT qualifier, config FROM event_invoke_configs WHERE function = ?1 ORDER BY qualifier")?;
        let rows = stmt.query_map([function], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (q, json) = row?;
            out.push((q, serde_json::from_str(&json).map_err(json_err)?));
        }
        Ok(out)
    }

    fn put_event_invoke_config(
        &mut self,
        function: &str,
        qualifier: &str,
        config: &EventInvokeConfig,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO event_invoke_configs (function, qualifier, config) VALUES (?1, ?2, ?3)",
            params![function, qualifier, serde_json::to_string(config).map_err(json_err)?],
        )?;
        Ok(())
    }

    fn delete_event_invoke_config(&mut self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
            [function, qualifier],
        )? > 0)
    }

    fn put_provisioned(&mut self, function: &str, config: &ProvisionedConfig) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO provisioned_configs (function, qualifier, requested, last_modified_ms) VALUES (?1, ?2, ?3, ?4)",
            params![function, config.qualifier, config.requested, config.last_modified_ms],
        )?;
        Ok(())
    }

    fn delete_provisioned(&mut self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM provisioned_configs WHERE function = ?1 AND qualifier = ?2", [function, qualifier])?
            > 0)
    }

    /// Provisioned configurations of one function, or of all (`None`).
    fn list_provisioned(&self, function: Option<&str>) -> Result<Vec<(String, ProvisionedConfig)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT function, qualifier, requested, last_modified_ms FROM provisioned_configs
             WHERE ?1 IS NULL OR function = ?1 ORDER BY function, qualifier",
        )?;
        let rows = stmt.query_map([function], |r| {
            Ok((
                r.get::<_, String>(0)?,
                ProvisionedConfig { qualifier: r.get(1)?, requested: r.get(2)?, last_modified_ms: r.get(3)? },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn tags(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let json: Option<String> =
            self.conn.query_row("SELECT tags FROM functions WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(json_err)).transpose()
    }

    /// Replaces a function's tags. Returns false if the function does not exist.
    fn set_tags(&mut self, name: &str, tags: &BTreeMap<String, String>) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE functions SET tags = ?2 WHERE name = ?1",
            params![name, serde_json::to_string(tags).map_err(json_err)?],
        )?;
        Ok(n > 0)
    }

    /// Number of functions and the total size of their packages.
    fn usage(&self) -> Result<(u64, u64), StoreError> {
        let count: i64 = self.conn.query_row("SELECT COUNT(*) FROM functions", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("SELECT COALESCE(SUM(code_size), 0) FROM versions", [], |r| r.get(0))?;
        Ok((count as u64, size as u64))
    }

    /// Code packages still referenced: by some function version (as its code or one of its
    /// layers) or by a layer version.
    fn referenced_code(&self) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT code_sha256 FROM versions UNION SELECT code_sha256 FROM layer_versions
             UNION SELECT json_extract(l.value, '$.code_sha256') FROM versions, json_each(versions.config, '$.layers') AS l",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
        Ok(rows.filter_map(|r| r.transpose()).collect::<Result<_, _>>()?)
    }

    /// The distinct lists of layers (package SHA-256s, in order) function versions use.
    fn referenced_layer_sets(&self) -> Result<Vec<Vec<String>>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT json_extract(config, '$.layers') FROM versions WHERE json_array_length(config, '$.layers') > 1",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut sets = Vec::new();
        for json in rows {
            let layers: Vec<model::layers::LayerRef> = serde_json::from_str(&json?).map_err(json_err)?;
            sets.push(layers.into_iter().map(|l| l.code_sha256).collect());
        }
        Ok(sets)
    }
}

impl crate::meta::Queue for Db {
    /// The earliest time any queued event is due.
    fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row("SELECT MIN(next_attempt_ms) FROM async_events", [], |r| r.get(0))?)
    }

    /// Makes every leased event due now (at start-up: whoever held them is gone).
    fn release_leases(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute("UPDATE async_events SET leased = 0, next_attempt_ms = ?1 WHERE leased = 1", [now_ms])?)
    }

    /// How many events are queued (for metrics and tests).
    fn queued_events(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM async_events", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

/// True when two configurations run the same code the same way (ignoring identity fields).
pub(crate) fn same_content(a: &FunctionConfig, b: &FunctionConfig) -> bool {
    let strip = |c: &FunctionConfig| {
        let mut c = c.clone();
        c.version = String::new();
        c.revision_id = String::new();
        c.last_modified_ms = 0;
        c.description = String::new();
        c
    };
    strip(a) == strip(b)
}

fn insert_version(tx: &rusqlite::Transaction<'_>, config: &FunctionConfig) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO versions (function, version, config, code_sha256, code_size) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            config.name,
            config.version,
            serde_json::to_string(config).map_err(json_err)?,
            config.code_sha256,
            config.code_size as i64
        ],
    )?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::meta::*;
    use model::ConfigInput;

    pub(crate) fn config(name: &str) -> FunctionConfig {
        ConfigInput {
            runtime: Some("python3.11".into()),
            handler: Some("a.b".into()),
            role: Some("arn:aws:iam::123456789012:role/r".into()),
            ..Default::default()
        }
        .into_new_config(name, "abc", 3, 1)
        .unwrap()
    }

    #[test]
    fn functions_survive_reopen_and_list_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let mut db = Db::open(&path).unwrap();
            for n in ["c", "a", "b"] {
                db.create_function(&config(n), &BTreeMap::new()).unwrap();
            }
            assert!(matches!(db.create_function(&config("a"), &BTreeMap::new()), Err(StoreError::AlreadyExists)));
        }
        let db = Db::open(&path).unwrap();
        let page: Vec<String> = db.list_functions(None, 2).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(page, ["a", "b"]);
        let rest: Vec<String> = db.list_functions(Some("b"), 2).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(rest, ["c"]);
        assert_eq!(db.usage().unwrap(), (3, 9));
    }

    crate::conformance::both!(update_checks_revision, |db| {
        db.create_function(&config("f"), &BTreeMap::new()).unwrap();
        assert!(matches!(db.update_latest("f", Some("nope"), &mut |_| Ok(())), Err(StoreError::RevisionMismatch)));
        let rev = db.get_version("f", "$LATEST").unwrap().unwrap().revision_id;
        let updated = db.update_latest("f", Some(&rev), &mut |c| {
            c.memory_mb = 512;
            Ok(())
        });
        assert_eq!(updated.unwrap().memory_mb, 512);
    });
}
