//! The Lambda Runtime API (2018-06-01), served to one execution environment.
//!
//! Every environment gets its own [`Endpoint`]: a listener on its own port whose address
//! becomes `AWS_LAMBDA_RUNTIME_API`. The invoke path hands an [`Invocation`] to the endpoint;
//! the runtime inside the environment takes it with `GET /runtime/invocation/next` and answers
//! with `/response` or `/error`, which resolves the invocation's [`Outcome`]. Whatever the
//! function sends is untrusted: request ids are checked, bodies are bounded, and a second
//! answer to the same invocation is refused.
//!
//! Wire contract: docs/lambda-contract.md §1.1–1.3.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use model::invoke::MAX_RESPONSE_PAYLOAD;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot};

/// One event handed to the runtime.
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    /// Unix epoch milliseconds at which the function times out.
    pub deadline_ms: i64,
    /// The ARN as the caller invoked it (qualified or not).
    pub invoked_function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    /// Where the runtime's answer goes.
    pub reply: oneshot::Sender<Outcome>,
}

/// How the runtime answered one invocation.
#[derive(Debug)]
pub enum Outcome {
    Response {
        body: Bytes,
        content_type: Option<String>,
    },
    /// The runtime is streaming its response (`Lambda-Runtime-Function-Response-Mode:
    /// streaming`, docs/lambda-contract.md §1.4): the body arrives on `chunks` as it is
    /// written, ending with [`StreamEvent::End`].
    Stream {
        content_type: Option<String>,
        chunks: mpsc::Receiver<StreamEvent>,
    },
    /// `/error`: the runtime's error type header (if any) and its body, passed on verbatim.
    Error {
        error_type: Option<String>,
        body: Bytes,
    },
    /// The response exceeded [`MAX_RESPONSE_PAYLOAD`].
    TooLarge,
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Response { body: a, content_type: x }, Self::Response { body: b, content_type: y }) => {
                a == b && x == y
            }
            (Self::Error { error_type: x, body: a }, Self::Error { error_type: y, body: b }) => x == y && a == b,
            (Self::TooLarge, Self::TooLarge) => true,
            _ => false,
        }
    }
}

/// A piece of a streamed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Chunk(Bytes),
    End(StreamEnd),
}

/// How a streamed response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    Complete,
    /// The runtime reported an error mid-stream (trailers `Lambda-Runtime-Function-Error-Type`
    /// and `-Body`, the body base64), or the connection broke.
    Error {
        error_type: String,
        body: Bytes,
    },
    /// The stream went past [`MAX_STREAMED_BYTES`]; what came before was delivered.
    Oversized,
}

/// The most bytes a streamed response may carry (Lambda's 200 MB).
pub const MAX_STREAMED_BYTES: u64 = 200 * 1024 * 1024;

/// Lifecycle signals from the runtime, other than answers to invocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The runtime asked for its first event: initialisation is over.
    Ready,
    /// The runtime reported that it cannot initialise (`/runtime/init/error`).
    InitError { error_type: Option<String>, body: Bytes },
}

struct Current {
    request_id: String,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    invocations: Mutex<mpsc::Receiver<Invocation>>,
    current: std::sync::Mutex<Option<Current>>,
    signals: mpsc::Sender<Signal>,
    ready_sent: AtomicBool,
    init_error_sent: AtomicBool,
}

/// A running Runtime API endpoint. Dropping it stops accepting connections.
pub struct Endpoint {
    addr: SocketAddr,
    invocations: mpsc::Sender<Invocation>,
    signals: mpsc::Receiver<Signal>,
    server: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Binds a new endpoint on `ip` (port chosen by the kernel) and starts serving it.
    /// Connections `admit` refuses (by local and peer address) are closed unanswered.
    pub async fn bind(ip: std::net::IpAddr, admit: Option<Admit>) -> std::io::Result<Self> {
        Self::serve(TcpListener::bind(SocketAddr::new(ip, 0)).await?, admit)
    }

    /// Serves an endpoint on a listener made elsewhere (inside an environment's own network
    /// namespace, for instance). The listener must be non-blocking.
    pub fn from_listener(listener: std::net::TcpListener) -> std::io::Result<Self> {
        Self::serve(TcpListener::from_std(listener)?, None)
    }

