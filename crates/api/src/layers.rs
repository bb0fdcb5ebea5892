//! Layers: PublishLayerVersion, GetLayerVersion, GetLayerVersionByArn, ListLayerVersions,
//! ListLayers and DeleteLayerVersion, and the resolution of a function's `Layers`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use model::LambdaError;
use model::layers::{LayerName, LayerRef, LayerVersion, LayerVersionArn};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::functions::{code_error, code_location, decode_zip, json_response};
use crate::{ApiState, read_body, wire};

type ApiResult = Result<Response, ApiError>;

/// PublishLayerVersion's whole request may not exceed this (as CreateFunction's).
const MAX_PUBLISH_REQUEST: usize = 70_167_211;
const MAX_LIST_ITEMS: usize = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContentIn {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    s3_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishIn {
    content: Option<ContentIn>,
    description: Option<String>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
    license_info: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListQuery {
    compatible_runtime: Option<String>,
    compatible_architecture: Option<String>,
    marker: Option<String>,
    max_items: Option<String>,
    /// `LayerVersion` for GetLayerVersionByArn (which shares ListLayers' path).
    #[serde(rename = "find")]
    find: Option<String>,
    arn: Option<String>,
}

fn not_found() -> ApiError {
    ApiError(LambdaError::not_found("The resource you requested does not exist."))
}

fn max_items(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(MAX_LIST_ITEMS) };
    match raw.parse::<i64>() {
        Ok(n) if (1..=MAX_LIST_ITEMS as i64).contains(&n) => Ok(n as usize),
        Ok(n) if n < 1 => {
            Err(LambdaError::validation(raw, "maxItems", "Member must have value greater than or equal to 1").into())
        }
        Ok(_) => {
            Err(LambdaError::validation(raw, "maxItems", "Member must have value less than or equal to 50").into())
        }
        Err(_) => Err(LambdaError::validation(raw, "maxItems", "Member must be a number").into()),
    }
}

fn version_number(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| LambdaError::validation(raw, "versionNumber", "Member must be a number").into())
}

/// The local layer a path names, or `None` for a layer of another account or region (which
/// does not exist here).
fn local_layer(state: &ApiState, raw: &str) -> Result<Option<String>, ApiError> {
    let l = LayerName::parse(raw, &state.scope)?;
    Ok(l.local.then_some(l.name))
}

pub async fn publish(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let bytes = read_body(body, MAX_PUBLISH_REQUEST, "PublishLayerVersion").await?;
    let input: PublishIn = wire::parse_body(&bytes)?;
    let layer = LayerName::parse(&raw, &state.scope)?;
    if !layer.local {
        return Err(LambdaError::invalid_parameter(format!(
            "Layers can only be published in this account and region ({}, {}).",
            state.scope.account, state.scope.region
        ))
        .into());
    }
    let Some(content) = input.content else {
        return Err(LambdaError::validation("null", "content", "Member must not be null").into());
    };
    let description = input.description.unwrap_or_default();
    let runtimes = input.compatible_runtimes.unwrap_or_default();
    let architectures = input.compatible_architectures.unwrap_or_default();
    model::layers::validate_publish(&description, input.license_info.as_deref(), &runtimes, &architectures)?;
    if content.s3_bucket.is_some() || content.s3_key.is_some() {
        return Err(LambdaError::invalid_parameter(
            "Stratus accepts layer content as ZipFile only; S3Bucket/S3Key are not supported yet.",
        )
        .into());
    }
    let Some(zip_b64) = content.zip_file else {
        return Err(LambdaError::invalid_parameter("Please provide a source for the layer content.").into());
    };
    let stored = state.store.ingest_code(decode_zip(&zip_b64)?).await.map_err(code_error)?;
    let draft = LayerVersion {
        name: layer.name,
        version: 0,
        description,
        license_info: input.license_info,
        compatible_runtimes: runtimes,
        compatible_architectures: architectures,
        code_sha256: stored.sha256_hex,
        code_size: stored.size,
        created_ms: model::logfmt::now_ms(),
    };
    let published = state
        .store
        .run(move |db| db.publish_layer_version(draft))
        .await
        .map_err(|e| ApiError::internal("cannot publish the layer version", e))?;
    tracing::info!(layer = %published.name, version = published.version, code_sha256 = %published.code_sha256, "layer version published");
    let location = code_location(&state, &headers, &published.code_sha256);
    Ok(json_response(StatusCode::CREATED, wire::layer_version(&published, &state.scope, location)))
}

async fn load(state: &ApiState, name: Option<String>, version: u64) -> Result<LayerVersion, ApiError> {
    let Some(name) = name else { return Err(not_found()) };
    state
        .store
        .run(move |db| db.get_layer_version(&name, version))
        .await
        .map_err(|e| ApiError::internal("cannot read the layer version", e))?
        .ok_or_else(not_found)
}

