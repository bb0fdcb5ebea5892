//! The HTTP front: function URLs (and HTTP routes) on their own listener.
//!
//! A request whose host is `<url-id>.lambda-url.<region>.<domain>` goes to that function URL;
//! any other host is matched against the HTTP routes. Either way the request becomes an API
//! Gateway-shaped event (`event`), goes through `Invoker::invoke` like every invocation, and
//! the result becomes the HTTP answer (`response`).

pub mod event;
pub mod response;
mod streaming;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use model::invoke::{InvokeRequest, Trigger};
use model::routes::{RouteConfig, RouteKey};
use model::urls::{AUTH_NONE, Cors, UrlConfig};
use model::{ErrorCode, LambdaError, Scope};

/// The most bytes of request body a URL or route accepts (Lambda's 6 MB invocation payload).
pub const DEFAULT_MAX_BODY: usize = 6 * 1024 * 1024;

/// Settings of the HTTP front.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub scope: Scope,
    /// The port the front listens on, for the URLs it hands out.
    pub port: u16,
    /// The domain under which URL hosts are named (`<id>.lambda-url.<region>.<domain>`).
    pub domain: String,
    pub max_body: usize,
}

/// Handle to the HTTP front. Cheap to clone.
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

struct Inner {
    invoker: invoke::Invoker,
    store: store::Store,
    config: HttpConfig,
    /// URL id → its configuration (or `None`: no such URL), filled on demand.
    urls: RwLock<HashMap<String, Option<Arc<ResolvedUrl>>>>,
    /// The other accounts' fronts: a URL id not found here is looked up there.
    others: RwLock<Vec<Front>>,
    /// Verifies `AWS_IAM` URL requests (without one, a signature need only be present).
    authenticator: RwLock<Option<Arc<auth::Authenticator>>>,
    /// The route table, loaded on first use after a change.
    routes: RwLock<Option<Arc<RouteTable>>>,
}

type RouteTable = Vec<(RouteKey, RouteConfig)>;

/// A function URL and whether its function's resource policy lets anyone invoke it (AuthType
/// NONE needs a `lambda:InvokeFunctionUrl` grant to `*`, as on AWS).
pub struct ResolvedUrl {
    config: UrlConfig,
    public: bool,
    /// The function's (or alias's) resource policy, for callers from other accounts.
    policy: Option<serde_json::Value>,
}

impl std::ops::Deref for ResolvedUrl {
    type Target = UrlConfig;
    fn deref(&self) -> &UrlConfig {
        &self.config
    }
}

/// Beyond this many cached lookups (most of them misses), the cache starts over.
const MAX_CACHED_URLS: usize = 10_000;

fn lock_poisoned<T>(r: Result<T, std::sync::PoisonError<T>>) -> T {
    r.unwrap_or_else(|p| p.into_inner())
}

