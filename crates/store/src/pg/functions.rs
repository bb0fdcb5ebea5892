//! The metadata interface ([`crate::meta`]) on PostgreSQL. Every statement names the
//! account (`$1`): rows of other accounts are never read or written.

use std::collections::{BTreeMap, HashSet};

use model::FunctionConfig;
use model::esm::Mapping;
use model::layers::LayerVersion;
use model::routes::RouteConfig;
use model::schedule::Schedule;
use model::urls::UrlConfig;
use model::versions::{AliasConfig, EventInvokeConfig, ProvisionedConfig};
use serde_json::Value;

use super::{PgDb, col};
use crate::StoreError;
use crate::meta::{Change, Check, Functions, Layers, Mappings, Policies, Queue, Routes, Schedules, Urls};
use crate::policies::{PolicyChange, PolicyRows};
use crate::schedules::{Advance, Fired, StoredSchedule};

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(json_err)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(json_err)
}

/// The first column of every row, parsed as JSON.
fn configs<T: serde::de::DeserializeOwned>(rows: Vec<tokio_postgres::Row>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| from_json(&col::<String>(r, 0)?)).collect()
}

impl PgDb {
    fn function_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .query_opt("SELECT 1 FROM functions WHERE account = $1 AND name = $2", &[&self.acct(), &name])?
            .is_some())
    }

    fn insert_version(&self, config: &FunctionConfig) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO versions (account, function, version, config, code_sha256, code_size) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &self.acct(),
                &config.name,
                &config.version,
                &to_json(config)?,
                &config.code_sha256,
                &(config.code_size as i64),
            ],
        )?;
        Ok(())
    }

    fn latest(&self, name: &str, lock: bool) -> Result<Option<FunctionConfig>, StoreError> {
        let sql = if lock {
            "SELECT config FROM versions WHERE account = $1 AND function = $2 AND version = '$LATEST' FOR UPDATE"
        } else {
            "SELECT config FROM versions WHERE account = $1 AND function = $2 AND version = '$LATEST'"
        };
        self.query_opt(sql, &[&self.acct(), &name])?.map(|r| from_json(&col::<String>(&r, 0)?)).transpose()
    }
}

impl Functions for PgDb {
    fn create_function(&mut self, config: &FunctionConfig, tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
        self.transaction(|| {
            let n = self.execute(
                "INSERT INTO functions (account, name, created_ms, tags) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&self.acct(), &config.name, &config.last_modified_ms, &to_json(tags)?],
            )?;
            if n == 0 {
                return Err(StoreError::AlreadyExists);
            }
            self.insert_version(config)
        })
    }

    fn get_version(&self, name: &str, version: &str) -> Result<Option<FunctionConfig>, StoreError> {
        self.query_opt(
            "SELECT config FROM versions WHERE account = $1 AND function = $2 AND version = $3",
            &[&self.acct(), &name, &version],
        )?
        .map(|r| from_json(&col::<String>(&r, 0)?))
        .transpose()
    }

    fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>, StoreError> {
        configs(self.query(
            "SELECT config FROM versions WHERE account = $1 AND version = '$LATEST' AND function > $2
             ORDER BY function LIMIT $3",
            &[&self.acct(), &after.unwrap_or(""), &(limit as i64)],
        )?)
    }

    fn update_latest(
        &mut self,
        name: &str,
        expected_revision: Option<&str>,
        change: Change<'_>,
    ) -> Result<FunctionConfig, StoreError> {
        self.transaction(|| {
            let Some(mut config) = self.latest(name, true)? else { return Err(StoreError::NotFound) };
            if let Some(rev) = expected_revision
                && rev != config.revision_id
            {
                return Err(StoreError::RevisionMismatch);
            }
            change(&mut config)?;
            self.execute(
                "UPDATE versions SET config = $4, code_sha256 = $5, code_size = $6
                 WHERE account = $1 AND function = $2 AND version = $3",
                &[
                    &self.acct(),
                    &name,
                    &config.version,
                    &to_json(&config)?,
                    &config.code_sha256,
                    &(config.code_size as i64),
                ],
            )?;
            Ok(config)
        })
    }