    fn serve(listener: TcpListener, admit: Option<Admit>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (inv_tx, inv_rx) = mpsc::channel(1);
        let (sig_tx, sig_rx) = mpsc::channel(2);
        let shared = Arc::new(Shared {
            invocations: Mutex::new(inv_rx),
            current: std::sync::Mutex::new(None),
            signals: sig_tx,
            ready_sent: AtomicBool::new(false),
            init_error_sent: AtomicBool::new(false),
        });
        let app = router(shared);
        let server = tokio::spawn(async move {
            let listener = Checked { inner: listener, admit };
            if let Err(e) = axum::serve(listener, app).await {
                tracing::debug!(error = %e, "runtime api server ended");
            }
        });
        Ok(Self { addr, invocations: inv_tx, signals: sig_rx, server })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues an invocation for the runtime's next `/next`. Fails only if the endpoint stopped.
    pub async fn submit(&self, inv: Invocation) -> Result<(), Invocation> {
        self.invocations.send(inv).await.map_err(|e| e.0)
    }

    /// The next lifecycle signal (`None` once the endpoint is gone).
    pub async fn signal(&mut self) -> Option<Signal> {
        self.signals.recv().await
    }
}

/// Decides whether a connection (local address, peer address) may use an endpoint. It runs on
/// a blocking thread, once per connection (runtimes keep theirs open).
pub type Admit = Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>;

/// A listener that closes connections its [`Admit`] refuses.
struct Checked {
    inner: TcpListener,
    admit: Option<Admit>,
}

impl axum::serve::Listener for Checked {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Some(admit) = &self.admit {
                let local = stream.local_addr().unwrap_or(peer);
                let admit = admit.clone();
                let ok = tokio::task::spawn_blocking(move || admit(local, peer)).await.unwrap_or(false);
                if !ok {
                    tracing::warn!(%peer, "refused a Runtime API connection from outside the environment");
                    continue;
                }
            }
            let _ = stream.set_nodelay(true);
            return (stream, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .route("/2018-06-01/ping", get(|| async { "pong" }))
        .with_state(shared)
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [("content-type", "application/json")], r#"{"status":"OK"}"#).into_response()
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    if shared.current.lock().map(|c| c.is_some()).unwrap_or(true) {
        return api_error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "State transition from Invoking to Ready failed for runtime. Error: the current invocation has not been answered",
        );
    }
    if !shared.ready_sent.swap(true, Ordering::AcqRel) {
        let _ = shared.signals.try_send(Signal::Ready);
    }
    let inv = {
        let mut rx = shared.invocations.lock().await;
        rx.recv().await
    };
    let Some(inv) = inv else {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "Internal Server Error");
    };
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", header_value(&inv.request_id));
    headers.insert("lambda-runtime-deadline-ms", header_value(&inv.deadline_ms.to_string()));
    headers.insert("lambda-runtime-invoked-function-arn", header_value(&inv.invoked_function_arn));
    headers.insert("lambda-runtime-trace-id", header_value(&inv.trace_id));
    if let Some(cc) = &inv.client_context {
        headers.insert("lambda-runtime-client-context", header_value(cc));
    }
    if let Some(ci) = &inv.cognito_identity {
        headers.insert("lambda-runtime-cognito-identity", header_value(ci));
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(mut cur) = shared.current.lock() {
        *cur = Some(Current { request_id: inv.request_id, reply: inv.reply });
    }
    (StatusCode::OK, headers, Body::from(inv.payload)).into_response()
}

/// Reads a body of at most `MAX_RESPONSE_PAYLOAD` bytes; `None` if it is larger.
async fn read_bounded(body: Body) -> Result<Option<Bytes>, Response> {
    match http_body_util::Limited::new(body, MAX_RESPONSE_PAYLOAD).collect().await {
        Ok(c) => Ok(Some(c.to_bytes())),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Ok(None),
        Err(_) => Err(api_error(StatusCode::BAD_REQUEST, "InvalidRequest", "the request body could not be read")),
    }
}

/// Why the Runtime API refused a runtime's request.
struct Refusal(StatusCode, &'static str, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        api_error(self.0, self.1, self.2)
    }
}

const INTERNAL: Refusal = Refusal(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "Internal Server Error");

/// Takes the current invocation if `id` names it.
fn take_current(shared: &Shared, id: &str) -> Result<Current, Refusal> {
    let mut cur = shared.current.lock().map_err(|_| INTERNAL)?;
    match cur.as_ref() {
        Some(c) if c.request_id == id => cur.take().ok_or(INTERNAL),
        Some(_) => Err(Refusal(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")),
        None => Err(Refusal(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "State transition from Ready to InvocationResponse failed for runtime. Error: no invocation is in progress",
        )),
    }
}

fn too_large() -> Response {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_PAYLOAD} bytes)."),
    )
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(mode) = headers.get("lambda-runtime-function-response-mode") {
        if mode.as_bytes() != b"streaming" {
            return api_error(StatusCode::BAD_REQUEST, "InvalidFunctionResponseMode", "Invalid function response mode");
        }
        return stream_response(&shared, &id, &headers, body).await;
    }
    let body = match read_bounded(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let cur = match take_current(&shared, &id) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    match body {
        Some(body) => {
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
            let _ = cur.reply.send(Outcome::Response { body, content_type });
            accepted()
        }
        None => {
            let _ = cur.reply.send(Outcome::TooLarge);
            too_large()
        }
    }
}

