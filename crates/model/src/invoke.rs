//! Invocations: what a caller asks for and what comes back, independent of HTTP.

use bytes::Bytes;

/// The largest synchronous request payload (`Request must be smaller than 6291456 bytes`).
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// The largest asynchronous (Event) payload.
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;
/// The largest response a runtime may post (`6*1024*1024 + 100`).
pub const MAX_RESPONSE_PAYLOAD: usize = 6 * 1024 * 1024 + 100;
/// How much of an invocation's log `X-Amz-Log-Result` carries.
pub const LOG_TAIL_BYTES: usize = 4096;
/// The largest `X-Amz-Client-Context` (base64) accepted.
pub const MAX_CLIENT_CONTEXT: usize = 3583;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

impl InvocationType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RequestResponse" => Some(Self::RequestResponse),
            "Event" => Some(Self::Event),
            "DryRun" => Some(Self::DryRun),
            _ => None,
        }
    }
}

/// One synchronous invocation as `invoke` receives it.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Bytes,
    /// Return the last 4 KB of the log with the result.
    pub tail: bool,
    /// Decoded client context JSON (passed to the runtime as is).
    pub client_context: Option<String>,
    /// The request id the caller and the function both see.
    pub request_id: String,
    /// What started this invocation, for logs and the ledger.
    pub trigger: Trigger,
    /// The caller's `X-Amzn-Trace-Id`, if it sent one (the invocation joins that trace).
    pub trace: Option<String>,
}

/// The source of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Async,
    /// A function URL or an HTTP route.
    Http,
    /// A bucket notification.
    S3,
    /// A schedule's tick.
    Schedule,
    /// An event source mapping's batch.
    Esm,
}

impl Trigger {
    /// The name the ledger and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Async => "async",
            Self::Http => "http",
            Self::S3 => "s3",
            Self::Schedule => "schedule",
            Self::Esm => "esm",
        }
    }

    /// Reads [`Trigger::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "api" => Self::Api,
            "async" => Self::Async,
            "http" => Self::Http,
            "s3" => Self::S3,
            "schedule" => Self::Schedule,
            "esm" => Self::Esm,
            _ => return None,
        })
    }
}

/// How an event from a scheduler is delivered (its schedule's RetryPolicy and
/// DeadLetterConfig): failed deliveries (a missing function, throttling) are retried up to
/// `max_retries` times within `max_age_s`, then sent to `dead_letter` (a function) if any.
/// Function errors follow the function's own asynchronous settings, as on AWS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryPolicy {
    pub max_retries: u32,
    pub max_age_s: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// What a synchronous invocation produced.
#[derive(Debug, Clone)]
pub struct InvokeResult {
    pub payload: Bytes,
    /// `Some("Unhandled")` when the function or the platform reported an error.
    pub function_error: Option<&'static str>,
    pub executed_version: String,
    /// Last 4 KB of the invocation's log, when asked for.
    pub log_tail: Option<String>,
    /// Content type the runtime gave its response, if any.
    pub content_type: Option<String>,
}

/// A new request id (a random UUID, as Lambda's).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
