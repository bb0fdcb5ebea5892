//! Function management: CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions,
//! UpdateFunctionCode, UpdateFunctionConfiguration, DeleteFunction, GetAccountSettings and
//! the tagging operations.
//!
//! Each handler parses and validates at the edge, then executes against the store and tells
//! the invoker what changed so cached environments are retired.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use model::{FunctionConfig, FunctionRef, LambdaError, NameUse};
use serde::Deserialize;
use serde_json::json;
use store::{CodeError, StoreError};

use crate::error::ApiError;
use crate::wire::{self, StateView};
use crate::{ApiState, read_body};

/// CreateFunction's whole request may not exceed this (`Request must be smaller than 70167211 bytes`).
const MAX_CREATE_REQUEST: usize = 70_167_211;

type ApiResult = Result<Response, ApiError>;

fn not_found(state: &ApiState, name: &str, qualifier: Option<&str>) -> ApiError {
    let arn = match qualifier {
        Some(q) => state.scope.qualified_arn(name, q),
        None => state.scope.function_arn(name),
    };
    ApiError(LambdaError::not_found(format!("Function not found: {arn}")))
}

/// Parses the `{FunctionName}` path parameter and an optional `Qualifier`.
pub(crate) fn function_ref(state: &ApiState, raw: &str, qualifier: Option<&str>) -> Result<FunctionRef, ApiError> {
    Ok(FunctionRef::parse(raw, NameUse::Reference)?.resolve(&state.scope, qualifier)?)
}

/// Updates apply to `$LATEST` only.
fn only_latest(state: &ApiState, r: &FunctionRef) -> Result<(), ApiError> {
    match r.qualifier.as_deref() {
        None | Some(model::LATEST) => Ok(()),
        Some(q) => Err(not_found(state, &r.name, Some(q))),
    }
}

pub(crate) fn code_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Code(CodeError::ZippedTooLarge) => {
            ApiError(LambdaError::too_large("Zipped size must be smaller than 52428800 bytes"))
        }
        StoreError::Code(CodeError::UnzippedTooLarge) => {
            ApiError(LambdaError::invalid_parameter("Unzipped size must be smaller than 262144000 bytes"))
        }
        StoreError::Code(c) if c.is_client_error() => ApiError(LambdaError::invalid_parameter(format!(
            "Could not unzip uploaded file. Please check your file, then try to upload again. ({c})"
        ))),
        other => ApiError::internal("cannot store the code package", other),
    }
}

pub(crate) fn decode_zip(b64: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
        ApiError(LambdaError::invalid_parameter(
            "Could not unzip uploaded file. Please check your file, then try to upload again. (ZipFile is not valid base64)",
        ))
    })
}

fn unsupported_code_source() -> ApiError {
    ApiError(LambdaError::invalid_parameter(
        "Stratus accepts function code as ZipFile only; S3Bucket/S3Key and ImageUri are not supported yet.",
    ))
}

/// How long a `Code.Location` URL works (AWS's presigned URLs: 10 minutes).
pub const CODE_URL_SECONDS: i64 = 600;

/// What a code download URL's signature covers.
pub fn code_url_message(file: &str, account: &str, expires: i64) -> String {
    format!("GET /_stratus/code/{file}\n{account}\n{expires}")
}

/// Where a stored package can be downloaded (the address the caller reached this API on),
/// signed for ten minutes when the server signs URLs.
pub(crate) fn code_location(state: &ApiState, headers: &HeaderMap, sha256_hex: &str) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let file = format!("{sha256_hex}.zip");
    let mut url = format!("http://{host}/_stratus/code/{file}");
    if let Some(accounts) = &state.accounts {
        let account = &state.scope.account;
        let expires = model::logfmt::now_ms() / 1000 + CODE_URL_SECONDS;
        let signature = accounts.sign_url(&code_url_message(&file, account, expires));
        url.push_str(&format!(
            "?X-Stratus-Account={account}&X-Stratus-Expires={expires}&X-Stratus-Signature={signature}"
        ));
    }
    url
}