    fn delete_function(&mut self, name: &str) -> Result<bool, StoreError> {
        self.transaction(|| {
            // Versions, aliases, settings, URLs and policies go by cascade; queued events here.
            self.execute("DELETE FROM async_events WHERE account = $1 AND function = $2", &[&self.acct(), &name])?;
            Ok(self.execute("DELETE FROM functions WHERE account = $1 AND name = $2", &[&self.acct(), &name])? > 0)
        })
    }

    fn publish_version(
        &mut self,
        name: &str,
        description: Option<&str>,
        now_ms: i64,
        check: Check<'_>,
    ) -> Result<FunctionConfig, StoreError> {
        self.transaction(|| {
            let Some(last) = self.query_opt(
                "SELECT last_version FROM functions WHERE account = $1 AND name = $2 FOR UPDATE",
                &[&self.acct(), &name],
            )?
            else {
                return Err(StoreError::NotFound);
            };
            let last: i64 = col(&last, 0)?;
            let Some(latest) = self.latest(name, false)? else { return Err(StoreError::NotFound) };
            check(&latest)?;
            if last > 0
                && let Some(prev) = self.get_version(name, &last.to_string())?
                && crate::db::same_content(&prev, &latest)
            {
                return Ok(prev);
            }
            let number = last + 1;
            let mut version = latest;
            version.version = number.to_string();
            if let Some(d) = description {
                version.description = d.to_string();
            }
            version.last_modified_ms = now_ms;
            version.revision_id = uuid::Uuid::new_v4().to_string();
            self.insert_version(&version)?;
            self.execute(
                "UPDATE functions SET last_version = $3 WHERE account = $1 AND name = $2",
                &[&self.acct(), &name, &number],
            )?;
            Ok(version)
        })
    }

    fn list_versions(&self, name: &str) -> Result<Vec<FunctionConfig>, StoreError> {
        configs(self.query(
            "SELECT config FROM versions WHERE account = $1 AND function = $2
             ORDER BY CASE version WHEN '$LATEST' THEN -1 ELSE version::bigint END",
            &[&self.acct(), &name],
        )?)
    }

