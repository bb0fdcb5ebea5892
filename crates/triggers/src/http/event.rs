//! The events an HTTP request becomes: API Gateway's payload format 2.0 (also the function URL
//! event) and 1.0 (docs/lambda-contract.md §4.1, §4.2).
//!
//! Written with `serde_json` rather than `aws_lambda_events`: its `ApiGatewayV2httpRequest`
//! also models authorizer requests, and serializing it adds members AWS never sends
//! (`type`, `methodArn`, `httpMethod`, …) and drops the `null`s AWS does send.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method};
use base64::Engine;
use serde_json::{Value, json};

/// What the event needs to know about the request, beyond its headers and body.
#[derive(Debug, Clone)]
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    /// The path as received (percent-encoded as the client sent it).
    pub raw_path: &'a str,
    /// The query string as received, without `?`.
    pub raw_query: &'a str,
    pub protocol: &'a str,
    pub source_ip: String,
    pub request_id: &'a str,
    pub now_ms: i64,
}

/// Where the request arrived: a function URL or a route of the HTTP API.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The account of the function; `anonymous` for unauthenticated URL calls.
    pub account_id: &'a str,
    pub api_id: &'a str,
    pub domain_name: &'a str,
    /// `$default`, or the matched route's key (`GET /items/{id}`).
    pub route_key: &'a str,
    /// The matched route's path template (payload 1.0's `resource`).
    pub resource: &'a str,
    pub path_parameters: &'a BTreeMap<String, String>,
}

/// True for content types whose bodies are passed as text rather than base64.
pub fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "application/yaml"
                | "application/x-yaml"
        )
}

/// The body as the event carries it, and whether it is base64.
fn body_of(headers: &HeaderMap, body: &[u8]) -> (Option<String>, bool) {
    if body.is_empty() {
        return (None, false);
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    match std::str::from_utf8(body) {
        Ok(text) if is_text(ct) => (Some(text.to_string()), false),
        _ => (Some(base64::engine::general_purpose::STANDARD.encode(body)), true),
    }
}

/// Header values by lower-cased name, in arrival order.
fn header_values(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        out.entry(name.as_str().to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// Query parameters, decoded, values by name in order.
fn query_values(raw: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode_component(k)).or_default().push(decode_component(v));
    }
    out
}

fn decode_component(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// `12/Mar/2020:19:03:58 +0000`.
fn clf_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    t.format(&fmt).unwrap_or_default()
}

fn user_agent(headers: &HeaderMap) -> String {
    headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

fn domain_prefix(domain: &str) -> &str {
    domain.split('.').next().unwrap_or(domain)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct V2<'a> {
    version: &'static str,
    route_key: &'a str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    query_string_parameters: BTreeMap<String, String>,
    request_context: V2Context<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    path_parameters: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    is_base64_encoded: bool,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Context<'a> {
    account_id: &'a str,
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: V2Http<'a>,
    request_id: &'a str,
    route_key: &'a str,
    stage: &'static str,
    time: String,
    time_epoch: i64,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Http<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    source_ip: &'a str,
    user_agent: &'a str,
}

/// Payload format 2.0: function URLs, and HTTP routes by default. Serialized straight to
/// bytes (this is on every HTTP request's path).
pub fn v2(req: &RequestInfo<'_>, target: &Target<'_>, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut cookies = Vec::new();
    let mut hmap: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = std::str::from_utf8(value.as_bytes()).unwrap_or("");
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()));
            continue;
        }
        match hmap.entry(name.as_str().to_string()) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(value.to_string());
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let joined = o.get_mut();
                joined.push(',');
                joined.push_str(value);
            }
        }
    }
    let query = query_values(req.raw_query).into_iter().map(|(k, v)| (k, v.join(","))).collect();
    let (body, b64) = body_of(headers, body);
    let ua = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
    let event = V2 {
        version: "2.0",
        route_key: target.route_key,
        raw_path: req.raw_path,
        raw_query_string: req.raw_query,
        cookies,
        headers: hmap,
        query_string_parameters: query,
        request_context: V2Context {
            account_id: target.account_id,
            api_id: target.api_id,
            domain_name: target.domain_name,
            domain_prefix: domain_prefix(target.domain_name),
            http: V2Http {
                method: req.method.as_str(),
                path: req.raw_path,
                protocol: req.protocol,
                source_ip: &req.source_ip,
                user_agent: ua,
            },
            request_id: req.request_id,
            route_key: target.route_key,
            stage: "$default",
            time: clf_time(req.now_ms),
            time_epoch: req.now_ms,
        },
        path_parameters: target.path_parameters,
        body,
        is_base64_encoded: b64,
    };
    serde_json::to_vec(&event).unwrap_or_default()
}