impl Front {
    pub fn new(invoker: invoke::Invoker, store: store::Store, config: HttpConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                invoker,
                store,
                config,
                urls: RwLock::new(HashMap::new()),
                routes: RwLock::new(None),
                others: RwLock::new(Vec::new()),
                authenticator: RwLock::new(None),
            }),
        }
    }

    /// The address of a function URL, as CreateFunctionUrlConfig reports it.
    pub fn function_url(&self, url_id: &str) -> String {
        let c = &self.inner.config;
        format!("http://{url_id}.lambda-url.{}.{}:{}/", c.scope.region, c.domain, c.port)
    }

    /// Where a route can be called (its path template, on the front's address).
    pub fn route_url(&self, route_key: &str) -> String {
        let path = route_key.split_once(' ').map_or("/", |(_, p)| p);
        format!("http://127.0.0.1:{}{path}", self.inner.config.port)
    }

    /// Forget cached URL configurations and routes (after any change to one).
    pub fn invalidate(&self) {
        lock_poisoned(self.inner.urls.write()).clear();
        *lock_poisoned(self.inner.routes.write()) = None;
    }

    async fn routes(&self) -> Result<Arc<RouteTable>, LambdaError> {
        if let Some(t) = lock_poisoned(self.inner.routes.read()).clone() {
            return Ok(t);
        }
        let configs = self
            .inner
            .store
            .run(|db| db.list_routes())
            .await
            .map_err(|e| LambdaError::service(format!("cannot read the routes: {e}")))?;
        let table: RouteTable = configs
            .into_iter()
            .filter_map(|c| match RouteKey::parse(&c.route_key) {
                Ok(k) => Some((k, c)),
                Err(e) => {
                    tracing::warn!(route = %c.route_key, error = %e, "ignoring a stored route that does not parse");
                    None
                }
            })
            .collect();
        let table = Arc::new(table);
        *lock_poisoned(self.inner.routes.write()) = Some(table.clone());
        Ok(table)
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Verify `AWS_IAM` URL requests with `auth` from now on.
    pub fn set_authenticator(&self, auth: Arc<auth::Authenticator>) {
        *lock_poisoned(self.inner.authenticator.write()) = Some(auth);
    }

    /// Tells this front about the other accounts' fronts (URL ids are unique across accounts).
    pub fn set_others(&self, others: Vec<Front>) {
        *lock_poisoned(self.inner.others.write()) = others;
    }

    /// The front (this one or another account's) that serves a URL id, and the URL.
    async fn find_url(&self, url_id: &str) -> Result<Option<(Front, Arc<ResolvedUrl>)>, LambdaError> {
        if let Some(u) = self.url(url_id).await? {
            return Ok(Some((self.clone(), u)));
        }
        let others = lock_poisoned(self.inner.others.read()).clone();
        for other in others {
            if let Some(u) = other.url(url_id).await? {
                return Ok(Some((other, u)));
            }
        }
        Ok(None)
    }

    async fn url(&self, url_id: &str) -> Result<Option<Arc<ResolvedUrl>>, LambdaError> {
        if let Some(hit) = lock_poisoned(self.inner.urls.read()).get(url_id) {
            return Ok(hit.clone());
        }
        let id = url_id.to_string();
        let found = self
            .inner
            .store
            .run(move |db| {
                let Some(config) = db.url_by_id(&id)? else { return Ok(None) };
                let policy = db.get_policy(&config.function, config.qualifier.as_deref())?.map(|(p, _)| p);
                let public = policy.as_ref().is_some_and(|p| {
                    model::policy::allows(
                        p,
                        &model::policy::Requester::Anonymous,
                        "lambda:InvokeFunctionUrl",
                        Some(config.auth_type.as_str()),
                    )
                });
                Ok(Some(ResolvedUrl { config, public, policy }))
            })
            .await
            .map_err(|e| LambdaError::service(format!("cannot read the function URL: {e}")))?
            .map(Arc::new);
        let mut cache = lock_poisoned(self.inner.urls.write());
        if cache.len() >= MAX_CACHED_URLS {
            cache.clear();
        }
        cache.insert(url_id.to_string(), found.clone());
        Ok(found)
    }

    /// The URL id a host names, if it is a function URL host of this front.
    fn url_id_of<'h>(&self, host: &'h str) -> Option<&'h str> {
        let host = host.split(':').next().unwrap_or(host);
        let (id, rest) = host.split_once('.')?;
        (rest.starts_with("lambda-url.") && model::urls::is_url_id(id)).then_some(id)
    }
}

/// An error answer: status, `x-amzn-ErrorType` (if any), content type and body.
fn error_response(status: StatusCode, error_type: Option<&'static str>, json: bool, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    let ct = if json { "application/json" } else { "text/plain; charset=utf-8" };
    h.insert("content-type", HeaderValue::from_static(ct));
    if let Some(t) = error_type {
        h.insert("x-amzn-errortype", HeaderValue::from_static(t));
    }
    resp
}

/// Which service's error answers to give: function URLs and API Gateway HTTP APIs word them
/// differently (docs/lambda-contract.md §4.1; recorded against AWS where known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Url,
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No such URL or route.
    NotFound,
    /// AWS_IAM URL without a signature.
    Unsigned,
    FunctionError,
    Timeout,
    Throttled,
    TooLarge,
    Internal,
}

