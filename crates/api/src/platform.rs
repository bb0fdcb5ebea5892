//! The multi-account front door: every API request is authenticated (SigV4, `auth`), then
//! served by its account's own Lambda API (`router`) over that account's own store and
//! invoker, so accounts never share functions, limits or execution environments.
//!
//! A request naming another account's function by ARN is served by that account, but only if
//! the function's resource policy grants the caller the action (AddPermission); otherwise it
//! is refused with `AccessDeniedException`, as AWS does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use model::policy::Requester;
use model::{ErrorCode, FunctionRef, LambdaError, NameUse};
use tower::ServiceExt;

use crate::auth::{Authenticator, Caller};
use crate::error::ApiError;
use crate::{ApiState, request_context};

/// The largest request body accepted before authentication (a 50 MB zip, base64-encoded, in
/// CreateFunction's JSON; each operation then applies its own, smaller limit).
pub const MAX_SIGNED_BODY: usize = 70 * 1024 * 1024;

/// Builds an account's API state (its store, invoker and HTTP front) on first use.
pub type TenantFactory = Box<dyn Fn(&str) -> Result<ApiState, String> + Send + Sync>;

struct Tenant {
    state: ApiState,
    router: Router,
}

/// Every account's API behind one authenticator.
pub struct Platform {
    auth: Arc<Authenticator>,
    default_account: String,
    /// The region named in ARNs.
    region: String,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    factory: TenantFactory,
    creating: tokio::sync::Mutex<()>,
    metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The cluster this node belongs to (cluster mode only).
    cluster: std::sync::OnceLock<cluster::Node>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl Platform {
    /// `default_state` serves the default account (and unsigned requests in development mode).
    pub fn new(
        auth: Authenticator,
        default_state: ApiState,
        factory: TenantFactory,
        metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    ) -> Arc<Self> {
        let default_account = default_state.scope.account.clone();
        let region = default_state.scope.region.clone();
        let tenant = Arc::new(Tenant { router: crate::router(default_state.clone()), state: default_state });
        let platform = Arc::new(Self {
            auth: Arc::new(auth),
            default_account: default_account.clone(),
            region,
            tenants: RwLock::new(HashMap::from([(default_account, tenant)])),
            factory,
            creating: tokio::sync::Mutex::new(()),
            metrics,
            cluster: std::sync::OnceLock::new(),
        });
        platform.link_fronts();
        platform
    }

    /// Makes every account's HTTP front able to find the others' function URLs.
    fn link_fronts(&self) {
        let tenants: Vec<Arc<Tenant>> = read(&self.tenants).values().cloned().collect();
        for t in &tenants {
            let others = tenants
                .iter()
                .filter(|o| o.state.scope.account != t.state.scope.account)
                .map(|o| o.state.http.clone())
                .collect();
            t.state.http.set_others(others);
            t.state.http.set_authenticator(self.auth.clone());
        }
    }

    async fn tenant(&self, account: &str) -> Result<Option<Arc<Tenant>>, LambdaError> {
        if let Some(t) = read(&self.tenants).get(account) {
            return Ok(Some(t.clone()));
        }
        let _one_at_a_time = self.creating.lock().await;
        if let Some(t) = read(&self.tenants).get(account) {
            return Ok(Some(t.clone()));
        }
        let accounts = self.auth.accounts().clone();
        let id = account.to_string();
        let exists = tokio::task::spawn_blocking(move || accounts.account_exists(&id))
            .await
            .map_err(|_| LambdaError::service("cannot read the accounts"))?
            .map_err(|e| LambdaError::service(format!("cannot read the accounts: {e}")))?;
        if !exists {
            return Ok(None);
        }
        let state = (self.factory)(account).map_err(|e| {
            tracing::error!(account, error = %e, "cannot start an account");
            LambdaError::service("cannot start the account")
        })?;
        tracing::info!(account, "account started");
        let tenant = Arc::new(Tenant { router: crate::router(state.clone()), state });
        self.tenants.write().unwrap_or_else(|p| p.into_inner()).insert(account.to_string(), tenant.clone());
        self.link_fronts();
        Ok(Some(tenant))
    }

    /// Joins the platform to its cluster: forwarded invocations are accepted (signed by the
    /// cluster's hop key), and control-plane changes made here are announced to the others.
    pub fn set_cluster(&self, node: cluster::Node) {
        let _ = self.cluster.set(node);
    }

    /// Another node changed something of an account: drops what this node cached of it.
    pub fn apply_change(&self, change: &::invoke::cluster::Change) {
        let Some(t) = read(&self.tenants).get(&change.account).cloned() else { return };
        let s = &t.state;
        let path = change.path.trim_end_matches('/');
        if let Some(f) = &change.function {
            // As this node's own handlers do for each kind of change: only code, configuration,
            // versions, aliases and tags retire environments.
            if path.ends_with("/url") || path.contains("/policy") || path.contains("/provisioned-concurrency") {
            } else if path.contains("/event-invoke-config") {
                s.invoker.invalidate_event_configs(f);
            } else if path.ends_with("/concurrency") {
                s.invoker.reload_reserved(f);
            } else {
                s.invoker.reload(f);
            }
        }
        s.http.invalidate();
        s.invoker.invalidate_provisioned();
        if change.path.contains("/schedules") || change.path.contains("/schedule-groups") {
            s.scheduler.changed();
        }
        if change.path.contains("/event-source-mappings") || change.function.is_some() {
            let uuid = change.path.split("/event-source-mappings/").nth(1).map(|u| u.trim_end_matches('/').to_string());
            s.pollers.refresh(uuid.filter(|u| !u.is_empty()));
        }
    }

    /// Tells every account's pollers to stop after their batch (a cluster node draining).
    pub fn stop_pollers(&self) {
        for t in read(&self.tenants).values() {
            t.state.pollers.stop_all();
        }
    }

    /// Every started account's invoker (for the node's load report and draining).
    pub fn invokers(&self) -> Vec<::invoke::Invoker> {
        read(&self.tenants).values().map(|t| t.state.invoker.clone()).collect()
    }

    /// The authenticator every API shares (the object API checks its keys through it).
    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.auth.clone()
    }

