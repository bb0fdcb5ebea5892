//! The ledger's record of one invocation attempt, and the usage figures summed from many.
//!
//! Billing follows §7.2: duration rounded up to the next millisecond with the INIT phase
//! included, GB-seconds = memory (GB, 1 GB = 1,024 MB) × billed seconds. Sums are kept in
//! integer MB-milliseconds so a month of invocations adds up without rounding drift.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How an invocation attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// The function reported an error through the Runtime API (`/invocation/error`).
    HandledError,
    /// The runtime crashed, exited, ran out of memory or failed to start.
    Unhandled,
    Timeout,
    /// Refused for concurrency or scaling; not billed.
    Throttled,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Success, Outcome::HandledError, Outcome::Unhandled, Outcome::Timeout, Outcome::Throttled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HandledError => "handled_error",
            Self::Unhandled => "unhandled",
            Self::Timeout => "timeout",
            Self::Throttled => "throttled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the attempt counts as an error in metrics (`Errors`).
    pub fn is_error(self) -> bool {
        matches!(self, Self::HandledError | Self::Unhandled | Self::Timeout)
    }
}

/// One invocation attempt, as the ledger keeps it (append-only). The names a function's
/// every row repeats are shared, so recording a row allocates only its request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub request_id: String,
    pub account: Arc<str>,
    pub function: Arc<str>,
    pub version: Arc<str>,
    /// `api`, `async`, `http`, … (see [`crate::invoke::Trigger::as_str`]).
    pub trigger: Cow<'static, str>,
    /// `x86_64` or `arm64`.
    pub architecture: Arc<str>,
    /// Unix time in microseconds when the attempt began and ended.
    pub start_us: i64,
    pub end_us: i64,
    /// The invocation's duration as its REPORT line gives it, in microseconds.
    pub duration_us: i64,
    /// The INIT phase, on a cold start.
    pub init_us: Option<i64>,
    /// `ceil(duration + init)` in milliseconds (0 for a throttle).
    pub billed_ms: i64,
    pub memory_mb: u32,
    pub max_memory_used_mb: u64,
    pub cold: bool,
    pub outcome: Outcome,
}

impl Record {
    /// Memory × billed time, in MB-milliseconds.
    pub fn mb_ms(&self) -> i64 {
        i64::from(self.memory_mb) * self.billed_ms
    }

    pub fn gb_seconds(&self) -> f64 {
        mb_ms_to_gb_seconds(self.mb_ms())
    }
}

/// MB-milliseconds → GB-seconds.
pub fn mb_ms_to_gb_seconds(mb_ms: i64) -> f64 {
    mb_ms as f64 / 1024.0 / 1000.0
}

/// How a usage report is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Function,
    Version,
    Day,
    Trigger,
    Account,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "function" => Some(Self::Function),
            "version" => Some(Self::Version),
            "day" => Some(Self::Day),
            "trigger" => Some(Self::Trigger),
            "account" => Some(Self::Account),
            _ => None,
        }
    }
}

/// Usage summed over a group of ledger rows (one architecture each, since prices differ).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub account: String,
    /// The group's key (`my-fn`, `my-fn:3`, `2026-12-01`, `api`); empty for a total.
    pub key: String,
    pub architecture: String,
    /// Billed requests (every attempt but throttles).
    pub requests: i64,
    pub errors: i64,
    pub throttles: i64,
    pub timeouts: i64,
    pub cold_starts: i64,
    pub billed_ms: i64,
    pub mb_ms: i64,
}

impl Usage {
    pub fn gb_seconds(&self) -> f64 {
        mb_ms_to_gb_seconds(self.mb_ms)
    }

    pub fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.throttles += other.throttles;
        self.timeouts += other.timeouts;
        self.cold_starts += other.cold_starts;
        self.billed_ms += other.billed_ms;
        self.mb_ms += other.mb_ms;
    }
}

/// A point in time as a report's `--from`/`--to` take it: a date (`2026-12-01`, midnight UTC),
/// an RFC 3339 time, or Unix milliseconds. Returns Unix microseconds.
pub fn parse_instant(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return ms.checked_mul(1000);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1000) as i64);
    }
    let date = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1_000_000)
}

/// The first instant of the (UTC) month holding `us`, in Unix microseconds.
pub fn month_start(us: i64) -> i64 {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let first = t.date().replace_day(1).unwrap_or(t.date());
    first.midnight().assume_utc().unix_timestamp() * 1_000_000
}

/// Unix microseconds as RFC 3339 (UTC).
pub fn format_instant(us: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip_and_classify() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert!(Outcome::Timeout.is_error() && !Outcome::Success.is_error() && !Outcome::Throttled.is_error());
    }

    #[test]
    fn instants_parse_and_months_start() {
        let d = parse_instant("2026-12-01").unwrap();
        assert_eq!(d, 1_796_083_200 * 1_000_000);
        assert_eq!(parse_instant("2026-12-01T00:00:00Z"), Some(d));
        assert_eq!(parse_instant("1796083200000"), Some(d));
        assert_eq!(month_start(d + 5 * 86_400_000_000 + 7), d);
        assert_eq!(format_instant(d), "2026-12-01T00:00:00Z");
        assert!(parse_instant("yesterday").is_none());
    }

    #[test]
    fn gb_seconds_of_a_record() {
        let r = Record {
            request_id: "r".into(),
            account: "000000000000".into(),
            function: "f".into(),
            version: "$LATEST".into(),
            trigger: "api".into(),
            architecture: "x86_64".into(),
            start_us: 0,
            end_us: 0,
            duration_us: 0,
            init_us: None,
            billed_ms: 1500,
            memory_mb: 2048,
            max_memory_used_mb: 0,
            cold: false,
            outcome: Outcome::Success,
        };
        assert_eq!(r.mb_ms(), 3_072_000);
        assert!((r.gb_seconds() - 3.0).abs() < 1e-12);
    }
}
