//! Function names, qualifiers and ARNs, validated as Lambda validates them.
//!
//! A caller may name a function by its bare name (`my-fn`), with a qualifier (`my-fn:prod`),
//! by full ARN (`arn:aws:lambda:us-east-1:000000000000:function:my-fn[:prod]`) or by partial
//! ARN (`000000000000:function:my-fn`). [`FunctionRef::parse`] accepts all four.

use crate::error::{LambdaError, validation_message};

/// The regular expression Lambda reports for `FunctionName` on create.
pub const FUNCTION_NAME_PATTERN: &str = r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?";
/// The regular expression Lambda reports for `FunctionName` on invoke and reads.
pub const NAMESPACED_FUNCTION_NAME_PATTERN: &str = r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?";
const QUALIFIER_PATTERN: &str = r"(|[a-zA-Z0-9$_-]+)";

/// The longest bare function name.
pub const MAX_NAME_LEN: usize = 64;

/// Where functions live: the partition, region and account that make up their ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub region: String,
    pub account: String,
}

impl Scope {
    pub fn function_arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:function:{}", self.region, self.account, name)
    }

    pub fn qualified_arn(&self, name: &str, qualifier: &str) -> String {
        format!("{}:{}", self.function_arn(name), qualifier)
    }
}

/// Whether `s` is a 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

impl Default for Scope {
    fn default() -> Self {
        Self { region: "us-east-1".into(), account: "000000000000".into() }
    }
}

/// A reference to a function as a caller wrote it, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
    /// Region named in an ARN, if any.
    pub region: Option<String>,
    /// Account named in an ARN or partial ARN, if any.
    pub account: Option<String>,
}

/// Which operation is parsing the name: creation is stricter (no `.` in names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameUse {
    Create,
    Reference,
}

fn is_name_char(c: char, allow_dot: bool) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || (allow_dot && c == '.')
}

fn is_qualifier(q: &str) -> bool {
    q == "$LATEST" || (!q.is_empty() && q.len() <= 128 && q.chars().all(|c| is_name_char(c, false)))
}

fn is_region(r: &str) -> bool {
    // [a-z]{2}(-gov)?-[a-z]+-\d
    let parts: Vec<&str> = r.split('-').collect();
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return false,
    };
    if first.len() != 2 || !first.chars().all(|c| c.is_ascii_lowercase()) {
        return false;
    }
    let rest: Vec<&str> = if rest.first() == Some(&"gov") { rest[1..].to_vec() } else { rest.to_vec() };
    rest.len() == 2
        && !rest[0].is_empty()
        && rest[0].chars().all(|c| c.is_ascii_lowercase())
        && rest[1].len() == 1
        && rest[1].chars().all(|c| c.is_ascii_digit())
}

fn is_account(a: &str) -> bool {
    a.len() == 12 && a.chars().all(|c| c.is_ascii_digit())
}

impl FunctionRef {
    /// Parses a `FunctionName` parameter. Errors carry Lambda's exact wording.
    pub fn parse(input: &str, usage: NameUse) -> Result<Self, LambdaError> {
        let (max_len, pattern) = match usage {
            NameUse::Create => (140, FUNCTION_NAME_PATTERN),
            NameUse::Reference => (170, NAMESPACED_FUNCTION_NAME_PATTERN),
        };
        let invalid_pattern = || {
            LambdaError::validation(
                input,
                "functionName",
                &format!("Member must satisfy regular expression pattern: {pattern}"),
            )
        };
        if input.is_empty() {
            return Err(LambdaError::validation(
                input,
                "functionName",
                "Member must have length greater than or equal to 1",
            ));
        }
        if input.len() > max_len {
            return Err(LambdaError::validation(
                input,
                "functionName",
                &format!("Member must have length less than or equal to {max_len}"),
            ));
        }
        let allow_dot = usage == NameUse::Reference;
        let parts: Vec<&str> = input.split(':').collect();
        let (region, account, name, qualifier) = if input.starts_with("arn:") {
            // arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]
            if parts.len() < 7 || parts.len() > 8 {
                return Err(invalid_pattern());
            }
            if !parts[1].starts_with("aws") || parts[2] != "lambda" || parts[5] != "function" {
                return Err(invalid_pattern());
            }
            if !is_region(parts[3]) || !is_account(parts[4]) {
                return Err(invalid_pattern());
            }
            (Some(parts[3]), Some(parts[4]), parts[6], parts.get(7).copied())
        } else if parts.len() >= 3 && parts[1] == "function" {
            // <account>:function:<name>[:<qualifier>]
            if parts.len() > 4 || !is_account(parts[0]) {
                return Err(invalid_pattern());
            }
            (None, Some(parts[0]), parts[2], parts.get(3).copied())
        } else {
            match parts.as_slice() {
                [name] => (None, None, *name, None),
                [name, q] => (None, None, *name, Some(*q)),
                _ => return Err(invalid_pattern()),
            }
        };
        if name.is_empty() || !name.chars().all(|c| is_name_char(c, allow_dot)) {
            return Err(invalid_pattern());
        }
        if let Some(q) = qualifier
            && !is_qualifier(q)
        {
            return Err(invalid_pattern());
        }
        // On reads and invokes a long name is simply not found; only creation refuses it.
        if usage == NameUse::Create && name.len() > MAX_NAME_LEN {
            // Lambda reports the bare-name length as an InvalidParameterValueException.
            return Err(LambdaError::invalid_parameter(validation_message(
                input,
                "functionName",
                &format!("Member must have length less than or equal to {MAX_NAME_LEN}"),
            )));
        }
        Ok(Self {
            name: name.to_string(),
            qualifier: qualifier.map(str::to_string),
            region: region.map(str::to_string),
            account: account.map(str::to_string),
        })
    }

