//! Versions, aliases, concurrency (reserved and provisioned) and asynchronous-invocation
//! settings: PublishVersion, ListVersionsByFunction, Create/Get/Update/Delete/ListAliases,
//! Put/Get/DeleteFunctionConcurrency, Put/Get/Delete/ListProvisionedConcurrencyConfig(s) and
//! Put/Update/Get/Delete/ListFunctionEventInvokeConfig(s).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::versions::{self, AliasConfig, EventInvokeConfig, ProvisionedConfig, Qualifier};
use model::{ErrorCode, FunctionConfig, FunctionRef, LambdaError};
use serde::Deserialize;
use serde_json::json;
use store::StoreError;

use crate::error::ApiError;
use crate::functions::{QualifierQuery, function_ref, load};
use crate::wire::{self, StateView};
use crate::{ApiState, read_body};

type ApiResult = Result<Response, ApiError>;

fn store_error(context: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::Rejected(e) => ApiError(e),
        e => ApiError::internal(context, e),
    }
}

pub(crate) fn function_not_found(state: &ApiState, name: &str) -> ApiError {
    ApiError(LambdaError::not_found(format!("Function not found: {}", state.scope.function_arn(name))))
}

fn precondition_failed() -> ApiError {
    ApiError(LambdaError::new(
        ErrorCode::PreconditionFailed,
        "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
    ))
}

/// The unqualified function a path names (a qualifier in it is refused).
fn unqualified(state: &ApiState, raw: &str) -> Result<FunctionRef, ApiError> {
    let r = function_ref(state, raw, None)?;
    if r.qualifier.is_some() {
        return Err(LambdaError::invalid_parameter("This operation takes an unqualified function name.").into());
    }
    Ok(r)
}

/// Publishes `$LATEST` (shared by PublishVersion and the `Publish` flag of create/update).
pub(crate) async fn publish(
    state: &ApiState,
    name: &str,
    description: Option<String>,
    code_sha256: Option<String>,
    revision_id: Option<String>,
) -> Result<FunctionConfig, ApiError> {
    let n = name.to_string();
    let now = model::logfmt::now_ms();
    let result = state
        .store
        .run(move |db| {
            db.publish_version(&n, description.as_deref(), now, &mut |latest| {
                let current = store::StoredCode::sha256_base64(&latest.code_sha256);
                if let Some(sha) = &code_sha256
                    && *sha != current
                {
                    return Err(StoreError::Rejected(LambdaError::invalid_parameter(format!(
                        "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({current}). Please try again with the CodeSHA256 in $LATEST."
                    ))));
                }
                if let Some(rev) = &revision_id
                    && *rev != latest.revision_id
                {
                    return Err(StoreError::RevisionMismatch);
                }
                Ok(())
            })
        })
        .await;
    match result {
        Ok(v) => {
            tracing::info!(function = %name, version = %v.version, "version published");
            Ok(v)
        }
        Err(StoreError::NotFound) => Err(function_not_found(state, name)),
        Err(StoreError::RevisionMismatch) => Err(precondition_failed()),
        Err(e) => Err(store_error("cannot publish the version")(e)),
    }
}

pub async fn publish_version(State(state): State<ApiState>, Path(raw): Path<String>, body: Body) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let input: wire::PublishVersionIn = wire::parse_body(&read_body(body, 1 << 20, "PublishVersion").await?)?;
    if let Some(d) = &input.description
        && d.chars().count() > 256
    {
        return Err(
            LambdaError::validation(d, "description", "Member must have length less than or equal to 256").into()
        );
    }
    let v = publish(&state, &r.name, input.description, input.code_sha256, input.revision_id).await?;
    let version = v.version.clone();
    Ok((StatusCode::CREATED, Json(wire::function_configuration(&v, &state.scope, StateView::Settled, Some(&version))))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<usize>,
    #[serde(rename = "FunctionVersion")]
    function_version: Option<String>,
}