/// The prefix of the error the Rust runtime writes into the body instead of as a trailer.
const IN_BODY_ERROR: &[u8] = b"Lambda-Runtime-Function-Error-Type:";

/// A mid-stream error reported by trailers (or by the Rust runtime's in-body imitation of them).
fn stream_error(fields: &HeaderMap) -> Option<StreamEnd> {
    let error_type = fields.get("lambda-runtime-function-error-type")?.to_str().ok()?.trim().to_string();
    use base64::Engine;
    let body = fields
        .get("lambda-runtime-function-error-body")
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.as_bytes()).ok())
        .map(Bytes::from)
        .unwrap_or_default();
    Some(StreamEnd::Error { error_type, body })
}

fn in_body_error(chunk: &[u8]) -> Option<StreamEnd> {
    if !chunk.starts_with(IN_BODY_ERROR) {
        return None;
    }
    let text = std::str::from_utf8(chunk).ok()?;
    let mut fields = HeaderMap::new();
    for line in text.split("\r\n") {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(name), Ok(value)) =
                (axum::http::HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim()))
        {
            fields.insert(name, value);
        }
    }
    stream_error(&fields)
}

/// A streamed `/response`: the invocation is answered at once with a channel, and the body is
/// forwarded frame by frame as the runtime writes it (the channel is bounded, so a slow reader
/// slows the runtime down rather than filling memory).
async fn stream_response(shared: &Shared, id: &str, headers: &HeaderMap, mut body: Body) -> Response {
    let cur = match take_current(shared, id) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    let (tx, rx) = mpsc::channel(8);
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    if cur.reply.send(Outcome::Stream { content_type, chunks: rx }).is_err() {
        return INTERNAL.into_response();
    }
    let mut sent: u64 = 0;
    let end = loop {
        match body.frame().await {
            None => break StreamEnd::Complete,
            Some(Err(_)) => {
                break StreamEnd::Error {
                    error_type: "Runtime.StreamError".into(),
                    body: Bytes::from_static(b"the runtime's response stream broke off"),
                };
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if let Some(err) = in_body_error(&data) {
                        break err;
                    }
                    sent += data.len() as u64;
                    if sent > MAX_STREAMED_BYTES {
                        break StreamEnd::Oversized;
                    }
                    // A caller that went away stops receiving; the runtime may finish writing.
                    let _ = tx.send(StreamEvent::Chunk(data)).await;
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref()
                        && let Some(err) = stream_error(trailers)
                    {
                        break err;
                    }
                }
            },
        }
    };
    let oversized = end == StreamEnd::Oversized;
    let _ = tx.send(StreamEvent::End(end)).await;
    if oversized {
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("Exceeded maximum allowed streamed payload size ({MAX_STREAMED_BYTES} bytes)."),
        );
    }
    accepted()
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_bounded(body).await {
        Ok(Some(b)) => b,
        Ok(None) => return too_large(),
        Err(resp) => return resp,
    };
    let cur = match take_current(&shared, &id) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    let _ = cur.reply.send(Outcome::Error { error_type: error_type(&headers), body });
    accepted()
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if shared.ready_sent.load(Ordering::Acquire) || shared.init_error_sent.swap(true, Ordering::AcqRel) {
        return api_error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "State transition from Ready to InitError failed for runtime. Error: initialization is over",
        );
    }
    let body = match read_bounded(body).await {
        Ok(Some(b)) => b,
        Ok(None) => return too_large(),
        Err(resp) => return resp,
    };
    let _ = shared.signals.try_send(Signal::InitError { error_type: error_type(&headers), body });
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A blocking HTTP/1.0 exchange, as a runtime would do it.
    fn http(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        let head = format!("{method} {path} HTTP/1.0\r\nContent-Length: {}\r\n{extra}\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&out[..split]).to_string();
        let status = head[9..12].parse().unwrap();
        (status, head, out[split + 4..].to_vec())
    }

    fn invocation(id: &str) -> (Invocation, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let inv = Invocation {
            request_id: id.into(),
            payload: Bytes::from_static(b"{\"a\":1}"),
            deadline_ms: 42,
            invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            trace_id: "Root=1-x".into(),
            client_context: None,
            cognito_identity: None,
            reply: tx,
        };
        (inv, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn next_then_response_resolves_the_outcome() {
        let mut ep = Endpoint::bind([127, 0, 0, 1].into(), None).await.unwrap();
        let addr = ep.addr();
        let (inv, rx) = invocation("req-1");
        ep.submit(inv).await.unwrap();
        let runtime = tokio::task::spawn_blocking(move || {
            let (status, head, body) = http(addr, "GET", "/2018-06-01/runtime/invocation/next", "", b"");
            assert_eq!(status, 200);
            assert!(head.to_ascii_lowercase().contains("lambda-runtime-aws-request-id: req-1"));
            assert!(head.to_ascii_lowercase().contains("lambda-runtime-deadline-ms: 42"));
            assert_eq!(body, b"{\"a\":1}");
            let (wrong, _, _) = http(addr, "POST", "/2018-06-01/runtime/invocation/other/response", "", b"1");
            assert_eq!(wrong, 400);
            let (ok, _, _) = http(addr, "POST", "/2018-06-01/runtime/invocation/req-1/response", "", b"\"done\"");
            assert_eq!(ok, 202);
            let (again, _, _) = http(addr, "POST", "/2018-06-01/runtime/invocation/req-1/response", "", b"x");
            assert_eq!(again, 403);
        });
        assert_eq!(ep.signal().await, Some(Signal::Ready));
        assert_eq!(rx.await.unwrap(), Outcome::Response { body: Bytes::from_static(b"\"done\""), content_type: None });
        runtime.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streamed_responses_arrive_in_pieces_and_in_body_errors_end_them() {
        let ep = Endpoint::bind([127, 0, 0, 1].into(), None).await.unwrap();
        let addr = ep.addr();
        let (inv, rx) = invocation("s-1");
        ep.submit(inv).await.unwrap();
        let runtime = tokio::task::spawn_blocking(move || {
            let (status, _, _) = http(addr, "GET", "/2018-06-01/runtime/invocation/next", "", b"");
            assert_eq!(status, 200);
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                b"POST /2018-06-01/runtime/invocation/s-1/response HTTP/1.1\r\nHost: x\r\n\
                  Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\
                  Content-Type: text/plain\r\n\r\n5\r\nhello\r\n",
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            // The Rust runtime's way of reporting an error: trailer text inside the body.
            let err = "Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\nLambda-Runtime-Function-Error-Body: eA==\r\n";
            s.write_all(format!("{:x}\r\n{err}\r\n0\r\n\r\n", err.len()).as_bytes()).unwrap();
            let mut out = [0u8; 512];
            let n = s.read(&mut out).unwrap();
            assert!(String::from_utf8_lossy(&out[..n]).starts_with("HTTP/1.1 202"));
        });
        let Outcome::Stream { content_type, mut chunks } = rx.await.unwrap() else { panic!("not a stream") };
        assert_eq!(content_type.as_deref(), Some("text/plain"));
        assert_eq!(chunks.recv().await, Some(StreamEvent::Chunk(Bytes::from_static(b"hello"))));
        assert_eq!(
            chunks.recv().await,
            Some(StreamEvent::End(StreamEnd::Error {
                error_type: "Runtime.StreamError".into(),
                body: Bytes::from_static(b"x")
            }))
        );
        runtime.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_response_is_refused_and_reported() {
        let ep = Endpoint::bind([127, 0, 0, 1].into(), None).await.unwrap();
        let addr = ep.addr();
        let (inv, rx) = invocation("big");
        ep.submit(inv).await.unwrap();
        tokio::task::spawn_blocking(move || {
            http(addr, "GET", "/2018-06-01/runtime/invocation/next", "", b"");
            let big = vec![b'x'; MAX_RESPONSE_PAYLOAD + 1];
            let (status, _, body) = http(addr, "POST", "/2018-06-01/runtime/invocation/big/response", "", &big);
            assert_eq!(status, 413);
            assert!(String::from_utf8_lossy(&body).contains("6291556"));
        })
        .await
        .unwrap();
        assert_eq!(rx.await.unwrap(), Outcome::TooLarge);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_peers_get_no_answer() {
        let admit: Admit = Arc::new(|_, _| false);
        let ep = Endpoint::bind([127, 0, 0, 1].into(), Some(admit)).await.unwrap();
        let addr = ep.addr();
        let got = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.0\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out
        })
        .await
        .unwrap();
        assert!(got.is_empty(), "a refused connection is closed without an answer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn init_error_is_signalled_once() {
        let mut ep = Endpoint::bind([127, 0, 0, 1].into(), None).await.unwrap();
        let addr = ep.addr();
        let statuses = tokio::task::spawn_blocking(move || {
            let hdr = "Lambda-Runtime-Function-Error-Type: Runtime.ImportModuleError\r\n";
            let a = http(addr, "POST", "/2018-06-01/runtime/init/error", hdr, b"{}").0;
            let b = http(addr, "POST", "/2018-06-01/runtime/init/error", hdr, b"{}").0;
            (a, b)
        })
        .await
        .unwrap();
        assert_eq!(statuses, (202, 403));
        assert_eq!(
            ep.signal().await,
            Some(Signal::InitError {
                error_type: Some("Runtime.ImportModuleError".into()),
                body: Bytes::from_static(b"{}")
            })
        );
    }
}
