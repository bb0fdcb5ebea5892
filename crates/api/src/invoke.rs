//! Invoke (and the deprecated InvokeAsync): the headers, status codes and payload rules of
//! docs/lambda-contract.md §2.3. Function errors are HTTP 200 with `X-Amz-Function-Error`.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use model::LambdaError;
use model::invoke::{InvocationType, InvokeRequest, MAX_ASYNC_PAYLOAD, MAX_CLIENT_CONTEXT, MAX_SYNC_PAYLOAD, Trigger};

use crate::error::ApiError;
use crate::functions::{QualifierQuery, function_ref};
use crate::{ApiState, RequestId, read_body};
use ::invoke::StreamMsg;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks that the payload is JSON, as Lambda does before running anything.
fn check_json(payload: &[u8]) -> Result<(), ApiError> {
    if payload.is_empty() {
        return Ok(());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).map(|_| ()).map_err(|e| {
        ApiError(LambdaError::invalid_content(format!(
            "Could not parse request body into json: Could not parse payload into json: {e}"
        )))
    })
}

/// `X-Amz-Log-Type`: whether to return the log tail.
fn log_tail_wanted(headers: &HeaderMap) -> Result<bool, ApiError> {
    match header(headers, "x-amz-log-type") {
        None | Some("None") => Ok(false),
        Some("Tail") => Ok(true),
        Some(s) => {
            Err(LambdaError::validation(s, "logType", "Member must satisfy enum value set: [None, Tail]").into())
        }
    }
}

/// `X-Amz-Client-Context`: base64 of a JSON object, decoded.
fn client_context(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match header(headers, "x-amz-client-context") {
        None => Ok(None),
        Some(cc) if cc.len() > MAX_CLIENT_CONTEXT => Err(LambdaError::validation(
            cc,
            "clientContext",
            &format!("Member must have length less than or equal to {MAX_CLIENT_CONTEXT}"),
        )
        .into()),
        Some(cc) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(cc)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| serde_json::from_str::<serde_json::Value>(s).is_ok())
                .ok_or_else(|| {
                    LambdaError::invalid_content("Client context must be a valid Base64-encoded JSON object.")
                })?;
            Ok(Some(decoded))
        }
    }
}

/// DryRun: validates parameters and that the function exists; runs nothing.
async fn dry_run(state: &ApiState, r: &model::FunctionRef) -> Result<Response, ApiError> {
    let name = r.name.clone();
    let exists = state
        .store
        .run(move |db| db.get_version(&name, model::LATEST))
        .await
        .map_err(|e| ApiError::internal("cannot read the function", e))?
        .is_some();
    if !exists || r.qualifier.as_deref().is_some_and(|q| q != model::LATEST) {
        return Err(LambdaError::not_found(format!(
            "Function not found: {}",
            state.scope.qualified_arn(&r.name, r.qualifier.as_deref().unwrap_or(model::LATEST))
        ))
        .into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The payload, checked to be JSON (`{}` when empty).
async fn payload(body: Body, operation: &str) -> Result<bytes::Bytes, ApiError> {
    let payload = read_body(body, MAX_SYNC_PAYLOAD, operation).await?;
    check_json(&payload)?;
    Ok(if payload.is_empty() { bytes::Bytes::from_static(b"{}") } else { payload })
}

pub async fn invoke(
    State(state): State<ApiState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let itype = match header(&headers, "x-amz-invocation-type") {
        None => InvocationType::RequestResponse,
        Some(s) => InvocationType::parse(s).ok_or_else(|| {
            LambdaError::validation(
                s,
                "invocationType",
                "Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
            )
        })?,
    };
    let tail = log_tail_wanted(&headers)?;
    let client_context = client_context(&headers)?;
    let payload = payload(body, "InvokeFunction").await?;
    match itype {
        InvocationType::DryRun => dry_run(&state, &r).await,
        InvocationType::Event => {
            if payload.len() > MAX_ASYNC_PAYLOAD {
                return Err(LambdaError::too_large(format!(
                    "{} byte payload is too large for the Event invocation type (limit {MAX_ASYNC_PAYLOAD} bytes)",
                    payload.len()
                ))
                .into());
            }
            let trace = header(&headers, "x-amzn-trace-id").map(str::to_string);
            state.invoker.enqueue(&r.name, r.qualifier.as_deref(), payload, &request_id, trace, Trigger::Async).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        InvocationType::RequestResponse => {
            let req = InvokeRequest {
                function: r.name.clone(),
                qualifier: r.qualifier.clone(),
                payload,
                tail,
                client_context,
                request_id,
                trigger: Trigger::Api,
                trace: header(&headers, "x-amzn-trace-id").map(str::to_string),
            };
            let result = state.invoker.invoke(req).await?;
            let mut resp = (StatusCode::OK, result.payload).into_response();
            let h = resp.headers_mut();
            let ct = result.content_type.as_deref().unwrap_or("application/json");
            h.insert("content-type", HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("application/json")));
            if let Ok(v) = HeaderValue::from_str(&result.executed_version) {
                h.insert("x-amz-executed-version", v);
            }
            if let Some(fe) = result.function_error {
                h.insert("x-amz-function-error", HeaderValue::from_static(fe));
            }
            if let Some(tail) = result.log_tail
                && let Ok(v) = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(tail))
            {
                h.insert("x-amz-log-result", v);
            }
            Ok(resp)
        }
    }
}

/// InvokeAsync (deprecated): queue the event, answer 202 with `{"Status": 202}`.
pub async fn invoke_async(
    State(state): State<ApiState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(raw): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let r = function_ref(&state, &raw, None)?;
    let payload = read_body(body, 256 * 1024, "InvokeAsync").await?;
    check_json(&payload)?;
    let payload = if payload.is_empty() { bytes::Bytes::from_static(b"{}") } else { payload };
    state.invoker.enqueue(&r.name, r.qualifier.as_deref(), payload, &request_id, None, Trigger::Async).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "Status": 202 }))).into_response())
}