pub(crate) fn failure(flavor: Flavor, f: Failure) -> Response {
    use Failure::*;
    let json = |v: serde_json::Value| v.to_string();
    match (flavor, f) {
        // A URL id nobody owns: 403 with a null message, as AWS answers.
        (Flavor::Url, NotFound) => error_response(
            StatusCode::FORBIDDEN,
            Some("AccessDeniedException"),
            true,
            json(serde_json::json!({ "Message": null })),
        ),
        (Flavor::Url, Unsigned) => error_response(
            StatusCode::FORBIDDEN,
            Some("AccessDeniedException"),
            true,
            json(serde_json::json!({ "Message": "Forbidden" })),
        ),
        (Flavor::Url, FunctionError) => {
            error_response(StatusCode::BAD_GATEWAY, None, false, "Internal Server Error".into())
        }
        (Flavor::Url, Timeout) => error_response(StatusCode::GATEWAY_TIMEOUT, None, false, "Gateway Timeout".into()),
        (Flavor::Url, Throttled) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            Some("ThrottlingException"),
            true,
            json(serde_json::json!({ "message": "Rate Exceeded." })),
        ),
        (Flavor::Url, TooLarge) => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("RequestTooLargeException"),
            true,
            json(serde_json::json!({ "message": "Request must be smaller than the payload limit" })),
        ),
        (_, Internal) | (Flavor::Route, FunctionError) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            true,
            json(serde_json::json!({ "message": "Internal Server Error" })),
        ),
        (Flavor::Route, NotFound | Unsigned) => {
            error_response(StatusCode::NOT_FOUND, None, true, json(serde_json::json!({ "message": "Not Found" })))
        }
        (Flavor::Route, Timeout) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            true,
            json(serde_json::json!({ "message": "Service Unavailable" })),
        ),
        (Flavor::Route, Throttled) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            true,
            json(serde_json::json!({ "message": "Too Many Requests" })),
        ),
        (Flavor::Route, TooLarge) => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            true,
            json(serde_json::json!({ "message": "Request Entity Too Large" })),
        ),
    }
}

fn host_of(req: &Request) -> String {
    req.headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

fn protocol_of(req: &Request) -> &'static str {
    match req.version() {
        axum::http::Version::HTTP_2 => "HTTP/2.0",
        axum::http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

async fn handle(State(front): State<Front>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let host = host_of(&req);
    let request_id = model::invoke::new_request_id();
    let mut resp = match front.url_id_of(&host).map(str::to_string) {
        Some(url_id) => serve_url(&front, &url_id, &host, peer, &request_id, req).await,
        None => serve_route(&front, &host, peer, &request_id, req).await,
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

async fn serve_url(
    front: &Front,
    url_id: &str,
    host: &str,
    peer: SocketAddr,
    request_id: &str,
    req: Request,
) -> Response {
    let (front, url) = match front.find_url(url_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return failure(Flavor::Url, Failure::NotFound),
        Err(e) => {
            tracing::error!(error = %e, "function URL lookup failed");
            return failure(Flavor::Url, Failure::Internal);
        }
    };
    let origin = req.headers().get("origin").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(cors) = &url.cors
        && req.method() == Method::OPTIONS
        && let Some(o) = &origin
        && req.headers().contains_key("access-control-request-method")
    {
        return preflight(cors, o, req.headers());
    }
    if url.auth_type == AUTH_NONE && !url.public {
        // AuthType NONE without a resource policy letting `*` invoke the URL: AWS refuses.
        return failure(Flavor::Url, Failure::Unsigned);
    }
    if url.auth_type != AUTH_NONE && !signed(req.headers()) {
        return failure(Flavor::Url, Failure::Unsigned);
    }
    let method = req.method().clone();
    let protocol = protocol_of(&req);
    let raw_path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let (parts, body) = req.into_parts();
    let body = match read_body(body, front.inner.config.max_body).await {
        Ok(b) => b,
        Err(f) => return failure(Flavor::Url, f),
    };
    if url.auth_type != AUTH_NONE && !iam_allowed(&front, &url, &parts, &body).await {
        return failure(Flavor::Url, Failure::Unsigned);
    }
    let domain = host.split(':').next().unwrap_or(host);
    let no_params = BTreeMap::new();
    let account = if url.auth_type == AUTH_NONE { "anonymous" } else { front.inner.config.scope.account.as_str() };
    let target = event::Target {
        account_id: account,
        api_id: url_id,
        domain_name: domain,
        route_key: "$default",
        resource: "/",
        path_parameters: &no_params,
    };
    let info = event::RequestInfo {
        method: &method,
        raw_path: &raw_path,
        raw_query: &raw_query,
        protocol,
        source_ip: peer.ip().to_string(),
        request_id,
        now_ms: model::logfmt::now_ms(),
    };
    let payload = event::v2(&info, &target, &parts.headers, &body);
    let mut resp = invoke(
        &front,
        Flavor::Url,
        &url.function,
        url.qualifier.clone(),
        payload,
        request_id,
        trace_of(&parts.headers),
        response::v2,
        url.streams(),
    )
    .await;
    if let (Some(cors), Some(o)) = (&url.cors, &origin) {
        add_cors(cors, o, resp.headers_mut());
    }
    resp
}

async fn serve_route(front: &Front, host: &str, peer: SocketAddr, request_id: &str, req: Request) -> Response {
    let table = match front.routes().await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "route lookup failed");
            return failure(Flavor::Route, Failure::Internal);
        }
    };
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let Some((key, route, params)) = model::routes::pick(&table, method.as_str(), &raw_path) else {
        return failure(Flavor::Route, Failure::NotFound);
    };
    let (key, route) = (key.clone(), route.clone());
    let protocol = protocol_of(&req);
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let (parts, body) = req.into_parts();
    let body = match read_body(body, front.inner.config.max_body).await {
        Ok(b) => b,
        Err(f) => return failure(Flavor::Route, f),
    };
    let target = event::Target {
        account_id: &front.inner.config.scope.account,
        api_id: ROUTES_API_ID,
        domain_name: host.split(':').next().unwrap_or(host),
        route_key: &route.route_key,
        resource: &key.resource,
        path_parameters: &params,
    };
    let info = event::RequestInfo {
        method: &method,
        raw_path: &raw_path,
        raw_query: &raw_query,
        protocol,
        source_ip: peer.ip().to_string(),
        request_id,
        now_ms: model::logfmt::now_ms(),
    };
    let v1 = route.payload_format == "1.0";
    let payload = if v1 {
        event::v1(&info, &target, &parts.headers, &body).to_string().into_bytes()
    } else {
        event::v2(&info, &target, &parts.headers, &body)
    };
    let parse = if v1 { response::v1 } else { response::v2 };
    let trace = trace_of(&parts.headers);
    invoke(front, Flavor::Route, &route.function, route.qualifier.clone(), payload, request_id, trace, parse, false)
        .await
}

/// The caller's `X-Amzn-Trace-Id`: the invocation joins that trace.
fn trace_of(headers: &HeaderMap) -> Option<String> {
    headers.get("x-amzn-trace-id").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The `apiId` HTTP route events carry (Stratus serves one HTTP API).
pub const ROUTES_API_ID: &str = "stratus";

/// True when the request carries a SigV4 `Authorization` header.
/// Whether an `AWS_IAM` URL request is signed by the function's own account, or by one its
/// policy grants `lambda:InvokeFunctionUrl`.
async fn iam_allowed(front: &Front, url: &ResolvedUrl, parts: &axum::http::request::Parts, body: &[u8]) -> bool {
    let authenticator = lock_poisoned(front.inner.authenticator.read()).clone();
    let Some(authenticator) = authenticator else { return true };
    let caller = match authenticator.authenticate(&parts.method, &parts.uri, &parts.headers, body).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = e.code.as_str(), "function URL request refused: {}", e.message);
            return false;
        }
    };
    let owner = &front.inner.config.scope.account;
    caller.account == *owner
        || url.policy.as_ref().is_some_and(|p| {
            model::policy::allows(
                p,
                &model::policy::Requester::Account(&caller.account),
                "lambda:InvokeFunctionUrl",
                Some("AWS_IAM"),
            )
        })
}