/// Splits `items` into the page after `marker` (an index) and the next marker.
fn page<T: Clone>(items: &[T], q: &PageQuery) -> (Vec<T>, Option<String>) {
    let start: usize = q.marker.as_deref().and_then(|m| m.parse().ok()).unwrap_or(0);
    let max = q.max_items.unwrap_or(50).clamp(1, 50);
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    (items.get(start..end).map(<[T]>::to_vec).unwrap_or_default(), next)
}

pub async fn list_versions(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let name = r.name.clone();
    let versions =
        state.store.run(move |db| db.list_versions(&name)).await.map_err(store_error("cannot list versions"))?;
    if versions.is_empty() {
        return Err(function_not_found(&state, &r.name));
    }
    let (items, next) = page(&versions, &q);
    let mut out = json!({
        "Versions": items
            .iter()
            .map(|v| wire::function_configuration(v, &state.scope, StateView::Listed, Some(&v.version)))
            .collect::<Vec<_>>(),
    });
    if let Some(n) = next {
        out["NextMarker"] = json!(n);
    }
    Ok(Json(out).into_response())
}

fn alias_not_found(state: &ApiState, function: &str, alias: &str) -> ApiError {
    ApiError(LambdaError::not_found(format!("Cannot find alias arn: {}", state.scope.qualified_arn(function, alias))))
}

fn routing_of(input: &wire::AliasIn) -> std::collections::BTreeMap<String, f64> {
    input.routing_config.as_ref().and_then(|r| r.additional_version_weights.clone()).unwrap_or_default()
}

pub async fn create_alias(State(state): State<ApiState>, Path(raw): Path<String>, body: Body) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let input: wire::AliasIn = wire::parse_body(&read_body(body, 1 << 20, "CreateAlias").await?)?;
    let name = input.name.clone().ok_or_else(|| LambdaError::validation("null", "name", "Member must not be null"))?;
    versions::validate_alias_name(&name)?;
    let version = input
        .function_version
        .clone()
        .ok_or_else(|| LambdaError::validation("null", "functionVersion", "Member must not be null"))?;
    versions::validate_version(&version)?;
    let routing = routing_of(&input);
    versions::validate_routing(&version, &routing)?;
    let alias = AliasConfig {
        name: name.clone(),
        function_version: version,
        description: input.description.unwrap_or_default(),
        routing,
        revision_id: uuid::Uuid::new_v4().to_string(),
    };
    let (function, a) = (r.name.clone(), alias.clone());
    let function_exists = {
        let f = r.name.clone();
        state.store.run(move |db| Ok(db.tags(&f)?.is_some())).await.map_err(store_error("cannot read the function"))?
    };
    if !function_exists {
        return Err(function_not_found(&state, &r.name));
    }
    match state.store.run(move |db| db.put_alias(&function, &a, true)).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(LambdaError::conflict(format!(
                "Alias already exists: {}",
                state.scope.qualified_arn(&r.name, &name)
            ))
            .into());
        }
        Err(e) => return Err(store_error("cannot create the alias")(e)),
    }
    state.invoker.invalidate(&r.name);
    Ok((StatusCode::CREATED, Json(wire::alias_configuration(&r.name, &alias, &state.scope))).into_response())
}

async fn get_alias_config(state: &ApiState, function: &str, alias: &str) -> Result<AliasConfig, ApiError> {
    let (f, a) = (function.to_string(), alias.to_string());
    state
        .store
        .run(move |db| db.get_alias(&f, &a))
        .await
        .map_err(store_error("cannot read the alias"))?
        .ok_or_else(|| alias_not_found(state, function, alias))
}

pub async fn get_alias(State(state): State<ApiState>, Path((raw, alias)): Path<(String, String)>) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let a = get_alias_config(&state, &r.name, &alias).await?;
    Ok(Json(wire::alias_configuration(&r.name, &a, &state.scope)).into_response())
}

