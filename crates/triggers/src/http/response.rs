//! What a function's result becomes on the wire (docs/lambda-contract.md §4.1 "Handler
//! response contract", §4.2).

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

/// An HTTP answer built from a function's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Header name and value pairs, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Why a result cannot be turned into an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

fn decode_body(body: Option<&Value>, base64: bool) -> Result<Bytes, Malformed> {
    let text = match body {
        None | Some(Value::Null) => return Ok(Bytes::new()),
        Some(Value::String(s)) => s.clone(),
        // A body that is not a string is passed as its JSON text.
        Some(other) => other.to_string(),
    };
    if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Bytes::from)
            .map_err(|_| Malformed("isBase64Encoded is true but body is not base64".into()))
    } else {
        Ok(Bytes::from(text))
    }
}

fn header_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn status_of(v: &Value) -> Result<u16, Malformed> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|n| (100..=599).contains(n))
        .ok_or_else(|| Malformed(format!("statusCode {v} is not an HTTP status")))
}

/// Payload format 2.0 (and function URLs): a structured response when the result is an object
/// with `statusCode`; otherwise any JSON value is the body of a 200 `application/json` answer,
/// a JSON string without its quotes.
pub fn v2(payload: &[u8]) -> Result<Answer, Malformed> {
    if let Some(answer) = v2_as_is(payload) {
        return Ok(answer);
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|_| Malformed("the function's result is not JSON".into()))?;
    let structured = value.as_object().filter(|o| o.contains_key("statusCode"));
    let Some(obj) = structured else {
        let body = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        return Ok(Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body),
        });
    };
    let status = status_of(&obj["statusCode"])?;
    let mut headers = Vec::new();
    if let Some(h) = obj.get("headers") {
        let Some(map) = h.as_object() else { return Err(Malformed("headers is not an object".into())) };
        for (k, v) in map {
            headers.push((k.to_ascii_lowercase(), header_text(v)));
        }
    }
    if let Some(c) = obj.get("cookies").filter(|c| !c.is_null()) {
        let Some(list) = c.as_array() else { return Err(Malformed("cookies is not a list".into())) };
        for cookie in list {
            headers.push(("set-cookie".into(), header_text(cookie)));
        }
    }
    if !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let base64 = obj.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false);
    let body = decode_body(obj.get("body"), base64)?;
    Ok(Answer { status, headers, body })
}

/// The common case without building the value: a compact JSON object without `statusCode`
/// (or a compact array, number, boolean or null) is already the body AWS would send.
fn v2_as_is(payload: &[u8]) -> Option<Answer> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "statusCode")]
        status_code: Option<serde::de::IgnoredAny>,
    }
    let first = *payload.first()?;
    if payload.iter().any(|b| b.is_ascii_whitespace()) || first == b'"' {
        return None;
    }
    let plain = if first == b'{' {
        serde_json::from_slice::<Probe>(payload).ok().is_some_and(|p| p.status_code.is_none())
    } else {
        serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
    };
    plain.then(|| Answer {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::copy_from_slice(payload),
    })
}

/// Payload format 1.0: the result must be an object with `statusCode`; `headers` and
/// `multiValueHeaders` are merged.
pub fn v1(payload: &[u8]) -> Result<Answer, Malformed> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|_| Malformed("the function's result is not JSON".into()))?;
    let Some(obj) = value.as_object() else { return Err(Malformed("the result is not an object".into())) };
    let Some(code) = obj.get("statusCode") else { return Err(Malformed("the result has no statusCode".into())) };
    let status = status_of(code)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(map) = obj.get("multiValueHeaders").and_then(Value::as_object) {
        for (k, vs) in map {
            for v in vs.as_array().into_iter().flatten() {
                headers.push((k.to_ascii_lowercase(), header_text(v)));
            }
        }
    }
    if let Some(map) = obj.get("headers").and_then(Value::as_object) {
        for (k, v) in map {
            let name = k.to_ascii_lowercase();
            if !headers.iter().any(|(n, _)| *n == name) {
                headers.push((name, header_text(v)));
            }
        }
    }
    let base64 = obj.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false);
    let body = decode_body(obj.get("body"), base64)?;
    Ok(Answer { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(a: &Answer) -> &str {
        std::str::from_utf8(&a.body).unwrap()
    }

    #[test]
    fn v2_infers_answers_from_plain_results_as_recorded_on_aws() {
        for (result, expected) in [
            (r#"{"hello": "world"}"#, r#"{"hello":"world"}"#),
            (r#"["hello", 3, true]"#, r#"["hello",3,true]"#),
            ("3", "3"),
            ("true", "true"),
            (r#""hello""#, "hello"),
            (r#"{"statusCode": 200, "body": "body123"}"#, "body123"),
        ] {
            let a = v2(result.as_bytes()).unwrap();
            assert_eq!((a.status, body(&a)), (200, expected), "{result}");
            assert!(a.headers.contains(&("content-type".into(), "application/json".into())), "{result}");
        }
    }

    #[test]
    fn compact_results_pass_as_they_are_and_others_are_compacted() {
        assert_eq!(v2_as_is(br#"{"a":[1,2],"b":{"c":null}}"#).unwrap().body, &br#"{"a":[1,2],"b":{"c":null}}"#[..]);
        assert!(v2_as_is(br#"{"statusCode":200}"#).is_none(), "structured");
        assert!(v2_as_is(br#"{"a": 1}"#).is_none(), "not compact");
        assert!(v2_as_is(br#""s""#).is_none(), "strings lose their quotes");
        assert!(v2_as_is(b"{broken").is_none());
        assert_eq!(v2(br#"{"a": 1}"#).unwrap().body, &br#"{"a":1}"#[..]);
    }

    #[test]
    fn v2_structured_answers() {
        let a = v2(br#"{"statusCode": 201, "headers": {"Content-Type": "text/plain", "X-N": 5},
                       "cookies": ["a=1", "b=2; Max-Age=60"], "body": "aGk=", "isBase64Encoded": true}"#)
        .unwrap();
        assert_eq!(a.status, 201);
        assert_eq!(body(&a), "hi");
        assert_eq!(
            a.headers,
            [
                ("content-type".to_string(), "text/plain".to_string()),
                ("x-n".into(), "5".into()),
                ("set-cookie".into(), "a=1".into()),
                ("set-cookie".into(), "b=2; Max-Age=60".into())
            ]
        );
        assert!(v2(br#"{"statusCode": "abc"}"#).is_err());
        assert!(v2(br#"{"statusCode": 99}"#).is_err());
        assert!(v2(b"not json").is_err());
        assert!(v2(br#"{"statusCode": 200, "body": "%%%", "isBase64Encoded": true}"#).is_err());
    }

    #[test]
    fn v1_requires_status_and_merges_header_maps() {
        assert!(v1(br#"{"body": "x"}"#).is_err());
        let a = v1(br#"{"statusCode": 404, "headers": {"A": "1", "B": "x"},
                       "multiValueHeaders": {"B": ["2", "3"]}, "body": "nope"}"#)
        .unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.headers, [("b".to_string(), "2".to_string()), ("b".into(), "3".into()), ("a".into(), "1".into())]);
        assert_eq!(body(&a), "nope");
    }
}