fn signed(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Failure> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(Failure::TooLarge),
        Err(_) => Err(Failure::Internal),
    }
}

/// Invokes the function with an HTTP event and turns its result into the HTTP answer.
#[allow(clippy::too_many_arguments)]
async fn invoke(
    front: &Front,
    flavor: Flavor,
    function: &str,
    qualifier: Option<String>,
    event: Vec<u8>,
    request_id: &str,
    trace: Option<String>,
    parse: fn(&[u8]) -> Result<response::Answer, response::Malformed>,
    stream: bool,
) -> Response {
    let req = InvokeRequest {
        function: function.to_string(),
        qualifier,
        payload: Bytes::from(event),
        tail: false,
        client_context: None,
        request_id: request_id.to_string(),
        trigger: Trigger::Http,
        trace,
    };
    if stream {
        return streaming::answer(front, flavor, req, parse).await;
    }
    let result = match front.inner.invoker.invoke(req).await {
        Ok(r) => r,
        Err(e) => return failure(flavor, invoke_failure(flavor, &e)),
    };
    let error = result.function_error.map(|_| error_type_of(&result.payload));
    buffered(flavor, function, request_id, &result.payload, error, parse)
}

/// The `errorType` of a function error's body.
fn error_type_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errorType").and_then(|t| t.as_str()).map(str::to_string))
}