    fn delete_version(&mut self, name: &str, version: &str) -> Result<bool, StoreError> {
        self.transaction(|| {
            let aliases: Vec<AliasConfig> = configs(
                self.query("SELECT config FROM aliases WHERE account = $1 AND function = $2", &[&self.acct(), &name])?,
            )?;
            let users: Vec<String> = aliases
                .into_iter()
                .filter(|a| a.function_version == version || a.routing.contains_key(version))
                .map(|a| a.name)
                .collect();
            if !users.is_empty() {
                return Err(StoreError::Rejected(model::LambdaError::conflict(format!(
                    "Unable to delete version because the following aliases reference it: [{}]",
                    users.join(", ")
                ))));
            }
            let p: [super::Param<'_>; 3] = [&self.acct(), &name, &version];
            let n = self.execute("DELETE FROM versions WHERE account = $1 AND function = $2 AND version = $3", &p)?;
            self.execute(
                "DELETE FROM event_invoke_configs WHERE account = $1 AND function = $2 AND qualifier = $3",
                &p,
            )?;
            self.execute(
                "DELETE FROM provisioned_configs WHERE account = $1 AND function = $2 AND qualifier = $3",
                &p,
            )?;
            Ok(n > 0)
        })
    }

    fn get_alias(&self, function: &str, alias: &str) -> Result<Option<AliasConfig>, StoreError> {
        self.query_opt(
            "SELECT config FROM aliases WHERE account = $1 AND function = $2 AND name = $3",
            &[&self.acct(), &function, &alias],
        )?
        .map(|r| from_json(&col::<String>(&r, 0)?))
        .transpose()
    }

    fn list_aliases(&self, function: &str) -> Result<Vec<AliasConfig>, StoreError> {
        configs(self.query(
            "SELECT config FROM aliases WHERE account = $1 AND function = $2 ORDER BY name",
            &[&self.acct(), &function],
        )?)
    }

    fn put_alias(&mut self, function: &str, alias: &AliasConfig, create: bool) -> Result<(), StoreError> {
        self.transaction(|| {
            let exists = self
                .query_opt(
                    "SELECT 1 FROM aliases WHERE account = $1 AND function = $2 AND name = $3 FOR UPDATE",
                    &[&self.acct(), &function, &alias.name],
                )?
                .is_some();
            if create && exists {
                return Err(StoreError::AlreadyExists);
            }
            if !create && !exists {
                return Err(StoreError::NotFound);
            }
            for v in std::iter::once(&alias.function_version).chain(alias.routing.keys()) {
                if self.get_version(function, v)?.is_none() {
                    return Err(StoreError::Rejected(model::LambdaError::not_found(format!(
                        "Function not found: {function}:{v}"
                    ))));
                }
            }
            self.execute(
                "INSERT INTO aliases (account, function, name, config) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (account, function, name) DO UPDATE SET config = excluded.config",
                &[&self.acct(), &function, &alias.name, &to_json(alias)?],
            )?;
            Ok(())
        })
    }

    fn delete_alias(&mut self, function: &str, alias: &str) -> Result<bool, StoreError> {
        self.transaction(|| {
            let p: [super::Param<'_>; 3] = [&self.acct(), &function, &alias];
            let n = self.execute("DELETE FROM aliases WHERE account = $1 AND function = $2 AND name = $3", &p)?;
            for table in ["event_invoke_configs", "provisioned_configs", "function_urls"] {
                self.execute(
                    &format!("DELETE FROM {table} WHERE account = $1 AND function = $2 AND qualifier = $3"),
                    &p,
                )?;
            }
            Ok(n > 0)
        })
    }

    fn reserved_concurrency(&self, function: &str) -> Result<Option<Option<u32>>, StoreError> {
        self.query_opt(
            "SELECT reserved_concurrency FROM functions WHERE account = $1 AND name = $2",
            &[&self.acct(), &function],
        )?
        .map(|r| Ok(col::<Option<i64>>(&r, 0)?.map(|v| v as u32)))
        .transpose()
    }

    fn set_reserved_concurrency(&mut self, function: &str, value: Option<u32>) -> Result<bool, StoreError> {
        Ok(self.execute(
            "UPDATE functions SET reserved_concurrency = $3 WHERE account = $1 AND name = $2",
            &[&self.acct(), &function, &value.map(i64::from)],
        )? > 0)
    }

    fn all_reserved(&self) -> Result<Vec<(String, u32)>, StoreError> {
        self.query(
            "SELECT name, reserved_concurrency FROM functions WHERE account = $1 AND reserved_concurrency IS NOT NULL",
            &[&self.acct()],
        )?
        .iter()
        .map(|r| Ok((col(r, 0)?, col::<i64>(r, 1)? as u32)))
        .collect()
    }

    fn get_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<EventInvokeConfig>, StoreError> {
        self.query_opt(
            "SELECT config FROM event_invoke_configs WHERE account = $1 AND function = $2 AND qualifier = $3",
            &[&self.acct(), &function, &qualifier],
        )?
        .map(|r| from_json(&col::<String>(&r, 0)?))
        .transpose()
    }

    fn list_event_invoke_configs(&self, function: &str) -> Result<Vec<(String, EventInvokeConfig)>, StoreError> {
        self.query(
            "SELECT qualifier, config FROM event_invoke_configs WHERE account = $1 AND function = $2
             ORDER BY qualifier",
            &[&self.acct(), &function],
        )?
        .iter()
        .map(|r| Ok((col(r, 0)?, from_json(&col::<String>(r, 1)?)?)))
        .collect()
    }

    fn put_event_invoke_config(
        &mut self,
        function: &str,
        qualifier: &str,
        config: &EventInvokeConfig,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO event_invoke_configs (account, function, qualifier, config) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account, function, qualifier) DO UPDATE SET config = excluded.config",
            &[&self.acct(), &function, &qualifier, &to_json(config)?],
        )?;
        Ok(())
    }

