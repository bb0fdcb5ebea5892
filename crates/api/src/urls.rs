//! Function URL configuration: Create/Get/Update/Delete/ListFunctionUrlConfigs. The URLs
//! themselves are served by `triggers::http` on their own listener.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::urls::{self, Cors, UrlConfig};
use model::{FunctionRef, LambdaError};
use serde::Deserialize;
use serde_json::{Value, json};
use store::StoreError;

use crate::error::ApiError;
use crate::functions::{function_ref, json_response};
use crate::{ApiState, read_body, wire};

type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UrlQuery {
    qualifier: Option<String>,
    marker: Option<String>,
    max_items: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UrlIn {
    auth_type: Option<String>,
    cors: Option<Cors>,
    invoke_mode: Option<String>,
}

fn not_found() -> ApiError {
    ApiError(LambdaError::not_found("The resource you requested does not exist."))
}

/// The function and alias a URL operation names. With `must_exist`, a missing function or
/// alias is `Function does not exist` (Create, Update, List); otherwise the operation's own
/// not-found answer follows.
async fn target(
    state: &ApiState,
    raw: &str,
    qualifier: Option<&str>,
    must_exist: bool,
) -> Result<FunctionRef, ApiError> {
    if let Some(q) = qualifier {
        urls::validate_qualifier(q)?;
    }
    let named = FunctionRef::parse(raw, model::NameUse::Reference)?;
    if let (Some(a), Some(b)) = (named.qualifier.as_deref(), qualifier)
        && a != b
    {
        return Err(LambdaError::invalid_parameter(
            "The derived qualifier from the function name does not match the specified qualifier.",
        )
        .into());
    }
    let r = function_ref(state, raw, qualifier)?;
    if let Some(q) = &r.qualifier {
        urls::validate_qualifier(q)?;
    }
    let (f, q) = (r.name.clone(), r.qualifier.clone());
    let exists = state
        .store
        .run(move |db| {
            Ok(db.get_version(&f, model::LATEST)?.is_some()
                && match &q {
                    Some(a) => db.get_alias(&f, a)?.is_some(),
                    None => true,
                })
        })
        .await
        .map_err(|e| ApiError::internal("cannot read the function", e))?;
    if !exists {
        return Err(if must_exist { function_missing() } else { not_found() });
    }
    Ok(r)
}

fn function_arn(state: &ApiState, c: &UrlConfig) -> String {
    match &c.qualifier {
        Some(q) => state.scope.qualified_arn(&c.function, q),
        None => state.scope.function_arn(&c.function),
    }
}

/// `2021-10-27T15:27:18.254000+0000`: AWS documents ISO 8601 without pinning the digits.
fn url_timestamp(ms: i64) -> String {
    let base = model::logfmt::lambda_timestamp(ms);
    base.replacen("+0000", "000+0000", 1)
}

/// The configuration as the API returns it. CreateFunctionUrlConfig answers without
/// `LastModifiedTime` and only echoes `InvokeMode` when the caller sent it.
fn url_json(state: &ApiState, c: &UrlConfig, created: Option<bool>) -> Value {
    let mut v = json!({
        "FunctionUrl": state.http.function_url(&c.url_id),
        "FunctionArn": function_arn(state, c),
        "AuthType": c.auth_type,
        "CreationTime": url_timestamp(c.created_ms),
    });
    if created != Some(false) {
        v["InvokeMode"] = json!(c.invoke_mode);
    }
    if let Some(cors) = &c.cors {
        v["Cors"] = json!(cors);
    }
    if created.is_none() {
        v["LastModifiedTime"] = json!(url_timestamp(c.modified_ms));
    }
    v
}

fn function_missing() -> ApiError {
    ApiError(LambdaError::not_found("Function does not exist"))
}

fn parse(bytes: &[u8]) -> Result<UrlIn, ApiError> {
    let input: UrlIn = wire::parse_body(bytes)?;
    if let Some(a) = &input.auth_type {
        urls::validate_auth_type(a)?;
    }
    if let Some(m) = &input.invoke_mode {
        urls::validate_invoke_mode(m)?;
    }
    if let Some(c) = &input.cors {
        c.validate()?;
    }
    Ok(input)
}

pub async fn create(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<UrlQuery>,
    body: Body,
) -> ApiResult {
    let bytes = read_body(body, 1 << 20, "CreateFunctionUrlConfig").await?;
    let input = parse(&bytes)?;
    let Some(auth_type) = input.auth_type else {
        return Err(LambdaError::validation("null", "authType", "Member must not be null").into());
    };
    let r = target(&state, &raw, q.qualifier.as_deref(), true).await?;
    let now = model::logfmt::now_ms();
    let config = UrlConfig {
        function: r.name.clone(),
        qualifier: r.qualifier.clone(),
        url_id: urls::new_url_id(),
        auth_type,
        cors: input.cors,
        invoke_mode: input.invoke_mode.clone().unwrap_or_else(|| urls::MODE_BUFFERED.into()),
        created_ms: now,
        modified_ms: now,
    };
    let c = config.clone();
    match state.store.run(move |db| db.create_url(&c)).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(function_missing()),
        Err(StoreError::AlreadyExists) => {
            return Err(LambdaError::conflict(format!(
                "Failed to create function url config for [functionArn = {}]. Error message:  FunctionUrlConfig exists for this Lambda function",
                function_arn(&state, &config)
            ))
            .into());
        }
        Err(e) => return Err(ApiError::internal("cannot create the function URL", e)),
    }
    state.http.invalidate();
    tracing::info!(function = %config.function, qualifier = config.qualifier.as_deref().unwrap_or(""), url = %state.http.function_url(&config.url_id), "function URL created");
    Ok(json_response(StatusCode::CREATED, url_json(&state, &config, Some(input.invoke_mode.is_some()))))
}