pub(crate) fn json_response(status: StatusCode, v: serde_json::Value) -> Response {
    (status, Json(v)).into_response()
}

pub async fn create_function(State(state): State<ApiState>, body: Body) -> ApiResult {
    let bytes = read_body(body, MAX_CREATE_REQUEST, "CreateFunction").await?;
    let input: wire::CreateFunctionIn = wire::parse_body(&bytes)?;
    let Some(raw_name) = input.function_name.as_deref() else {
        return Err(LambdaError::validation("null", "functionName", "Member must not be null").into());
    };
    let name = FunctionRef::parse(raw_name, NameUse::Create)?.resolve(&state.scope, None)?;
    if name.qualifier.is_some() {
        return Err(
            LambdaError::invalid_parameter("Unsupported function name with a qualifier for CreateFunction.").into()
        );
    }
    if input.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(LambdaError::invalid_parameter(
            "Stratus runs Zip functions only; PackageType Image is not supported.",
        )
        .into());
    }
    let publish = input.publish == Some(true);
    let code = input.code.unwrap_or_default();
    if code.s3_bucket.is_some() || code.s3_key.is_some() || code.image_uri.is_some() {
        return Err(unsupported_code_source());
    }
    let Some(zip_b64) = code.zip_file else {
        return Err(LambdaError::invalid_parameter("Please provide a source for function code.").into());
    };
    let mut config_in = input.config;
    let layers = crate::layers::resolve(&state, config_in.layers.take()).await?;
    let config_in = config_in.into_model(input.architectures, layers);
    config_in.validate()?;
    if let Some(rt) = &config_in.runtime {
        state.invoker.catalogue().get(rt)?;
    }
    let zip = decode_zip(&zip_b64)?;
    let stored = state.store.ingest_code(zip).await.map_err(code_error)?;
    let config = config_in.into_new_config(&name.name, &stored.sha256_hex, stored.size, model::logfmt::now_ms())?;
    let tags = input.tags.unwrap_or_default();
    let c = config.clone();
    match state.store.run(move |db| db.create_function(&c, &tags)).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(LambdaError::conflict(format!("Function already exist: {}", name.name)).into());
        }
        Err(e) => return Err(ApiError::internal("cannot create the function", e)),
    }
    state.invoker.invalidate(&config.name);
    tracing::info!(function = %config.name, runtime = %config.runtime, code_sha256 = %config.code_sha256, "function created");
    if publish {
        let v = crate::versions::publish(&state, &config.name, None, None, None).await?;
        let version = v.version.clone();
        return Ok(json_response(
            StatusCode::CREATED,
            wire::function_configuration(&v, &state.scope, StateView::Creating, Some(&version)),
        ));
    }
    Ok(json_response(
        StatusCode::CREATED,
        wire::function_configuration(&config, &state.scope, StateView::Creating, None),
    ))
}

/// The configuration a (possibly qualified) reference names: `$LATEST`, a version, or the
/// version an alias points to.
pub(crate) async fn load(state: &ApiState, r: &FunctionRef) -> Result<FunctionConfig, ApiError> {
    let name = r.name.clone();
    let q = r.qualifier.clone();
    state
        .store
        .run(move |db| match model::versions::Qualifier::parse(q.as_deref()) {
            model::versions::Qualifier::Alias(a) => match db.get_alias(&name, &a)? {
                Some(alias) => db.get_version(&name, &alias.function_version),
                None => Ok(None),
            },
            other => db.get_version(&name, &other.version().unwrap_or_default()),
        })
        .await
        .map_err(|e| ApiError::internal("cannot read the function", e))?
        .ok_or_else(|| not_found(state, &r.name, r.qualifier.as_deref()))
}

#[derive(Debug, Deserialize)]
pub struct QualifierQuery {
    #[serde(rename = "Qualifier")]
    pub qualifier: Option<String>,
}