    fn delete_event_invoke_config(&mut self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM event_invoke_configs WHERE account = $1 AND function = $2 AND qualifier = $3",
            &[&self.acct(), &function, &qualifier],
        )? > 0)
    }

    fn put_provisioned(&mut self, function: &str, config: &ProvisionedConfig) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO provisioned_configs (account, function, qualifier, requested, last_modified_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account, function, qualifier) DO UPDATE SET requested = excluded.requested, last_modified_ms = excluded.last_modified_ms",
            &[&self.acct(), &function, &config.qualifier, &i64::from(config.requested), &config.last_modified_ms],
        )?;
        Ok(())
    }

    fn delete_provisioned(&mut self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM provisioned_configs WHERE account = $1 AND function = $2 AND qualifier = $3",
            &[&self.acct(), &function, &qualifier],
        )? > 0)
    }

    fn list_provisioned(&self, function: Option<&str>) -> Result<Vec<(String, ProvisionedConfig)>, StoreError> {
        self.query(
            "SELECT function, qualifier, requested, last_modified_ms FROM provisioned_configs
             WHERE account = $1 AND ($2::text IS NULL OR function = $2)
             ORDER BY function, qualifier",
            &[&self.acct(), &function],
        )?
        .iter()
        .map(|r| {
            Ok((
                col(r, 0)?,
                ProvisionedConfig {
                    qualifier: col(r, 1)?,
                    requested: col::<i64>(r, 2)? as u32,
                    last_modified_ms: col(r, 3)?,
                },
            ))
        })
        .collect()
    }

    fn tags(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        self.query_opt("SELECT tags FROM functions WHERE account = $1 AND name = $2", &[&self.acct(), &name])?
            .map(|r| from_json(&col::<String>(&r, 0)?))
            .transpose()
    }

    fn set_tags(&mut self, name: &str, tags: &BTreeMap<String, String>) -> Result<bool, StoreError> {
        Ok(self.execute(
            "UPDATE functions SET tags = $3 WHERE account = $1 AND name = $2",
            &[&self.acct(), &name, &to_json(tags)?],
        )? > 0)
    }

    fn usage(&self) -> Result<(u64, u64), StoreError> {
        let row = self.query_opt(
            "SELECT (SELECT COUNT(*) FROM functions WHERE account = $1),
                    (SELECT COALESCE(SUM(code_size), 0)::bigint FROM versions WHERE account = $1)",
            &[&self.acct()],
        )?;
        let row = row.ok_or_else(|| StoreError::Corrupt("no usage row".into()))?;
        Ok((col::<i64>(&row, 0)? as u64, col::<i64>(&row, 1)? as u64))
    }

    fn referenced_code(&self) -> Result<HashSet<String>, StoreError> {
        self.query(
            "SELECT code_sha256 FROM versions WHERE account = $1
             UNION SELECT code_sha256 FROM layer_versions WHERE account = $1
             UNION SELECT l ->> 'code_sha256' FROM versions, jsonb_array_elements(COALESCE(config::jsonb -> 'layers', '[]'::jsonb)) AS l
                   WHERE account = $1",
            &[&self.acct()],
        )?
        .iter()
        .filter_map(|r| col::<Option<String>>(r, 0).transpose())
        .collect()
    }

    fn referenced_layer_sets(&self) -> Result<Vec<Vec<String>>, StoreError> {
        let rows = self.query(
            "SELECT DISTINCT config::jsonb -> 'layers' FROM versions
             WHERE account = $1 AND jsonb_array_length(COALESCE(config::jsonb -> 'layers', '[]'::jsonb)) > 1",
            &[&self.acct()],
        )?;
        rows.iter()
            .map(|r| {
                let layers: Vec<model::layers::LayerRef> =
                    serde_json::from_value(col::<Value>(r, 0)?).map_err(json_err)?;
                Ok(layers.into_iter().map(|l| l.code_sha256).collect())
            })
            .collect()
    }
}

impl Queue for PgDb {
    fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let row =
            self.query_opt("SELECT MIN(next_attempt_ms) FROM async_events WHERE account = $1", &[&self.acct()])?;
        row.map(|r| col::<Option<i64>>(&r, 0)).transpose().map(Option::flatten)
    }

    fn release_leases(&mut self, _now_ms: i64) -> Result<usize, StoreError> {
        // Leases belong to node incarnations; a dead one's are released by whoever declares
        // it dead (`pg::cluster`), never by a node starting up.
        Ok(0)
    }

    fn queued_events(&self) -> Result<u64, StoreError> {
        let row = self.query_opt("SELECT COUNT(*) FROM async_events WHERE account = $1", &[&self.acct()])?;
        Ok(row.map(|r| col::<i64>(&r, 0)).transpose()?.unwrap_or(0) as u64)
    }
}

