//! Object storage's rules: bucket notification configurations (which changes invoke which
//! function) and the change records they produce, committed with the object.

use serde::{Deserialize, Serialize};

/// Lambda's recursive-loop limit: an object event whose chain of invocations has reached
/// this many is dropped instead of invoking again.
pub const MAX_RECURSION_DEPTH: u32 = 16;

/// One `LambdaFunctionConfiguration` of a bucket's notification configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRule {
    /// The rule's `Id` (S3 makes one up when none is given).
    pub id: String,
    /// `LambdaFunctionArn`.
    pub function_arn: String,
    /// `s3:ObjectCreated:*`, `s3:ObjectCreated:Put`, `s3:ObjectRemoved:*`, …
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

/// The event types S3 sends to functions that Stratus produces.
pub const EVENT_TYPES: &[&str] = &[
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
];

/// What happened to an object: the `eventName` of its record (without `s3:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectChange {
    Put,
    Post,
    Copy,
    CompleteMultipartUpload,
    Delete,
}

impl ObjectChange {
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Put => "ObjectCreated:Put",
            Self::Post => "ObjectCreated:Post",
            Self::Copy => "ObjectCreated:Copy",
            Self::CompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
            Self::Delete => "ObjectRemoved:Delete",
        }
    }
}

impl NotificationRule {
    /// Checks the rule as PutBucketNotificationConfiguration does; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.events.is_empty() {
            return Err("A notification configuration must name at least one event".into());
        }
        for e in &self.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                return Err(format!(
                    "The event is not supported for notifications: {e} (supported: {})",
                    EVENT_TYPES.join(", ")
                ));
            }
        }
        if self.id.len() > 1024 {
            return Err("The configuration id is longer than 1024 characters".into());
        }
        Ok(())
    }

    /// Whether `change` of `key` is one this rule sends.
    pub fn matches(&self, change: ObjectChange, key: &str) -> bool {
        let name = change.event_name();
        let (family, _) = name.split_once(':').unwrap_or((name, ""));
        let wanted = self.events.iter().any(|e| {
            let e = e.strip_prefix("s3:").unwrap_or(e);
            e == name || e.strip_suffix(":*").is_some_and(|f| f == family)
        });
        wanted
            && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
    }
}

/// Rules of one bucket overlap when they could send the same event to the same place twice
/// for one change, which S3 refuses ("Configurations overlap").
pub fn overlapping(rules: &[NotificationRule]) -> Option<(&str, &str)> {
    fn family(e: &str) -> &str {
        e.strip_prefix("s3:").unwrap_or(e).split(':').next().unwrap_or("")
    }
    fn events_overlap(a: &str, b: &str) -> bool {
        a == b || (family(a) == family(b) && (a.ends_with(":*") || b.ends_with(":*")))
    }
    fn affixes_overlap(a: Option<&str>, b: Option<&str>, prefix: bool) -> bool {
        match (a, b) {
            (Some(a), Some(b)) if prefix => a.starts_with(b) || b.starts_with(a),
            (Some(a), Some(b)) => a.ends_with(b) || b.ends_with(a),
            _ => true,
        }
    }
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            let events = a.events.iter().any(|x| b.events.iter().any(|y| events_overlap(x, y)));
            if events
                && affixes_overlap(a.prefix.as_deref(), b.prefix.as_deref(), true)
                && affixes_overlap(a.suffix.as_deref(), b.suffix.as_deref(), false)
            {
                return Some((&a.id, &b.id));
            }
        }
    }
    None
}

/// One change to deliver to one function: written in the same transaction as the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEvent {
    /// The bucket owner's account: the function runs there, and it pays.
    pub account: String,
    pub function_arn: String,
    pub configuration_id: String,
    /// `ObjectCreated:Put`, …
    pub event_name: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// Orders the changes of one key (hex, equal length, so they compare as strings).
    pub sequencer: String,
    pub time_ms: i64,
    pub source_ip: String,
    /// Who made the change (`AWS:<access key>` or the account).
    pub principal: String,
    pub request_id: String,
    /// How many invocations led to this change (a function's write carries its own depth).
    pub depth: u32,
    /// The writer's `X-Amzn-Trace-Id`, so the invocation joins its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// Checks a bucket name against S3's rules for new buckets.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let edges = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len()) {
        return Err("Bucket names must be between 3 (min) and 63 (max) characters long".into());
    }
    if !ok_chars || !edges(name.bytes().next()) || !edges(name.bytes().last()) || name.contains("..") {
        return Err("Bucket names can consist only of lowercase letters, numbers, periods and hyphens, and must begin and end with a letter or number".into());
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err("Bucket names must not be formatted as an IP address".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(events: &[&str], prefix: Option<&str>, suffix: Option<&str>) -> NotificationRule {
        NotificationRule {
            id: "r".into(),
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.map(str::to_string),
            suffix: suffix.map(str::to_string),
        }
    }

    #[test]
    fn rules_match_event_families_and_affixes() {
        let r = rule(&["s3:ObjectCreated:*"], Some("uploads/"), Some(".jpg"));
        assert!(r.matches(ObjectChange::Put, "uploads/a.jpg"));
        assert!(r.matches(ObjectChange::CompleteMultipartUpload, "uploads/b/c.jpg"));
        assert!(!r.matches(ObjectChange::Delete, "uploads/a.jpg"));
        assert!(!r.matches(ObjectChange::Put, "thumbs/a.jpg"));
        assert!(!r.matches(ObjectChange::Put, "uploads/a.png"));
        let r = rule(&["s3:ObjectCreated:Copy", "s3:ObjectRemoved:*"], None, None);
        assert!(r.matches(ObjectChange::Copy, "x"));
        assert!(!r.matches(ObjectChange::Put, "x"));
        assert!(r.matches(ObjectChange::Delete, "x"));
    }

    #[test]
    fn rules_are_validated_and_overlaps_found() {
        assert!(rule(&["s3:ObjectCreated:Put"], None, None).validate().is_ok());
        assert!(rule(&["s3:ObjectRestore:*"], None, None).validate().unwrap_err().contains("not supported"));
        assert!(rule(&[], None, None).validate().is_err());
        let a = rule(&["s3:ObjectCreated:*"], Some("a/"), None);
        let mut b = rule(&["s3:ObjectCreated:Put"], Some("a/b/"), None);
        b.id = "b".into();
        assert!(overlapping(&[a.clone(), b.clone()]).is_some());
        b.prefix = Some("c/".into());
        assert!(overlapping(&[a.clone(), b.clone()]).is_none());
        b.prefix = Some("a/".into());
        b.events = vec!["s3:ObjectRemoved:*".into()];
        assert!(overlapping(&[a, b]).is_none());
    }

    #[test]
    fn bucket_names_follow_s3() {
        for ok in ["abc", "my-bucket.2", "a1b"] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Abc", "-abc", "abc-", "a..b", "192.168.1.1", "a_b", &"a".repeat(64)] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
