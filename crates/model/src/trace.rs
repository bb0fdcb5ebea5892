//! Trace context: AWS's `X-Amzn-Trace-Id` (`Root=1-<8 hex time>-<24 hex>;Parent=<16 hex>;
//! Sampled=0|1`), which Lambda hands each invocation as `_X_AMZN_TRACE_ID`, and its W3C /
//! OpenTelemetry reading (the 32 hex digits of the root are the trace id, as AWS's X-Ray
//! propagator maps them).

/// One invocation's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The caller's span (16 hex digits), if it sent one.
    pub parent: Option<String>,
    pub sampled: bool,
    /// How many invocations led here (`Lineage=<hash>:<n>`, Lambda's recursive-loop count);
    /// 0 when the caller sent none.
    pub depth: u32,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn random_hex(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

/// A new span id (16 hex digits, never all zeros).
pub fn new_span_id() -> String {
    loop {
        let id = random_hex(16);
        if id.bytes().any(|b| b != b'0') {
            return id;
        }
    }
}

impl TraceContext {
    /// A new trace, its id starting with the time as X-Ray's do.
    pub fn new(now_secs: u64, sampled: bool) -> Self {
        Self { trace_id: format!("{:08x}{}", now_secs as u32, random_hex(24)), parent: None, sampled, depth: 0 }
    }

    /// Reads an `X-Amzn-Trace-Id` header; `None` if it has no valid root.
    pub fn parse(header: &str) -> Option<Self> {
        let (mut root, mut parent, mut sampled, mut depth) = (None, None, None, 0);
        for part in header.split(';') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Root" => {
                    let mut it = v.split('-');
                    let (version, time, rest) = (it.next()?, it.next()?, it.next()?);
                    if version != "1" || !is_hex(time, 8) || !is_hex(rest, 24) || it.next().is_some() {
                        return None;
                    }
                    root = Some(format!("{time}{rest}").to_ascii_lowercase());
                }
                "Parent" if is_hex(v, 16) => parent = Some(v.to_ascii_lowercase()),
                "Sampled" => sampled = Some(v == "1"),
                "Lineage" => depth = v.rsplit(':').next().and_then(|n| n.parse().ok()).unwrap_or(0),
                _ => {}
            }
        }
        Some(Self { trace_id: root?, parent, sampled: sampled.unwrap_or(false), depth })
    }

    /// The `X-Amzn-Trace-Id` / `_X_AMZN_TRACE_ID` form, with `parent` as the parent span.
    /// With a depth, it ends in `;Lineage=<8 hex of the trace>:<depth>` as Lambda's does.
    pub fn header(&self, parent: &str) -> String {
        let mut h = format!(
            "Root=1-{}-{};Parent={parent};Sampled={}",
            &self.trace_id[..8],
            &self.trace_id[8..],
            if self.sampled { 1 } else { 0 }
        );
        if self.depth > 0 {
            h.push_str(&format!(";Lineage={}:{}", &self.trace_id[24..], self.depth));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amazon_trace_headers_round_trip() {
        let t =
            TraceContext::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1").unwrap();
        assert_eq!(t.trace_id, "5759e988bd862e3fe1be46a994272793");
        assert_eq!(t.parent.as_deref(), Some("53995c3f42cd8ad8"));
        assert!(t.sampled);
        assert_eq!(
            t.header("0123456789abcdef"),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0123456789abcdef;Sampled=1"
        );
        assert!(TraceContext::parse("Root=1-xyz-abc").is_none());
        assert!(TraceContext::parse("Parent=53995c3f42cd8ad8").is_none());
        let fresh = TraceContext::new(0x5759e988, false);
        assert!(fresh.trace_id.starts_with("5759e988") && fresh.trace_id.len() == 32);
        assert!(TraceContext::parse(&fresh.header(&new_span_id())).is_some());
        let deep =
            TraceContext::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0;Lineage=a994272793:3").unwrap();
        assert_eq!(deep.depth, 3);
        assert!(deep.header("0123456789abcdef").ends_with(";Lineage=94272793:3"));
        assert_eq!(TraceContext::parse(&deep.header("0123456789abcdef")).unwrap().depth, 3);
    }
}