impl Layers for PgDb {
    fn publish_layer_version(&mut self, mut layer: LayerVersion) -> Result<LayerVersion, StoreError> {
        self.transaction(|| {
            let row = self.query_opt(
                "INSERT INTO layers (account, name, last_version) VALUES ($1, $2, 1)
                 ON CONFLICT (account, name) DO UPDATE SET last_version = layers.last_version + 1
                 RETURNING last_version",
                &[&self.acct(), &layer.name],
            )?;
            layer.version = row.map(|r| col::<i64>(&r, 0)).transpose()?.unwrap_or(1) as u64;
            self.execute(
                "INSERT INTO layer_versions (account, name, version, config, code_sha256) VALUES ($1, $2, $3, $4, $5)",
                &[&self.acct(), &layer.name, &(layer.version as i64), &to_json(&layer)?, &layer.code_sha256],
            )?;
            Ok(())
        })?;
        Ok(layer)
    }

    fn get_layer_version(&self, name: &str, version: u64) -> Result<Option<LayerVersion>, StoreError> {
        self.query_opt(
            "SELECT config FROM layer_versions WHERE account = $1 AND name = $2 AND version = $3",
            &[&self.acct(), &name, &(version as i64)],
        )?
        .map(|r| crate::layers::decode(col(&r, 0)?))
        .transpose()
    }

    fn list_layer_versions(
        &self,
        name: &str,
        runtime: Option<&str>,
        architecture: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>, StoreError> {
        let rows = self.query(
            "SELECT name, config FROM layer_versions WHERE account = $1 AND name = $2 AND version < $3 ORDER BY version DESC",
            &[&self.acct(), &name, &before.map_or(i64::MAX, |b| b as i64)],
        )?;
        crate::layers::pick(rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))), false, runtime, architecture, limit)
    }

    fn list_layers(
        &self,
        runtime: Option<&str>,
        architecture: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>, StoreError> {
        let rows = self.query(
            "SELECT name, config FROM layer_versions WHERE account = $1 AND name > $2
             ORDER BY name, version DESC",
            &[&self.acct(), &after.unwrap_or("")],
        )?;
        crate::layers::pick(rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))), true, runtime, architecture, limit)
    }

    fn delete_layer_version(&mut self, name: &str, version: u64) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM layer_versions WHERE account = $1 AND name = $2 AND version = $3",
            &[&self.acct(), &name, &(version as i64)],
        )? > 0)
    }
}

impl Urls for PgDb {
    fn create_url(&mut self, c: &UrlConfig) -> Result<(), StoreError> {
        self.transaction(|| {
            if !self.function_exists(&c.function)? {
                return Err(StoreError::NotFound);
            }
            let q = c.qualifier.clone().unwrap_or_default();
            let n = self.execute(
                "INSERT INTO function_urls (account, function, qualifier, url_id, config) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account, function, qualifier) DO NOTHING",
                &[&self.acct(), &c.function, &q, &c.url_id, &to_json(c)?],
            )?;
            if n == 0 { Err(StoreError::AlreadyExists) } else { Ok(()) }
        })
    }

    fn get_url(&self, function: &str, qualifier: Option<&str>) -> Result<Option<UrlConfig>, StoreError> {
        self.query_opt(
            "SELECT config FROM function_urls WHERE account = $1 AND function = $2 AND qualifier = $3",
            &[&self.acct(), &function, &qualifier.unwrap_or("")],
        )?
        .map(|r| from_json(&col::<String>(&r, 0)?))
        .transpose()
    }

    fn url_by_id(&self, url_id: &str) -> Result<Option<UrlConfig>, StoreError> {
        self.query_opt("SELECT config FROM function_urls WHERE account = $1 AND url_id = $2", &[&self.acct(), &url_id])?
            .map(|r| from_json(&col::<String>(&r, 0)?))
            .transpose()
    }

    fn put_url(&mut self, c: &UrlConfig) -> Result<(), StoreError> {
        let n = self.execute(
            "UPDATE function_urls SET config = $4 WHERE account = $1 AND function = $2 AND qualifier = $3",
            &[&self.acct(), &c.function, &c.qualifier.clone().unwrap_or_default(), &to_json(c)?],
        )?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    fn delete_url(&mut self, function: &str, qualifier: Option<&str>) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM function_urls WHERE account = $1 AND function = $2 AND qualifier = $3",
            &[&self.acct(), &function, &qualifier.unwrap_or("")],
        )? > 0)
    }

    fn list_urls(&self, function: &str, after: Option<&str>, limit: usize) -> Result<Vec<UrlConfig>, StoreError> {
        configs(self.query(
            "SELECT config FROM function_urls WHERE account = $1 AND function = $2 AND ($3::text IS NULL OR qualifier > $3)
             ORDER BY qualifier LIMIT $4",
            &[&self.acct(), &function, &after, &(limit as i64)],
        )?)
    }
}

