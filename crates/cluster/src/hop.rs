//! The node-to-node hop: a forwarded invocation is `POST /_stratus/cluster/invoke` on the
//! owner's API listener, its payload the body, everything else in `x-stratus-*` headers, and
//! signed with the cluster's hop key (HMAC-SHA256 over the sender, the time, the request id,
//! the target and the body's digest; refused when older than a minute). The answer is the
//! function's payload with the result's fields in headers, or a platform error.
//!
//! Both ends live here so the format has one definition.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::Mac;
use invoke::cluster::Peer;
use model::invoke::{InvokeRequest, InvokeResult, Trigger};
use model::{ErrorCode, LambdaError, ThrottleReason};
use sha2::{Digest, Sha256};

/// The path of a forwarded invocation.
pub const INVOKE_PATH: &str = "/_stratus/cluster/invoke";
/// The longest a forwarded invocation may take (a function's longest timeout, and some).
const HOP_TIMEOUT: Duration = Duration::from_secs(960);
/// How old a signed request may be.
const MAX_SKEW_MS: i64 = 60_000;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn signature(key: &[u8], node: &str, time_ms: i64, request_id: &str, target: &str, body: &[u8]) -> String {
    let mut m = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(format!("{node}\n{time_ms}\n{request_id}\n{target}\n").as_bytes());
    m.update(hex::encode(Sha256::digest(body)).as_bytes());
    hex::encode(m.finalize().into_bytes())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What sends (and signs) this node's forwarded invocations.
pub struct Hop<'a> {
    pub http: &'a reqwest::Client,
    /// The cluster's hop key.
    pub key: &'a [u8],
    /// This node's id.
    pub node_id: &'a str,
}

/// The request forwarding `req` to `peer` (signed).
fn request(hop: &Hop<'_>, peer: &Peer, account: &str, version: &str, req: &InvokeRequest) -> reqwest::RequestBuilder {
    let time_ms = model::logfmt::now_ms();
    let target = format!("{account}/{}/{version}", req.function);
    let sig = signature(hop.key, hop.node_id, time_ms, &req.request_id, &target, &req.payload);
    let mut r = hop
        .http
        .post(format!("{}{INVOKE_PATH}", peer.address))
        .timeout(HOP_TIMEOUT)
        .header("x-stratus-node", hop.node_id)
        .header("x-stratus-time", time_ms.to_string())
        .header("x-stratus-signature", sig)
        .header("x-stratus-account", account)
        .header("x-stratus-function", &req.function)
        .header("x-stratus-version", version)
        .header("x-stratus-request-id", &req.request_id)
        .header("x-stratus-trigger", req.trigger.as_str());
    if let Some(q) = &req.qualifier {
        r = r.header("x-stratus-qualifier", q);
    }
    if let Some(t) = &req.trace {
        r = r.header("x-stratus-trace", t);
    }
    if req.tail {
        r = r.header("x-stratus-tail", "1");
    }
    if let Some(c) = &req.client_context {
        r = r.header("x-stratus-client-context", B64.encode(c));
    }
    r.body(req.payload.clone())
}

