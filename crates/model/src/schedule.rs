//! Schedules as EventBridge Scheduler defines them: `rate(…)`, `cron(…)` (six fields, with
//! `?`, `L`, `W`, `#`) and `at(…)` expressions evaluated in a time zone, and the schedule's
//! configuration (target, retry policy, window, dates, state).
//!
//! Time rules (EventBridge Scheduler's): a `rate` is a fixed duration from the schedule's
//! start (StartDate, or its creation); a `cron` is read on the wall clock of its time zone, so
//! a time that a spring-forward skips does not fire and a time that a fall-back repeats fires
//! once; `at` names a wall-clock time in the time zone.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
pub use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A parsed schedule expression.
#[derive(Debug, Clone)]
pub enum Expression {
    /// Every so many seconds.
    Rate(u64),
    Cron(Box<croner::Cron>),
    /// One wall-clock time.
    At(NaiveDateTime),
}

const MS: i64 = 1000;

fn invalid(expr: &str, why: impl std::fmt::Display) -> String {
    format!("Invalid Schedule Expression {expr}. {why}")
}

impl Expression {
    /// Parses an expression; `allow_seconds` also accepts `rate(N seconds)` (for tests: the
    /// Scheduler's smallest unit is a minute). The error says what is wrong.
    pub fn parse(expr: &str, allow_seconds: bool) -> Result<Self, String> {
        let e = expr.trim();
        let inner = |prefix: &str| e.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        if let Some(body) = inner("rate(") {
            let mut parts = body.split_whitespace();
            let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(invalid(expr, "A rate expression is rate(value unit), e.g. rate(5 minutes)."));
            };
            let n: u64 = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(expr, "The rate value must be a positive whole number."))?;
            let unit_secs = match unit {
                "minute" | "minutes" => 60,
                "hour" | "hours" => 3600,
                "day" | "days" => 86_400,
                "second" | "seconds" if allow_seconds => 1,
                other => {
                    return Err(invalid(expr, format!("Unknown rate unit {other:?}: use minutes, hours or days.")));
                }
            };
            if (n == 1) != unit.ends_with(|c| c != 's') && unit_secs != 1 {
                return Err(invalid(
                    expr,
                    format!(
                        "Use the singular unit with 1 and the plural otherwise (rate(1 minute), rate(5 minutes)), not {n} {unit}."
                    ),
                ));
            }
            // At most about a century, so every tick is a representable time.
            return n
                .checked_mul(unit_secs)
                .filter(|secs| *secs <= 100 * 366 * 86_400)
                .map(Self::Rate)
                .ok_or_else(|| invalid(expr, "The rate is too long (at most 100 years)."));
        }
        if let Some(body) = inner("cron(") {
            return parse_cron(body).map(|c| Self::Cron(Box::new(c))).map_err(|why| invalid(expr, why));
        }
        if let Some(body) = inner("at(") {
            return NaiveDateTime::parse_from_str(body.trim(), "%Y-%m-%dT%H:%M:%S")
                .map(Self::At)
                .map_err(|_| invalid(expr, "A one-time expression is at(yyyy-mm-ddThh:mm:ss)."));
        }
        Err(invalid(
            expr,
            "Use rate(value unit), cron(minutes hours day-of-month month day-of-week year) or at(yyyy-mm-ddThh:mm:ss).",
        ))
    }

    /// The first tick strictly after `after_ms` (Unix ms), with the schedule's start (for
    /// rates: ticks are `start + k × rate`), in time zone `tz`; `None` when there is none.
    pub fn next_after(&self, after_ms: i64, start_ms: i64, tz: Tz) -> Option<i64> {
        match self {
            Self::Rate(secs) => {
                let period = (*secs as i64).checked_mul(MS)?;
                if after_ms < start_ms {
                    return Some(start_ms);
                }
                let k = after_ms.checked_sub(start_ms)? / period + 1;
                start_ms.checked_add(k.checked_mul(period)?)
            }
            Self::At(t) => {
                let at = local(tz, *t)?.timestamp_millis();
                (at > after_ms).then_some(at)
            }
            Self::Cron(cron) => {
                let mut from = tz.from_utc_datetime(&DateTime::<Utc>::from_timestamp_millis(after_ms)?.naive_utc());
                for _ in 0..64 {
                    let next = cron.find_next_occurrence(&from, false).ok()?;
                    // A time the clock skipped was moved past the gap: it does not fire. A
                    // repeated time fires on its first pass only.
                    let wall = next.naive_local();
                    let first_pass = match tz.from_local_datetime(&wall) {
                        LocalResult::Single(_) => true,
                        LocalResult::Ambiguous(early, _) => early == next,
                        LocalResult::None => false,
                    };
                    if first_pass && cron.is_time_matching(&next).unwrap_or(false) {
                        return Some(next.timestamp_millis());
                    }
                    from = next;
                }
                None
            }
        }
    }
}

