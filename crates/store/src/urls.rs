//! Function URL configurations in the metadata database.

use model::urls::UrlConfig;
use rusqlite::{OptionalExtension, params};

use crate::StoreError;
use crate::db::Db;

fn decode(json: String) -> Result<UrlConfig, StoreError> {
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode(c: &UrlConfig) -> Result<String, StoreError> {
    serde_json::to_string(c).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl crate::meta::Urls for Db {
    /// Stores a new URL; `AlreadyExists` if the function (or alias) has one, `NotFound` if the
    /// function does not exist.
    fn create_url(&mut self, c: &UrlConfig) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let exists: bool =
            tx.query_row("SELECT 1 FROM functions WHERE name = ?1", [&c.function], |_| Ok(())).optional()?.is_some();
        if !exists {
            return Err(StoreError::NotFound);
        }
        let q = c.qualifier.clone().unwrap_or_default();
        let taken = tx
            .query_row("SELECT 1 FROM function_urls WHERE function = ?1 AND qualifier = ?2", [&c.function, &q], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        if taken {
            return Err(StoreError::AlreadyExists);
        }
        tx.execute(
            "INSERT INTO function_urls (function, qualifier, url_id, config) VALUES (?1, ?2, ?3, ?4)",
            params![c.function, q, c.url_id, encode(c)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn get_url(&self, function: &str, qualifier: Option<&str>) -> Result<Option<UrlConfig>, StoreError> {
        self.conn
            .query_row(
                "SELECT config FROM function_urls WHERE function = ?1 AND qualifier = ?2",
                [function, qualifier.unwrap_or("")],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(decode)
            .transpose()
    }

    /// The URL a request's host names.
    fn url_by_id(&self, url_id: &str) -> Result<Option<UrlConfig>, StoreError> {
        self.conn
            .query_row("SELECT config FROM function_urls WHERE url_id = ?1", [url_id], |r| r.get::<_, String>(0))
            .optional()?
            .map(decode)
            .transpose()
    }

    /// Replaces a URL's configuration (same function, qualifier and id).
    fn put_url(&mut self, c: &UrlConfig) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE function_urls SET config = ?3 WHERE function = ?1 AND qualifier = ?2",
            params![c.function, c.qualifier.clone().unwrap_or_default(), encode(c)?],
        )?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    fn delete_url(&mut self, function: &str, qualifier: Option<&str>) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM function_urls WHERE function = ?1 AND qualifier = ?2",
            [function, qualifier.unwrap_or("")],
        )? > 0)
    }

    /// A function's URLs (unqualified first, then by alias), after `after` (a qualifier).
    fn list_urls(&self, function: &str, after: Option<&str>, limit: usize) -> Result<Vec<UrlConfig>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT config FROM function_urls WHERE function = ?1 AND (?2 IS NULL OR qualifier > ?2)
             ORDER BY qualifier LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![function, after, limit as i64], |r| r.get::<_, String>(0))?;
        rows.map(|r| decode(r?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn url(function: &str, qualifier: Option<&str>, id: &str) -> UrlConfig {
        UrlConfig {
            function: function.into(),
            qualifier: qualifier.map(Into::into),
            url_id: id.into(),
            auth_type: "NONE".into(),
            cors: None,
            invoke_mode: "BUFFERED".into(),
            created_ms: 1,
            modified_ms: 1,
        }
    }

    crate::conformance::both!(one_url_per_function_or_alias_and_gone_with_the_function, |db| {
        assert!(matches!(db.create_url(&url("f", None, "a")), Err(StoreError::NotFound)));
        db.create_function(&crate::db::tests::config("f"), &BTreeMap::new()).unwrap();
        db.create_url(&url("f", None, "a")).unwrap();
        assert!(matches!(db.create_url(&url("f", None, "b")), Err(StoreError::AlreadyExists)));
        db.create_url(&url("f", Some("prod"), "b")).unwrap();
        assert_eq!(db.url_by_id("b").unwrap().unwrap().qualifier.as_deref(), Some("prod"));
        let all: Vec<String> = db.list_urls("f", None, 10).unwrap().into_iter().map(|u| u.url_id).collect();
        assert_eq!(all, ["a", "b"]);
        assert_eq!(db.list_urls("f", Some(""), 10).unwrap().len(), 1);
        let mut changed = url("f", None, "a");
        changed.auth_type = "AWS_IAM".into();
        db.put_url(&changed).unwrap();
        assert_eq!(db.get_url("f", None).unwrap().unwrap().auth_type, "AWS_IAM");
        assert!(db.delete_url("f", Some("prod")).unwrap());
        assert!(db.delete_function("f").unwrap());
        assert!(db.url_by_id("a").unwrap().is_none());
    });
}
