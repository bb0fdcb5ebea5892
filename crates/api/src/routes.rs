//! HTTP routes (Stratus's own API, `/_stratus/routes`): API Gateway HTTP API-style routes
//! served by the HTTP front. `stratus routes` is its client.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::routes::{self, RouteConfig, RouteKey};
use model::{FunctionRef, LambdaError, NameUse};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::functions::json_response;
use crate::{ApiState, read_body, wire};

type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RouteIn {
    route_key: Option<String>,
    function_name: Option<String>,
    qualifier: Option<String>,
    payload_format_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouteQuery {
    route_key: Option<String>,
}

fn route_json(state: &ApiState, r: &RouteConfig) -> Value {
    let arn = match &r.qualifier {
        Some(q) => state.scope.qualified_arn(&r.function, q),
        None => state.scope.function_arn(&r.function),
    };
    json!({
        "RouteKey": r.route_key,
        "FunctionName": r.function,
        "FunctionArn": arn,
        "Qualifier": r.qualifier,
        "PayloadFormatVersion": r.payload_format,
        "CreatedDate": model::logfmt::lambda_timestamp(r.created_ms),
        "Url": state.http.route_url(&r.route_key),
    })
}

pub async fn list(State(state): State<ApiState>) -> ApiResult {
    let routes =
        state.store.run(|db| db.list_routes()).await.map_err(|e| ApiError::internal("cannot list the routes", e))?;
    let items: Vec<Value> = routes.iter().map(|r| route_json(&state, r)).collect();
    Ok(json_response(StatusCode::OK, json!({ "Routes": items })))
}

/// Adds a route, or replaces the one with the same key.
pub async fn put(State(state): State<ApiState>, body: Body) -> ApiResult {
    let bytes = read_body(body, 1 << 20, "PutRoute").await?;
    let input: RouteIn = wire::parse_body(&bytes)?;
    let Some(key) = input.route_key else {
        return Err(LambdaError::validation("null", "routeKey", "Member must not be null").into());
    };
    RouteKey::parse(&key)?;
    let Some(raw_fn) = input.function_name else {
        return Err(LambdaError::validation("null", "functionName", "Member must not be null").into());
    };
    let payload_format = input.payload_format_version.unwrap_or_else(|| "2.0".into());
    routes::validate_payload_format(&payload_format)?;
    let r = FunctionRef::parse(&raw_fn, NameUse::Reference)?.resolve(&state.scope, input.qualifier.as_deref())?;
    let (f, q) = (r.name.clone(), r.qualifier.clone());
    let exists = state
        .store
        .run(move |db| {
            Ok(match model::versions::Qualifier::parse(q.as_deref()) {
                model::versions::Qualifier::Alias(a) => db.get_alias(&f, &a)?.is_some(),
                other => db.get_version(&f, &other.version().unwrap_or_default())?.is_some(),
            })
        })
        .await
        .map_err(|e| ApiError::internal("cannot read the function", e))?;
    if !exists {
        let arn = match &r.qualifier {
            Some(q) => state.scope.qualified_arn(&r.name, q),
            None => state.scope.function_arn(&r.name),
        };
        return Err(LambdaError::not_found(format!("Function not found: {arn}")).into());
    }
    let route = RouteConfig {
        route_key: key,
        function: r.name,
        qualifier: r.qualifier,
        payload_format,
        created_ms: model::logfmt::now_ms(),
    };
    let saved = route.clone();
    state
        .store
        .run(move |db| db.put_route(&saved))
        .await
        .map_err(|e| ApiError::internal("cannot save the route", e))?;
    state.http.invalidate();
    tracing::info!(route = %route.route_key, function = %route.function, "HTTP route saved");
    Ok(json_response(StatusCode::OK, route_json(&state, &route)))
}

pub async fn delete(State(state): State<ApiState>, Query(q): Query<RouteQuery>) -> ApiResult {
    let Some(key) = q.route_key else {
        return Err(LambdaError::validation("null", "routeKey", "Member must not be null").into());
    };
    let k = key.clone();
    let existed = state
        .store
        .run(move |db| db.delete_route(&k))
        .await
        .map_err(|e| ApiError::internal("cannot delete the route", e))?;
    if !existed {
        return Err(LambdaError::not_found(format!("Route not found: {key}")).into());
    }
    state.http.invalidate();
    tracing::info!(route = %key, "HTTP route deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