pub async fn get_function(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let config = load(&state, &r).await?;
    let name = r.name.clone();
    let (tags, reserved) = state
        .store
        .run(move |db| Ok((db.tags(&name)?, db.reserved_concurrency(&name)?.flatten())))
        .await
        .map_err(|e| ApiError::internal("cannot read tags", e))?;
    let mut out = json!({
        "Configuration": wire::function_configuration(&config, &state.scope, StateView::Settled, r.qualifier.as_deref()),
        "Code": {
            "RepositoryType": "S3",
            "Location": code_location(&state, &headers, &config.code_sha256),
        },
    });
    if let Some(tags) = tags.filter(|t| !t.is_empty()) {
        out["Tags"] = json!(tags);
    }
    if let Some(r) = reserved {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": r });
    }
    Ok(json_response(StatusCode::OK, out))
}

pub async fn get_configuration(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let config = load(&state, &r).await?;
    Ok(json_response(
        StatusCode::OK,
        wire::function_configuration(&config, &state.scope, StateView::Settled, r.qualifier.as_deref()),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
}

/// The most functions one ListFunctions page returns.
const LIST_PAGE_MAX: usize = 50;

pub async fn list_functions(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult {
    let max = match q.max_items.as_deref() {
        None => LIST_PAGE_MAX,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => (n as usize).min(LIST_PAGE_MAX),
            _ => {
                return Err(LambdaError::validation(
                    s,
                    "maxItems",
                    "Member must have value greater than or equal to 1",
                )
                .into());
            }
        },
    };
    let marker = q.marker.clone();
    let page = state
        .store
        .run(move |db| db.list_functions(marker.as_deref(), max + 1))
        .await
        .map_err(|e| ApiError::internal("cannot list functions", e))?;
    let more = page.len() > max;
    let page = &page[..page.len().min(max)];
    let mut out = json!({
        "Functions": page.iter().map(|c| wire::function_configuration(c, &state.scope, StateView::Listed, None)).collect::<Vec<_>>(),
    });
    if more && let Some(last) = page.last() {
        out["NextMarker"] = json!(last.name);
    }
    Ok(json_response(StatusCode::OK, out))
}

pub async fn update_code(State(state): State<ApiState>, Path(raw): Path<String>, body: Body) -> ApiResult {
    let bytes = read_body(body, MAX_CREATE_REQUEST, "UpdateFunctionCode").await?;
    let input: wire::UpdateCodeIn = wire::parse_body(&bytes)?;
    let r = function_ref(&state, &raw, None)?;
    only_latest(&state, &r)?;
    let publish = input.publish == Some(true);
    if input.s3_bucket.is_some() || input.s3_key.is_some() || input.image_uri.is_some() {
        return Err(unsupported_code_source());
    }
    let Some(zip_b64) = input.zip_file else {
        return Err(LambdaError::invalid_parameter("Please provide a source for function code.").into());
    };
    let arch = model::ConfigInput { architectures: input.architectures.clone(), ..Default::default() };
    arch.validate()?;
    let zip = decode_zip(&zip_b64)?;
    if input.dry_run == Some(true) {
        // Validate the package without keeping anything: unpack into a scratch store.
        let scratch = std::env::temp_dir().join(format!("stratus-dryrun-{}", uuid_like()));
        let result = tokio::task::spawn_blocking(move || {
            let out = store::CodeStore::open(scratch.clone()).map(|cs| cs.ingest(&zip));
            let _ = std::fs::remove_dir_all(&scratch);
            out
        })
        .await
        .map_err(|_| ApiError(LambdaError::service("the dry run was interrupted")))?;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(code_error(StoreError::Code(e))),
            Err(e) => return Err(ApiError::internal("cannot validate the code package", StoreError::Io(e))),
        }
        let config = load(&state, &r).await?;
        return Ok(json_response(
            StatusCode::OK,
            wire::function_configuration(&config, &state.scope, StateView::Settled, None),
        ));
    }
    let stored = state.store.ingest_code(zip).await.map_err(code_error)?;
    let name = r.name.clone();
    let revision = input.revision_id.clone();
    let now = model::logfmt::now_ms();
    let result = state
        .store
        .run(move |db| {
            db.update_latest(&name, revision.as_deref(), &mut |c| {
                model::ConfigInput { architectures: arch.architectures.clone(), ..Default::default() }.apply_to(c, now);
                c.code_sha256.clone_from(&stored.sha256_hex);
                c.code_size = stored.size;
                Ok(())
            })
        })
        .await;
    let config = updated(&state, &r, result)?;
    state.invoker.invalidate(&config.name);
    tracing::info!(function = %config.name, code_sha256 = %config.code_sha256, "function code updated");
    if publish {
        let v = crate::versions::publish(&state, &config.name, None, None, None).await?;
        let version = v.version.clone();
        return Ok(json_response(
            StatusCode::OK,
            wire::function_configuration(&v, &state.scope, StateView::Updating, Some(&version)),
        ));
    }
    Ok(json_response(StatusCode::OK, wire::function_configuration(&config, &state.scope, StateView::Updating, None)))
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), model::logfmt::now_ms())
}