    /// An account's invoker (starting the account if needed); `None` if there is no such
    /// account, `Err` if it could not be read or started (try again later).
    pub async fn invoker(&self, account: &str) -> Result<Option<::invoke::Invoker>, LambdaError> {
        Ok(self.tenant(account).await?.map(|t| t.state.invoker.clone()))
    }

    /// Starts every account that exists (so their queued events and provisioned concurrency
    /// resume at start-up).
    pub async fn start_all(&self) -> Result<(), LambdaError> {
        let accounts = self.auth.accounts().clone();
        let all = tokio::task::spawn_blocking(move || accounts.list_accounts())
            .await
            .map_err(|_| LambdaError::service("cannot read the accounts"))?
            .map_err(|e| LambdaError::service(format!("cannot read the accounts: {e}")))?;
        for a in all {
            self.tenant(&a.id).await?;
        }
        Ok(())
    }

    /// Stops every account's environments and flushes the ledger.
    pub async fn shutdown(&self) {
        let tenants: Vec<Arc<Tenant>> = read(&self.tenants).values().cloned().collect();
        for t in &tenants {
            // Pollers first: a batch cut short is redelivered, never half-committed.
            t.state.pollers.shutdown();
            t.state.invoker.shutdown();
        }
        // One ledger serves every account.
        let default = read(&self.tenants).get(&self.default_account).cloned();
        if let Some(t) = default {
            t.state.invoker.flush_ledger().await;
        }
    }

