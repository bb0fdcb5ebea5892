//! The platform's own log lines and timestamps, in AWS's exact text format
//! (docs/lambda-contract.md §7.1): `START`, `END`, `REPORT`, `INIT_REPORT`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::macros::format_description;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2024-01-02T03:04:05.678+0000`, as Lambda's `LastModified`.
pub fn lambda_timestamp(ms: i64) -> String {
    let f = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000");
    datetime(ms).format(&f).unwrap_or_default()
}

/// `2024-01-02T03:04:05.678Z`, as runtimes and destination records print time.
pub fn iso_timestamp(ms: i64) -> String {
    let f = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    datetime(ms).format(&f).unwrap_or_default()
}

/// `2024/01/02`, the date prefix of log stream names.
pub fn stream_date(ms: i64) -> String {
    let f = format_description!("[year]/[month]/[day]");
    datetime(ms).format(&f).unwrap_or_default()
}

/// A log stream name: `YYYY/MM/DD/[<version>]<32 hex>`.
pub fn log_stream_name(now_ms: i64, version: &str) -> String {
    format!("{}/[{}]{}", stream_date(now_ms), version, uuid::Uuid::new_v4().simple())
}

pub fn start_line(request_id: &str, version: &str) -> String {
    format!("START RequestId: {request_id} Version: {version}")
}

pub fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}")
}

/// How an invocation ended, for the `Status:` suffix of newer REPORT lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportStatus {
    Success,
    Timeout,
    Error(String),
}

/// The measurements one REPORT line carries.
#[derive(Debug, Clone)]
pub struct Report {
    pub request_id: String,
    pub duration: Duration,
    pub memory_mb: u32,
    pub max_memory_used_mb: u64,
    /// Set on the first invocation of an environment (a cold start).
    pub init_duration: Option<Duration>,
    pub status: ReportStatus,
}

fn ms2(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

impl Report {
    /// Billed milliseconds: the duration plus any init, rounded up to 1 ms (§7.2).
    pub fn billed_ms(&self) -> u64 {
        let total = self.duration + self.init_duration.unwrap_or_default();
        let micros = total.as_micros();
        micros.div_ceil(1000).max(1) as u64
    }

    /// `REPORT RequestId: …\tDuration: …\tBilled Duration: …\tMemory Size: …\tMax Memory Used: …\t[Init Duration: …\t]`
    pub fn line(&self) -> String {
        let mut s = format!(
            "REPORT RequestId: {}\tDuration: {} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
            self.request_id,
            ms2(self.duration),
            self.billed_ms(),
            self.memory_mb,
            self.max_memory_used_mb,
        );
        if let Some(init) = self.init_duration {
            s.push_str(&format!("Init Duration: {} ms\t", ms2(init)));
        }
        match &self.status {
            ReportStatus::Success => {}
            ReportStatus::Timeout => s.push_str("Status: timeout"),
            ReportStatus::Error(t) => s.push_str(&format!("Status: error\tError Type: {t}")),
        }
        s
    }
}

/// `INIT_REPORT Init Duration: … ms\tPhase: init\tStatus: error\tError Type: …`
pub fn init_report_line(init: Duration, status: &ReportStatus) -> String {
    let mut s = format!("INIT_REPORT Init Duration: {} ms\tPhase: init\t", ms2(init));
    match status {
        ReportStatus::Success => s.push_str("Status: success"),
        ReportStatus::Timeout => s.push_str("Status: timeout"),
        ReportStatus::Error(t) => s.push_str(&format!("Status: error\tError Type: {t}")),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_matches_recorded_format() {
        let r = Report {
            request_id: "id".into(),
            duration: Duration::from_micros(3010),
            memory_mb: 128,
            max_memory_used_mb: 36,
            init_duration: Some(Duration::from_micros(110_100)),
            status: ReportStatus::Success,
        };
        assert_eq!(
            r.line(),
            "REPORT RequestId: id\tDuration: 3.01 ms\tBilled Duration: 114 ms\tMemory Size: 128 MB\tMax Memory Used: 36 MB\tInit Duration: 110.10 ms\t"
        );
        let warm = Report { init_duration: None, duration: Duration::from_micros(1), ..r };
        assert_eq!(warm.billed_ms(), 1);
        assert!(warm.line().ends_with("Max Memory Used: 36 MB\t"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(lambda_timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123+0000");
        assert_eq!(iso_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert!(log_stream_name(0, "$LATEST").starts_with("1970/01/01/[$LATEST]"));
        assert_eq!(start_line("a", "$LATEST"), "START RequestId: a Version: $LATEST");
    }
}