fn updated(
    state: &ApiState,
    r: &FunctionRef,
    result: Result<FunctionConfig, StoreError>,
) -> Result<FunctionConfig, ApiError> {
    match result {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => Err(not_found(state, &r.name, None)),
        Err(StoreError::RevisionMismatch) => Err(ApiError(LambdaError::new(
            model::ErrorCode::PreconditionFailed,
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        ))),
        Err(StoreError::Rejected(e)) => Err(ApiError(e)),
        Err(e) => Err(ApiError::internal("cannot update the function", e)),
    }
}

pub async fn update_configuration(State(state): State<ApiState>, Path(raw): Path<String>, body: Body) -> ApiResult {
    let bytes = read_body(body, 1 << 20, "UpdateFunctionConfiguration").await?;
    let input: wire::UpdateConfigIn = wire::parse_body(&bytes)?;
    let r = function_ref(&state, &raw, None)?;
    only_latest(&state, &r)?;
    let mut config_in = input.config;
    let layers = crate::layers::resolve(&state, config_in.layers.take()).await?;
    let config_in = config_in.into_model(None, layers);
    config_in.validate()?;
    if let Some(rt) = &config_in.runtime {
        state.invoker.catalogue().get(rt)?;
    }
    let name = r.name.clone();
    let now = model::logfmt::now_ms();
    let revision = input.revision_id.clone();
    let result = state
        .store
        .run(move |db| {
            db.update_latest(&name, revision.as_deref(), &mut |c| {
                config_in.clone().apply_to(c, now);
                Ok(())
            })
        })
        .await;
    let config = updated(&state, &r, result)?;
    state.invoker.invalidate(&config.name);
    tracing::info!(function = %config.name, "function configuration updated");
    Ok(json_response(StatusCode::OK, wire::function_configuration(&config, &state.scope, StateView::Updating, None)))
}

