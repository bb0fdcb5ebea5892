//! Records written straight to JSON text: the hot path of a busy source.

use std::fmt::Write;

use base64::Engine;

/// A JSON object being written.
pub(crate) struct Obj {
    out: String,
    /// Whether the object being written has no member yet (innermost last).
    empty: Vec<bool>,
}

impl Obj {
    /// An object of about `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Self { out, empty: vec![true] }
    }

    /// Starts a member; `key` is one of the records' own (plain ASCII, written as it is).
    fn key(&mut self, key: &str) -> &mut String {
        debug_assert!(!key.bytes().any(needs_escape), "{key}");
        self.comma();
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        &mut self.out
    }

    fn comma(&mut self) {
        if let Some(empty) = self.empty.last_mut()
            && !std::mem::replace(empty, false)
        {
            self.out.push(',');
        }
    }

    /// Members rendered once (by [`Obj::rendered`]), for what every record of a mapping shares.
    pub(crate) fn members(&mut self, rendered: &str) -> &mut Self {
        if !rendered.is_empty() {
            self.comma();
            self.out.push_str(rendered);
        }
        self
    }

    /// The members written so far, as text for [`Obj::members`].
    pub(crate) fn rendered(self) -> String {
        self.out[1..].to_string()
    }

    /// `"key": "value"` where the key is data (a stream entry's field name).
    pub(crate) fn field(&mut self, key: &str, value: &str) -> &mut Self {
        self.comma();
        push_str(&mut self.out, key);
        self.out.push(':');
        push_str(&mut self.out, value);
        self
    }

    /// `"key": "<base64 of bytes>"` where the key is data.
    pub(crate) fn field_b64(&mut self, key: &str, bytes: &[u8]) -> &mut Self {
        self.comma();
        push_str(&mut self.out, key);
        self.out.push(':');
        push_b64(&mut self.out, bytes);
        self
    }

    /// `"key": "value"`.
    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        push_str(self.key(key), value);
        self
    }

    /// `"key": "<a><b>"`: one string from two parts (`stream:sequence` ids).
    pub(crate) fn str2(&mut self, key: &str, a: &str, sep: char, b: &str) -> &mut Self {
        let out = self.key(key);
        out.push('"');
        push_contents(out, a);
        out.push(sep);
        push_contents(out, b);
        out.push('"');
        self
    }

    /// `"key": "<base64 of bytes>"`.
    pub(crate) fn b64(&mut self, key: &str, bytes: &[u8]) -> &mut Self {
        push_b64(self.key(key), bytes);
        self
    }

    /// `"key": 12` (or any number, boolean or `null` written by `Display`).
    pub(crate) fn num(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    /// `"key": 1700000000.123`: Unix milliseconds as seconds with three decimals.
    pub(crate) fn seconds(&mut self, key: &str, ms: i64) -> &mut Self {
        let sign = if ms < 0 { "-" } else { "" };
        let abs = ms.unsigned_abs();
        let _ = write!(self.key(key), "{sign}{}.{:03}", abs / 1000, abs % 1000);
        self
    }

    /// `"key": <JSON text>`, already valid JSON.
    pub(crate) fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    /// Opens `"key": {…}`; closed by [`Obj::end`].
    pub(crate) fn begin(&mut self, key: &str) -> &mut Self {
        self.key(key).push('{');
        self.empty.push(true);
        self
    }

    /// Closes the object [`Obj::begin`] opened.
    pub(crate) fn end(&mut self) -> &mut Self {
        self.out.push('}');
        self.empty.pop();
        self
    }

    pub(crate) fn finish(mut self) -> String {
        while !self.empty.is_empty() {
            self.end();
        }
        self.out
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    push_contents(out, s);
    out.push('"');
}

fn push_b64(out: &mut String, bytes: &[u8]) {
    out.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
    out.push('"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `s` escaped for the inside of a JSON string.
fn push_contents(out: &mut String, s: &str) {
    if !s.bytes().any(needs_escape) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn writes_what_serde_json_reads() {
        let nasty = "a\"b\\c\nd\te\u{1}f\u{1f}é😀";
        let mut shared = Obj::new(16);
        shared.str("source", "x\\y");
        let shared = shared.rendered();
        let mut o = Obj::new(16);
        o.members(&shared)
            .members("")
            .str("s", nasty)
            .str2("id", "st\"ream", ':', "42")
            .b64("data", b"\x00\xffhi")
            .num("n", 7)
            .num("b", false);
        o.seconds("t", 1_700_000_000_123).seconds("old", 5).seconds("neg", -1_500);
        o.begin("inner").field("k\"", "v").field_b64("bin", b"\x01").begin("empty").end().raw("list", "[1,2]").end();
        o.begin("open").str("x", "y");
        let v: Value = serde_json::from_str(&o.finish()).expect("valid JSON");
        assert_eq!(
            v,
            json!({
                "source": "x\\y", "s": nasty, "id": "st\"ream:42", "data": "AP9oaQ==", "n": 7, "b": false,
                "t": 1_700_000_000.123, "old": 0.005, "neg": -1.5,
                "inner": {"k\"": "v", "bin": "AQ==", "empty": {}, "list": [1, 2]}, "open": {"x": "y"},
            })
        );
    }
}
