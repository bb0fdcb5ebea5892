//! Lambda's JSON wire shapes (rest-json, PascalCase members), in and out.
//!
//! Inputs are parsed leniently about members we do not know (newer SDKs add them) and strictly
//! about the types of members we do. Outputs are built from `model` types.

use std::collections::BTreeMap;

use model::{ConfigInput, FunctionConfig, LambdaError, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

/// Parses a JSON request body, mapping failures to `InvalidRequestContentException`.
pub fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, LambdaError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body)
        .map_err(|e| LambdaError::invalid_content(format!("Could not parse request body into json: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentIn {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorageIn {
    pub size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingConfigIn {
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingConfigIn {
    pub log_format: Option<String>,
    pub log_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetterConfigIn {
    pub target_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

/// The configuration members shared by CreateFunction and UpdateFunctionConfiguration.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigIn {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<EnvironmentIn>,
    pub ephemeral_storage: Option<EphemeralStorageIn>,
    pub tracing_config: Option<TracingConfigIn>,
    pub logging_config: Option<LoggingConfigIn>,
    pub layers: Option<Vec<String>>,
    pub dead_letter_config: Option<DeadLetterConfigIn>,
}

impl ConfigIn {
    /// `layers` are the resolved `Layers` (taken out of `self` first, see `layers::resolve`).
    pub fn into_model(
        self,
        architectures: Option<Vec<String>>,
        layers: Option<Vec<model::layers::LayerRef>>,
    ) -> ConfigInput {
        let logging = self.logging_config.unwrap_or_default();
        ConfigInput {
            runtime: self.runtime,
            handler: self.handler,
            role: self.role,
            description: self.description,
            memory_mb: self.memory_size,
            timeout_s: self.timeout,
            ephemeral_mb: self.ephemeral_storage.and_then(|e| e.size),
            environment: self.environment.map(|e| e.variables.unwrap_or_default()),
            architectures,
            tracing_mode: self.tracing_config.and_then(|t| t.mode),
            log_format: logging.log_format,
            log_group: logging.log_group,
            layers,
            dead_letter_target: self.dead_letter_config.map(|d| d.target_arn.unwrap_or_default()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionIn {
    pub function_name: Option<String>,
    pub code: Option<CodeIn>,
    pub package_type: Option<String>,
    pub publish: Option<bool>,
    pub architectures: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub config: ConfigIn,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfigIn {
    pub revision_id: Option<String>,
    #[serde(flatten)]
    pub config: ConfigIn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersionIn {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingConfigIn {
    pub additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasIn {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingConfigIn>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConcurrencyIn {
    pub reserved_concurrent_executions: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionedIn {
    pub provisioned_concurrent_executions: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DestinationIn {
    pub destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DestinationConfigIn {
    pub on_success: Option<DestinationIn>,
    pub on_failure: Option<DestinationIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventInvokeConfigIn {
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_in_seconds: Option<i64>,
    pub destination_config: Option<DestinationConfigIn>,
}

/// `AliasConfiguration`.
pub fn alias_configuration(function: &str, a: &model::versions::AliasConfig, scope: &Scope) -> Value {
    let mut v = json!({
        "AliasArn": scope.qualified_arn(function, &a.name),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if !a.routing.is_empty() {
        v["RoutingConfig"] = json!({ "AdditionalVersionWeights": a.routing });
    }
    v
}

/// `FunctionEventInvokeConfig`.
pub fn event_invoke_config(
    function: &str,
    qualifier: &str,
    c: &model::versions::EventInvokeConfig,
    scope: &Scope,
) -> Value {
    let mut v = json!({
        "LastModified": c.last_modified_ms as f64 / 1000.0,
        "FunctionArn": scope.qualified_arn(function, qualifier),
        "DestinationConfig": {
            "OnSuccess": c.on_success.as_ref().map(|d| json!({ "Destination": d })).unwrap_or(json!({})),
            "OnFailure": c.on_failure.as_ref().map(|d| json!({ "Destination": d })).unwrap_or(json!({})),
        },
    });
    if let Some(r) = c.max_retries {
        v["MaximumRetryAttempts"] = json!(r);
    }
    if let Some(a) = c.max_age_s {
        v["MaximumEventAgeInSeconds"] = json!(a);
    }
    v
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourceIn {
    pub tags: Option<BTreeMap<String, String>>,
}

/// What a client should be told about the function's state in this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateView {
    /// CreateFunction's answer: `Pending` / `Creating`, no LastUpdateStatus.
    Creating,
    /// An update's answer: `Active`, LastUpdateStatus `InProgress`.
    Updating,
    /// Reads: `Active`, `Successful`.
    Settled,
    /// ListFunctions: no state members at all.
    Listed,
}

/// `LayerVersionsListItem`.
pub fn layer_versions_list_item(l: &model::layers::LayerVersion, scope: &Scope) -> Value {
    let mut v = json!({
        "LayerVersionArn": scope.layer_version_arn(&l.name, l.version),
        "Version": l.version,
        "Description": l.description,
        "CreatedDate": model::logfmt::lambda_timestamp(l.created_ms),
        "CompatibleRuntimes": l.compatible_runtimes,
        "CompatibleArchitectures": l.compatible_architectures,
    });
    if let Some(license) = &l.license_info {
        v["LicenseInfo"] = json!(license);
    }
    v
}

/// The answer of PublishLayerVersion, GetLayerVersion and GetLayerVersionByArn.
pub fn layer_version(l: &model::layers::LayerVersion, scope: &Scope, location: String) -> Value {
    let mut v = layer_versions_list_item(l, scope);
    v["LayerArn"] = json!(scope.layer_arn(&l.name));
    v["Content"] = json!({
        "Location": location,
        "CodeSha256": store::StoredCode::sha256_base64(&l.code_sha256),
        "CodeSize": l.code_size,
    });
    v
}

/// `FunctionConfiguration`. `qualifier`, when given, qualifies `FunctionArn` (the version, or
/// the alias the caller named).
pub fn function_configuration(c: &FunctionConfig, scope: &Scope, view: StateView, qualifier: Option<&str>) -> Value {
    let arn = match qualifier {
        Some(q) => scope.qualified_arn(&c.name, q),
        None => scope.function_arn(&c.name),
    };
    let mut v = json!({
        "FunctionName": c.name,
        "FunctionArn": arn,
        "Runtime": c.runtime,
        "Role": c.role,
        "Handler": c.handler,
        "CodeSize": c.code_size,
        "Description": c.description,
        "Timeout": c.timeout_s,
        "MemorySize": c.memory_mb,
        "LastModified": model::logfmt::lambda_timestamp(c.last_modified_ms),
        "CodeSha256": store::StoredCode::sha256_base64(&c.code_sha256),
        "Version": c.version,
        "TracingConfig": { "Mode": c.tracing_mode },
        "RevisionId": c.revision_id,
        "PackageType": "Zip",
        "Architectures": [c.architecture],
        "EphemeralStorage": { "Size": c.ephemeral_mb },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "RuntimeVersionConfig": {
            "RuntimeVersionArn": format!("arn:aws:lambda:{}::runtime:stratus-{}", scope.region, c.runtime)
        },
        "LoggingConfig": { "LogFormat": c.log_format, "LogGroup": c.log_group },
    });
    if let Some(vars) = &c.environment {
        v["Environment"] = json!({ "Variables": vars });
    }
    if !c.layers.is_empty() {
        v["Layers"] = Value::Array(c.layers.iter().map(|l| json!({ "Arn": l.arn, "CodeSize": l.code_size })).collect());
    }
    if let Some(dlq) = &c.dead_letter_target {
        v["DeadLetterConfig"] = json!({ "TargetArn": dlq });
    }
    match view {
        StateView::Creating => {
            v["State"] = json!("Pending");
            v["StateReason"] = json!("The function is being created.");
            v["StateReasonCode"] = json!("Creating");
        }
        StateView::Updating => {
            v["State"] = json!("Active");
            v["LastUpdateStatus"] = json!("InProgress");
            v["LastUpdateStatusReason"] = json!("The function is being created.");
            v["LastUpdateStatusReasonCode"] = json!("Creating");
        }
        StateView::Settled => {
            v["State"] = json!("Active");
            v["LastUpdateStatus"] = json!("Successful");
        }
        StateView::Listed => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_input_parses_and_maps_to_the_model() {
        let body = br#"{"FunctionName":"f","Runtime":"python3.11","Role":"arn:aws:iam::123456789012:role/r",
            "Handler":"app.handler","Code":{"ZipFile":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
            "Environment":{"Variables":{"A1":"x"}},"MemorySize":256,"EphemeralStorage":{"Size":1024},
            "SomeFutureMember":true}"#;
        let parsed: CreateFunctionIn = parse_body(body).unwrap();
        let input = parsed.config.into_model(None, None);
        assert_eq!(input.memory_mb, Some(256));
        assert_eq!(input.ephemeral_mb, Some(1024));
        assert_eq!(input.environment.unwrap()["A1"], "x");
    }

    #[test]
    fn malformed_and_mistyped_bodies_are_invalid_request_content() {
        let e = parse_body::<CreateFunctionIn>(b"{not json").unwrap_err();
        assert_eq!(e.code, model::ErrorCode::InvalidRequestContent);
        let e = parse_body::<CreateFunctionIn>(br#"{"MemorySize":"lots"}"#).unwrap_err();
        assert_eq!(e.code, model::ErrorCode::InvalidRequestContent);
    }

    #[test]
    fn configuration_views() {
        let c = ConfigInput {
            runtime: Some("python3.11".into()),
            handler: Some("a.b".into()),
            role: Some("arn:aws:iam::123456789012:role/r".into()),
            ..Default::default()
        }
        .into_new_config("f", "00", 1, 0)
        .unwrap();
        let scope = Scope::default();
        let v = function_configuration(&c, &scope, StateView::Creating, None);
        assert_eq!(v["State"], "Pending");
        assert!(v.get("LastUpdateStatus").is_none());
        assert!(v.get("Environment").is_none());
        assert_eq!(v["FunctionArn"], "arn:aws:lambda:us-east-1:000000000000:function:f");
        let v = function_configuration(&c, &scope, StateView::Settled, Some("$LATEST"));
        assert_eq!(v["LastUpdateStatus"], "Successful");
        assert!(v["FunctionArn"].as_str().unwrap().ends_with(":$LATEST"));
        assert!(function_configuration(&c, &scope, StateView::Listed, None).get("State").is_none());
    }
}