    /// Checks the region and account named in an ARN against where this server's functions live,
    /// and merges a separately given `Qualifier` with one derived from the name.
    pub fn resolve(mut self, scope: &Scope, qualifier: Option<&str>) -> Result<Self, LambdaError> {
        if let Some(region) = &self.region
            && region != &scope.region
        {
            return Err(LambdaError::not_found(format!(
                "Functions from '{region}' are not reachable in this region ('{}')",
                scope.region
            )));
        }
        if let Some(account) = &self.account
            && account != &scope.account
        {
            return Err(LambdaError::not_found(format!(
                "Function not found: {}",
                format_arn(&scope.region, account, &self.name, self.qualifier.as_deref())
            )));
        }
        if let Some(q) = qualifier {
            validate_qualifier(q)?;
            match &self.qualifier {
                Some(derived) if derived != q => {
                    return Err(LambdaError::invalid_parameter(
                        "The derived qualifier from the function name does not match the specified qualifier.",
                    ));
                }
                _ => self.qualifier = Some(q.to_string()),
            }
        }
        Ok(self)
    }
}

/// A function's ARN, qualified or not.
pub fn format_arn(region: &str, account: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{account}:function:{name}"),
    }
}

/// Validates a `Qualifier` query parameter.
pub fn validate_qualifier(q: &str) -> Result<(), LambdaError> {
    if q.is_empty() || q.len() > 128 {
        return Err(LambdaError::validation(q, "qualifier", "Member must have length less than or equal to 128"));
    }
    if !is_qualifier(q) {
        return Err(LambdaError::validation(
            q,
            "qualifier",
            &format!("Member must satisfy regular expression pattern: {QUALIFIER_PATTERN}"),
        ));
    }
    Ok(())
}

/// A parsed function ARN used as a tagging resource (`/2017-03-31/tags/{ARN}`).
pub fn parse_function_arn(arn: &str, scope: &Scope) -> Result<FunctionRef, LambdaError> {
    if !arn.starts_with("arn:") {
        return Err(LambdaError::validation(
            arn,
            "resource",
            "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso(b?)))?-[a-z]+-\\d{1}:\\d{12}:(function:[a-zA-Z0-9-_]+(:(\\$LATEST|[a-zA-Z0-9-_]+))?|layer:([a-zA-Z0-9-_]+)|code-signing-config:csc-[a-z0-9]{17}|event-source-mapping:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
        ));
    }
    FunctionRef::parse(arn, NameUse::Reference)?.resolve(scope, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn parses_every_form_of_function_name() {
        let r = FunctionRef::parse("my-fn", NameUse::Reference).unwrap();
        assert_eq!((r.name.as_str(), r.qualifier), ("my-fn", None));
        let r = FunctionRef::parse("my-fn:prod", NameUse::Reference).unwrap();
        assert_eq!(r.qualifier.as_deref(), Some("prod"));
        let r =
            FunctionRef::parse("arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST", NameUse::Reference).unwrap();
        assert_eq!(r.name, "f");
        assert_eq!(r.qualifier.as_deref(), Some("$LATEST"));
        assert_eq!(r.region.as_deref(), Some("us-east-1"));
        let r = FunctionRef::parse("000000000000:function:f", NameUse::Reference).unwrap();
        assert_eq!(r.account.as_deref(), Some("000000000000"));
    }

    #[test]
    fn rejects_names_failing_the_pattern_with_validation_exception() {
        for bad in ["bad name", "a/b", "f:q:r", "arn:aws:lambda:us-east-1:1:function:f", "ä", "f:"] {
            let err = FunctionRef::parse(bad, NameUse::Create).unwrap_err();
            assert_eq!(err.code, ErrorCode::Validation, "{bad}");
            assert!(err.message.starts_with("1 validation error detected: Value '"), "{bad}");
        }
        // A dot is allowed when referring, not when creating.
        assert!(FunctionRef::parse("a.b", NameUse::Reference).is_ok());
        assert!(FunctionRef::parse("a.b", NameUse::Create).is_err());
    }

    #[test]
    fn too_long_bare_name_is_invalid_parameter() {
        let name = "a".repeat(65);
        let err = FunctionRef::parse(&name, NameUse::Create).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterValue);
        let err = FunctionRef::parse(&"a".repeat(141), NameUse::Create).unwrap_err();
        assert_eq!(err.code, ErrorCode::Validation);
    }

    #[test]
    fn resolve_checks_scope_and_qualifier_agreement() {
        let scope = Scope::default();
        let r = FunctionRef::parse("arn:aws:lambda:eu-west-1:000000000000:function:f", NameUse::Reference).unwrap();
        assert_eq!(r.resolve(&scope, None).unwrap_err().code, ErrorCode::ResourceNotFound);
        let r = FunctionRef::parse("f:1", NameUse::Reference).unwrap();
        assert_eq!(r.clone().resolve(&scope, Some("2")).unwrap_err().code, ErrorCode::InvalidParameterValue);
        assert_eq!(r.resolve(&scope, Some("1")).unwrap().qualifier.as_deref(), Some("1"));
    }
}
