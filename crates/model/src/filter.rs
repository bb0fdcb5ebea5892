//! Lambda's event filtering (`FilterCriteria.Filters[].Pattern`): EventBridge's pattern
//! syntax, matched against one record of an event source mapping.
//!
//! A pattern is a JSON object. Its keys name fields of the record; a nested object matches a
//! nested object, and an array lists the values a field may have (any one is enough). Values
//! are literals or matchers: `{"prefix": …}`, `{"suffix": …}`, `{"equals-ignore-case": …}`,
//! `{"anything-but": …}` (a value, a list, or `{"prefix": …}`/`{"suffix": …}`),
//! `{"numeric": [">", 0, "<=", 5]}`, `{"exists": true|false}` and `{"wildcard": "a*b"}`.
//! A record field that is an array matches when any of its elements does.

use serde_json::{Map, Value};

/// A validated filter pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Map<String, Value>);

/// Patterns longer than this are refused (Lambda's limit).
pub const MAX_PATTERN_LEN: usize = 4096;

impl Pattern {
    /// Parses and validates a pattern; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("Invalid filter pattern definition: longer than {MAX_PATTERN_LEN} characters"));
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("Invalid filter pattern definition: not JSON ({e})"))?;
        let Value::Object(map) = v else {
            return Err("Invalid filter pattern definition: a pattern is a JSON object".into());
        };
        check_object(&map, "")?;
        Ok(Self(map))
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &Value) -> bool {
        match_object(&self.0, record)
    }
}

/// Whether `record` passes `filters`: no filters pass everything, otherwise any one must match.
pub fn passes(filters: &[Pattern], record: &Value) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(record))
}

fn check_object(map: &Map<String, Value>, path: &str) -> Result<(), String> {
    if map.is_empty() {
        return Err(format!("Invalid filter pattern definition: empty object at '{path}'"));
    }
    for (k, v) in map {
        let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match v {
            Value::Object(sub) => check_object(sub, &here)?,
            Value::Array(items) if !items.is_empty() => {
                for m in items {
                    check_matcher(m, &here)?;
                }
            }
            _ => {
                return Err(format!(
                    "Invalid filter pattern definition: '{here}' must be an object or a non-empty array of values"
                ));
            }
        }
    }
    Ok(())
}

fn check_matcher(m: &Value, path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("Invalid filter pattern definition: '{path}': {why}"));
    let Value::Object(o) = m else { return Ok(()) };
    if o.len() != 1 {
        return bad("a matcher object has exactly one key");
    }
    let (op, arg) = o.iter().next().expect("one key");
    match (op.as_str(), arg) {
        ("prefix" | "suffix" | "equals-ignore-case" | "wildcard", Value::String(_)) => Ok(()),
        ("exists", Value::Bool(_)) => Ok(()),
        ("anything-but", Value::String(_) | Value::Number(_) | Value::Bool(_)) => Ok(()),
        ("anything-but", Value::Array(items))
            if !items.is_empty() && items.iter().all(|i| i.is_string() || i.is_number()) =>
        {
            Ok(())
        }
        ("anything-but", Value::Object(inner))
            if inner.len() == 1
                && matches!(inner.iter().next(), Some((k, Value::String(_))) if k == "prefix" || k == "suffix") =>
        {
            Ok(())
        }
        ("numeric", Value::Array(items)) => {
            check_numeric(items).map_err(|why| format!("Invalid filter pattern definition: '{path}': {why}"))
        }
        _ => bad(&format!("unsupported matcher {op}: {arg}")),
    }
}

fn check_numeric(items: &[Value]) -> Result<(), String> {
    if items.is_empty() || !items.len().is_multiple_of(2) || items.len() > 4 {
        return Err("numeric takes one or two (operator, number) pairs".into());
    }
    for pair in items.chunks(2) {
        let op = pair[0].as_str().unwrap_or("");
        if !matches!(op, "<" | "<=" | "=" | ">" | ">=") {
            return Err(format!("unknown numeric operator {}", pair[0]));
        }
        if !pair[1].is_number() {
            return Err(format!("numeric operand {} is not a number", pair[1]));
        }
    }
    Ok(())
}

fn match_object(pattern: &Map<String, Value>, record: &Value) -> bool {
    pattern.iter().all(|(k, p)| {
        let field = record.as_object().and_then(|o| o.get(k));
        match p {
            Value::Object(sub) => field.is_some_and(|f| match f {
                Value::Array(items) => items.iter().any(|i| match_object(sub, i)),
                other => match_object(sub, other),
            }),
            Value::Array(matchers) => matchers.iter().any(|m| match_field(m, field)),
            _ => false,
        }
    })
}