/// Payload format 1.0 (the REST API proxy shape), for routes that ask for it.
pub fn v1(req: &RequestInfo<'_>, target: &Target<'_>, headers: &HeaderMap, body: &[u8]) -> Value {
    let hv = header_values(headers);
    let single = |m: &BTreeMap<String, Vec<String>>| -> Value {
        if m.is_empty() {
            return Value::Null;
        }
        Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v.last().cloned().unwrap_or_default()))).collect())
    };
    let multi = |m: &BTreeMap<String, Vec<String>>| -> Value { if m.is_empty() { Value::Null } else { json!(m) } };
    let query = query_values(req.raw_query);
    let (body, b64) = body_of(headers, body);
    let path_parameters = if target.path_parameters.is_empty() { Value::Null } else { json!(target.path_parameters) };
    json!({
        "version": "1.0",
        "resource": target.resource,
        "path": req.raw_path,
        "httpMethod": req.method.as_str(),
        "headers": single(&hv),
        "multiValueHeaders": multi(&hv),
        "queryStringParameters": single(&query),
        "multiValueQueryStringParameters": multi(&query),
        "requestContext": {
            "accountId": target.account_id,
            "apiId": target.api_id,
            "domainName": target.domain_name,
            "domainPrefix": domain_prefix(target.domain_name),
            "extendedRequestId": req.request_id,
            "httpMethod": req.method.as_str(),
            "identity": {
                "accessKey": null,
                "accountId": null,
                "caller": null,
                "cognitoAuthenticationProvider": null,
                "cognitoAuthenticationType": null,
                "cognitoIdentityId": null,
                "cognitoIdentityPoolId": null,
                "principalOrgId": null,
                "sourceIp": req.source_ip,
                "user": null,
                "userAgent": user_agent(headers),
                "userArn": null,
            },
            "path": req.raw_path,
            "protocol": req.protocol,
            "requestId": req.request_id,
            "requestTime": clf_time(req.now_ms),
            "requestTimeEpoch": req.now_ms,
            "resourceId": target.route_key,
            "resourcePath": target.resource,
            "stage": "$default",
        },
        "pathParameters": path_parameters,
        "stageVariables": null,
        "body": body,
        "isBase64Encoded": b64,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn info<'a>(method: &'a Method, path: &'a str, query: &'a str) -> RequestInfo<'a> {
        RequestInfo {
            method,
            raw_path: path,
            raw_query: query,
            protocol: "HTTP/1.1",
            source_ip: "127.0.0.1".into(),
            request_id: "rid",
            now_ms: 1_583_348_638_390,
        }
    }

    #[test]
    fn v2_joins_duplicates_moves_cookies_and_decodes_the_query() {
        let m = Method::POST;
        let params = BTreeMap::new();
        let target = Target {
            account_id: "anonymous",
            api_id: "abc",
            domain_name: "abc.lambda-url.us-east-1.localhost",
            route_key: "$default",
            resource: "/",
            path_parameters: &params,
        };
        let h = headers(&[
            ("X-Multi", "1"),
            ("x-multi", "2"),
            ("Cookie", "c1=v1; c2=v2"),
            ("content-type", "application/json"),
            ("User-Agent", "ua"),
        ]);
        let e: Value =
            serde_json::from_slice(&v2(&info(&m, "/my/path", "a=1&a=2&b=x%20y"), &target, &h, b"{\"k\":1}")).unwrap();
        assert_eq!(e["headers"]["x-multi"], "1,2");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["c1=v1", "c2=v2"]));
        assert_eq!(e["queryStringParameters"], json!({"a": "1,2", "b": "x y"}));
        assert_eq!(e["rawQueryString"], "a=1&a=2&b=x%20y");
        assert_eq!(e["body"], "{\"k\":1}");
        assert_eq!(e["isBase64Encoded"], false);
        assert_eq!(e["requestContext"]["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(e["requestContext"]["http"]["userAgent"], "ua");
        assert_eq!(e["requestContext"]["domainPrefix"], "abc");
        assert!(e.get("pathParameters").is_none() && e.get("stageVariables").is_none());
    }

    #[test]
    fn binary_bodies_are_base64() {
        let m = Method::PUT;
        let params = BTreeMap::new();
        let target = Target {
            account_id: "1",
            api_id: "a",
            domain_name: "d",
            route_key: "$default",
            resource: "/",
            path_parameters: &params,
        };
        let h = headers(&[("content-type", "image/png")]);
        let e: Value = serde_json::from_slice(&v2(&info(&m, "/", ""), &target, &h, &[0x89, b'P', b'N', b'G'])).unwrap();
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "iVBORw==");
        assert!(is_text(Some("application/vnd.api+json; charset=utf-8")) && !is_text(Some("application/octet-stream")));
    }

    #[test]
    fn v1_has_single_and_multi_value_maps_and_nulls() {
        let m = Method::GET;
        let mut params = BTreeMap::new();
        params.insert("id".to_string(), "7".to_string());
        let target = Target {
            account_id: "000000000000",
            api_id: "api",
            domain_name: "127.0.0.1",
            route_key: "GET /items/{id}",
            resource: "/items/{id}",
            path_parameters: &params,
        };
        let h = headers(&[("accept", "a"), ("accept", "b")]);
        let e = v1(&info(&m, "/items/7", "q=1&q=2"), &target, &h, b"");
        assert_eq!(e["headers"]["accept"], "b");
        assert_eq!(e["multiValueHeaders"]["accept"], json!(["a", "b"]));
        assert_eq!(e["queryStringParameters"]["q"], "2");
        assert_eq!(e["multiValueQueryStringParameters"]["q"], json!(["1", "2"]));
        assert_eq!(e["pathParameters"]["id"], "7");
        assert_eq!(e["body"], Value::Null);
        assert_eq!(e["resource"], "/items/{id}");
        assert_eq!(e["requestContext"]["resourcePath"], "/items/{id}");
    }
}