    /// The application: request ids, authentication, then the caller's (or the function
    /// owner's) API.
    pub fn app(self: Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .route("/_stratus/health", axum::routing::get(open))
            .route(cluster::hop::INVOKE_PATH, axum::routing::post(forwarded))
            .route("/_stratus/cluster", axum::routing::get(cluster_status))
            .route(cluster::hop::LOGS_PATH, axum::routing::get(peer_logs))
            .fallback(dispatch)
            .layer(middleware::from_fn(request_context))
            .with_state(self)
    }
}

/// Prometheus metrics of every account.
async fn metrics(State(p): State<Arc<Platform>>) -> Response {
    let Some(render) = &p.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are off\n").into_response();
    };
    let tenants: Vec<Arc<Tenant>> = read(&p.tenants).values().cloned().collect();
    for t in tenants {
        t.state.invoker.update_gauges();
    }
    ([("content-type", "text/plain; version=0.0.4")], render()).into_response()
}

/// The cluster's nodes (`stratus cluster status`), like `/metrics` open to whoever reaches the
/// API: it names nodes and what they hold, never data.
async fn cluster_status(State(p): State<Arc<Platform>>) -> Response {
    let Some(node) = p.cluster.get() else {
        return ApiError(LambdaError::not_found("This server runs in embedded mode: it is not part of a cluster."))
            .into_response();
    };
    match node.status().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => ApiError::internal("cannot read the cluster's members", e).into_response(),
    }
}