/// InvokeWithResponseStream: the function's response as AWS event-stream `PayloadChunk`
/// events while it is produced, then one `InvokeComplete` (docs/lambda-contract.md §2.4).
/// Function errors arrive in `InvokeComplete`; the HTTP status stays 200.
pub async fn invoke_with_response_stream(
    State(state): State<ApiState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(raw): Path<String>,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let dry = match header(&headers, "x-amz-invocation-type") {
        None | Some("RequestResponse") => false,
        Some("DryRun") => true,
        Some(s) => {
            return Err(LambdaError::validation(
                s,
                "invocationType",
                "Member must satisfy enum value set: [RequestResponse, DryRun]",
            )
            .into());
        }
    };
    let tail = log_tail_wanted(&headers)?;
    let client_context = client_context(&headers)?;
    let payload = payload(body, "InvokeWithResponseStream").await?;
    if dry {
        return dry_run(&state, &r).await;
    }
    let req = InvokeRequest {
        function: r.name.clone(),
        qualifier: r.qualifier.clone(),
        payload,
        tail,
        client_context,
        request_id,
        trigger: Trigger::Api,
        trace: header(&headers, "x-amzn-trace-id").map(str::to_string),
    };
    let streamed = state.invoker.invoke_stream(req).await?;
    let version = streamed.executed_version.clone();
    let events = futures_util::stream::unfold(streamed.messages, |mut rx| async move {
        let frame = match rx.recv().await? {
            StreamMsg::Chunk(data) => crate::eventstream::payload_chunk(&data),
            StreamMsg::End { error, log_tail } => {
                let mut done = serde_json::json!({});
                if let Some((error_type, details)) = error {
                    done["ErrorCode"] = serde_json::json!(error_type);
                    done["ErrorDetails"] = serde_json::json!(String::from_utf8_lossy(&details));
                }
                if let Some(t) = log_tail {
                    done["LogResult"] = serde_json::json!(base64::engine::general_purpose::STANDARD.encode(t));
                }
                crate::eventstream::invoke_complete(&done)
            }
            StreamMsg::Start { .. } => bytes::Bytes::new(),
        };
        Some((Ok::<_, std::convert::Infallible>(frame), rx))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(events)).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/vnd.amazon.eventstream"));
    if let Ok(v) = HeaderValue::from_str(&version) {
        h.insert("x-amz-executed-version", v);
    }
    Ok(resp)
}
