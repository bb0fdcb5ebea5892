//! Layer versions in the metadata database.

use model::layers::LayerVersion;
use rusqlite::{OptionalExtension, params};

use crate::StoreError;
use crate::db::Db;

pub(crate) fn decode(json: String) -> Result<LayerVersion, StoreError> {
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The first `limit` layer versions of `rows` ((layer name, configuration JSON), in the order
/// wanted) that match the filters; with `one_per_layer`, only each layer's first such.
pub(crate) fn pick(
    rows: impl Iterator<Item = Result<(String, String), StoreError>>,
    one_per_layer: bool,
    runtime: Option<&str>,
    architecture: Option<&str>,
    limit: usize,
) -> Result<Vec<LayerVersion>, StoreError> {
    let mut out: Vec<LayerVersion> = Vec::new();
    for row in rows {
        let (name, json) = row?;
        if one_per_layer && out.last().is_some_and(|l| l.name == name) {
            continue;
        }
        let v = decode(json)?;
        if matches(&v, runtime, architecture) {
            out.push(v);
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

fn matches(v: &LayerVersion, runtime: Option<&str>, architecture: Option<&str>) -> bool {
    runtime.is_none_or(|r| v.compatible_runtimes.iter().any(|c| c == r))
        && architecture.is_none_or(|a| v.compatible_architectures.iter().any(|c| c == a))
}

impl crate::meta::Layers for Db {
    /// Stores a new version of a layer (creating the layer) and returns it with its number:
    /// one more than the last ever published, even if that one was deleted.
    fn publish_layer_version(&mut self, mut layer: LayerVersion) -> Result<LayerVersion, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("INSERT OR IGNORE INTO layers (name) VALUES (?1)", [&layer.name])?;
        layer.version = tx.query_row(
            "UPDATE layers SET last_version = last_version + 1 WHERE name = ?1 RETURNING last_version",
            [&layer.name],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let json = serde_json::to_string(&layer).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO layer_versions (name, version, config, code_sha256) VALUES (?1, ?2, ?3, ?4)",
            params![layer.name, layer.version as i64, json, layer.code_sha256],
        )?;
        tx.commit()?;
        Ok(layer)
    }

    fn get_layer_version(&self, name: &str, version: u64) -> Result<Option<LayerVersion>, StoreError> {
        self.conn
            .query_row(
                "SELECT config FROM layer_versions WHERE name = ?1 AND version = ?2",
                params![name, version as i64],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(decode)
            .transpose()
    }

    /// Versions of a layer, newest first, that match the filters, starting below `before`.
    fn list_layer_versions(
        &self,
        name: &str,
        runtime: Option<&str>,
        architecture: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT config FROM layer_versions WHERE name = ?1 AND version < ?2 ORDER BY version DESC",
        )?;
        let rows = stmt.query_map(params![name, before.map_or(i64::MAX, |b| b as i64)], |r| r.get::<_, String>(0))?;
        pick(rows.map(|r| Ok((String::new(), r?))), false, runtime, architecture, limit)
    }

    /// Each layer's newest version matching the filters, by layer name, after `after`.
    fn list_layers(
        &self,
        runtime: Option<&str>,
        architecture: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, config FROM layer_versions WHERE name > ?1 ORDER BY name, version DESC")?;
        let rows = stmt.query_map([after.unwrap_or("")], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        pick(rows.map(|r| Ok(r?)), true, runtime, architecture, limit)
    }

    /// Deletes one layer version; false if there was none.
    fn delete_layer_version(&mut self, name: &str, version: u64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM layer_versions WHERE name = ?1 AND version = ?2", params![name, version as i64])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, runtimes: &[&str]) -> LayerVersion {
        LayerVersion {
            name: name.into(),
            version: 0,
            description: String::new(),
            license_info: None,
            compatible_runtimes: runtimes.iter().map(|r| r.to_string()).collect(),
            compatible_architectures: vec![],
            code_sha256: format!("sha-{name}"),
            code_size: 1,
            created_ms: 1,
        }
    }

    crate::conformance::both!(numbers_are_never_reused_and_lists_filter, |db| {
        assert_eq!(db.publish_layer_version(layer("a", &["python3.12"])).unwrap().version, 1);
        assert_eq!(db.publish_layer_version(layer("a", &["nodejs20.x"])).unwrap().version, 2);
        assert!(db.delete_layer_version("a", 2).unwrap());
        assert!(!db.delete_layer_version("a", 2).unwrap());
        assert_eq!(db.publish_layer_version(layer("a", &["nodejs20.x"])).unwrap().version, 3, "2 is not reused");
        db.publish_layer_version(layer("b", &["python3.12"])).unwrap();
        let versions: Vec<u64> =
            db.list_layer_versions("a", None, None, None, 10).unwrap().iter().map(|v| v.version).collect();
        assert_eq!(versions, [3, 1]);
        assert_eq!(db.list_layer_versions("a", None, None, Some(3), 10).unwrap()[0].version, 1);
        let latest: Vec<(String, u64)> =
            db.list_layers(None, None, None, 10).unwrap().into_iter().map(|v| (v.name, v.version)).collect();
        assert_eq!(latest, [("a".to_string(), 3), ("b".to_string(), 1)]);
        let python: Vec<u64> =
            db.list_layers(Some("python3.12"), None, None, 10).unwrap().iter().map(|v| v.version).collect();
        assert_eq!(python, [1, 1], "the newest version matching the runtime");
        assert_eq!(db.list_layers(None, None, Some("a"), 10).unwrap().len(), 1);
        assert!(db.get_layer_version("a", 2).unwrap().is_none());
        assert!(db.referenced_code().unwrap().contains("sha-b"));
    });
}
