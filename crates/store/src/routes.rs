//! HTTP routes in the metadata database.

use model::routes::RouteConfig;
use rusqlite::params;

use crate::StoreError;
use crate::db::Db;

impl crate::meta::Routes for Db {
    /// Adds or replaces a route.
    fn put_route(&mut self, r: &RouteConfig) -> Result<(), StoreError> {
        let json = serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO http_routes (route_key, config) VALUES (?1, ?2)
             ON CONFLICT(route_key) DO UPDATE SET config = excluded.config",
            params![r.route_key, json],
        )?;
        Ok(())
    }

    fn list_routes(&self) -> Result<Vec<RouteConfig>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT config FROM http_routes ORDER BY route_key")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| serde_json::from_str(&r?).map_err(|e| StoreError::Corrupt(e.to_string()))).collect()
    }

    fn delete_route(&mut self, route_key: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM http_routes WHERE route_key = ?1", [route_key])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance::both!(routes_are_replaced_by_key_and_deleted, |db| {
        let mut r = RouteConfig {
            route_key: "GET /a".into(),
            function: "f".into(),
            qualifier: None,
            payload_format: "2.0".into(),
            created_ms: 1,
        };
        db.put_route(&r).unwrap();
        r.function = "g".into();
        db.put_route(&r).unwrap();
        assert_eq!(db.list_routes().unwrap(), [r]);
        assert!(db.delete_route("GET /a").unwrap());
        assert!(!db.delete_route("GET /a").unwrap());
    });
}
