//! Function URLs: an HTTP endpoint per function (or per alias) that invokes it
//! (docs/lambda-contract.md §2.2 "CreateFunctionUrlConfig", §4.1).

use serde::{Deserialize, Serialize};

use crate::error::LambdaError;

/// Cross-origin settings of a function URL, in Lambda's own member names (stored as sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cors {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
}

pub const AUTH_NONE: &str = "NONE";
pub const AUTH_IAM: &str = "AWS_IAM";
pub const MODE_BUFFERED: &str = "BUFFERED";
pub const MODE_STREAM: &str = "RESPONSE_STREAM";

/// One function URL, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlConfig {
    pub function: String,
    /// The alias the URL invokes; `None` for the unqualified function (`$LATEST`).
    pub qualifier: Option<String>,
    /// The host label that names the URL (32 lower-case letters and digits, as Lambda's).
    pub url_id: String,
    pub auth_type: String,
    pub cors: Option<Cors>,
    pub invoke_mode: String,
    pub created_ms: i64,
    pub modified_ms: i64,
}

impl UrlConfig {
    pub fn streams(&self) -> bool {
        self.invoke_mode == MODE_STREAM
    }
}

/// A fresh URL id.
pub fn new_url_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let more = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().chain(more.iter()).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// True for a string shaped like a URL id.
pub fn is_url_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn enum_error(value: &str, field: &str, set: &str) -> LambdaError {
    LambdaError::validation(value, field, &format!("Member must satisfy enum value set: [{set}]"))
}

pub fn validate_auth_type(v: &str) -> Result<(), LambdaError> {
    if v == AUTH_NONE || v == AUTH_IAM { Ok(()) } else { Err(enum_error(v, "authType", "NONE, AWS_IAM")) }
}

pub fn validate_invoke_mode(v: &str) -> Result<(), LambdaError> {
    if v == MODE_BUFFERED || v == MODE_STREAM {
        Ok(())
    } else {
        Err(enum_error(v, "invokeMode", "BUFFERED, RESPONSE_STREAM"))
    }
}

/// A URL's qualifier must be an alias name (not a version number, not `$LATEST`).
pub fn validate_qualifier(q: &str) -> Result<(), LambdaError> {
    let ok = !q.is_empty()
        && q.len() <= 128
        && !q.bytes().all(|b| b.is_ascii_digit())
        && q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LambdaError::validation(
            q,
            "qualifier",
            "Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)",
        ))
    }
}

impl Cors {
    pub fn validate(&self) -> Result<(), LambdaError> {
        let list = |v: &Option<Vec<String>>| v.as_ref().map(|l| format!("[{}]", l.join(", "))).unwrap_or_default();
        if let Some(m) = &self.allow_methods {
            if m.len() > 6 {
                return Err(LambdaError::validation(
                    &list(&self.allow_methods),
                    "cors.allowMethods",
                    "Member must have length less than or equal to 6",
                ));
            }
            if m.iter().any(|x| x.is_empty() || x.len() > 6) {
                return Err(LambdaError::validation(
                    &list(&self.allow_methods),
                    "cors.allowMethods",
                    "Member must satisfy constraint: [Member must have length less than or equal to 6, Member must have length greater than or equal to 0, Member must satisfy regular expression pattern: .*]",
                ));
            }
        }
        for (field, v) in [
            ("cors.allowOrigins", &self.allow_origins),
            ("cors.allowHeaders", &self.allow_headers),
            ("cors.exposeHeaders", &self.expose_headers),
        ] {
            if v.as_ref().is_some_and(|l| l.len() > 100) {
                return Err(LambdaError::validation(
                    &list(v),
                    field,
                    "Member must have length less than or equal to 100",
                ));
            }
        }
        if let Some(age) = self.max_age
            && !(0..=86_400).contains(&age)
        {
            let constraint = if age < 0 {
                "Member must have value greater than or equal to 0"
            } else {
                "Member must have value less than or equal to 86400"
            };
            return Err(LambdaError::validation(&age.to_string(), "cors.maxAge", constraint));
        }
        Ok(())
    }

    fn contains(list: &Option<Vec<String>>, value: &str, case_insensitive: bool) -> bool {
        list.as_ref().is_some_and(|l| {
            l.iter().any(|x| x == "*" || if case_insensitive { x.eq_ignore_ascii_case(value) } else { x == value })
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        let origins = self.allow_origins.as_ref()?;
        if origins.iter().any(|o| o == origin) {
            return Some(origin.to_string());
        }
        if origins.iter().any(|o| o == "*") {
            // AWS echoes the caller's origin for `*` (which also works with credentials).
            return Some(origin.to_string());
        }
        None
    }

    pub fn allows_method(&self, method: &str) -> bool {
        Self::contains(&self.allow_methods, method, true)
    }

    /// True when every header the browser asks for may be sent.
    pub fn allows_headers(&self, requested: &str) -> bool {
        requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| Self::contains(&self.allow_headers, h, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn url_ids_look_like_lambdas() {
        let id = new_url_id();
        assert!(is_url_id(&id), "{id}");
        assert_ne!(id, new_url_id());
        assert!(!is_url_id("ABC"));
    }

    #[test]
    fn validates_enums_qualifiers_and_cors() {
        assert!(validate_auth_type("NONE").is_ok() && validate_auth_type("AWS_IAM").is_ok());
        assert_eq!(validate_auth_type("none").unwrap_err().code, ErrorCode::Validation);
        assert!(validate_invoke_mode("RESPONSE_STREAM").is_ok());
        assert!(validate_invoke_mode("STREAM").is_err());
        assert!(validate_qualifier("prod").is_ok());
        for bad in ["1", "$LATEST", "a b", ""] {
            assert!(validate_qualifier(bad).is_err(), "{bad}");
        }
        let cors = Cors { max_age: Some(86_401), ..Default::default() };
        assert!(cors.validate().unwrap_err().message.contains("cors.maxAge"));
        let cors = Cors { allow_methods: Some(vec!["GET".into(); 7]), ..Default::default() };
        assert!(cors.validate().is_err());
    }

    #[test]
    fn cors_matching() {
        let cors = Cors {
            allow_origins: Some(vec!["https://app.example".into()]),
            allow_methods: Some(vec!["GET".into(), "POST".into()]),
            allow_headers: Some(vec!["content-type".into(), "X-Custom".into()]),
            ..Default::default()
        };
        assert_eq!(cors.allowed_origin("https://app.example").as_deref(), Some("https://app.example"));
        assert_eq!(cors.allowed_origin("https://evil.example"), None);
        assert!(cors.allows_method("post") && !cors.allows_method("DELETE"));
        assert!(cors.allows_headers("Content-Type, x-custom") && !cors.allows_headers("authorization"));
        let any = Cors { allow_origins: Some(vec!["*".into()]), ..Default::default() };
        assert_eq!(any.allowed_origin("https://x").as_deref(), Some("https://x"));
    }
}