async fn load(state: &ApiState, r: &FunctionRef) -> Result<UrlConfig, ApiError> {
    let (f, q) = (r.name.clone(), r.qualifier.clone());
    state
        .store
        .run(move |db| db.get_url(&f, q.as_deref()))
        .await
        .map_err(|e| ApiError::internal("cannot read the function URL", e))?
        .ok_or_else(not_found)
}

pub async fn get(State(state): State<ApiState>, Path(raw): Path<String>, Query(q): Query<UrlQuery>) -> ApiResult {
    let r = target(&state, &raw, q.qualifier.as_deref(), false).await?;
    let c = load(&state, &r).await?;
    Ok(json_response(StatusCode::OK, url_json(&state, &c, None)))
}

pub async fn update(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<UrlQuery>,
    body: Body,
) -> ApiResult {
    let bytes = read_body(body, 1 << 20, "UpdateFunctionUrlConfig").await?;
    let input = parse(&bytes)?;
    let r = target(&state, &raw, q.qualifier.as_deref(), true).await?;
    let mut c = load(&state, &r).await?;
    if let Some(a) = input.auth_type {
        c.auth_type = a;
    }
    if let Some(cors) = input.cors {
        c.cors = Some(cors);
    }
    if let Some(m) = input.invoke_mode {
        c.invoke_mode = m;
    }
    c.modified_ms = model::logfmt::now_ms();
    let saved = c.clone();
    state.store.run(move |db| db.put_url(&saved)).await.map_err(|e| match e {
        StoreError::NotFound => not_found(),
        e => ApiError::internal("cannot update the function URL", e),
    })?;
    state.http.invalidate();
    Ok(json_response(StatusCode::OK, url_json(&state, &c, None)))
}

pub async fn delete(State(state): State<ApiState>, Path(raw): Path<String>, Query(q): Query<UrlQuery>) -> ApiResult {
    let r = target(&state, &raw, q.qualifier.as_deref(), false).await?;
    let (f, qq) = (r.name.clone(), r.qualifier.clone());
    let existed = state
        .store
        .run(move |db| db.delete_url(&f, qq.as_deref()))
        .await
        .map_err(|e| ApiError::internal("cannot delete the function URL", e))?;
    if !existed {
        return Err(not_found());
    }
    state.http.invalidate();
    tracing::info!(function = %r.name, "function URL deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list(State(state): State<ApiState>, Path(raw): Path<String>, Query(q): Query<UrlQuery>) -> ApiResult {
    let r = target(&state, &raw, None, true).await?;
    let limit = match q.max_items.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=50).contains(&n) => n,
        Some(_) => {
            return Err(LambdaError::validation(
                q.max_items.as_deref().unwrap_or_default(),
                "maxItems",
                "Member must have value less than or equal to 50",
            )
            .into());
        }
    };
    let name = r.name.clone();
    let after = q.marker.clone();
    let urls = state
        .store
        .run(move |db| db.list_urls(&name, after.as_deref(), limit + 1))
        .await
        .map_err(|e| ApiError::internal("cannot list the function URLs", e))?;
    let page = &urls[..urls.len().min(limit)];
    let mut out = json!({ "FunctionUrlConfigs": page.iter().map(|c| url_json(&state, c, None)).collect::<Vec<_>>() });
    if urls.len() > limit
        && let Some(last) = page.last()
    {
        out["NextMarker"] = json!(last.qualifier.clone().unwrap_or_default());
    }
    Ok(json_response(StatusCode::OK, out))
}
