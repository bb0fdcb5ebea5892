//! Functions' resource-based policies in the metadata database: one policy document per
//! function and qualifier (`''` for the unqualified function), with its own revision id.

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use crate::StoreError;
use crate::db::Db;

/// Why a permission could not be added or removed.
#[derive(Debug, PartialEq, Eq)]
pub enum PolicyChange {
    Done { revision_id: String },
    NoFunction,
    DuplicateSid,
    NoSuchSid,
    RevisionMismatch,
}

impl Db {
    /// The policy of a function (or qualifier) and its revision id, if it has statements.
    pub fn get_policy(&self, function: &str, qualifier: Option<&str>) -> Result<Option<(Value, String)>, StoreError> {
        let found: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT policy, revision_id FROM function_policies WHERE function = ?1 AND qualifier = ?2",
                [function, qualifier.unwrap_or("")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        found
            .map(|(p, rev)| {
                serde_json::from_str::<Value>(&p).map(|v| (v, rev)).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    fn exists(&self, function: &str) -> Result<bool, StoreError> {
        Ok(self.conn.query_row("SELECT 1 FROM functions WHERE name = ?1", [function], |_| Ok(())).optional()?.is_some())
    }

    fn save_policy(&self, function: &str, qualifier: &str, policy: &Value) -> Result<String, StoreError> {
        let revision_id = uuid::Uuid::new_v4().to_string();
        if policy["Statement"].as_array().is_some_and(|s| s.is_empty()) {
            self.conn.execute(
                "DELETE FROM function_policies WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
            )?;
        } else {
            self.conn.execute(
                "INSERT INTO function_policies (function, qualifier, policy, revision_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (function, qualifier) DO UPDATE SET policy = ?3, revision_id = ?4",
                params![function, qualifier, policy.to_string(), revision_id],
            )?;
        }
        Ok(revision_id)
    }

    /// Adds `statement` (whose `Sid` must be new) to the policy.
    pub fn add_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        statement: Value,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError> {
        if !self.exists(function)? {
            return Ok(PolicyChange::NoFunction);
        }
        let current = self.get_policy(function, qualifier)?;
        if let Some(want) = revision_id
            && current.as_ref().map(|(_, r)| r.as_str()) != Some(want)
        {
            return Ok(PolicyChange::RevisionMismatch);
        }
        let mut policy = current.map(|(p, _)| p).unwrap_or_else(model::policy::empty_policy);
        let statements = policy["Statement"].as_array_mut().ok_or_else(|| StoreError::Corrupt("policy".into()))?;
        if statements.iter().any(|s| s["Sid"] == statement["Sid"]) {
            return Ok(PolicyChange::DuplicateSid);
        }
        statements.push(statement);
        let revision_id = self.save_policy(function, qualifier.unwrap_or(""), &policy)?;
        Ok(PolicyChange::Done { revision_id })
    }

    /// Removes the statement `sid` from the policy.
    pub fn remove_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError> {
        if !self.exists(function)? {
            return Ok(PolicyChange::NoFunction);
        }
        let Some((mut policy, current_rev)) = self.get_policy(function, qualifier)? else {
            return Ok(PolicyChange::NoSuchSid);
        };
        if revision_id.is_some_and(|want| want != current_rev) {
            return Ok(PolicyChange::RevisionMismatch);
        }
        let statements = policy["Statement"].as_array_mut().ok_or_else(|| StoreError::Corrupt("policy".into()))?;
        let before = statements.len();
        statements.retain(|s| s["Sid"] != sid);
        if statements.len() == before {
            return Ok(PolicyChange::NoSuchSid);
        }
        let revision_id = self.save_policy(function, qualifier.unwrap_or(""), &policy)?;
        Ok(PolicyChange::Done { revision_id })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn permissions_are_added_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        let s = json!({"Sid": "a", "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunction"});
        assert_eq!(db.add_permission("f", None, s.clone(), None).unwrap(), PolicyChange::NoFunction);
        db.create_function(&crate::db::tests::config("f"), &BTreeMap::new()).unwrap();
        assert!(matches!(db.add_permission("f", None, s.clone(), None).unwrap(), PolicyChange::Done { .. }));
        assert_eq!(db.add_permission("f", None, s.clone(), None).unwrap(), PolicyChange::DuplicateSid);
        assert!(db.get_policy("f", Some("prod")).unwrap().is_none());
        let (policy, rev) = db.get_policy("f", None).unwrap().unwrap();
        assert_eq!(policy["Statement"][0]["Sid"], "a");
        assert_eq!(db.remove_permission("f", None, "a", Some("stale")).unwrap(), PolicyChange::RevisionMismatch);
        assert_eq!(db.remove_permission("f", None, "zzz", None).unwrap(), PolicyChange::NoSuchSid);
        assert!(matches!(db.remove_permission("f", None, "a", Some(&rev)).unwrap(), PolicyChange::Done { .. }));
        assert!(db.get_policy("f", None).unwrap().is_none(), "an empty policy is no policy");
        db.add_permission("f", None, s, None).unwrap();
        assert!(db.delete_function("f").unwrap());
        assert!(db.get_policy("f", None).unwrap().is_none());
    }
}
