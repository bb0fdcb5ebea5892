//! Stratus's own endpoints beside the Lambda API: health, code downloads (the target of
//! GetFunction's `Code.Location`) and function logs (for `stratus logs`).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use model::{FunctionRef, LambdaError, NameUse};
use serde::Deserialize;
use serde_json::json;

use crate::ApiState;
use crate::error::ApiError;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/_stratus/health", get(health))
        .route("/_stratus/code/{file}", get(code))
        .route("/_stratus/logs/{function}", get(logs))
        .route("/_stratus/functions/{function}/environments", get(environments))
}

async fn health(State(state): State<ApiState>) -> Response {
    let runtimes: Vec<&str> = state.invoker.catalogue().available().iter().map(|a| a.id.as_str()).collect();
    let queued = state.store.run(|db| db.queued_events()).await.unwrap_or(0);
    Json(json!({
        "queued_async_events": queued,
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "region": state.scope.region,
        "account": state.scope.account,
        "runtimes": runtimes,
    }))
    .into_response()
}

/// How many execution environments a function has (all versions): alive, idle, provisioned.
async fn environments(State(state): State<ApiState>, Path(function): Path<String>) -> Response {
    let (live, idle, provisioned) = state.invoker.environments(&function);
    Json(json!({ "live": live, "idle": idle, "provisioned": provisioned })).into_response()
}

async fn code(State(state): State<ApiState>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError(LambdaError::not_found("No such code package"));
    let hex = file.strip_suffix(".zip").ok_or_else(not_found)?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
        return Err(not_found());
    }
    // In a cluster, the package may have been uploaded through another node.
    state.store.ensure_code(&[hex.to_string()]).await.map_err(|_| not_found())?;
    let path = state.store.code.blob(hex);
    let file = tokio::fs::File::open(&path).await.map_err(|_| not_found())?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((StatusCode::OK, [("content-type", "application/zip".to_string()), ("content-length", len.to_string())], body)
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    /// Where the previous page ended.
    cursor: Option<String>,
    /// Only events at or after this time (epoch milliseconds).
    since_ms: Option<i64>,
    limit: Option<usize>,
}

/// A page of a function's log: `{"events": [...], "cursor": "..."}`; pass the cursor back to
/// continue (this is how `stratus logs --follow` polls). In a cluster, each node keeps the logs
/// of the invocations it ran: the page merges every live node's (in time order), and the
/// cursor is each node's position (`node.position~node.position…`).
async fn logs(
    State(state): State<ApiState>,
    Path(function): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&function, NameUse::Reference)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let Some(node) = &state.cluster else {
        let cursor = q.cursor.as_deref().and_then(store::LogCursor::decode);
        let (events, next) = read_local(&state, &r.name, cursor, limit).await?;
        let events: Vec<_> = events.into_iter().filter(|e| q.since_ms.is_none_or(|s| e.timestamp >= s)).collect();
        return Ok(Json(json!({ "events": events, "cursor": next.encode() })).into_response());
    };
    let positions: std::collections::HashMap<&str, &str> =
        q.cursor.as_deref().unwrap_or("").split('~').filter_map(|p| p.split_once('.')).collect();
    let mut events: Vec<serde_json::Value> = Vec::new();
    let mut cursors = Vec::new();
    for (id, address, local) in node.live_nodes() {
        let at = positions.get(id.as_str()).copied();
        let page = if local {
            let (ev, next) = read_local(&state, &r.name, at.and_then(store::LogCursor::decode), limit).await?;
            Ok(json!({ "events": ev, "cursor": next.encode() }))
        } else {
            node.peer_logs(&address, &state.scope.account, &r.name, at, limit).await
        };
        match page {
            Ok(p) => {
                events.extend(p["events"].as_array().cloned().unwrap_or_default());
                if let Some(c) = p["cursor"].as_str() {
                    cursors.push(format!("{id}.{c}"));
                }
            }
            Err(e) => {
                // Its lines come when it answers again; keep where we were with it.
                tracing::warn!(node = %id, error = %e, "cannot read a node's logs");
                if let Some(c) = at {
                    cursors.push(format!("{id}.{c}"));
                }
            }
        }
    }
    events.retain(|e| q.since_ms.is_none_or(|s| e["timestamp"].as_i64().unwrap_or(0) >= s));
    events.sort_by_key(|e| e["timestamp"].as_i64().unwrap_or(0));
    Ok(Json(json!({ "events": events, "cursor": cursors.join("~") })).into_response())
}

/// A page of the function's log as kept on this node.
pub(crate) async fn read_local(
    state: &ApiState,
    function: &str,
    cursor: Option<store::LogCursor>,
    limit: usize,
) -> Result<(Vec<store::LogEvent>, store::LogCursor), ApiError> {
    let logs = state.store.logs.clone();
    let function = function.to_string();
    tokio::task::spawn_blocking(move || logs.read(&function, cursor, limit))
        .await
        .map_err(|_| ApiError(LambdaError::service("the log reader stopped")))?
        .map_err(|e| ApiError::internal("cannot read logs", store::StoreError::Io(e)))
}