impl Routes for PgDb {
    fn put_route(&mut self, r: &RouteConfig) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO http_routes (account, route_key, config) VALUES ($1, $2, $3)
             ON CONFLICT (account, route_key) DO UPDATE SET config = excluded.config",
            &[&self.acct(), &r.route_key, &to_json(r)?],
        )?;
        Ok(())
    }

    fn list_routes(&self) -> Result<Vec<RouteConfig>, StoreError> {
        configs(self.query("SELECT config FROM http_routes WHERE account = $1 ORDER BY route_key", &[&self.acct()])?)
    }

    fn delete_route(&mut self, route_key: &str) -> Result<bool, StoreError> {
        Ok(self
            .execute("DELETE FROM http_routes WHERE account = $1 AND route_key = $2", &[&self.acct(), &route_key])?
            > 0)
    }
}

impl PolicyRows for PgDb {
    fn function_exists(&self, function: &str) -> Result<bool, StoreError> {
        PgDb::function_exists(self, function)
    }

    fn policy_row(&self, function: &str, qualifier: &str) -> Result<Option<(String, String)>, StoreError> {
        self.query_opt(
            "SELECT policy, revision_id FROM function_policies WHERE account = $1 AND function = $2 AND qualifier = $3",
            &[&self.acct(), &function, &qualifier],
        )?
        .map(|r| Ok((col(&r, 0)?, col(&r, 1)?)))
        .transpose()
    }

    fn write_policy(&self, function: &str, qualifier: &str, policy: Option<(&str, &str)>) -> Result<(), StoreError> {
        match policy {
            None => self.execute(
                "DELETE FROM function_policies WHERE account = $1 AND function = $2 AND qualifier = $3",
                &[&self.acct(), &function, &qualifier],
            )?,
            Some((policy, revision_id)) => self.execute(
                "INSERT INTO function_policies (account, function, qualifier, policy, revision_id) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account, function, qualifier) DO UPDATE SET policy = excluded.policy, revision_id = excluded.revision_id",
                &[&self.acct(), &function, &qualifier, &policy, &revision_id],
            )?,
        };
        Ok(())
    }
}

impl Policies for PgDb {
    fn get_policy(&self, function: &str, qualifier: Option<&str>) -> Result<Option<(Value, String)>, StoreError> {
        crate::policies::get_policy(self, function, qualifier)
    }

    fn add_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        statement: Value,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError> {
        self.transaction(|| crate::policies::add_permission(self, function, qualifier, statement, revision_id))
    }

    fn remove_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError> {
        self.transaction(|| crate::policies::remove_permission(self, function, qualifier, sid, revision_id))
    }
}

fn stored_schedules(rows: Vec<tokio_postgres::Row>) -> Result<Vec<StoredSchedule>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(StoredSchedule {
                schedule: from_json(&col::<String>(r, 0)?)?,
                next_ms: col(r, 1)?,
                last_fired_ms: col(r, 2)?,
                version: col(r, 3)?,
            })
        })
        .collect()
}

impl Schedules for PgDb {
    fn group_exists(&self, group: &str) -> Result<bool, StoreError> {
        if group == crate::schedules::DEFAULT_GROUP {
            return Ok(true);
        }
        Ok(self
            .query_opt("SELECT 1 FROM schedule_groups WHERE account = $1 AND name = $2", &[&self.acct(), &group])?
            .is_some())
    }

    fn list_groups(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let mut out = vec![(crate::schedules::DEFAULT_GROUP.to_string(), None)];
        for r in self
            .query("SELECT name, created_ms FROM schedule_groups WHERE account = $1 ORDER BY name", &[&self.acct()])?
        {
            out.push((col(&r, 0)?, Some(col(&r, 1)?)));
        }
        Ok(out)
    }

    fn create_group(&mut self, group: &str, now_ms: i64) -> Result<(), StoreError> {
        if group == crate::schedules::DEFAULT_GROUP {
            return Err(StoreError::AlreadyExists);
        }
        let n = self.execute(
            "INSERT INTO schedule_groups (account, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&self.acct(), &group, &now_ms],
        )?;
        if n == 0 { Err(StoreError::AlreadyExists) } else { Ok(()) }
    }

