//! AddPermission, RemovePermission and GetPolicy: a function's resource-based policy, which
//! decides who besides its own account may invoke it (another account, a function URL with
//! AuthType NONE, a trigger).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::policy::PermissionInput;
use model::{ErrorCode, LambdaError};
use serde::Deserialize;
use serde_json::json;
use store::policies::PolicyChange;

use crate::error::ApiError;
use crate::functions::function_ref;
use crate::versions::function_not_found;
use crate::wire::parse_body;
use crate::{ApiState, read_body};

#[derive(Debug, Deserialize)]
pub struct PolicyQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
    #[serde(rename = "RevisionId")]
    revision_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddPermissionIn {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    principal_org_id: Option<String>,
    function_url_auth_type: Option<String>,
    revision_id: Option<String>,
    event_source_token: Option<String>,
}

fn required(v: Option<String>, field: &str) -> Result<String, ApiError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError(LambdaError::validation("null", field, "Member must not be null")))
}

fn revision_mismatch() -> ApiError {
    ApiError(LambdaError::new(
        ErrorCode::PreconditionFailed,
        "The Revision Id provided does not match the latest Revision Id. Call the GetPolicy API to retrieve the latest Revision Id",
    ))
}

pub async fn add_permission(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<PolicyQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let body = read_body(body, 64 * 1024, "AddPermission").await?;
    let input: AddPermissionIn = parse_body(&body)?;
    if input.event_source_token.is_some() {
        tracing::debug!("AddPermission: EventSourceToken is accepted and not used");
    }
    let permission = PermissionInput {
        statement_id: required(input.statement_id, "statementId")?,
        action: required(input.action, "action")?,
        principal: required(input.principal, "principal")?,
        source_arn: input.source_arn,
        source_account: input.source_account,
        principal_org_id: input.principal_org_id,
        function_url_auth_type: input.function_url_auth_type,
    };
    let resource = match &r.qualifier {
        Some(q) => state.scope.qualified_arn(&r.name, q),
        None => state.scope.function_arn(&r.name),
    };
    let statement = model::policy::statement(&permission, &resource)?;
    let (name, qualifier, s) = (r.name.clone(), r.qualifier.clone(), statement.clone());
    let revision = input.revision_id;
    let change = state
        .store
        .run(move |db| db.add_permission(&name, qualifier.as_deref(), s, revision.as_deref()))
        .await
        .map_err(|e| ApiError::internal("cannot change the policy", e))?;
    match change {
        PolicyChange::Done { .. } => {
            state.http.invalidate();
            Ok((StatusCode::CREATED, Json(json!({ "Statement": statement.to_string() }))).into_response())
        }
        PolicyChange::NoFunction => Err(function_not_found(&state, &r.name)),
        PolicyChange::DuplicateSid => Err(ApiError(LambdaError::conflict(
            "The statement id (sid) provided already exists. Please specify a new statement id, or remove the existing statement.",
        ))),
        PolicyChange::RevisionMismatch => Err(revision_mismatch()),
        PolicyChange::NoSuchSid => Err(ApiError(LambdaError::service("unexpected policy state"))),
    }
}

pub async fn remove_permission(
    State(state): State<ApiState>,
    Path((raw, sid)): Path<(String, String)>,
    Query(q): Query<PolicyQuery>,
) -> Result<Response, ApiError> {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let (name, qualifier) = (r.name.clone(), r.qualifier.clone());
    let revision = q.revision_id;
    let change = state
        .store
        .run(move |db| db.remove_permission(&name, qualifier.as_deref(), &sid, revision.as_deref()))
        .await
        .map_err(|e| ApiError::internal("cannot change the policy", e))?;
    match change {
        PolicyChange::Done { .. } => {
            state.http.invalidate();
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        PolicyChange::NoFunction => Err(function_not_found(&state, &r.name)),
        PolicyChange::NoSuchSid => {
            Err(ApiError(LambdaError::not_found("Statement sid is not found in resource policy.")))
        }
        PolicyChange::RevisionMismatch => Err(revision_mismatch()),
        PolicyChange::DuplicateSid => Err(ApiError(LambdaError::service("unexpected policy state"))),
    }
}

pub async fn get_policy(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<PolicyQuery>,
) -> Result<Response, ApiError> {
    let r = function_ref(&state, &raw, q.qualifier.as_deref())?;
    let (name, qualifier) = (r.name.clone(), r.qualifier.clone());
    let (exists, policy) = state
        .store
        .run(move |db| {
            Ok((db.get_version(&name, model::LATEST)?.is_some(), db.get_policy(&name, qualifier.as_deref())?))
        })
        .await
        .map_err(|e| ApiError::internal("cannot read the policy", e))?;
    if !exists {
        return Err(function_not_found(&state, &r.name));
    }
    match policy {
        Some((policy, revision_id)) => {
            Ok(Json(json!({ "Policy": policy.to_string(), "RevisionId": revision_id })).into_response())
        }
        None => Err(ApiError(LambdaError::not_found("The resource you requested does not exist."))),
    }
}
