//! The Lambda control-plane REST API (rest-json, the 2015-03-31 family of paths), served on
//! one address with Stratus's own small internal API (`/_stratus/…`).
//!
//! This is the only crate that knows Lambda's JSON wire shapes. Handlers parse and validate
//! at the edge, then call the store and the invoker; [`error::ApiError`] is the one place
//! errors become HTTP. Every response carries `x-amzn-RequestId`; for Invoke it is the request
//! id the function sees. [`router`] is one account's API; [`platform::Platform`] puts every
//! account's behind SigV4 authentication ([`auth`]).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub use auth;
mod error;
mod eventstream;
mod functions;
mod internal;
mod invoke;
mod layers;
mod mappings;
pub mod platform;
mod policies;
mod routes;
mod schedules;
mod urls;
mod usage;
mod versions;
mod wire;

use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use invoke as invoke_handlers;
use model::{LambdaError, Scope};
use store::Store;

pub use error::ApiError;

/// What every handler may use.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub invoker: ::invoke::Invoker,
    pub scope: Scope,
    /// The HTTP front serving function URLs (told when URL settings change).
    pub http: triggers::http::Front,
    /// Prices by account, for usage reports.
    pub prices: std::sync::Arc<model::pricing::PriceBook>,
    /// Whether this is the default account's API, which may read every account's usage.
    pub operator: bool,
    /// Signs code download URLs (`Code.Location`) so they work without SigV4, as AWS's
    /// presigned S3 URLs do.
    pub accounts: Option<store::accounts::Accounts>,
    /// The account's scheduler (told when a schedule changes).
    pub scheduler: triggers::schedules::Scheduler,
    /// The account's event source mapping pollers (told when a mapping changes).
    pub pollers: triggers::esm::Pollers,
    /// The cluster this node belongs to (cluster mode only): logs are read from every node.
    pub cluster: Option<cluster::Node>,
}

/// The request id of the current request (also the invocation's id for Invoke).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Reads a request body of at most `limit` bytes, refusing larger ones with Lambda's error.
pub(crate) async fn read_body(body: Body, limit: usize, operation: &str) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError(
            LambdaError::too_large(format!("Request must be smaller than {limit} bytes for the {operation} operation")),
        )),
        Err(_) => Err(ApiError(LambdaError::invalid_content("Could not read the request body"))),
    }
}

pub(crate) async fn request_context(mut req: Request, next: Next) -> Response {
    let id = model::invoke::new_request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    let status = resp.status().as_u16();
    let error = resp.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::debug!(%method, %path, status, error, request_id = %id, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "api request");
    resp
}

async fn unknown_operation() -> Response {
    let mut resp = ApiError(LambdaError::new(model::ErrorCode::ResourceNotFound, "Unknown operation")).into_response();
    resp.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static("UnknownOperationException"));
    resp
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    use functions as f;
    use versions as v;
    Router::new()
        .route("/2015-03-31/functions", post(f::create_function).get(f::list_functions))
        .route("/2015-03-31/functions/", post(f::create_function).get(f::list_functions))
        .route("/2015-03-31/functions/{name}", get(f::get_function).delete(f::delete_function))
        .route("/2015-03-31/functions/{name}/configuration", get(f::get_configuration).put(f::update_configuration))
        .route("/2015-03-31/functions/{name}/code", axum::routing::put(f::update_code))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke_handlers::invoke))
        .route(
            "/2021-11-15/functions/{name}/response-streaming-invocations",
            post(invoke_handlers::invoke_with_response_stream),
        )
        .route("/2014-11-13/functions/{name}/invoke-async", post(invoke_handlers::invoke_async))
        .route("/2014-11-13/functions/{name}/invoke-async/", post(invoke_handlers::invoke_async))
        .route("/2015-03-31/functions/{name}/policy", post(policies::add_permission).get(policies::get_policy))
        .route("/2015-03-31/functions/{name}/policy/{sid}", axum::routing::delete(policies::remove_permission))
        .route("/2015-03-31/functions/{name}/versions", post(v::publish_version).get(v::list_versions))
        .route("/2015-03-31/functions/{name}/aliases", post(v::create_alias).get(v::list_aliases))
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(v::get_alias).put(v::update_alias).delete(v::delete_alias),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            axum::routing::put(v::put_concurrency).delete(v::delete_concurrency),
        )
        .route("/2019-09-30/functions/{name}/concurrency", get(v::get_concurrency))
        .route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            axum::routing::put(v::put_provisioned).get(v::get_provisioned).delete(v::delete_provisioned),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            axum::routing::put(v::put_event_config)
                .post(v::update_event_config)
                .get(v::get_event_config)
                .delete(v::delete_event_config),
        )
        .route("/2019-09-25/functions/{name}/event-invoke-config/list", get(v::list_event_configs))
        .route(
            "/2021-10-31/functions/{name}/url",
            get(urls::get).post(urls::create).put(urls::update).delete(urls::delete),
        )
        .route("/2021-10-31/functions/{name}/urls", get(urls::list))
        .route("/_stratus/routes", get(routes::list).put(routes::put).delete(routes::delete))
        .route("/2015-03-31/event-source-mappings", post(mappings::create).get(mappings::list))
        .route("/2015-03-31/event-source-mappings/", post(mappings::create).get(mappings::list))
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(mappings::get).put(mappings::update).delete(mappings::delete),
        )
        .route("/2018-10-31/layers", get(layers::list_or_find))
        .route("/2018-10-31/layers/{layer}/versions", post(layers::publish).get(layers::list_versions))
        .route("/2018-10-31/layers/{layer}/versions/{version}", get(layers::get_version).delete(layers::delete_version))
        .route("/2016-08-19/account-settings", get(f::account_settings))
        .route("/2016-08-19/account-settings/", get(f::account_settings))
        .route("/2017-03-31/tags/{arn}", get(f::list_tags).post(f::tag_resource).delete(f::untag_resource))
        .route("/schedules", get(schedules::list_schedules))
        .route(
            "/schedules/{name}",
            post(schedules::create_schedule)
                .get(schedules::get_schedule)
                .put(schedules::update_schedule)
                .delete(schedules::delete_schedule),
        )
        .route("/schedule-groups", get(schedules::list_groups))
        .route(
            "/schedule-groups/{name}",
            post(schedules::create_group).get(schedules::get_group).delete(schedules::delete_group),
        )
        .route("/_stratus/usage", get(usage::usage))
        .route("/_stratus/ledger", get(usage::ledger))
        .merge(internal::router())
        .fallback(unknown_operation)
        // Bodies are bounded per operation by `read_body`.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