    fn delete_group(&mut self, group: &str) -> Result<bool, StoreError> {
        self.transaction(|| {
            self.execute("DELETE FROM schedules WHERE account = $1 AND group_name = $2", &[&self.acct(), &group])?;
            Ok(self.execute("DELETE FROM schedule_groups WHERE account = $1 AND name = $2", &[&self.acct(), &group])?
                > 0)
        })
    }

    fn create_schedule(&mut self, s: &Schedule, next_ms: Option<i64>) -> Result<(), StoreError> {
        let n = self.execute(
            "INSERT INTO schedules (account, group_name, name, config, next_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&self.acct(), &s.group, &s.name, &to_json(s)?, &next_ms],
        )?;
        if n == 0 { Err(StoreError::AlreadyExists) } else { Ok(()) }
    }

    fn update_schedule(&mut self, s: &Schedule, next_ms: Option<i64>) -> Result<(), StoreError> {
        let n = self.execute(
            "UPDATE schedules SET config = $4, next_ms = $5, version = version + 1
             WHERE account = $1 AND group_name = $2 AND name = $3",
            &[&self.acct(), &s.group, &s.name, &to_json(s)?, &next_ms],
        )?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    fn get_schedule(&self, group: &str, name: &str) -> Result<Option<StoredSchedule>, StoreError> {
        Ok(stored_schedules(self.query(
            "SELECT config, next_ms, last_fired_ms, version FROM schedules
             WHERE account = $1 AND group_name = $2 AND name = $3",
            &[&self.acct(), &group, &name],
        )?)?
        .pop())
    }

    fn delete_schedule(&mut self, group: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM schedules WHERE account = $1 AND group_name = $2 AND name = $3",
            &[&self.acct(), &group, &name],
        )? > 0)
    }

    fn list_schedules(
        &self,
        group: Option<&str>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, StoreError> {
        stored_schedules(self.query(
            "SELECT config, next_ms, last_fired_ms, version FROM schedules
             WHERE account = $1 AND ($2::text IS NULL OR group_name = $2) AND substr(name, 1, length($3)) = $3
               AND ($4::text IS NULL OR (group_name || '/' || name) > $4)
             ORDER BY (group_name || '/' || name) LIMIT $5",
            &[&self.acct(), &group, &prefix, &after, &(limit as i64)],
        )?)
    }

    fn next_schedule_due(&self) -> Result<Option<i64>, StoreError> {
        let row = self.query_opt(
            "SELECT MIN(next_ms) FROM schedules WHERE account = $1 AND next_ms IS NOT NULL",
            &[&self.acct()],
        )?;
        row.map(|r| col::<Option<i64>>(&r, 0)).transpose().map(Option::flatten)
    }

    fn due_schedules(&self, now_ms: i64, limit: usize) -> Result<Vec<StoredSchedule>, StoreError> {
        stored_schedules(self.query(
            "SELECT config, next_ms, last_fired_ms, version FROM schedules
             WHERE account = $1 AND next_ms IS NOT NULL AND next_ms <= $2 ORDER BY next_ms LIMIT $3",
            &[&self.acct(), &now_ms, &(limit as i64)],
        )?)
    }

    fn advance_schedules(&mut self, moves: &[Advance]) -> Result<Vec<Fired>, StoreError> {
        // Two nodes may plan the same tick: the conditional UPDATE lets one commit the move
        // (the other's re-checks the row after the first commits and finds it moved).
        self.transaction(|| {
            let mut out = Vec::with_capacity(moves.len());
            for m in moves {
                let n = if m.delete {
                    self.execute(
                        "DELETE FROM schedules WHERE account = $1 AND group_name = $2 AND name = $3 AND next_ms = $4 AND version = $5",
                        &[&self.acct(), &m.group, &m.name, &m.expected_next, &m.version],
                    )?
                } else {
                    self.execute(
                        "UPDATE schedules SET next_ms = $5, last_fired_ms = COALESCE($6, last_fired_ms)
                         WHERE account = $1 AND group_name = $2 AND name = $3 AND next_ms = $4 AND version = $7",
                        &[&self.acct(), &m.group, &m.name, &m.expected_next, &m.new_next, &m.fired, &m.version],
                    )?
                };
                if n == 0 {
                    out.push(Fired::Stale);
                    continue;
                }
                if let Some(e) = &m.event {
                    // Queued even if the function is missing now: the delivery policy decides.
                    let delivery = e.delivery.as_ref().map(|d| serde_json::to_string(d).unwrap_or_default());
                    self.execute(
                        "INSERT INTO async_events (account, request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms, trace, trigger, delivery)
                         VALUES ($1, $2, $3, $4, $5, $6, 0, $6, $7, $8, $9)",
                        &[
                            &self.acct(),
                            &e.request_id,
                            &e.function,
                            &e.qualifier,
                            &e.payload,
                            &e.received_ms,
                            &e.trace,
                            &e.trigger,
                            &delivery,
                        ],
                    )?;
                }
                out.push(Fired::Queued);
            }
            Ok(out)
        })
    }
}

