//! HTTP routes in the style of API Gateway HTTP APIs: `METHOD /path/{param}/{proxy+}` (or
//! `ANY`, or `$default`) mapped to a function, with payload format 2.0 or 1.0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::LambdaError;

pub const DEFAULT_ROUTE: &str = "$default";
const METHODS: &[&str] = &["ANY", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// One route, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// `GET /items/{id}`, `ANY /files/{proxy+}` or `$default`.
    pub route_key: String,
    pub function: String,
    /// A version or alias; `None` for `$LATEST`.
    pub qualifier: Option<String>,
    /// `2.0` (default) or `1.0`.
    pub payload_format: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

/// A parsed route key, ready to match requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey {
    /// `None` for `$default`.
    method: Option<String>,
    segments: Vec<Segment>,
    /// The path template (`/items/{id}`), `/{proxy+}`-like for `$default`.
    pub resource: String,
}

fn invalid(key: &str, why: &str) -> LambdaError {
    LambdaError::invalid_parameter(format!("Invalid route key {key:?}: {why}."))
}

impl RouteKey {
    pub fn parse(key: &str) -> Result<Self, LambdaError> {
        if key == DEFAULT_ROUTE {
            return Ok(Self { method: None, segments: Vec::new(), resource: "$default".into() });
        }
        let Some((method, path)) = key.split_once(' ') else {
            return Err(invalid(key, "expected `METHOD /path` or `$default`"));
        };
        if !METHODS.contains(&method) {
            return Err(invalid(key, &format!("the method must be one of {}", METHODS.join(", "))));
        }
        if !path.starts_with('/') || path.contains("//") || path.contains(char::is_whitespace) {
            return Err(invalid(key, "the path must start with / and have no empty segments"));
        }
        let mut segments = Vec::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let mut names = std::collections::HashSet::new();
        for (i, part) in parts.iter().enumerate() {
            let seg = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => {
                    let (name, greedy) = match inner.strip_suffix('+') {
                        Some(n) => (n, true),
                        None => (inner, false),
                    };
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                        return Err(invalid(key, &format!("bad parameter name {name:?}")));
                    }
                    if !names.insert(name.to_string()) {
                        return Err(invalid(key, &format!("parameter {name:?} appears twice")));
                    }
                    if greedy && i + 1 != parts.len() {
                        return Err(invalid(key, "a greedy {name+} parameter must be the last segment"));
                    }
                    if greedy { Segment::Greedy(name.into()) } else { Segment::Param(name.into()) }
                }
                None if part.contains(['{', '}']) => return Err(invalid(key, "a parameter must be a whole segment")),
                None => Segment::Literal((*part).to_string()),
            };
            segments.push(seg);
        }
        Ok(Self { method: Some(method.to_string()), segments, resource: path.to_string() })
    }

    pub fn is_default(&self) -> bool {
        self.method.is_none()
    }

    /// The path parameters if `method` and `path` (percent-decoded segments) match.
    pub fn matches(&self, method: &str, path: &str) -> Option<BTreeMap<String, String>> {
        let m = self.method.as_deref()?;
        if m != "ANY" && m != method {
            return None;
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let mut params = BTreeMap::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    params.insert(name.clone(), decode((*parts.get(i)?).to_string()));
                }
                Segment::Greedy(name) => {
                    let rest = parts.get(i..).filter(|r| !r.is_empty())?;
                    params.insert(name.clone(), decode(rest.join("/")));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }

    /// Higher is more specific: API Gateway prefers literal segments, then parameters, then
    /// greedy ones, and a named method over `ANY`.
    pub fn specificity(&self) -> (usize, usize, bool, bool) {
        let literals = self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        let params = self.segments.iter().filter(|s| matches!(s, Segment::Param(_))).count();
        let greedy = self.segments.iter().any(|s| matches!(s, Segment::Greedy(_)));
        (literals, params, !greedy, self.method.as_deref() != Some("ANY"))
    }
}

fn decode(s: String) -> String {
    percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

pub fn validate_payload_format(v: &str) -> Result<(), LambdaError> {
    if v == "2.0" || v == "1.0" {
        Ok(())
    } else {
        Err(LambdaError::invalid_parameter(format!("PayloadFormatVersion must be 2.0 or 1.0, not {v:?}.")))
    }
}

/// Picks the route for a request: the most specific match, else `$default`.
pub fn pick<'a, T>(
    routes: &'a [(RouteKey, T)],
    method: &str,
    path: &str,
) -> Option<(&'a RouteKey, &'a T, BTreeMap<String, String>)> {
    let mut best: Option<(&RouteKey, &T, BTreeMap<String, String>)> = None;
    for (key, value) in routes {
        if let Some(params) = key.matches(method, path)
            && best.as_ref().is_none_or(|(b, _, _)| key.specificity() > b.specificity())
        {
            best = Some((key, value, params));
        }
    }
    best.or_else(|| routes.iter().find(|(k, _)| k.is_default()).map(|(k, v)| (k, v, BTreeMap::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> Vec<(RouteKey, String)> {
        keys.iter().map(|k| (RouteKey::parse(k).unwrap(), (*k).to_string())).collect()
    }

    #[test]
    fn parses_and_rejects_route_keys() {
        for ok in ["$default", "GET /", "ANY /files/{proxy+}", "POST /items/{id}/tags/{tag}"] {
            assert!(RouteKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["GET", "FETCH /x", "GET x", "GET /a//b", "GET /{a}/{a}", "GET /{p+}/x", "GET /a{b}", "GET /{}"] {
            assert!(RouteKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = table(&[
            "$default",
            "ANY /items/{proxy+}",
            "GET /items/{id}",
            "GET /items/special",
            "ANY /items/{id}",
            "GET /",
        ]);
        let hit = |m: &str, p: &str| pick(&routes, m, p).map(|(_, v, params)| (v.clone(), params));
        assert_eq!(hit("GET", "/items/special").unwrap().0, "GET /items/special");
        let (route, params) = hit("GET", "/items/42").unwrap();
        assert_eq!((route.as_str(), params["id"].as_str()), ("GET /items/{id}", "42"));
        assert_eq!(hit("DELETE", "/items/42").unwrap().0, "ANY /items/{id}");
        let (route, params) = hit("GET", "/items/a/b%20c").unwrap();
        assert_eq!((route.as_str(), params["proxy"].as_str()), ("ANY /items/{proxy+}", "a/b c"));
        assert_eq!(hit("GET", "/").unwrap().0, "GET /");
        assert_eq!(hit("POST", "/elsewhere").unwrap().0, "$default");
        assert!(pick(&table(&["GET /a"]), "GET", "/b").is_none());
        assert!(pick(&table(&["ANY /x/{proxy+}"]), "GET", "/x").is_none(), "greedy needs a segment");
    }
}