fn match_field(m: &Value, field: Option<&Value>) -> bool {
    if let Some(Value::Bool(want)) = m.as_object().and_then(|o| o.get("exists")) {
        return *want == field.is_some();
    }
    match field {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|i| match_value(m, i)),
        Some(v) => match_value(m, v),
    }
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn match_value(m: &Value, v: &Value) -> bool {
    let Value::Object(o) = m else { return numbers_equal(m, v) };
    let Some((op, arg)) = o.iter().next() else { return false };
    let s = v.as_str();
    match op.as_str() {
        "prefix" => s.zip(arg.as_str()).is_some_and(|(s, p)| s.starts_with(p)),
        "suffix" => s.zip(arg.as_str()).is_some_and(|(s, p)| s.ends_with(p)),
        "equals-ignore-case" => s.zip(arg.as_str()).is_some_and(|(s, p)| s.to_lowercase() == p.to_lowercase()),
        "wildcard" => s.zip(arg.as_str()).is_some_and(|(s, p)| wildcard(p, s)),
        "anything-but" => match arg {
            Value::Array(items) => !items.iter().any(|i| numbers_equal(i, v)),
            Value::Object(inner) => match inner.iter().next() {
                Some((k, Value::String(p))) if k == "prefix" => s.is_some_and(|s| !s.starts_with(p.as_str())),
                Some((k, Value::String(p))) if k == "suffix" => s.is_some_and(|s| !s.ends_with(p.as_str())),
                _ => false,
            },
            other => !numbers_equal(other, v),
        },
        "numeric" => {
            let (Some(x), Value::Array(items)) = (v.as_f64(), arg) else { return false };
            items.chunks(2).all(|pair| {
                let n = pair[1].as_f64().unwrap_or(f64::NAN);
                match pair[0].as_str() {
                    Some("<") => x < n,
                    Some("<=") => x <= n,
                    Some("=") => x == n,
                    Some(">") => x > n,
                    Some(">=") => x >= n,
                    _ => false,
                }
            })
        }
        _ => false,
    }
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(p: &str, v: Value) -> bool {
        Pattern::parse(p).unwrap().matches(&v)
    }

    #[test]
    fn matchers() {
        let rec = json!({"data": {"kind": "order", "total": 42, "tags": ["a", "b"], "city": "Paris"}, "subject": "orders.eu"});
        assert!(m(r#"{"data": {"kind": ["order"]}}"#, rec.clone()));
        assert!(!m(r#"{"data": {"kind": ["refund"]}}"#, rec.clone()));
        assert!(m(r#"{"data": {"total": [{"numeric": [">", 40, "<=", 42]}]}}"#, rec.clone()));
        assert!(!m(r#"{"data": {"total": [{"numeric": [">", 42]}]}}"#, rec.clone()));
        assert!(m(r#"{"data": {"total": [42.0]}}"#, rec.clone()));
        assert!(m(r#"{"data": {"tags": ["b"]}}"#, rec.clone()));
        assert!(m(r#"{"subject": [{"prefix": "orders."}]}"#, rec.clone()));
        assert!(m(r#"{"subject": [{"suffix": ".eu"}]}"#, rec.clone()));
        assert!(m(r#"{"subject": [{"wildcard": "orders.*"}]}"#, rec.clone()));
        assert!(m(r#"{"data": {"city": [{"equals-ignore-case": "PARIS"}]}}"#, rec.clone()));
        assert!(m(r#"{"data": {"city": [{"anything-but": ["Rome", "Oslo"]}]}}"#, rec.clone()));
        assert!(!m(r#"{"data": {"city": [{"anything-but": {"prefix": "Pa"}}]}}"#, rec.clone()));
        assert!(m(r#"{"data": {"missing": [{"exists": false}]}}"#, rec.clone()));
        assert!(!m(r#"{"data": {"city": [{"exists": false}]}}"#, rec.clone()));
        assert!(m(r#"{"data": {"kind": ["order"], "city": ["Paris"]}}"#, rec.clone()));
        assert!(!m(r#"{"data": {"kind": ["order"], "city": ["Rome"]}}"#, rec.clone()));
        // A string never equals a number.
        assert!(!m(r#"{"data": {"total": ["42"]}}"#, rec));
    }

    #[test]
    fn invalid_patterns_say_why() {
        for bad in [
            "[1]",
            "{}",
            r#"{"a": 1}"#,
            r#"{"a": []}"#,
            r#"{"a": [{"numeric": [">"]}]}"#,
            r#"{"a": [{"bogus": 1}]}"#,
            "not json",
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.starts_with("Invalid filter pattern definition"), "{bad}: {e}");
        }
    }

    #[test]
    fn no_filters_pass_everything() {
        let f = vec![Pattern::parse(r#"{"a": ["x"]}"#).unwrap(), Pattern::parse(r#"{"a": ["y"]}"#).unwrap()];
        assert!(passes(&[], &json!({})));
        assert!(passes(&f, &json!({"a": "y"})));
        assert!(!passes(&f, &json!({"a": "z"})));
    }
}