/// The instant of a wall-clock time (the earlier of two, none in a gap).
fn local(tz: Tz, t: NaiveDateTime) -> Option<DateTime<Tz>> {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => Some(d),
        LocalResult::Ambiguous(early, _) => Some(early),
        LocalResult::None => None,
    }
}

/// EventBridge's six fields: minutes hours day-of-month month day-of-week year. Exactly one
/// of day-of-month and day-of-week is `?`; day-of-week counts 1 = Sunday … 7 = Saturday.
fn parse_cron(body: &str) -> Result<croner::Cron, String> {
    let fields: Vec<&str> = body.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "A cron expression has six fields (minutes hours day-of-month month day-of-week year), not {}.",
            fields.len()
        ));
    }
    let (dom, dow) = (fields[2], fields[4]);
    if (dom == "?") == (dow == "?") {
        return Err("Exactly one of day-of-month and day-of-week must be '?'.".into());
    }
    for (i, f) in fields.iter().enumerate() {
        if *f == "?" && i != 2 && i != 4 {
            return Err("'?' is only allowed in day-of-month or day-of-week.".into());
        }
    }
    let year = fields[5];
    let pattern = format!(
        "0 {} {} {} {} {} {}",
        fields[0],
        fields[1],
        if dom == "?" { "*" } else { dom },
        fields[3],
        if dow == "?" { "*" } else { dow },
        year
    );
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .year(croner::parser::Year::Required)
        .alternative_weekdays(true)
        .sloppy_ranges(true)
        .build()
        .parse(&pattern)
        .map_err(|e| format!("{e}"))
}

/// Reads a time zone name (IANA, e.g. `Europe/Paris`; default UTC).
pub fn parse_timezone(name: Option<&str>) -> Result<Tz, String> {
    match name {
        None | Some("") => Ok(Tz::UTC),
        Some(n) => {
            n.parse::<Tz>().map_err(|_| format!("Invalid ScheduleExpressionTimezone {n}: not a known time zone name"))
        }
    }
}

/// `FlexibleTimeWindow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlexibleWindow {
    /// `OFF` or `FLEXIBLE`.
    #[serde(rename = "Mode")]
    pub mode: String,
    #[serde(rename = "MaximumWindowInMinutes", default, skip_serializing_if = "Option::is_none")]
    pub maximum_window_minutes: Option<u32>,
}

/// `RetryPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    #[serde(rename = "MaximumEventAgeInSeconds", default = "default_age")]
    pub maximum_event_age_secs: u32,
    #[serde(rename = "MaximumRetryAttempts", default = "default_retries")]
    pub maximum_retry_attempts: u32,
}

fn default_age() -> u32 {
    86_400
}

fn default_retries() -> u32 {
    185
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { maximum_event_age_secs: default_age(), maximum_retry_attempts: default_retries() }
    }
}

/// The schedule's `Target` (a Lambda function).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "Arn")]
    pub arn: String,
    #[serde(rename = "RoleArn", default)]
    pub role_arn: String,
    #[serde(rename = "Input", default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(rename = "RetryPolicy", default)]
    pub retry_policy: RetryPolicy,
    #[serde(rename = "DeadLetterConfig", default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(rename = "Arn")]
    pub arn: String,
}