/// The answer to a complete result: `error` is `Some(error type)` for a function error.
fn buffered(
    flavor: Flavor,
    function: &str,
    request_id: &str,
    payload: &[u8],
    error: Option<Option<String>>,
    parse: fn(&[u8]) -> Result<response::Answer, response::Malformed>,
) -> Response {
    if let Some(error_type) = error {
        tracing::info!(
            function,
            request_id,
            error_type = error_type.as_deref().unwrap_or(""),
            "function error behind HTTP"
        );
        if error_type.as_deref() == Some("Sandbox.Timedout") {
            return failure(flavor, Failure::Timeout);
        }
        return failure(flavor, Failure::FunctionError);
    }
    match parse(payload) {
        Ok(answer) => answer_response(answer),
        Err(response::Malformed(why)) => {
            tracing::info!(function, request_id, why, "malformed HTTP response from function");
            failure(flavor, Failure::FunctionError)
        }
    }
}

pub(crate) fn invoke_failure(flavor: Flavor, e: &LambdaError) -> Failure {
    match e.code {
        ErrorCode::TooManyRequests => Failure::Throttled,
        ErrorCode::RequestEntityTooLarge => Failure::TooLarge,
        // A URL whose function is gone does not exist; a route to a missing function is a
        // broken integration.
        ErrorCode::ResourceNotFound if flavor == Flavor::Url => Failure::NotFound,
        _ => {
            tracing::warn!(error = %e, "invocation behind HTTP failed");
            Failure::Internal
        }
    }
}

pub(crate) fn answer_response(a: response::Answer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = (status, a.body).into_response();
    let h = resp.headers_mut();
    h.remove("content-type");
    for (name, value) in a.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            h.append(n, v);
        }
    }
    resp
}

fn join(list: &Option<Vec<String>>) -> Option<HeaderValue> {
    list.as_ref().filter(|l| !l.is_empty()).and_then(|l| HeaderValue::from_str(&l.join(",")).ok())
}

/// Answers a CORS preflight from the URL's settings, without invoking the function.
fn preflight(cors: &Cors, origin: &str, request: &HeaderMap) -> Response {
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    let method = request.get("access-control-request-method").and_then(|v| v.to_str().ok()).unwrap_or("");
    let asked_headers = request.get("access-control-request-headers").and_then(|v| v.to_str().ok()).unwrap_or("");
    let allowed =
        cors.allowed_origin(origin).filter(|_| cors.allows_method(method) && cors.allows_headers(asked_headers));
    if let Some(o) = allowed.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert("access-control-allow-origin", o);
        if let Some(v) = join(&cors.allow_methods) {
            h.insert("access-control-allow-methods", v);
        }
        if let Some(v) = join(&cors.allow_headers) {
            h.insert("access-control-allow-headers", v);
        }
        if cors.allow_credentials == Some(true) {
            h.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
        }
        if let Some(v) = join(&cors.expose_headers) {
            h.insert("access-control-expose-headers", v);
        }
        if let Some(age) = cors.max_age {
            h.insert("access-control-max-age", HeaderValue::from(age));
        }
    }
    h.insert("vary", HeaderValue::from_static("Origin"));
    resp
}

/// Adds the CORS headers to a response for an allowed origin (replacing any the function set).
fn add_cors(cors: &Cors, origin: &str, h: &mut HeaderMap) {
    let Some(o) = cors.allowed_origin(origin).and_then(|o| HeaderValue::from_str(&o).ok()) else { return };
    h.insert("access-control-allow-origin", o);
    if cors.allow_credentials == Some(true) {
        h.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
    }
    if let Some(v) = join(&cors.expose_headers) {
        h.insert("access-control-expose-headers", v);
    }
    h.append("vary", HeaderValue::from_static("Origin"));
}

/// Serves the front on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    front: Front,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = front.router().into_make_service_with_connect_info::<SocketAddr>();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_answers_from_the_settings() {
        let cors = Cors {
            allow_origins: Some(vec!["https://app.example".into()]),
            allow_methods: Some(vec!["GET".into(), "POST".into()]),
            allow_headers: Some(vec!["content-type".into()]),
            max_age: Some(300),
            ..Default::default()
        };
        let mut req = HeaderMap::new();
        req.insert("access-control-request-method", HeaderValue::from_static("POST"));
        req.insert("access-control-request-headers", HeaderValue::from_static("Content-Type"));
        let ok = preflight(&cors, "https://app.example", &req);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example");
        assert_eq!(ok.headers()["access-control-allow-methods"], "GET,POST");
        assert_eq!(ok.headers()["access-control-max-age"], "300");
        let denied = preflight(&cors, "https://evil.example", &req);
        assert!(denied.headers().get("access-control-allow-origin").is_none());
        req.insert("access-control-request-method", HeaderValue::from_static("DELETE"));
        assert!(preflight(&cors, "https://app.example", &req).headers().get("access-control-allow-origin").is_none());
    }
}
