//! Function configuration: what is stored for each function version, and the validation of
//! the settings callers send to CreateFunction and UpdateFunctionConfiguration.
//!
//! The limits and messages follow Lambda's (docs/lambda-contract.md §1.5, §2, §3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::LambdaError;
use crate::runtime;

pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
pub const MAX_TIMEOUT_S: u32 = 900;
pub const MIN_EPHEMERAL_MB: u32 = 512;
pub const MAX_EPHEMERAL_MB: u32 = 10_240;
/// The environment variables, serialized as a JSON map, may not exceed this many bytes.
pub const MAX_ENV_BYTES: usize = 4096;
pub const MAX_LAYERS: usize = 5;
pub const LATEST: &str = "$LATEST";

/// Variables Lambda sets itself; a function may not set them.
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// The configuration of one function version, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub name: String,
    /// `$LATEST` or a published version number.
    pub version: String,
    pub runtime: String,
    pub handler: String,
    pub role: String,
    pub description: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    /// Size of `/tmp` in MB.
    pub ephemeral_mb: u32,
    /// `None` when the caller never set variables (Lambda then omits `Environment`).
    pub environment: Option<BTreeMap<String, String>>,
    pub architecture: String,
    /// Lower-case hex SHA-256 of the deployment package; also the code blob's address.
    pub code_sha256: String,
    pub code_size: u64,
    /// Changes on every update; guards optimistic concurrency (`RevisionId`).
    pub revision_id: String,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    pub tracing_mode: String,
    pub log_format: String,
    pub log_group: String,
    /// The layers in `/opt`, in order (later ones overwrite earlier ones' files).
    #[serde(default)]
    pub layers: Vec<crate::layers::LayerRef>,
    pub dead_letter_target: Option<String>,
}

impl FunctionConfig {
    /// The bytes of `/tmp` this function may use.
    pub fn ephemeral_bytes(&self) -> u64 {
        u64::from(self.ephemeral_mb) * 1024 * 1024
    }
}

/// Settings a caller may send on create or update; `None` means "not given".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigInput {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub memory_mb: Option<i64>,
    pub timeout_s: Option<i64>,
    pub ephemeral_mb: Option<i64>,
    pub environment: Option<BTreeMap<String, String>>,
    pub architectures: Option<Vec<String>>,
    pub tracing_mode: Option<String>,
    pub log_format: Option<String>,
    pub log_group: Option<String>,
    /// Resolved by the caller (the layer versions must exist), in order.
    pub layers: Option<Vec<crate::layers::LayerRef>>,
    pub dead_letter_target: Option<String>,
}

