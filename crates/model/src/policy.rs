//! Resource-based policies of functions (AddPermission, RemovePermission, GetPolicy), as AWS
//! writes them, and the one question Stratus asks of them: does this policy let this caller
//! perform this action?
//!
//! A statement is built from AddPermission's parameters exactly as AWS builds it (an account
//! id principal becomes `{"AWS": "arn:aws:iam::<id>:root"}`, a service principal
//! `{"Service": …}`, conditions from SourceArn, SourceAccount, PrincipalOrgID and
//! FunctionUrlAuthType). Only Allow statements exist (AddPermission cannot write Deny).

use serde_json::{Value, json};

use crate::LambdaError;

/// AddPermission's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionInput {
    pub statement_id: String,
    pub action: String,
    pub principal: String,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
    pub principal_org_id: Option<String>,
    pub function_url_auth_type: Option<String>,
}

/// Who is asking, as far as a policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester<'a> {
    /// A signed request from an account.
    Account(&'a str),
    /// An unauthenticated request to a function URL with AuthType NONE.
    Anonymous,
}

fn valid_sid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_action(a: &str) -> bool {
    a == "*"
        || a.strip_prefix("lambda:")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'*'))
}

/// The statement AddPermission adds, for the function (or qualified function) `resource`.
pub fn statement(input: &PermissionInput, resource: &str) -> Result<Value, LambdaError> {
    if !valid_sid(&input.statement_id) {
        return Err(LambdaError::validation(
            &input.statement_id,
            "statementId",
            "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
        ));
    }
    if !valid_action(&input.action) {
        return Err(LambdaError::validation(
            &input.action,
            "action",
            "Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])",
        ));
    }
    let p = input.principal.as_str();
    let principal = if p == "*" {
        json!("*")
    } else if crate::names::is_account_id(p) {
        json!({ "AWS": format!("arn:aws:iam::{p}:root") })
    } else if p.starts_with("arn:aws:iam::") {
        json!({ "AWS": p })
    } else if p.ends_with(".amazonaws.com") || p.ends_with(".amazon.com") {
        json!({ "Service": p })
    } else {
        return Err(LambdaError::invalid_parameter(
            "The provided principal was invalid. Please check the principal and try again.",
        ));
    };
    let mut condition = serde_json::Map::new();
    let mut string_equals = serde_json::Map::new();
    if let Some(a) = &input.source_account {
        string_equals.insert("AWS:SourceAccount".into(), json!(a));
    }
    if let Some(o) = &input.principal_org_id {
        string_equals.insert("aws:PrincipalOrgID".into(), json!(o));
    }
    if let Some(t) = &input.function_url_auth_type {
        if t != "NONE" && t != "AWS_IAM" {
            return Err(LambdaError::validation(
                t,
                "functionUrlAuthType",
                "Member must satisfy enum value set: [NONE, AWS_IAM]",
            ));
        }
        string_equals.insert("lambda:FunctionUrlAuthType".into(), json!(t));
    }
    if !string_equals.is_empty() {
        condition.insert("StringEquals".into(), Value::Object(string_equals));
    }
    if let Some(arn) = &input.source_arn {
        condition.insert("ArnLike".into(), json!({ "AWS:SourceArn": arn }));
    }
    let mut s = json!({
        "Sid": input.statement_id,
        "Effect": "Allow",
        "Principal": principal,
        "Action": input.action,
        "Resource": resource,
    });
    if !condition.is_empty() {
        s["Condition"] = Value::Object(condition);
    }
    Ok(s)
}

/// An empty policy document.
pub fn empty_policy() -> Value {
    json!({ "Version": "2012-10-17", "Id": "default", "Statement": [] })
}

fn action_matches(pattern: &str, action: &str) -> bool {
    if pattern == "*" || pattern == "lambda:*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern.eq_ignore_ascii_case(action),
    }
}