/// Endpoints that need no signature (health checks).
async fn open(State(p): State<Arc<Platform>>, req: Request) -> Response {
    let tenant = read(&p.tenants).get(&p.default_account).cloned();
    match tenant {
        Some(t) => t.router.clone().oneshot(req).await.into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Any other operation on another account's function (never granted).
const OTHER: &str = "lambda:Other";

/// The action a request performs on another account's function, for its resource policy.
fn foreign_action(method: &Method, path: &str) -> Option<(&'static str, String)> {
    let rest = path.split_once("/functions/")?.1;
    let (raw, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let name = percent_encoding::percent_decode_str(raw).decode_utf8().ok()?.into_owned();
    let action = match (method.as_str(), tail) {
        ("POST", "invocations")
        | ("POST", "response-streaming-invocations")
        | ("POST", "invoke-async")
        | ("POST", "invoke-async/") => "lambda:InvokeFunction",
        ("GET", "") => "lambda:GetFunction",
        ("GET", "configuration") => "lambda:GetFunctionConfiguration",
        _ => OTHER,
    };
    Some((action, name))
}

fn access_denied(caller: &Caller, action: &str, resource: &str) -> ApiError {
    ApiError(LambdaError::new(
        ErrorCode::AccessDenied,
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} because no resource-based policy allows the {action} action",
            caller.arn()
        ),
    ))
}

/// Whether another account's function lets `caller` perform `action` (its unqualified policy,
/// or the policy of the qualifier named).
async fn granted(target: &ApiState, caller: &Caller, action: &str, r: &FunctionRef) -> Result<bool, ApiError> {
    let (name, qualifier) = (r.name.clone(), r.qualifier.clone());
    let policies = target
        .store
        .run(move |db| {
            let mut found = vec![db.get_policy(&name, None)?];
            if let Some(q) = &qualifier {
                found.push(db.get_policy(&name, Some(q))?);
            }
            Ok(found)
        })
        .await
        .map_err(|e| ApiError::internal("cannot read the policy", e))?;
    let who = Requester::Account(&caller.account);
    Ok(policies.into_iter().flatten().any(|(p, _)| model::policy::allows(&p, &who, action, None)))
}

/// A code download whose URL carries Stratus's own signature (`Code.Location`): the account it
/// names, if the signature holds and has not expired. `None`: not such a request.
fn signed_download(p: &Platform, parts: &axum::http::request::Parts) -> Option<Result<Caller, LambdaError>> {
    let file = parts.uri.path().strip_prefix("/_stratus/code/")?;
    let query = parts.uri.query()?;
    let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='));
    let signature = param("X-Stratus-Signature")?;
    let denied = || LambdaError::new(ErrorCode::AccessDenied, "The download URL is invalid or has expired.");
    let (Some(account), Some(expires)) = (param("X-Stratus-Account"), param("X-Stratus-Expires")) else {
        return Some(Err(denied()));
    };
    let Ok(expires_at) = expires.parse::<i64>() else { return Some(Err(denied())) };
    let message = crate::functions::code_url_message(file, account, expires_at);
    if parts.method != Method::GET
        || expires_at < model::logfmt::now_ms() / 1000
        || !p.auth.accounts().verify_url(&message, signature)
    {
        return Some(Err(denied()));
    }
    Some(Ok(Caller { account: account.to_string(), access_key_id: None }))
}

async fn dispatch(State(p): State<Arc<Platform>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match crate::read_body(body, MAX_SIGNED_BODY, "request").await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let presigned = match signed_download(&p, &parts) {
        Some(Ok(caller)) => Some(caller),
        Some(Err(e)) => return ApiError(e).into_response(),
        None => None,
    };
    let authenticated = match presigned {
        Some(c) => Ok(c),
        None => p.auth.authenticate(&parts.method, &parts.uri, &parts.headers, &body).await,
    };
    let caller = match authenticated {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(method = %parts.method, path = %parts.uri.path(), error = e.code.as_str(), "request refused");
            return ApiError(e).into_response();
        }
    };
    let mut account = caller.account.clone();
    if let Some((action, name)) = foreign_action(&parts.method, parts.uri.path())
        && let Ok(r) = FunctionRef::parse(&name, NameUse::Reference)
        && let Some(owner) = r.account.clone().filter(|a| *a != caller.account)
    {
        let region = r.region.as_deref().unwrap_or(&p.region);
        let resource = model::names::format_arn(region, &owner, &r.name, r.qualifier.as_deref());
        let target = match p.tenant(&owner).await {
            Ok(Some(t)) => t,
            Ok(None) => return access_denied(&caller, action, &resource).into_response(),
            Err(e) => return ApiError(e).into_response(),
        };
        // Only invoking and reading can be granted across accounts; changing another
        // account's function never can, whatever its policy says.
        if action == OTHER {
            return access_denied(&caller, "lambda:ManageFunction", &resource).into_response();
        }
        match granted(&target.state, &caller, action, &r).await {
            Ok(true) => account = owner,
            Ok(false) => return access_denied(&caller, action, &resource).into_response(),
            Err(e) => return e.into_response(),
        }
    }
    let tenant = match p.tenant(&account).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return ApiError(LambdaError::new(
                ErrorCode::UnrecognizedClient,
                "The security token included in the request is invalid.",
            ))
            .into_response();
        }
        Err(e) => return ApiError(e).into_response(),
    };
    let change = p.cluster.get().and_then(|_| change_of(&parts.method, parts.uri.path(), &account));
    let mut req = Request::from_parts(parts, Body::from(body));
    req.extensions_mut().insert(caller);
    let response = tenant.router.clone().oneshot(req).await.into_response();
    if let (Some(node), Some(change)) = (p.cluster.get(), change)
        && response.status().is_success()
    {
        ::invoke::cluster::Cluster::changed(node, change);
    }
    response
}