pub async fn update_alias(
    State(state): State<ApiState>,
    Path((raw, alias)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let input: wire::AliasIn = wire::parse_body(&read_body(body, 1 << 20, "UpdateAlias").await?)?;
    let mut a = get_alias_config(&state, &r.name, &alias).await?;
    if let Some(rev) = &input.revision_id
        && *rev != a.revision_id
    {
        return Err(precondition_failed());
    }
    if let Some(v) = &input.function_version {
        versions::validate_version(v)?;
        a.function_version = v.clone();
    }
    if let Some(d) = &input.description {
        a.description = d.clone();
    }
    if input.routing_config.is_some() {
        a.routing = routing_of(&input);
    }
    versions::validate_routing(&a.function_version, &a.routing)?;
    a.revision_id = uuid::Uuid::new_v4().to_string();
    let (function, updated) = (r.name.clone(), a.clone());
    state.store.run(move |db| db.put_alias(&function, &updated, false)).await.map_err(|e| match e {
        StoreError::NotFound => alias_not_found(&state, &r.name, &alias),
        e => store_error("cannot update the alias")(e),
    })?;
    state.invoker.invalidate(&r.name);
    Ok(Json(wire::alias_configuration(&r.name, &a, &state.scope)).into_response())
}

pub async fn delete_alias(State(state): State<ApiState>, Path((raw, alias)): Path<(String, String)>) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let (f, a) = (r.name.clone(), alias.clone());
    state.store.run(move |db| db.delete_alias(&f, &a)).await.map_err(store_error("cannot delete the alias"))?;
    state.invoker.invalidate(&r.name);
    // The alias's function URL went with it.
    state.http.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_aliases(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let name = r.name.clone();
    let (exists, mut aliases) = state
        .store
        .run(move |db| Ok((db.tags(&name)?.is_some(), db.list_aliases(&name)?)))
        .await
        .map_err(store_error("cannot list aliases"))?;
    if !exists {
        return Err(function_not_found(&state, &r.name));
    }
    if let Some(v) = &q.function_version {
        aliases.retain(|a| a.function_version == *v || a.routing.contains_key(v));
    }
    let (items, next) = page(&aliases, &q);
    let mut out = json!({ "Aliases": items.iter().map(|a| wire::alias_configuration(&r.name, a, &state.scope)).collect::<Vec<_>>() });
    if let Some(n) = next {
        out["NextMarker"] = json!(n);
    }
    Ok(Json(out).into_response())
}

/// Account concurrency that must stay unreserved.
const MIN_UNRESERVED: usize = 100;

pub async fn put_concurrency(State(state): State<ApiState>, Path(raw): Path<String>, body: Body) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let input: wire::ConcurrencyIn = wire::parse_body(&read_body(body, 1 << 20, "PutFunctionConcurrency").await?)?;
    let value = input
        .reserved_concurrent_executions
        .ok_or_else(|| LambdaError::validation("null", "reservedConcurrentExecutions", "Member must not be null"))?;
    if value < 0 {
        return Err(LambdaError::validation(
            &value.to_string(),
            "reservedConcurrentExecutions",
            "Member must have value greater than or equal to 0",
        )
        .into());
    }
    let name = r.name.clone();
    let old = state
        .store
        .run(move |db| db.reserved_concurrency(&name))
        .await
        .map_err(store_error("cannot read the function"))?
        .ok_or_else(|| function_not_found(&state, &r.name))?;
    let (limit, unreserved) = state.invoker.account_concurrency();
    let after = unreserved as i64 + i64::from(old.unwrap_or(0)) - value;
    if value as usize > limit || after < MIN_UNRESERVED as i64 {
        return Err(LambdaError::invalid_parameter(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
        ))
        .into());
    }
    let (name, new) = (r.name.clone(), value as u32);
    state
        .store
        .run(move |db| db.set_reserved_concurrency(&name, Some(new)))
        .await
        .map_err(store_error("cannot set concurrency"))?;
    state.invoker.set_reserved(&r.name, old, Some(new));
    tracing::info!(function = %r.name, reserved = new, "reserved concurrency set");
    Ok(Json(json!({ "ReservedConcurrentExecutions": new })).into_response())
}