fn unreachable_error(peer: &Peer, e: &dyn std::fmt::Display) -> LambdaError {
    LambdaError::service(format!("{}{} ({}): {e}", invoke::UNREACHABLE, peer.node_id, peer.address))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The platform error a node answered with, if it did.
fn refusal(resp: &reqwest::Response) -> Option<LambdaError> {
    let code = header(resp, "x-stratus-error")?;
    let mut e = LambdaError::new(ErrorCode::parse(&code).unwrap_or(ErrorCode::Service), String::new());
    e.reason = header(resp, "x-stratus-reason").as_deref().and_then(ThrottleReason::parse);
    Some(e)
}

/// Sends `req` to `peer`. A peer that cannot be reached gives a `ServiceException` whose
/// message starts with [`invoke::UNREACHABLE`], so the caller may try another.
pub async fn forward(
    hop: &Hop<'_>,
    peer: &Peer,
    account: &str,
    version: &str,
    req: &InvokeRequest,
) -> Result<InvokeResult, LambdaError> {
    let resp = request(hop, peer, account, version, req).send().await.map_err(|e| unreachable_error(peer, &e))?;
    let status = resp.status();
    let refused = refusal(&resp);
    let executed_version = header(&resp, "x-stratus-executed-version");
    let function_error = header(&resp, "x-stratus-function-error");
    let log_tail = header(&resp, "x-stratus-log-tail")
        .and_then(|t| B64.decode(t).ok())
        .map(|t| String::from_utf8_lossy(&t).into_owned());
    let content_type = header(&resp, "x-stratus-content-type");
    let body = resp.bytes().await.map_err(|e| unreachable_error(peer, &e))?;
    if let Some(mut e) = refused {
        e.message = String::from_utf8_lossy(&body).into_owned();
        return Err(e);
    }
    if !status.is_success() {
        // Not our endpoint's answer (an old node, a proxy): treat the node as unusable.
        return Err(unreachable_error(peer, &format!("status {status}")));
    }
    Ok(InvokeResult {
        payload: body,
        function_error: function_error.map(|_| "Unhandled"),
        executed_version: executed_version.unwrap_or_default(),
        log_tail,
        content_type,
    })
}

/// A frame of a streamed answer: a chunk of the response.
const FRAME_CHUNK: u8 = b'C';
/// The last frame: what follows the chunks (JSON: the error, the log tail).
const FRAME_END: u8 = b'E';

/// One frame: its kind, its length (4 bytes, big-endian) and its bytes.
pub fn frame(kind: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(kind);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// The frames of a streamed answer's messages after `Start` (which travels in headers).
pub fn stream_frame(msg: invoke::StreamMsg) -> Option<Bytes> {
    match msg {
        invoke::StreamMsg::Start { .. } => None,
        invoke::StreamMsg::Chunk(c) => Some(frame(FRAME_CHUNK, &c)),
        invoke::StreamMsg::End { error, log_tail } => {
            let end = serde_json::json!({
                "error_body": error.map(|(_, body)| B64.encode(body)),
                "log_tail": log_tail,
            });
            Some(frame(FRAME_END, end.to_string().as_bytes()))
        }
    }
}

/// Headers of a streamed answer (its `Start`).
pub fn stream_headers(s: &invoke::Streamed) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-stratus-executed-version", s.executed_version.clone()),
        ("x-stratus-streamed", if s.streamed { "1" } else { "0" }.to_string()),
    ];
    if let Some(ct) = &s.content_type {
        h.push(("x-stratus-content-type", ct.clone()));
    }
    h
}

