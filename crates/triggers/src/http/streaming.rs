//! Function URLs in `RESPONSE_STREAM` mode: the response reaches the client as the function
//! writes it. A runtime that streams with `application/vnd.awslambda.http-integration-response`
//! first writes a JSON prelude (`statusCode`, `headers`, `cookies`) and eight NUL bytes, then
//! the body (docs/lambda-contract.md §1.4); any other streamed content type is the body of a
//! 200 answer. A runtime that answers in one piece is answered as in `BUFFERED` mode.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use invoke::StreamMsg;
use model::invoke::InvokeRequest;
use tokio::sync::mpsc;

use super::{Failure, Flavor, Front, buffered, error_type_of, failure, invoke_failure, response};

pub const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";
/// The most bytes of prelude read while looking for its end.
const MAX_PRELUDE: usize = 64 * 1024;
const DELIMITER: [u8; 8] = [0; 8];

pub(crate) async fn answer(
    front: &Front,
    flavor: Flavor,
    req: InvokeRequest,
    parse: fn(&[u8]) -> Result<response::Answer, response::Malformed>,
) -> Response {
    let function = req.function.clone();
    let request_id = req.request_id.clone();
    let mut streamed = match front.inner.invoker.invoke_stream(req).await {
        Ok(s) => s,
        Err(e) => return failure(flavor, invoke_failure(flavor, &e)),
    };
    if !streamed.streamed {
        // Answered in one piece: a chunk (unless it failed), then the end.
        let mut payload = BytesMut::new();
        let mut error = None;
        while let Some(msg) = streamed.messages.recv().await {
            match msg {
                StreamMsg::Chunk(data) => payload.extend_from_slice(&data),
                StreamMsg::End { error: e, .. } => error = e.map(|(t, body)| Some(t).or_else(|| error_type_of(&body))),
                StreamMsg::Start { .. } => {}
            }
        }
        return buffered(flavor, &function, &request_id, &payload, error, parse);
    }
    let integration = streamed.content_type.as_deref() == Some(HTTP_INTEGRATION);
    if !integration {
        let ct = streamed.content_type.clone().unwrap_or_else(|| "application/octet-stream".into());
        let mut resp = (StatusCode::OK, body_of(Bytes::new(), streamed.messages)).into_response();
        if let Ok(v) = HeaderValue::from_str(&ct) {
            resp.headers_mut().insert("content-type", v);
        }
        return resp;
    }
    // Read up to the end of the prelude.
    let mut head = BytesMut::new();
    let split = loop {
        if let Some(i) = head.windows(DELIMITER.len()).position(|w| w == DELIMITER) {
            break i;
        }
        if head.len() > MAX_PRELUDE {
            tracing::info!(function, request_id, "streamed HTTP response without the end of its prelude");
            return failure(flavor, Failure::FunctionError);
        }
        match streamed.messages.recv().await {
            Some(StreamMsg::Chunk(data)) => head.extend_from_slice(&data),
            Some(StreamMsg::End { error: Some((error_type, _)), .. }) => {
                let f = if error_type == "Sandbox.Timedout" { Failure::Timeout } else { Failure::FunctionError };
                return failure(flavor, f);
            }
            _ => {
                tracing::info!(function, request_id, "streamed HTTP response ended inside its prelude");
                return failure(flavor, Failure::FunctionError);
            }
        }
    };
    let rest = head.split_off(split + DELIMITER.len());
    head.truncate(split);
    let prelude = match prelude(&head) {
        Ok(p) => p,
        Err(why) => {
            tracing::info!(function, request_id, why, "malformed streamed HTTP prelude");
            return failure(flavor, Failure::FunctionError);
        }
    };
    let status = StatusCode::from_u16(prelude.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, body_of(rest.freeze(), streamed.messages)).into_response();
    let h = resp.headers_mut();
    h.remove("content-type");
    for (name, value) in prelude.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            h.append(n, v);
        }
    }
    if !h.contains_key("content-type") {
        h.insert("content-type", HeaderValue::from_static("application/octet-stream"));
    }
    resp
}

struct Prelude {
    status: u16,
    headers: Vec<(String, String)>,
}

fn prelude(json: &[u8]) -> Result<Prelude, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let status = match v.get("statusCode") {
        None => 200,
        Some(s) => s
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..=599).contains(n))
            .ok_or("bad statusCode")?,
    };
    let mut headers = Vec::new();
    if let Some(map) = v.get("headers").and_then(|h| h.as_object()) {
        for (k, val) in map {
            headers.push((k.to_ascii_lowercase(), val.as_str().map_or_else(|| val.to_string(), str::to_string)));
        }
    }
    for c in v.get("cookies").and_then(|c| c.as_array()).into_iter().flatten() {
        if let Some(c) = c.as_str() {
            headers.push(("set-cookie".into(), c.to_string()));
        }
    }
    Ok(Prelude { status, headers })
}

/// The rest of a streamed response as a body. A function error mid-stream breaks the body off
/// (the client sees an incomplete response) since the status has already been sent.
fn body_of(first: Bytes, messages: mpsc::Receiver<StreamMsg>) -> Body {
    let first = (!first.is_empty()).then_some(first);
    let stream = futures_util::stream::unfold((first, messages), |(first, mut rx)| async move {
        if let Some(f) = first {
            return Some((Ok(f), (None, rx)));
        }
        loop {
            match rx.recv().await? {
                StreamMsg::Chunk(data) if data.is_empty() => continue,
                StreamMsg::Chunk(data) => return Some((Ok(data), (None, rx))),
                StreamMsg::End { error: None, .. } => return None,
                StreamMsg::End { error: Some((error_type, _)), .. } => {
                    let e = std::io::Error::other(format!("the function failed mid-stream: {error_type}"));
                    return Some((Err(e), (None, rx)));
                }
                StreamMsg::Start { .. } => continue,
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preludes() {
        let p = prelude(br#"{"statusCode": 201, "headers": {"X-A": "1"}, "cookies": ["c=1"]}"#).unwrap();
        assert_eq!(p.status, 201);
        assert_eq!(p.headers, [("x-a".to_string(), "1".to_string()), ("set-cookie".into(), "c=1".into())]);
        assert_eq!(prelude(b"{}").unwrap().status, 200);
        assert!(prelude(br#"{"statusCode": 1000}"#).is_err());
        assert!(prelude(b"nope").is_err());
    }
}