pub async fn get_concurrency(State(state): State<ApiState>, Path(raw): Path<String>) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let name = r.name.clone();
    let reserved = state
        .store
        .run(move |db| db.reserved_concurrency(&name))
        .await
        .map_err(store_error("cannot read the function"))?
        .ok_or_else(|| function_not_found(&state, &r.name))?;
    Ok(Json(match reserved {
        Some(v) => json!({ "ReservedConcurrentExecutions": v }),
        None => json!({}),
    })
    .into_response())
}

pub async fn delete_concurrency(State(state): State<ApiState>, Path(raw): Path<String>) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let name = r.name.clone();
    let old = state
        .store
        .run(move |db| {
            let old = db.reserved_concurrency(&name)?;
            if old.is_some() {
                db.set_reserved_concurrency(&name, None)?;
            }
            Ok(old)
        })
        .await
        .map_err(store_error("cannot delete concurrency"))?
        .ok_or_else(|| function_not_found(&state, &r.name))?;
    state.invoker.set_reserved(&r.name, old, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
pub struct ProvisionedQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
    #[serde(rename = "List")]
    list: Option<String>,
}

fn provisioned_body(state: &ApiState, function: &str, c: &ProvisionedConfig, with_arn: bool) -> serde_json::Value {
    let s = state.invoker.provisioned_status(function, &c.qualifier, c);
    let mut v = json!({
        "RequestedProvisionedConcurrentExecutions": s.requested,
        "AvailableProvisionedConcurrentExecutions": s.allocated,
        "AllocatedProvisionedConcurrentExecutions": s.allocated,
        "Status": s.status,
        "LastModified": model::logfmt::lambda_timestamp(s.last_modified_ms),
    });
    if let Some(reason) = s.reason {
        v["StatusReason"] = json!(reason);
    }
    if with_arn {
        v["FunctionArn"] = json!(state.scope.qualified_arn(function, &c.qualifier));
    }
    v
}

fn no_provisioned_config() -> ApiError {
    ApiError(LambdaError::new(
        ErrorCode::ProvisionedConcurrencyConfigNotFound,
        "No Provisioned Concurrency Config found for this function",
    ))
}

/// The qualifier provisioned concurrency applies to: a published version or an alias.
async fn provisioned_qualifier(state: &ApiState, r: &FunctionRef) -> Result<String, ApiError> {
    let q =
        r.qualifier.clone().ok_or_else(|| LambdaError::validation("null", "qualifier", "Member must not be null"))?;
    if Qualifier::parse(Some(&q)) == Qualifier::Latest {
        return Err(LambdaError::invalid_parameter(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
        )
        .into());
    }
    load(state, r).await?;
    Ok(q)
}

