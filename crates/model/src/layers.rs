//! Layers: named, numbered, immutable archives that functions add to `/opt`
//! (docs/lambda-contract.md §1.5 "Layers", §2 layer operations).

use serde::{Deserialize, Serialize};

use crate::error::LambdaError;
use crate::names::Scope;

/// The longest layer name.
pub const MAX_LAYER_NAME_LEN: usize = 140;
/// At most this many runtimes may be listed as compatible.
pub const MAX_COMPATIBLE_RUNTIMES: usize = 15;

/// The pattern Lambda reports for a layer name (or layer ARN) in a request path.
pub const LAYER_NAME_PATTERN: &str = r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:layer:[a-zA-Z0-9-_]{1,140}|[a-zA-Z0-9-_]{1,140})";
/// The pattern Lambda reports for a layer version ARN.
pub const LAYER_VERSION_ARN_PATTERN: &str = r"(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)";

/// One published version of a layer, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerVersion {
    pub name: String,
    pub version: u64,
    pub description: String,
    pub license_info: Option<String>,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    /// Lower-case hex SHA-256 of the archive; also its blob's address.
    pub code_sha256: String,
    pub code_size: u64,
    pub created_ms: i64,
}

/// A layer as a function version uses it: fixed when the configuration is saved, so deleting
/// the layer version later does not change the function (as on Lambda).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// The layer version ARN.
    pub arn: String,
    pub code_sha256: String,
    pub code_size: u64,
}

impl Scope {
    pub fn layer_arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:layer:{}", self.region, self.account, name)
    }

    pub fn layer_version_arn(&self, name: &str, version: u64) -> String {
        format!("{}:{version}", self.layer_arn(name))
    }
}

fn is_layer_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LAYER_NAME_LEN
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A layer named by the caller: its bare name, plus the region and account when named by ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerName {
    pub name: String,
    /// False when an ARN names another region or account: no such layer exists here.
    pub local: bool,
}

impl LayerName {
    /// Parses the `{LayerName}` of a request path: a name or a layer ARN.
    pub fn parse(input: &str, scope: &Scope) -> Result<Self, LambdaError> {
        let invalid = || {
            LambdaError::validation(
                input,
                "layerName",
                &format!("Member must satisfy regular expression pattern: {LAYER_NAME_PATTERN}"),
            )
        };
        if let Some(rest) = input.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.split(':').collect();
            // aws, lambda, region, account, "layer", name
            if parts.len() != 6 || parts[1] != "lambda" || parts[4] != "layer" || !is_layer_name(parts[5]) {
                return Err(invalid());
            }
            if parts[3].len() != 12 || !parts[3].chars().all(|c| c.is_ascii_digit()) {
                return Err(invalid());
            }
            let local = parts[2] == scope.region && parts[3] == scope.account;
            return Ok(Self { name: parts[5].to_string(), local });
        }
        if !is_layer_name(input) {
            return Err(invalid());
        }
        Ok(Self { name: input.to_string(), local: true })
    }
}

/// A parsed layer version ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerVersionArn {
    pub name: String,
    pub version: u64,
    /// False when the ARN names another region or account.
    pub local: bool,
}

impl LayerVersionArn {
    /// `field` names the member in validation errors (`layers`, `arn`).
    pub fn parse(arn: &str, scope: &Scope, field: &str) -> Result<Self, LambdaError> {
        let invalid = || {
            LambdaError::validation(
                arn,
                field,
                &format!("Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}"),
            )
        };
        let parts: Vec<&str> = arn.split(':').collect();
        // arn, partition, lambda, region, account, "layer", name, version
        if parts.len() != 8 || parts[0] != "arn" || parts[2] != "lambda" || parts[5] != "layer" {
            return Err(invalid());
        }
        if parts[4].len() != 12 || !parts[4].chars().all(|c| c.is_ascii_digit()) || !is_layer_name(parts[6]) {
            return Err(invalid());
        }
        let version = match parts[7] {
            v if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => v.parse().map_err(|_| invalid())?,
            _ => return Err(invalid()),
        };
        let local = parts[3] == scope.region && parts[4] == scope.account;
        Ok(Self { name: parts[6].to_string(), version, local })
    }
}

/// Checks the fields of a PublishLayerVersion request.
pub fn validate_publish(
    description: &str,
    license_info: Option<&str>,
    runtimes: &[String],
    architectures: &[String],
) -> Result<(), LambdaError> {
    if description.chars().count() > 256 {
        return Err(LambdaError::validation(
            description,
            "description",
            "Member must have length less than or equal to 256",
        ));
    }
    if let Some(l) = license_info
        && l.chars().count() > 512
    {
        return Err(LambdaError::validation(l, "licenseInfo", "Member must have length less than or equal to 512"));
    }
    if runtimes.len() > MAX_COMPATIBLE_RUNTIMES {
        return Err(LambdaError::validation(
            &format!("[{}]", runtimes.join(", ")),
            "compatibleRuntimes",
            "Member must have length less than or equal to 15",
        ));
    }
    if architectures.len() > 2 {
        return Err(LambdaError::validation(
            &format!("[{}]", architectures.join(", ")),
            "compatibleArchitectures",
            "Member must have length less than or equal to 2",
        ));
    }
    if let Some(bad) = architectures.iter().find(|a| *a != "x86_64" && *a != "arm64") {
        return Err(LambdaError::validation(
            &format!("[{}]", architectures.join(", ")),
            "compatibleArchitectures",
            &format!("Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]] ({bad})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn parses_layer_names_and_arns() {
        let scope = Scope::default();
        assert_eq!(
            LayerName::parse("my_layer-1", &scope).unwrap(),
            LayerName { name: "my_layer-1".into(), local: true }
        );
        let arn = scope.layer_arn("l");
        assert!(LayerName::parse(&arn, &scope).unwrap().local);
        assert!(!LayerName::parse("arn:aws:lambda:eu-west-1:111111111111:layer:l", &scope).unwrap().local);
        for bad in ["", "a b", "a:b", &"x".repeat(141), "arn:aws:lambda:us-east-1:1:layer:l"] {
            assert_eq!(LayerName::parse(bad, &scope).unwrap_err().code, ErrorCode::Validation, "{bad}");
        }
    }

    #[test]
    fn parses_layer_version_arns() {
        let scope = Scope::default();
        let v = LayerVersionArn::parse(&scope.layer_version_arn("deps", 3), &scope, "layers").unwrap();
        assert_eq!((v.name.as_str(), v.version, v.local), ("deps", 3, true));
        for bad in [
            "deps",
            "arn:aws:lambda:us-east-1:000000000000:layer:deps",
            "arn:aws:lambda:us-east-1:000000000000:layer:deps:x",
            "arn:aws:lambda:us-east-1:000000000000:function:deps:1",
        ] {
            let e = LayerVersionArn::parse(bad, &scope, "layers").unwrap_err();
            assert_eq!(e.code, ErrorCode::Validation, "{bad}");
            assert!(e.message.contains("at 'layers'"), "{}", e.message);
        }
    }

    #[test]
    fn publish_limits() {
        assert!(validate_publish("d", None, &["python3.12".into()], &["x86_64".into()]).is_ok());
        assert!(validate_publish(&"x".repeat(257), None, &[], &[]).is_err());
        assert!(validate_publish("", None, &[], &["sparc".into()]).is_err());
        assert!(validate_publish("", None, &vec!["python3.12".to_string(); 16], &[]).is_err());
    }
}