/// A schedule as stored and as GetSchedule returns it (minus `Arn`, added from the scope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "GroupName")]
    pub group: String,
    #[serde(rename = "ScheduleExpression")]
    pub expression: String,
    #[serde(rename = "ScheduleExpressionTimezone", default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Unix seconds (the API's timestamps).
    #[serde(rename = "StartDate", default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<f64>,
    #[serde(rename = "EndDate", default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<f64>,
    #[serde(rename = "FlexibleTimeWindow")]
    pub window: FlexibleWindow,
    /// `ENABLED` or `DISABLED`.
    #[serde(rename = "State")]
    pub state: String,
    /// `NONE` or `DELETE`.
    #[serde(rename = "ActionAfterCompletion")]
    pub action_after_completion: String,
    #[serde(rename = "Description", default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "Target")]
    pub target: Target,
    #[serde(rename = "CreationDate")]
    pub creation_date: f64,
    #[serde(rename = "LastModificationDate")]
    pub last_modification_date: f64,
}

impl Schedule {
    /// Checks everything CreateSchedule/UpdateSchedule check; the message says what is wrong.
    pub fn validate(&self, allow_seconds: bool) -> Result<(Expression, Tz), String> {
        let name_ok = |s: &str| {
            (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !name_ok(&self.name) {
            return Err(format!("Invalid name {:?}: 1 to 64 letters, digits, '-', '_' or '.'", self.name));
        }
        if !name_ok(&self.group) {
            return Err(format!("Invalid group name {:?}", self.group));
        }
        let expr = Expression::parse(&self.expression, allow_seconds)?;
        let tz = parse_timezone(self.timezone.as_deref())?;
        match self.window.mode.as_str() {
            "OFF" => {}
            "FLEXIBLE" => match self.window.maximum_window_minutes {
                Some(1..=1440) => {}
                _ => return Err("MaximumWindowInMinutes must be between 1 and 1440 when Mode is FLEXIBLE".into()),
            },
            m => return Err(format!("Invalid FlexibleTimeWindow Mode {m}: OFF or FLEXIBLE")),
        }
        if !["ENABLED", "DISABLED"].contains(&self.state.as_str()) {
            return Err(format!("Invalid State {}: ENABLED or DISABLED", self.state));
        }
        if !["NONE", "DELETE"].contains(&self.action_after_completion.as_str()) {
            return Err(format!("Invalid ActionAfterCompletion {}: NONE or DELETE", self.action_after_completion));
        }
        // Dates between 1970 and 9999, as Scheduler's API takes them.
        for d in [self.start_date, self.end_date].into_iter().flatten() {
            if !(0.0..=253_402_300_799.0).contains(&d) || d.is_nan() {
                return Err(format!("Invalid date {d}: between 1970-01-01 and 9999-12-31"));
            }
        }
        if let (Some(s), Some(e)) = (self.start_date, self.end_date)
            && e <= s
        {
            return Err("The EndDate must be after the StartDate.".into());
        }
        let p = &self.target.retry_policy;
        if !(60..=86_400).contains(&p.maximum_event_age_secs) {
            return Err("MaximumEventAgeInSeconds must be between 60 and 86400".into());
        }
        if p.maximum_retry_attempts > 185 {
            return Err("MaximumRetryAttempts must be between 0 and 185".into());
        }
        if !self.target.arn.starts_with("arn:aws:lambda:") || !self.target.arn.contains(":function:") {
            return Err(format!(
                "Invalid target {}: Stratus schedules invoke Lambda functions (arn:aws:lambda:…:function:…)",
                self.target.arn
            ));
        }
        if let Some(d) = &self.target.dead_letter
            && (!d.arn.starts_with("arn:aws:lambda:") || !d.arn.contains(":function:"))
        {
            return Err(format!(
                "Invalid DeadLetterConfig {}: Stratus sends undeliverable events to a Lambda function (arn:aws:lambda:…:function:…)",
                d.arn
            ));
        }
        if let Some(input) = &self.target.input
            && input.len() > 256 * 1024
        {
            return Err("The target Input is larger than 256 KB".into());
        }
        Ok((expr, tz))
    }

    /// When the ticks start: StartDate, or (for rates) the creation.
    pub fn start_ms(&self) -> i64 {
        (self.start_date.unwrap_or(self.creation_date) * 1000.0).round() as i64
    }

    pub fn end_ms(&self) -> Option<i64> {
        self.end_date.map(|e| (e * 1000.0).round() as i64)
    }

    /// How late a tick may still fire (the flexible window, or Scheduler's one-minute
    /// precision when the window is off).
    pub fn window_ms(&self) -> i64 {
        match (self.window.mode.as_str(), self.window.maximum_window_minutes) {
            ("FLEXIBLE", Some(m)) => i64::from(m) * 60 * MS,
            _ => 60 * MS,
        }
    }

    /// The next tick after `after_ms`, within StartDate/EndDate.
    pub fn next_tick(&self, expr: &Expression, tz: Tz, after_ms: i64) -> Option<i64> {
        let start = self.start_ms();
        // Cron and at() ticks before StartDate do not count.
        let from = if matches!(expr, Expression::Rate(_)) { after_ms } else { after_ms.max(start - 1) };
        let next = expr.next_after(from, start, tz)?;
        match self.end_ms() {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }
}

/// Fills Scheduler's context attributes in a target's Input.
pub fn render_input(input: &str, schedule_arn: &str, tick_ms: i64, execution_id: &str, attempt: u32) -> String {
    let time = DateTime::<Utc>::from_timestamp_millis(tick_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    input
        .replace("<aws.scheduler.schedule-arn>", schedule_arn)
        .replace("<aws.scheduler.scheduled-time>", &time)
        .replace("<aws.scheduler.execution-id>", execution_id)
        .replace("<aws.scheduler.attempt-number>", &attempt.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn iso(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn next(expr: &str, tz: &str, after: &str) -> Option<String> {
        let e = Expression::parse(expr, false).unwrap();
        e.next_after(ms(after), ms("2020-01-01T00:00:00Z"), parse_timezone(Some(tz)).unwrap()).map(iso)
    }

    #[test]
    fn cron_expressions_give_their_next_fire_times() {
        let table = [
            // expression, zone, after, expected next (UTC)
            ("cron(0 12 * * ? *)", "UTC", "2026-12-01T12:00:00Z", "2026-12-02T12:00:00Z"),
            ("cron(15 10 ? * 6L 2026-2027)", "UTC", "2026-12-01T00:00:00Z", "2026-12-25T10:15:00Z"),
            ("cron(0 18 ? * MON-FRI *)", "UTC", "2026-12-04T18:00:00Z", "2026-12-07T18:00:00Z"),
            ("cron(0 8 1 * ? *)", "UTC", "2026-12-01T09:00:00Z", "2027-01-01T08:00:00Z"),
            ("cron(0/15 * * * ? *)", "UTC", "2026-12-01T10:07:00Z", "2026-12-01T10:15:00Z"),
            ("cron(0 9 L * ? *)", "UTC", "2027-02-01T00:00:00Z", "2027-02-28T09:00:00Z"),
            ("cron(0 9 L * ? *)", "UTC", "2028-02-01T00:00:00Z", "2028-02-29T09:00:00Z"), // leap year
            ("cron(0 9 29 2 ? *)", "UTC", "2026-03-01T00:00:00Z", "2028-02-29T09:00:00Z"),
            ("cron(0 9 15W * ? *)", "UTC", "2026-08-01T00:00:00Z", "2026-08-14T09:00:00Z"), // 15th is a Saturday
            ("cron(0 9 ? * 2#1 *)", "UTC", "2026-12-01T00:00:00Z", "2026-12-07T09:00:00Z"), // first Monday
            ("cron(0 9 ? * 1 *)", "UTC", "2026-12-01T00:00:00Z", "2026-12-06T09:00:00Z"),   // 1 = Sunday
            ("cron(30 9 * * ? *)", "Europe/Paris", "2026-12-01T00:00:00Z", "2026-12-01T08:30:00Z"),
            ("cron(30 9 * * ? *)", "Europe/Paris", "2026-07-01T00:00:00Z", "2026-07-01T07:30:00Z"),
            ("cron(0 0 1 1 ? 2027)", "Asia/Tokyo", "2026-12-01T00:00:00Z", "2026-12-31T15:00:00Z"),
        ];
        for (expr, tz, after, want) in table {
            assert_eq!(next(expr, tz, after).as_deref(), Some(want), "{expr} in {tz} after {after}");
        }
        assert_eq!(next("cron(0 0 1 1 ? 2025)", "UTC", "2026-01-01T00:00:00Z"), None, "no tick after the last year");
    }

    #[test]
    fn daylight_saving_skips_missing_times_and_fires_repeated_ones_once() {
        // New York springs forward at 02:00 on 2026-03-08: 02:30 does not exist that day.
        assert_eq!(
            next("cron(30 2 * * ? *)", "America/New_York", "2026-03-07T08:00:00Z").as_deref(),
            Some("2026-03-09T06:30:00Z")
        );
        // 03:30 the same day exists (EDT, UTC-4).
        assert_eq!(
            next("cron(30 3 * * ? *)", "America/New_York", "2026-03-08T05:00:00Z").as_deref(),
            Some("2026-03-08T07:30:00Z")
        );
        // It falls back at 02:00 on 2026-11-01: 01:30 happens twice and fires once.
        let first = next("cron(30 1 * * ? *)", "America/New_York", "2026-11-01T04:00:00Z").unwrap();
        assert_eq!(first, "2026-11-01T05:30:00Z");
        let after_first = next("cron(30 1 * * ? *)", "America/New_York", &first).unwrap();
        assert_eq!(after_first, "2026-11-02T06:30:00Z", "not again at 06:30Z the same day");
        // An hourly cron runs once per wall-clock hour through the fall-back.
        let mut t = "2026-11-01T04:59:00Z".to_string();
        let mut fired = Vec::new();
        for _ in 0..4 {
            t = next("cron(0 * * * ? *)", "America/New_York", &t).unwrap();
            fired.push(t.clone());
        }
        assert_eq!(
            fired,
            ["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z", "2026-11-01T09:00:00Z"]
        );
    }

    #[test]
    fn rates_count_from_the_start_and_at_fires_once() {
        let e = Expression::parse("rate(5 minutes)", false).unwrap();
        let start = ms("2026-12-01T10:00:00Z");
        assert_eq!(e.next_after(start - 1, start, Tz::UTC), Some(start));
        assert_eq!(e.next_after(start, start, Tz::UTC), Some(start + 300_000));
        assert_eq!(e.next_after(start + 299_999, start, Tz::UTC), Some(start + 300_000));
        let at = Expression::parse("at(2026-12-24T18:00:00)", false).unwrap();
        let tz = parse_timezone(Some("Europe/Berlin")).unwrap();
        assert_eq!(at.next_after(0, 0, tz).map(iso).as_deref(), Some("2026-12-24T17:00:00Z"));
        assert_eq!(at.next_after(ms("2026-12-24T17:00:00Z"), 0, tz), None);
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        let err = |e: &str| Expression::parse(e, false).unwrap_err();
        assert!(err("rate(0 minutes)").contains("positive"));
        assert!(err("rate(5 minute)").contains("plural"));
        assert!(err("rate(1 minutes)").contains("singular"));
        assert!(err("rate(5 fortnights)").contains("Unknown rate unit"));
        assert!(err("rate(30 seconds)").contains("Unknown rate unit"));
        assert!(err("rate(200000000000 days)").contains("too long"));
        assert!(Expression::parse("rate(30 seconds)", true).is_ok());
        assert!(err("cron(0 12 * * *)").contains("six fields"));
        assert!(err("cron(0 12 * * * *)").contains("'?'"));
        assert!(err("cron(0 12 ? * ? *)").contains("'?'"));
        assert!(err("cron(0 25 * * ? *)").starts_with("Invalid Schedule Expression cron(0 25 * * ? *)."));
        assert!(err("at(2026-13-01T00:00:00)").contains("at(yyyy-mm-ddThh:mm:ss)"));
        assert!(err("every day").contains("Use rate("));
        assert!(parse_timezone(Some("Mars/Olympus")).unwrap_err().contains("Mars/Olympus"));
    }

    #[test]
    fn inputs_get_context_attributes() {
        let t = r#"{"time":"<aws.scheduler.scheduled-time>","id":"<aws.scheduler.execution-id>","arn":"<aws.scheduler.schedule-arn>","n":<aws.scheduler.attempt-number>}"#;
        let out = render_input(t, "arn:aws:scheduler:us-east-1:123456789012:schedule/default/s", 0, "e-1", 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        assert_eq!(v["id"], "e-1");
        assert_eq!(v["arn"], "arn:aws:scheduler:us-east-1:123456789012:schedule/default/s");
        assert_eq!(v["n"], 1);
    }
}