pub async fn put_provisioned(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
    body: Body,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let input: wire::ProvisionedIn =
        wire::parse_body(&read_body(body, 1 << 20, "PutProvisionedConcurrencyConfig").await?)?;
    let n = input
        .provisioned_concurrent_executions
        .ok_or_else(|| LambdaError::validation("null", "provisionedConcurrentExecutions", "Member must not be null"))?;
    if n < 1 {
        return Err(LambdaError::validation(
            &n.to_string(),
            "provisionedConcurrentExecutions",
            "Member must have value greater than or equal to 1",
        )
        .into());
    }
    let qualifier = provisioned_qualifier(&state, &r).await?;
    let name = r.name.clone();
    let reserved =
        state.store.run(move |db| db.reserved_concurrency(&name)).await.map_err(store_error("cannot read"))?.flatten();
    let (_, unreserved) = state.invoker.account_concurrency();
    let cap = reserved.map(|r| r as i64).unwrap_or(unreserved as i64 - MIN_UNRESERVED as i64);
    if n > cap {
        return Err(LambdaError::invalid_parameter(format!(
            "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution ({cap}) for function {}",
            r.name
        ))
        .into());
    }
    let config = ProvisionedConfig { qualifier, requested: n as u32, last_modified_ms: model::logfmt::now_ms() };
    let (name, c) = (r.name.clone(), config.clone());
    state
        .store
        .run(move |db| db.put_provisioned(&name, &c))
        .await
        .map_err(store_error("cannot save the configuration"))?;
    state.invoker.invalidate_provisioned();
    tracing::info!(function = %r.name, qualifier = %config.qualifier, requested = n, "provisioned concurrency requested");
    let mut body = provisioned_body(&state, &r.name, &config, false);
    body["Status"] = json!("IN_PROGRESS");
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn provisioned_configs(state: &ApiState, function: &str) -> Result<Vec<ProvisionedConfig>, ApiError> {
    let f = function.to_string();
    let (exists, all) = state
        .store
        .run(move |db| Ok((db.tags(&f)?.is_some(), db.list_provisioned(Some(&f))?)))
        .await
        .map_err(store_error("cannot read provisioned concurrency"))?;
    if !exists {
        return Err(function_not_found(state, function));
    }
    Ok(all.into_iter().map(|(_, c)| c).collect())
}

pub async fn get_provisioned(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<ProvisionedQuery>,
) -> ApiResult {
    if q.list.is_some() {
        let r = unqualified(&state, &raw)?;
        let all = provisioned_configs(&state, &r.name).await?;
        let items: Vec<_> = all.iter().map(|c| provisioned_body(&state, &r.name, c, true)).collect();
        return Ok(Json(json!({ "ProvisionedConcurrencyConfigs": items })).into_response());
    }
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let qualifier =
        r.qualifier.clone().ok_or_else(|| LambdaError::validation("null", "qualifier", "Member must not be null"))?;
    let all = provisioned_configs(&state, &r.name).await?;
    let c = all.iter().find(|c| c.qualifier == qualifier).ok_or_else(no_provisioned_config)?;
    Ok(Json(provisioned_body(&state, &r.name, c, false)).into_response())
}

pub async fn delete_provisioned(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let qualifier =
        r.qualifier.clone().ok_or_else(|| LambdaError::validation("null", "qualifier", "Member must not be null"))?;
    let (f, qq) = (r.name.clone(), qualifier.clone());
    let existed =
        state.store.run(move |db| db.delete_provisioned(&f, &qq)).await.map_err(store_error("cannot delete"))?;
    if !existed {
        return Err(no_provisioned_config());
    }
    state.invoker.invalidate_provisioned();
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn event_config_from(
    input: wire::EventInvokeConfigIn,
    base: Option<EventInvokeConfig>,
) -> Result<EventInvokeConfig, ApiError> {
    let mut c = base.unwrap_or_default();
    if let Some(r) = input.maximum_retry_attempts {
        if !(0..=2).contains(&r) {
            let constraint = if r < 0 { "greater than or equal to 0" } else { "less than or equal to 2" };
            return Err(LambdaError::validation(
                &r.to_string(),
                "maximumRetryAttempts",
                &format!("Member must have value {constraint}"),
            )
            .into());
        }
        c.max_retries = Some(r as u32);
    }
    if let Some(a) = input.maximum_event_age_in_seconds {
        c.max_age_s = Some(u32::try_from(a).unwrap_or(0));
        if !(60..=21_600).contains(&a) {
            let constraint = if a < 60 { "greater than or equal to 60" } else { "less than or equal to 21600" };
            return Err(LambdaError::validation(
                &a.to_string(),
                "maximumEventAgeInSeconds",
                &format!("Member must have value {constraint}"),
            )
            .into());
        }
    }
    if let Some(d) = input.destination_config {
        if let Some(s) = d.on_success {
            c.on_success = s.destination.filter(|d| !d.is_empty());
        }
        if let Some(f) = d.on_failure {
            c.on_failure = f.destination.filter(|d| !d.is_empty());
        }
    }
    c.last_modified_ms = model::logfmt::now_ms();
    Ok(c)
}

/// The qualifier an event-invoke configuration is stored under (`$LATEST` when unqualified),
/// after checking that the function and qualifier exist.
async fn event_qualifier(state: &ApiState, r: &FunctionRef) -> Result<String, ApiError> {
    load(state, r).await?;
    Ok(r.qualifier.clone().unwrap_or_else(|| model::LATEST.to_string()))
}

async fn save_event_config(state: &ApiState, r: &FunctionRef, body: Body, op: &str, merge: bool) -> ApiResult {
    let input: wire::EventInvokeConfigIn = wire::parse_body(&read_body(body, 1 << 20, op).await?)?;
    let qualifier = event_qualifier(state, r).await?;
    let base = if merge {
        let (f, q) = (r.name.clone(), qualifier.clone());
        let existing =
            state.store.run(move |db| db.get_event_invoke_config(&f, &q)).await.map_err(store_error("cannot read"))?;
        Some(existing.ok_or_else(|| {
            ApiError(LambdaError::not_found(format!(
                "The function {} doesn't have an EventInvokeConfig",
                state.scope.qualified_arn(&r.name, &qualifier)
            )))
        })?)
    } else {
        None
    };
    let config = event_config_from(input, base)?;
    config.validate(&state.scope.function_arn(&r.name))?;
    let (f, q, c) = (r.name.clone(), qualifier.clone(), config.clone());
    state.store.run(move |db| db.put_event_invoke_config(&f, &q, &c)).await.map_err(store_error("cannot save"))?;
    state.invoker.invalidate_event_configs(&r.name);
    Ok(Json(wire::event_invoke_config(&r.name, &qualifier, &config, &state.scope)).into_response())
}

pub async fn put_event_config(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
    body: Body,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    save_event_config(&state, &r, body, "PutFunctionEventInvokeConfig", false).await
}

pub async fn update_event_config(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
    body: Body,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    save_event_config(&state, &r, body, "UpdateFunctionEventInvokeConfig", true).await
}

pub async fn get_event_config(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let qualifier = event_qualifier(&state, &r).await?;
    let (f, qq) = (r.name.clone(), qualifier.clone());
    let config =
        state.store.run(move |db| db.get_event_invoke_config(&f, &qq)).await.map_err(store_error("cannot read"))?;
    let config = config.ok_or_else(|| {
        ApiError(LambdaError::not_found(format!(
            "The function {} doesn't have an EventInvokeConfig",
            state.scope.qualified_arn(&r.name, &qualifier)
        )))
    })?;
    Ok(Json(wire::event_invoke_config(&r.name, &qualifier, &config, &state.scope)).into_response())
}

pub async fn delete_event_config(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> ApiResult {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let qualifier = event_qualifier(&state, &r).await?;
    let (f, qq) = (r.name.clone(), qualifier.clone());
    let existed = state
        .store
        .run(move |db| db.delete_event_invoke_config(&f, &qq))
        .await
        .map_err(store_error("cannot delete"))?;
    if !existed {
        return Err(ApiError(LambdaError::not_found(format!(
            "The function {} doesn't have an EventInvokeConfig",
            state.scope.qualified_arn(&r.name, &qualifier)
        ))));
    }
    state.invoker.invalidate_event_configs(&r.name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_event_configs(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let r = unqualified(&state, &raw)?;
    let name = r.name.clone();
    let (exists, all) = state
        .store
        .run(move |db| Ok((db.tags(&name)?.is_some(), db.list_event_invoke_configs(&name)?)))
        .await
        .map_err(store_error("cannot list"))?;
    if !exists {
        return Err(function_not_found(&state, &r.name));
    }
    let (items, next) = page(&all, &q);
    let mut out = json!({
        "FunctionEventInvokeConfigs":
            items.iter().map(|(qq, c)| wire::event_invoke_config(&r.name, qq, c, &state.scope)).collect::<Vec<_>>(),
    });
    if let Some(n) = next {
        out["NextMarker"] = json!(n);
    }
    Ok(Json(out).into_response())
}