/// Another node reading the logs this node keeps of a function (signed with the hop key).
async fn peer_logs(
    State(p): State<Arc<Platform>>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(node) = p.cluster.get() else { return StatusCode::NOT_FOUND.into_response() };
    let (Some(account), Some(function)) = (q.get("account"), q.get("function")) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let headers: std::collections::HashMap<String, String> =
        headers.iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect();
    if let Err(why) = cluster::hop::verify_read(node.hop_key(), &headers, &format!("{account}/{function}")) {
        tracing::warn!(why, "refused a log read from another node");
        return StatusCode::FORBIDDEN.into_response();
    }
    let tenant = match p.tenant(account).await {
        Ok(Some(t)) => t,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return ApiError(e).into_response(),
    };
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(1000usize).clamp(1, 10_000);
    let cursor = q.get("cursor").and_then(|c| store::LogCursor::decode(c));
    match crate::internal::read_local(&tenant.state, function, cursor, limit).await {
        Ok((events, next)) => {
            axum::Json(serde_json::json!({ "events": events, "cursor": next.encode() })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The change a request makes, for the other nodes of a cluster: every successful request
/// that is not a read or an invocation.
fn change_of(method: &Method, path: &str, account: &str) -> Option<::invoke::cluster::Change> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || path.starts_with("/_stratus/") {
        return None;
    }
    let tail = path.trim_end_matches('/');
    if tail.ends_with("/invocations")
        || tail.ends_with("/response-streaming-invocations")
        || tail.ends_with("/invoke-async")
    {
        return None;
    }
    let raw = path
        .split_once("/functions/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .or_else(|| path.split_once("/tags/").map(|(_, arn)| arn));
    let function = raw
        .and_then(|r| percent_encoding::percent_decode_str(r).decode_utf8().ok())
        .and_then(|n| FunctionRef::parse(&n, NameUse::Reference).ok())
        .map(|r| r.name);
    Some(::invoke::cluster::Change { account: account.to_string(), function, path: path.to_string() })
}

/// An invocation another node of the cluster forwarded here (its hop signature is its
/// authentication).
async fn forwarded(State(p): State<Arc<Platform>>, req: Request) -> Response {
    let respond = |(status, headers, body): (u16, Vec<(&'static str, String)>, bytes::Bytes)| {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (k, v) in headers {
            if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    };
    let Some(node) = p.cluster.get() else { return respond(cluster::hop::refuse("this node is not in a cluster")) };
    let (parts, body) = req.into_parts();
    let body = match crate::read_body(body, MAX_SIGNED_BODY, "Invoke").await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let fwd = match cluster::hop::receive(node.hop_key(), &headers, body) {
        Ok(f) => f,
        Err(why) => {
            tracing::warn!(why, "refused a forwarded invocation");
            return respond(cluster::hop::refuse(&why));
        }
    };
    let invoker = match p.invoker(&fwd.account).await {
        Ok(Some(i)) => i,
        Ok(None) => return respond(cluster::hop::refuse("no such account")),
        Err(e) => return respond(cluster::hop::answer(Err(e))),
    };
    if !fwd.stream {
        return respond(cluster::hop::answer(invoker.invoke_forwarded(fwd.request, fwd.version).await));
    }
    let streamed = match invoker.invoke_forwarded_stream(fwd.request, fwd.version).await {
        Ok(s) => s,
        Err(e) => return respond(cluster::hop::answer(Err(e))),
    };
    let headers = cluster::hop::stream_headers(&streamed);
    let frames = futures_util::stream::unfold(streamed.messages, |mut rx| async move {
        loop {
            let msg = rx.recv().await?;
            if let Some(f) = cluster::hop::stream_frame(msg) {
                return Some((Ok::<_, std::convert::Infallible>(f), rx));
            }
        }
    });
    let mut r = Response::new(Body::from_stream(frames));
    for (k, v) in headers {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_on_foreign_functions() {
        let f = |m: Method, p: &str| foreign_action(&m, p);
        assert_eq!(
            f(
                Method::POST,
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A111111111111%3Afunction%3Ag/invocations"
            ),
            Some(("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:111111111111:function:g".to_string()))
        );
        assert_eq!(f(Method::GET, "/2015-03-31/functions/g").map(|a| a.0), Some("lambda:GetFunction"));
        assert_eq!(f(Method::DELETE, "/2015-03-31/functions/g").map(|a| a.0), Some("lambda:Other"));
        assert_eq!(f(Method::GET, "/2015-03-31/functions"), None);
    }
}