fn range(value: i64, field: &str, min: i64, max: i64) -> Result<u32, LambdaError> {
    if value < min {
        return Err(LambdaError::validation(
            &value.to_string(),
            field,
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(LambdaError::validation(
            &value.to_string(),
            field,
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    u32::try_from(value).map_err(|_| LambdaError::invalid_parameter(format!("{field} is out of range")))
}

fn is_env_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && k.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_role(role: &str) -> bool {
    // arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+
    let Some(rest) = role.strip_prefix("arn:") else { return false };
    let Some((partition, rest)) = rest.split_once(':') else { return false };
    if !(partition.is_empty() || partition.starts_with("aws")) {
        return false;
    }
    let Some(rest) = rest.strip_prefix("iam::") else { return false };
    let Some((account, rest)) = rest.split_once(':') else { return false };
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let Some(path) = rest.strip_prefix("role") else { return false };
    let path = path.strip_prefix('/').unwrap_or(path);
    !path.is_empty() && path.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_/".contains(c))
}

impl ConfigInput {
    /// Checks every given setting against Lambda's constraints.
    pub fn validate(&self) -> Result<(), LambdaError> {
        if let Some(rt) = &self.runtime {
            runtime::validate_identifier(rt)?;
        }
        if let Some(h) = &self.handler
            && (h.is_empty() || h.len() > 128 || h.chars().any(char::is_whitespace))
        {
            return Err(LambdaError::validation(
                h,
                "handler",
                r"Member must satisfy regular expression pattern: [^\s]+",
            ));
        }
        if let Some(role) = &self.role
            && !is_role(role)
        {
            return Err(LambdaError::validation(
                role,
                "role",
                r"Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+",
            ));
        }
        if let Some(d) = &self.description
            && d.chars().count() > 256
        {
            return Err(LambdaError::validation(d, "description", "Member must have length less than or equal to 256"));
        }
        if let Some(m) = self.memory_mb {
            range(m, "memorySize", i64::from(MIN_MEMORY_MB), i64::from(MAX_MEMORY_MB))?;
        }
        if let Some(t) = self.timeout_s {
            range(t, "timeout", 1, i64::from(MAX_TIMEOUT_S))?;
        }
        if let Some(e) = self.ephemeral_mb {
            range(e, "ephemeralStorage.size", i64::from(MIN_EPHEMERAL_MB), i64::from(MAX_EPHEMERAL_MB))?;
        }
        if let Some(vars) = &self.environment {
            validate_environment(vars)?;
        }
        if let Some(archs) = &self.architectures {
            if archs.len() != 1 {
                return Err(LambdaError::validation(
                    &format!("{archs:?}"),
                    "architectures",
                    "Member must have length less than or equal to 1",
                ));
            }
            if archs[0] != "x86_64" && archs[0] != "arm64" {
                return Err(LambdaError::validation(
                    &format!("[{}]", archs[0]),
                    "architectures",
                    "Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]",
                ));
            }
        }
        if let Some(mode) = &self.tracing_mode
            && mode != "Active"
            && mode != "PassThrough"
        {
            return Err(LambdaError::validation(
                mode,
                "tracingConfig.mode",
                "Member must satisfy enum value set: [Active, PassThrough]",
            ));
        }
        if let Some(fmt) = &self.log_format
            && fmt != "Text"
            && fmt != "JSON"
        {
            return Err(LambdaError::validation(
                fmt,
                "loggingConfig.logFormat",
                "Member must satisfy enum value set: [Text, JSON]",
            ));
        }
        if let Some(layers) = &self.layers
            && layers.len() > MAX_LAYERS
        {
            return Err(LambdaError::invalid_parameter("Cannot reference more than 5 layers."));
        }
        Ok(())
    }

    /// Builds the configuration of a new function from validated settings.
    pub fn into_new_config(
        self,
        name: &str,
        code_sha256: &str,
        code_size: u64,
        now_ms: i64,
    ) -> Result<FunctionConfig, LambdaError> {
        let (Some(runtime), Some(handler)) = (self.runtime.clone(), self.handler.clone()) else {
            return Err(LambdaError::invalid_parameter(
                "Runtime and Handler are mandatory parameters for functions created with deployment packages.",
            ));
        };
        let Some(role) = self.role.clone() else {
            return Err(LambdaError::validation("null", "role", "Member must not be null"));
        };
        let mut config = FunctionConfig {
            name: name.to_string(),
            version: LATEST.to_string(),
            runtime,
            handler,
            role,
            description: String::new(),
            memory_mb: 128,
            timeout_s: 3,
            ephemeral_mb: MIN_EPHEMERAL_MB,
            environment: None,
            architecture: "x86_64".into(),
            code_sha256: code_sha256.to_string(),
            code_size,
            revision_id: String::new(),
            last_modified_ms: now_ms,
            tracing_mode: "PassThrough".into(),
            log_format: "Text".into(),
            log_group: format!("/aws/lambda/{name}"),
            layers: Vec::new(),
            dead_letter_target: None,
        };
        self.apply_to(&mut config, now_ms);
        Ok(config)
    }

    /// Applies the given settings to an existing configuration (Environment replaces the map).
    pub fn apply_to(self, config: &mut FunctionConfig, now_ms: i64) {
        let Self {
            runtime,
            handler,
            role,
            description,
            memory_mb,
            timeout_s,
            ephemeral_mb,
            environment,
            architectures,
            tracing_mode,
            log_format,
            log_group,
            layers,
            dead_letter_target,
        } = self;
        // Every value below has passed `validate`, so the narrowing casts cannot fail.
        let narrow = |v: i64, fallback: u32| u32::try_from(v).unwrap_or(fallback);
        if let Some(v) = runtime {
            config.runtime = v;
        }
        if let Some(v) = handler {
            config.handler = v;
        }
        if let Some(v) = role {
            config.role = v;
        }
        if let Some(v) = description {
            config.description = v;
        }
        if let Some(v) = memory_mb {
            config.memory_mb = narrow(v, config.memory_mb);
        }
        if let Some(v) = timeout_s {
            config.timeout_s = narrow(v, config.timeout_s);
        }
        if let Some(v) = ephemeral_mb {
            config.ephemeral_mb = narrow(v, config.ephemeral_mb);
        }
        if let Some(v) = environment {
            config.environment = Some(v);
        }
        if let Some(mut v) = architectures
            && let Some(a) = v.pop()
        {
            config.architecture = a;
        }
        if let Some(v) = tracing_mode {
            config.tracing_mode = v;
        }
        if let Some(v) = log_format {
            config.log_format = v;
        }
        if let Some(v) = log_group {
            config.log_group = v;
        }
        if let Some(v) = layers {
            config.layers = v;
        }
        if let Some(v) = dead_letter_target {
            config.dead_letter_target = if v.is_empty() { None } else { Some(v) };
        }
        config.revision_id = uuid::Uuid::new_v4().to_string();
        config.last_modified_ms = now_ms;
    }
}

/// Checks user environment variables: key syntax, reserved keys and the 4 KB limit.
pub fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), LambdaError> {
    for key in vars.keys() {
        if !is_env_key(key) {
            return Err(LambdaError::validation(
                key,
                "environment.variables",
                "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]",
            ));
        }
    }
    let reserved: Vec<&str> = vars.keys().map(String::as_str).filter(|k| RESERVED_ENV.contains(k)).collect();
    if !reserved.is_empty() {
        return Err(LambdaError::invalid_parameter(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(",")
        )));
    }
    let serialized = serde_json::to_string(vars).unwrap_or_default();
    if serialized.len() > MAX_ENV_BYTES {
        return Err(LambdaError::invalid_parameter(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {serialized}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn input() -> ConfigInput {
        ConfigInput {
            runtime: Some("python3.11".into()),
            handler: Some("app.handler".into()),
            role: Some("arn:aws:iam::123456789012:role/lambda".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_lambda() {
        let c = input().into_new_config("f", "ab", 10, 1).unwrap();
        assert_eq!((c.memory_mb, c.timeout_s, c.ephemeral_mb), (128, 3, 512));
        assert_eq!(c.log_group, "/aws/lambda/f");
        assert_eq!(c.version, "$LATEST");
        assert!(c.environment.is_none());
        assert!(!c.revision_id.is_empty());
    }

    #[test]
    fn limits_are_enforced_with_lambda_errors() {
        let mut i = input();
        i.memory_mb = Some(64);
        assert_eq!(i.validate().unwrap_err().code, ErrorCode::Validation);
        let mut i = input();
        i.timeout_s = Some(901);
        assert!(i.validate().unwrap_err().message.contains("less than or equal to 900"));
        let mut i = input();
        i.handler = Some("bad handler".into());
        assert_eq!(i.validate().unwrap_err().code, ErrorCode::Validation);
        let mut i = input();
        i.role = Some("not-a-role".into());
        assert_eq!(i.validate().unwrap_err().code, ErrorCode::Validation);
    }

    #[test]
    fn environment_rules() {
        let mut vars = BTreeMap::new();
        vars.insert("AWS_REGION".to_string(), "x".to_string());
        assert_eq!(validate_environment(&vars).unwrap_err().code, ErrorCode::InvalidParameterValue);
        let mut vars = BTreeMap::new();
        vars.insert("1BAD".to_string(), "x".to_string());
        assert_eq!(validate_environment(&vars).unwrap_err().code, ErrorCode::Validation);
        let mut vars = BTreeMap::new();
        vars.insert("BIG".to_string(), "x".repeat(4090));
        let err = validate_environment(&vars).unwrap_err();
        assert!(err.message.contains("exceeded the 4KB limit"));
    }

    #[test]
    fn update_replaces_environment_and_revision() {
        let mut c = input().into_new_config("f", "ab", 10, 1).unwrap();
        let before = c.revision_id.clone();
        let mut vars = BTreeMap::new();
        vars.insert("A1".to_string(), "x".to_string());
        ConfigInput { environment: Some(vars.clone()), memory_mb: Some(256), ..Default::default() }.apply_to(&mut c, 2);
        assert_eq!(c.environment, Some(vars));
        assert_eq!(c.memory_mb, 256);
        assert_ne!(c.revision_id, before);
        assert_eq!(c.last_modified_ms, 2);
    }
}