fn principal_matches(principal: &Value, who: &Requester<'_>) -> bool {
    if principal == "*" {
        return true;
    }
    let Requester::Account(account) = who else { return false };
    let aws = &principal["AWS"];
    let names: Vec<&str> = match aws {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    names.iter().any(|n| *n == "*" || *n == *account || n.starts_with(&format!("arn:aws:iam::{account}:")))
}

/// Whether the conditions a statement carries hold. Stratus evaluates the function URL auth
/// type and source account; a statement conditioned on what only AWS services supply
/// (SourceArn, PrincipalOrgID) applies to no direct caller.
fn conditions_hold(s: &Value, who: &Requester<'_>, url_auth_type: Option<&str>) -> bool {
    let Some(cond) = s.get("Condition").and_then(Value::as_object) else { return true };
    for (op, entries) in cond {
        let Some(entries) = entries.as_object() else { return false };
        for (key, want) in entries {
            let want = want.as_str().unwrap_or_default();
            let ok = match (op.as_str(), key.as_str()) {
                ("StringEquals", "lambda:FunctionUrlAuthType") => url_auth_type == Some(want),
                ("StringEquals", "AWS:SourceAccount") => matches!(who, Requester::Account(a) if *a == want),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// Whether `policy` allows `who` to perform `action` (e.g. `lambda:InvokeFunction`); for a
/// function URL request, `url_auth_type` is the URL's AuthType.
pub fn allows(policy: &Value, who: &Requester<'_>, action: &str, url_auth_type: Option<&str>) -> bool {
    policy["Statement"].as_array().is_some_and(|statements| {
        statements.iter().any(|s| {
            s["Effect"] == "Allow"
                && s["Action"].as_str().is_some_and(|a| action_matches(a, action))
                && principal_matches(&s["Principal"], who)
                && conditions_hold(s, who, url_auth_type)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(sid: &str, action: &str, principal: &str) -> PermissionInput {
        PermissionInput {
            statement_id: sid.into(),
            action: action.into(),
            principal: principal.into(),
            ..Default::default()
        }
    }

    #[test]
    fn statements_are_written_as_aws_writes_them() {
        let arn = "arn:aws:lambda:us-east-1:111111111111:function:f";
        let s = statement(&input("x", "lambda:InvokeFunction", "222222222222"), arn).unwrap();
        assert_eq!(
            s,
            json!({"Sid":"x","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},
                   "Action":"lambda:InvokeFunction","Resource":arn})
        );
        let mut i = input("s3", "lambda:InvokeFunction", "s3.amazonaws.com");
        i.source_arn = Some("arn:aws:s3:::bucket".into());
        i.source_account = Some("111111111111".into());
        let s = statement(&i, arn).unwrap();
        assert_eq!(s["Principal"], json!({"Service": "s3.amazonaws.com"}));
        assert_eq!(s["Condition"]["ArnLike"]["AWS:SourceArn"], "arn:aws:s3:::bucket");
        assert!(statement(&input("bad sid!", "lambda:InvokeFunction", "*"), arn).is_err());
        assert!(statement(&input("a", "s3:GetObject", "*"), arn).is_err());
        assert!(statement(&input("a", "lambda:InvokeFunction", "somebody"), arn).is_err());
    }

    #[test]
    fn policies_allow_only_what_they_grant() {
        let arn = "arn:aws:lambda:us-east-1:111111111111:function:f";
        let mut policy = empty_policy();
        let who = Requester::Account("222222222222");
        assert!(!allows(&policy, &who, "lambda:InvokeFunction", None));
        policy["Statement"] = json!([statement(&input("x", "lambda:InvokeFunction", "222222222222"), arn).unwrap()]);
        assert!(allows(&policy, &who, "lambda:InvokeFunction", None));
        assert!(!allows(&policy, &who, "lambda:GetFunction", None));
        assert!(!allows(&policy, &Requester::Account("333333333333"), "lambda:InvokeFunction", None));
        assert!(!allows(&policy, &Requester::Anonymous, "lambda:InvokeFunction", None));

        let mut url = input("url", "lambda:InvokeFunctionUrl", "*");
        url.function_url_auth_type = Some("NONE".into());
        policy["Statement"] = json!([statement(&url, arn).unwrap()]);
        assert!(allows(&policy, &Requester::Anonymous, "lambda:InvokeFunctionUrl", Some("NONE")));
        assert!(!allows(&policy, &Requester::Anonymous, "lambda:InvokeFunctionUrl", Some("AWS_IAM")));
        assert!(!allows(&policy, &Requester::Anonymous, "lambda:InvokeFunction", None));

        policy["Statement"] = json!([statement(&input("all", "lambda:*", "*"), arn).unwrap()]);
        assert!(allows(&policy, &who, "lambda:GetFunction", None));
        let mut svc = input("svc", "lambda:InvokeFunction", "s3.amazonaws.com");
        svc.source_arn = Some("arn:aws:s3:::b".into());
        policy["Statement"] = json!([statement(&svc, arn).unwrap()]);
        assert!(!allows(&policy, &who, "lambda:InvokeFunction", None));
    }
}