pub async fn get_version(
    State(state): State<ApiState>,
    Path((raw, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let name = local_layer(&state, &raw)?;
    let v = load(&state, name, version_number(&version)?).await?;
    let location = code_location(&state, &headers, &v.code_sha256);
    Ok(json_response(StatusCode::OK, wire::layer_version(&v, &state.scope, location)))
}

pub async fn delete_version(State(state): State<ApiState>, Path((raw, version)): Path<(String, String)>) -> ApiResult {
    let version = version_number(&version)?;
    // Deleting a version that does not exist succeeds, as on Lambda. Functions that use the
    // version keep it: their configuration holds the package, not the layer.
    if let Some(name) = local_layer(&state, &raw)? {
        let n = name.clone();
        let existed = state
            .store
            .run(move |db| db.delete_layer_version(&n, version))
            .await
            .map_err(|e| ApiError::internal("cannot delete the layer version", e))?;
        if existed {
            tracing::info!(layer = %name, version, "layer version deleted");
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_versions(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let limit = max_items(q.max_items.as_deref())?;
    let before = q.marker.as_deref().map(version_number).transpose()?;
    let versions = match local_layer(&state, &raw)? {
        Some(name) => state
            .store
            .run(move |db| {
                db.list_layer_versions(
                    &name,
                    q.compatible_runtime.as_deref(),
                    q.compatible_architecture.as_deref(),
                    before,
                    limit + 1,
                )
            })
            .await
            .map_err(|e| ApiError::internal("cannot list the layer versions", e))?,
        None => Vec::new(),
    };
    let more = versions.len() > limit;
    let page = &versions[..versions.len().min(limit)];
    let mut out = json!({
        "LayerVersions": page.iter().map(|v| wire::layer_versions_list_item(v, &state.scope)).collect::<Vec<_>>(),
    });
    if more && let Some(last) = page.last() {
        out["NextMarker"] = json!(last.version.to_string());
    }
    Ok(json_response(StatusCode::OK, out))
}

/// `GET /2018-10-31/layers`: ListLayers, or GetLayerVersionByArn with `?find=LayerVersion`.
pub async fn list_or_find(State(state): State<ApiState>, Query(q): Query<ListQuery>, headers: HeaderMap) -> ApiResult {
    if q.find.as_deref() == Some("LayerVersion") {
        let arn = q.arn.as_deref().unwrap_or_default();
        let parsed = LayerVersionArn::parse(arn, &state.scope, "arn")?;
        let v = load(&state, parsed.local.then_some(parsed.name), parsed.version).await?;
        let location = code_location(&state, &headers, &v.code_sha256);
        return Ok(json_response(StatusCode::OK, wire::layer_version(&v, &state.scope, location)));
    }
    let limit = max_items(q.max_items.as_deref())?;
    let layers = state
        .store
        .run(move |db| {
            db.list_layers(
                q.compatible_runtime.as_deref(),
                q.compatible_architecture.as_deref(),
                q.marker.as_deref(),
                limit + 1,
            )
        })
        .await
        .map_err(|e| ApiError::internal("cannot list the layers", e))?;
    let more = layers.len() > limit;
    let page = &layers[..layers.len().min(limit)];
    let items: Vec<_> = page
        .iter()
        .map(|v| {
            json!({
                "LayerName": v.name,
                "LayerArn": state.scope.layer_arn(&v.name),
                "LatestMatchingVersion": wire::layer_versions_list_item(v, &state.scope),
            })
        })
        .collect();
    let mut out = json!({ "Layers": items });
    if more && let Some(last) = page.last() {
        out["NextMarker"] = json!(last.name);
    }
    Ok(json_response(StatusCode::OK, out))
}

/// Resolves a function's `Layers` to the packages they are now, in order, and prepares their
/// merged `/opt` so the first environment does not wait for it.
pub(crate) async fn resolve(state: &ApiState, arns: Option<Vec<String>>) -> Result<Option<Vec<LayerRef>>, ApiError> {
    let Some(arns) = arns else { return Ok(None) };
    if arns.len() > model::config::MAX_LAYERS {
        return Err(LambdaError::invalid_parameter("Cannot reference more than 5 layers.").into());
    }
    let mut parsed: Vec<(String, LayerVersionArn)> = Vec::new();
    for arn in &arns {
        let p = LayerVersionArn::parse(arn, &state.scope, "layers")?;
        if let Some((other, _)) = parsed.iter().find(|(_, q)| q.local == p.local && q.name == p.name) {
            return Err(LambdaError::invalid_parameter(format!(
                "Two different versions of the same layer are not allowed to be referenced in the same function. {other} and {arn} are versions of the same layer."
            ))
            .into());
        }
        parsed.push((arn.clone(), p));
    }
    let lookups: Vec<(String, Option<(String, u64)>)> =
        parsed.into_iter().map(|(arn, p)| (arn, p.local.then_some((p.name, p.version)))).collect();
    let found = state
        .store
        .run(move |db| {
            lookups
                .into_iter()
                .map(|(arn, key)| {
                    let v = match key {
                        Some((name, version)) => db.get_layer_version(&name, version)?,
                        None => None,
                    };
                    Ok((arn, v))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::internal("cannot read the layers", e))?;
    let mut refs = Vec::new();
    for (arn, v) in found {
        let Some(v) = v else {
            return Err(LambdaError::invalid_parameter(format!("Layer version {arn} does not exist.")).into());
        };
        refs.push(LayerRef {
            arn: state.scope.layer_version_arn(&v.name, v.version),
            code_sha256: v.code_sha256,
            code_size: v.code_size,
        });
    }
    if refs.len() > 1 {
        let code = state.store.code.clone();
        let shas: Vec<String> = refs.iter().map(|r| r.code_sha256.clone()).collect();
        state.store.ensure_code(&shas).await.map_err(|e| ApiError::internal("cannot fetch the layers", e))?;
        tokio::task::spawn_blocking(move || code.opt_tree(&shas))
            .await
            .map_err(|_| ApiError(LambdaError::service("cannot prepare the layers")))?
            .map_err(|e| ApiError::internal("cannot prepare the layers", store::StoreError::Io(e)))?;
    }
    Ok(Some(refs))
}