/// Sends `req` to `peer` asking for its answer streamed: `Start` and each chunk go to `sink`
/// as they arrive. Unreachable before the answer starts: an error the caller may retry
/// elsewhere; cut off after it started: a function error (the caller saw part of it).
pub async fn forward_stream(
    hop: &Hop<'_>,
    peer: &Peer,
    account: &str,
    version: &str,
    req: &InvokeRequest,
    sink: &tokio::sync::mpsc::Sender<invoke::StreamMsg>,
) -> Result<InvokeResult, LambdaError> {
    let mut resp = request(hop, peer, account, version, req)
        .header("x-stratus-stream", "1")
        .send()
        .await
        .map_err(|e| unreachable_error(peer, &e))?;
    if let Some(mut e) = refusal(&resp) {
        e.message = resp.text().await.unwrap_or_default();
        return Err(e);
    }
    if !resp.status().is_success() {
        return Err(unreachable_error(peer, &format!("status {}", resp.status())));
    }
    let executed_version = header(&resp, "x-stratus-executed-version").unwrap_or_default();
    let content_type = header(&resp, "x-stratus-content-type");
    let streamed = header(&resp, "x-stratus-streamed").as_deref() == Some("1");
    let start = invoke::StreamMsg::Start {
        content_type: content_type.clone(),
        executed_version: executed_version.clone(),
        streamed,
    };
    let cut = |why: String| InvokeResult {
        payload: Bytes::from(serde_json::json!({"errorMessage": why, "errorType": "Runtime.StreamError"}).to_string()),
        function_error: Some("Unhandled"),
        executed_version: executed_version.clone(),
        log_tail: None,
        content_type: Some("application/json".into()),
    };
    if sink.send(start).await.is_err() {
        return Ok(cut("the caller went away".into()));
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Whole frames first.
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            let kind = buf[0];
            let data: Vec<u8> = buf[5..5 + len].to_vec();
            buf.drain(..5 + len);
            match kind {
                FRAME_CHUNK => {
                    if sink.send(invoke::StreamMsg::Chunk(Bytes::from(data))).await.is_err() {
                        return Ok(cut("the caller went away".into()));
                    }
                }
                FRAME_END => {
                    let end: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                    let error = end["error_body"].as_str().and_then(|b| B64.decode(b).ok());
                    return Ok(InvokeResult {
                        function_error: error.as_ref().map(|_| "Unhandled"),
                        payload: Bytes::from(error.unwrap_or_default()),
                        executed_version,
                        log_tail: end["log_tail"].as_str().map(str::to_string),
                        content_type,
                    });
                }
                _ => return Ok(cut("a malformed frame from the node running the invocation".into())),
            }
        }
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => return Ok(cut("the node running the invocation ended the stream early".into())),
            Err(e) => return Ok(cut(format!("the node running the invocation was lost: {e}"))),
        }
    }
}

/// The path where a node reads another's function logs.
pub const LOGS_PATH: &str = "/_stratus/cluster/logs";

/// Headers signing a read of `target` from another node (no body).
pub fn sign_read(key: &[u8], node_id: &str, target: &str) -> Vec<(&'static str, String)> {
    let time_ms = model::logfmt::now_ms();
    vec![
        ("x-stratus-node", node_id.to_string()),
        ("x-stratus-time", time_ms.to_string()),
        ("x-stratus-signature", signature(key, node_id, time_ms, "read", target, b"")),
    ]
}

/// Checks the signature of a read of `target`.
pub fn verify_read(key: &[u8], headers: &HashMap<String, String>, target: &str) -> Result<(), String> {
    let need = |name: &str| headers.get(name).cloned().ok_or_else(|| format!("missing {name}"));
    let node = need("x-stratus-node")?;
    let time_ms: i64 = need("x-stratus-time")?.parse().map_err(|_| "bad x-stratus-time".to_string())?;
    if (model::logfmt::now_ms() - time_ms).abs() > MAX_SKEW_MS {
        return Err("the request is too old (or the nodes' clocks disagree)".into());
    }
    if !constant_time_eq(&signature(key, &node, time_ms, "read", target, b""), &need("x-stratus-signature")?) {
        return Err("bad signature".into());
    }
    Ok(())
}

/// A forwarded invocation as received.
#[derive(Debug)]
pub struct Forwarded {
    pub account: String,
    pub version: String,
    pub request: InvokeRequest,
    /// The answer is wanted streamed ([`stream_frame`]).
    pub stream: bool,
}