pub async fn delete_function(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> ApiResult {
    use model::versions::Qualifier;
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    if r.qualifier.is_some() {
        return match Qualifier::parse(r.qualifier.as_deref()) {
            Qualifier::Latest => {
                Err(LambdaError::invalid_parameter("$LATEST version cannot be deleted without deleting the function.")
                    .into())
            }
            Qualifier::Version(n) => {
                let (name, v) = (r.name.clone(), n.to_string());
                let existed = state.store.run(move |db| db.delete_version(&name, &v)).await.map_err(|e| match e {
                    StoreError::Rejected(e) => ApiError(e),
                    e => ApiError::internal("cannot delete the version", e),
                })?;
                if !existed {
                    return Err(not_found(&state, &r.name, r.qualifier.as_deref()));
                }
                state.invoker.invalidate(&r.name);
                tracing::info!(function = %r.name, version = n, "version deleted");
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            Qualifier::Alias(_) => Err(LambdaError::invalid_parameter(
                "DeleteFunction deletes a function or one of its versions; use DeleteAlias for aliases.",
            )
            .into()),
        };
    }
    let name = r.name.clone();
    let (existed, reserved) = state
        .store
        .run(move |db| {
            let reserved = db.reserved_concurrency(&name)?.flatten();
            Ok((db.delete_function(&name)?, reserved))
        })
        .await
        .map_err(|e| ApiError::internal("cannot delete the function", e))?;
    if !existed {
        return Err(not_found(&state, &r.name, None));
    }
    state.invoker.set_reserved(&r.name, reserved, None);
    state.invoker.forget(&r.name);
    state.http.invalidate();
    tracing::info!(function = %r.name, "function deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn account_settings(State(state): State<ApiState>) -> ApiResult {
    let (count, size) =
        state.store.run(|db| db.usage()).await.map_err(|e| ApiError::internal("cannot read usage", e))?;
    let (limit, unreserved) = state.invoker.account_concurrency();
    Ok(json_response(
        StatusCode::OK,
        json!({
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800u64,
                "CodeSizeUnzipped": store::code::MAX_UNZIPPED_BYTES,
                "CodeSizeZipped": store::code::MAX_ZIPPED_BYTES,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": unreserved,
            },
            "AccountUsage": { "TotalCodeSize": size, "FunctionCount": count },
        }),
    ))
}

/// The function a tagging ARN names (unqualified function ARNs only).
async fn tag_target(state: &ApiState, arn: &str) -> Result<String, ApiError> {
    let r = model::names::parse_function_arn(arn, &state.scope)?;
    if r.qualifier.is_some() {
        return Err(LambdaError::invalid_parameter(
            "Tags on function aliases and versions are not supported. Please specify a function ARN.",
        )
        .into());
    }
    let name = r.name.clone();
    let exists = state
        .store
        .run(move |db| db.tags(&name))
        .await
        .map_err(|e| ApiError::internal("cannot read tags", e))?
        .is_some();
    if !exists {
        return Err(not_found(state, &r.name, None));
    }
    Ok(r.name)
}

pub async fn list_tags(State(state): State<ApiState>, Path(arn): Path<String>) -> ApiResult {
    let name = tag_target(&state, &arn).await?;
    let tags =
        state.store.run(move |db| db.tags(&name)).await.map_err(|e| ApiError::internal("cannot read tags", e))?;
    Ok(json_response(StatusCode::OK, json!({ "Tags": tags.unwrap_or_default() })))
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 || k.starts_with("aws:") {
            return Err(LambdaError::invalid_parameter(format!("Invalid tag: {k}")).into());
        }
    }
    Ok(())
}

pub async fn tag_resource(State(state): State<ApiState>, Path(arn): Path<String>, body: Body) -> ApiResult {
    let bytes = read_body(body, 1 << 20, "TagResource").await?;
    let input: wire::TagResourceIn = wire::parse_body(&bytes)?;
    let Some(new_tags) = input.tags else {
        return Err(LambdaError::validation("null", "tags", "Member must not be null").into());
    };
    validate_tags(&new_tags)?;
    let name = tag_target(&state, &arn).await?;
    let function = name.clone();
    state
        .store
        .run(move |db| {
            let mut tags = db.tags(&name)?.ok_or(StoreError::NotFound)?;
            tags.extend(new_tags);
            if tags.len() > 50 {
                return Err(StoreError::Rejected(LambdaError::invalid_parameter(
                    "A function can have at most 50 tags.",
                )));
            }
            db.set_tags(&name, &tags)?;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StoreError::Rejected(e) => ApiError(e),
            e => ApiError::internal("cannot tag the function", e),
        })?;
    // Some tags change how environments run (stratus:network).
    state.invoker.invalidate(&function);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn untag_resource(
    State(state): State<ApiState>,
    Path(arn): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let keys: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "tagKeys")
                .then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
        })
        .collect();
    if keys.is_empty() {
        return Err(LambdaError::validation("null", "tagKeys", "Member must not be null").into());
    }
    let name = tag_target(&state, &arn).await?;
    let function = name.clone();
    state
        .store
        .run(move |db| {
            let mut tags = db.tags(&name)?.ok_or(StoreError::NotFound)?;
            for k in &keys {
                tags.remove(k);
            }
            db.set_tags(&name, &tags)?;
            Ok(())
        })
        .await
        .map_err(|e| ApiError::internal("cannot untag the function", e))?;
    state.invoker.invalidate(&function);
    Ok(StatusCode::NO_CONTENT.into_response())
}