impl Mappings for PgDb {
    fn create_mapping(&mut self, m: &Mapping, now_ms: i64) -> Result<(), StoreError> {
        let n = self.execute(
            "INSERT INTO event_source_mappings (account, uuid, function, config, created_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&self.acct(), &m.uuid, &m.function, &to_json(m)?, &now_ms],
        )?;
        if n == 0 { Err(StoreError::AlreadyExists) } else { Ok(()) }
    }

    fn update_mapping(&mut self, m: &Mapping) -> Result<(), StoreError> {
        let n = self.execute(
            "UPDATE event_source_mappings SET function = $3, config = $4 WHERE account = $1 AND uuid = $2",
            &[&self.acct(), &m.uuid, &m.function, &to_json(m)?],
        )?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    fn get_mapping(&self, uuid: &str) -> Result<Option<Mapping>, StoreError> {
        self.query_opt(
            "SELECT config FROM event_source_mappings WHERE account = $1 AND uuid = $2",
            &[&self.acct(), &uuid],
        )?
        .map(|r| from_json(&col::<String>(&r, 0)?))
        .transpose()
    }

    fn delete_mapping(&mut self, uuid: &str) -> Result<bool, StoreError> {
        self.transaction(|| {
            self.execute("DELETE FROM esm_checkpoints WHERE account = $1 AND uuid = $2", &[&self.acct(), &uuid])?;
            Ok(self.execute(
                "DELETE FROM event_source_mappings WHERE account = $1 AND uuid = $2",
                &[&self.acct(), &uuid],
            )? > 0)
        })
    }

    fn list_mappings(
        &self,
        function: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Mapping>, StoreError> {
        configs(self.query(
            "SELECT config FROM event_source_mappings
             WHERE account = $1 AND ($2::text IS NULL OR function = $2)
               AND ($3::text IS NULL OR (created_ms, uuid) >
                    (SELECT created_ms, uuid FROM event_source_mappings WHERE account = $1 AND uuid = $3))
             ORDER BY created_ms, uuid LIMIT $4",
            &[&self.acct(), &function, &after, &(limit as i64)],
        )?)
    }

    fn checkpoint(&self, uuid: &str, partition: &str) -> Result<Option<String>, StoreError> {
        self.query_opt(
            "SELECT position FROM esm_checkpoints WHERE account = $1 AND uuid = $2 AND partition = $3",
            &[&self.acct(), &uuid, &partition],
        )?
        .map(|r| col(&r, 0))
        .transpose()
    }

    fn set_checkpoint(
        &mut self,
        uuid: &str,
        partition: &str,
        position: &str,
        now_ms: i64,
        fence: Option<i64>,
    ) -> Result<bool, StoreError> {
        let lease = super::cluster::mapping_lease(self.acct(), uuid);
        let n = self.execute(
            "INSERT INTO esm_checkpoints (account, uuid, partition, position, updated_ms)
             SELECT $1, $2, $3, $4, $5
             WHERE EXISTS (SELECT 1 FROM event_source_mappings WHERE account = $1 AND uuid = $2)
               AND ($6::bigint IS NULL OR EXISTS (SELECT 1 FROM leases WHERE name = $7 AND token = $6))
             ON CONFLICT (account, uuid, partition) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
            &[&self.acct(), &uuid, &partition, &position, &now_ms, &fence, &lease],
        )?;
        Ok(n > 0)
    }
}