/// Checks a forwarded invocation's signature and reads it. `Err` says why it is refused.
pub fn receive(key: &[u8], headers: &HashMap<String, String>, body: Bytes) -> Result<Forwarded, String> {
    let get = |name: &str| headers.get(name).cloned();
    let need = |name: &str| get(name).ok_or_else(|| format!("missing {name}"));
    let node = need("x-stratus-node")?;
    let time_ms: i64 = need("x-stratus-time")?.parse().map_err(|_| "bad x-stratus-time".to_string())?;
    if (model::logfmt::now_ms() - time_ms).abs() > MAX_SKEW_MS {
        return Err("the request is too old (or the nodes' clocks disagree)".into());
    }
    let stream = get("x-stratus-stream").is_some();
    let account = need("x-stratus-account")?;
    let function = need("x-stratus-function")?;
    let version = need("x-stratus-version")?;
    let request_id = need("x-stratus-request-id")?;
    let target = format!("{account}/{function}/{version}");
    let expected = signature(key, &node, time_ms, &request_id, &target, &body);
    if !constant_time_eq(&expected, &need("x-stratus-signature")?) {
        return Err("bad signature".into());
    }
    let client_context = match get("x-stratus-client-context") {
        Some(c) => Some(
            String::from_utf8(B64.decode(c).map_err(|_| "bad client context")?).map_err(|_| "bad client context")?,
        ),
        None => None,
    };
    let request = InvokeRequest {
        function,
        qualifier: get("x-stratus-qualifier"),
        payload: body,
        tail: get("x-stratus-tail").is_some(),
        client_context,
        request_id,
        trigger: get("x-stratus-trigger").as_deref().and_then(Trigger::parse).unwrap_or(Trigger::Api),
        trace: get("x-stratus-trace"),
    };
    Ok(Forwarded { account, version, request, stream })
}

/// The answer to a forwarded invocation: status, headers, body.
pub fn answer(result: Result<InvokeResult, LambdaError>) -> (u16, Vec<(&'static str, String)>, Bytes) {
    match result {
        Ok(r) => {
            let mut headers = vec![("x-stratus-executed-version", r.executed_version)];
            if let Some(e) = r.function_error {
                headers.push(("x-stratus-function-error", e.to_string()));
            }
            if let Some(t) = r.log_tail {
                headers.push(("x-stratus-log-tail", B64.encode(t)));
            }
            if let Some(ct) = r.content_type {
                headers.push(("x-stratus-content-type", ct));
            }
            (200, headers, r.payload)
        }
        Err(e) => {
            let mut headers = vec![("x-stratus-error", e.code.as_str().to_string())];
            if let Some(r) = e.reason {
                headers.push(("x-stratus-reason", r.as_str().to_string()));
            }
            (500, headers, Bytes::from(e.message))
        }
    }
}

/// A refusal of the hop itself (bad signature, unknown account).
pub fn refuse(why: &str) -> (u16, Vec<(&'static str, String)>, Bytes) {
    (403, vec![("x-stratus-error", ErrorCode::AccessDenied.as_str().to_string())], Bytes::from(why.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_is_received_and_a_tampered_one_refused() {
        let key = b"0123456789abcdef0123456789abcdef";
        let time = model::logfmt::now_ms();
        let body = Bytes::from_static(b"{\"a\":1}");
        let sig = signature(key, "n1", time, "rid", "111111111111/f/3", &body);
        let mut h: HashMap<String, String> = [
            ("x-stratus-node", "n1".to_string()),
            ("x-stratus-time", time.to_string()),
            ("x-stratus-signature", sig),
            ("x-stratus-account", "111111111111".into()),
            ("x-stratus-function", "f".into()),
            ("x-stratus-version", "3".into()),
            ("x-stratus-request-id", "rid".into()),
            ("x-stratus-qualifier", "live".into()),
            ("x-stratus-trigger", "esm".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let got = receive(key, &h, body.clone()).expect("accepted");
        assert_eq!((got.account.as_str(), got.version.as_str()), ("111111111111", "3"));
        assert_eq!(got.request.qualifier.as_deref(), Some("live"));
        assert_eq!(got.request.trigger, Trigger::Esm);
        assert!(receive(b"another key", &h, body.clone()).is_err(), "wrong key");
        assert!(receive(key, &h, Bytes::from_static(b"{\"a\":2}")).is_err(), "body changed");
        h.insert("x-stratus-version".into(), "4".into());
        assert!(receive(key, &h, body).is_err(), "target changed");
    }
}
