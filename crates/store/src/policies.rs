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

/// The rows a policy change reads and writes; each backend provides them, and the editing
/// rules below are shared.
pub(crate) trait PolicyRows {
    fn function_exists(&self, function: &str) -> Result<bool, StoreError>;
    fn policy_row(&self, function: &str, qualifier: &str) -> Result<Option<(String, String)>, StoreError>;
    /// Stores `policy` under a new revision id (deletes the row when `policy` is `None`).
    fn write_policy(&self, function: &str, qualifier: &str, policy: Option<(&str, &str)>) -> Result<(), StoreError>;
}

pub(crate) fn get_policy(
    rows: &dyn PolicyRows,
    function: &str,
    qualifier: Option<&str>,
) -> Result<Option<(Value, String)>, StoreError> {
    rows.policy_row(function, qualifier.unwrap_or(""))?
        .map(|(p, rev)| {
            serde_json::from_str::<Value>(&p).map(|v| (v, rev)).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
}

fn save_policy(rows: &dyn PolicyRows, function: &str, qualifier: &str, policy: &Value) -> Result<String, StoreError> {
    let revision_id = uuid::Uuid::new_v4().to_string();
    if policy["Statement"].as_array().is_some_and(|s| s.is_empty()) {
        rows.write_policy(function, qualifier, None)?;
    } else {
        rows.write_policy(function, qualifier, Some((&policy.to_string(), &revision_id)))?;
    }
    Ok(revision_id)
}

pub(crate) fn add_permission(
    rows: &dyn PolicyRows,
    function: &str,
    qualifier: Option<&str>,
    statement: Value,
    revision_id: Option<&str>,
) -> Result<PolicyChange, StoreError> {
    if !rows.function_exists(function)? {
        return Ok(PolicyChange::NoFunction);
    }
    let current = get_policy(rows, function, qualifier)?;
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
    let revision_id = save_policy(rows, function, qualifier.unwrap_or(""), &policy)?;
    Ok(PolicyChange::Done { revision_id })
}

pub(crate) fn remove_permission(
    rows: &dyn PolicyRows,
    function: &str,
    qualifier: Option<&str>,
    sid: &str,
    revision_id: Option<&str>,
) -> Result<PolicyChange, StoreError> {
    if !rows.function_exists(function)? {
        return Ok(PolicyChange::NoFunction);
    }
    let Some((mut policy, current_rev)) = get_policy(rows, function, qualifier)? else {
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
    let revision_id = save_policy(rows, function, qualifier.unwrap_or(""), &policy)?;
    Ok(PolicyChange::Done { revision_id })
}

impl PolicyRows for Db {
    fn function_exists(&self, function: &str) -> Result<bool, StoreError> {
        Ok(self.conn.query_row("SELECT 1 FROM functions WHERE name = ?1", [function], |_| Ok(())).optional()?.is_some())
    }

    fn policy_row(&self, function: &str, qualifier: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT policy, revision_id FROM function_policies WHERE function = ?1 AND qualifier = ?2",
                [function, qualifier],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn write_policy(&self, function: &str, qualifier: &str, policy: Option<(&str, &str)>) -> Result<(), StoreError> {
        match policy {
            None => {
                self.conn.execute(
                    "DELETE FROM function_policies WHERE function = ?1 AND qualifier = ?2",
                    params![function, qualifier],
                )?;
            }
            Some((policy, revision_id)) => {
                self.conn.execute(
                    "INSERT INTO function_policies (function, qualifier, policy, revision_id) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (function, qualifier) DO UPDATE SET policy = ?3, revision_id = ?4",
                    params![function, qualifier, policy, revision_id],
                )?;
            }
        }
        Ok(())
    }
}

impl crate::meta::Policies for Db {
    fn get_policy(&self, function: &str, qualifier: Option<&str>) -> Result<Option<(Value, String)>, StoreError> {
        get_policy(self, function, qualifier)
    }

    fn add_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        statement: Value,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError> {
        add_permission(self, function, qualifier, statement, revision_id)
    }

    fn remove_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError> {
        remove_permission(self, function, qualifier, sid, revision_id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    crate::conformance::both!(permissions_are_added_listed_and_removed, |db| {
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
    });
}
