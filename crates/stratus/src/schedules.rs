//! `stratus schedules`: EventBridge Scheduler schedules of functions, through the server's
//! Scheduler API (the same one `aws scheduler` uses).

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use crate::cli::{Endpoint, check, client};
use crate::sign::SendSigned;

#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List schedules (the default).
    List {
        /// Only this schedule group.
        #[arg(long)]
        group: Option<String>,
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Invoke a function on a schedule:
    /// `stratus schedules create nightly --expression 'cron(0 3 * * ? *)' --function backup`.
    Create {
        name: String,
        /// `rate(5 minutes)`, `cron(0 3 * * ? *)` (minutes hours day-of-month month
        /// day-of-week year) or `at(2027-01-01T00:00:00)`.
        #[arg(long)]
        expression: String,
        /// The function (name or ARN, optionally `name:alias`).
        #[arg(long)]
        function: String,
        /// IANA time zone the expression is read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// The event (JSON). Scheduler's `<aws.scheduler.scheduled-time>`,
        /// `<aws.scheduler.execution-id>` and `<aws.scheduler.schedule-arn>` are filled in.
        #[arg(long, conflicts_with = "scheduled_event")]
        input: Option<String>,
        /// Send EventBridge's "Scheduled Event" shape (what functions written for
        /// EventBridge rules expect).
        #[arg(long)]
        scheduled_event: bool,
        #[arg(long)]
        group: Option<String>,
        /// Let each tick fire up to this many minutes late (and a tick missed while Stratus was
        /// down fire on recovery within it).
        #[arg(long)]
        flexible_window: Option<u32>,
        /// Delete the schedule after its last tick.
        #[arg(long)]
        delete_after_completion: bool,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Show one schedule.
    Get {
        name: String,
        #[arg(long)]
        group: Option<String>,
    },
    /// Delete a schedule.
    Delete {
        name: String,
        #[arg(long)]
        group: Option<String>,
    },
}

pub(crate) fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The path of one schedule (in `group`, when given).
fn one(name: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("/schedules/{}?groupName={}", seg(name), seg(g)),
        None => format!("/schedules/{}", seg(name)),
    }
}

pub async fn schedules(args: SchedulesArgs) -> anyhow::Result<()> {
    let http = client()?;
    let ep = &args.endpoint;
    let reach = || format!("cannot reach Stratus at {}", ep.endpoint);
    match args.action.unwrap_or(Action::List { group: None, prefix: None }) {
        Action::List { group, prefix } => {
            let mut rows = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut q: Vec<(&str, String)> = Vec::new();
                if let Some(g) = &group {
                    q.push(("ScheduleGroup", g.clone()));
                }
                if let Some(p) = &prefix {
                    q.push(("NamePrefix", p.clone()));
                }
                if let Some(t) = &token {
                    q.push(("NextToken", t.clone()));
                }
                let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", seg(v))).collect();
                let url = ep.url(&format!("/schedules?{}", query.join("&")));
                let resp = http.get(url).send_signed().await.with_context(reach)?;
                let body: Value = check(resp).await?.json().await?;
                rows.extend(body["Schedules"].as_array().cloned().unwrap_or_default());
                match body["NextToken"].as_str() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
            if rows.is_empty() {
                println!("no schedules");
                return Ok(());
            }
            println!("{:<12} {:<32} {:<9} TARGET", "GROUP", "NAME", "STATE");
            for r in rows {
                println!(
                    "{:<12} {:<32} {:<9} {}",
                    r["GroupName"].as_str().unwrap_or(""),
                    r["Name"].as_str().unwrap_or(""),
                    r["State"].as_str().unwrap_or(""),
                    r["Target"]["Arn"].as_str().unwrap_or("")
                );
            }
        }
        Action::Create {
            name,
            expression,
            function,
            timezone,
            input,
            scheduled_event,
            group,
            flexible_window,
            delete_after_completion,
            disabled,
        } => {
            let arn = if function.starts_with("arn:") {
                function.clone()
            } else {
                let (fname, qualifier) = match function.split_once(':') {
                    Some((f, q)) => (f.to_string(), Some(q.to_string())),
                    None => (function.clone(), None),
                };
                let resp = http
                    .get(ep.url(&format!("/2015-03-31/functions/{}", seg(&fname))))
                    .send_signed()
                    .await
                    .with_context(reach)?;
                let f: Value = check(resp).await?.json().await?;
                let base = f["Configuration"]["FunctionArn"].as_str().context("no FunctionArn")?.to_string();
                match qualifier {
                    Some(q) => format!("{base}:{q}"),
                    None => base,
                }
            };
            let input = if scheduled_event {
                // arn:aws:lambda:<region>:<account>:function:<name>
                let parts: Vec<&str> = arn.split(':').collect();
                let (region, account) = (parts.get(3).copied().unwrap_or(""), parts.get(4).copied().unwrap_or(""));
                Some(triggers::schedules::scheduled_event_template(account, region))
            } else {
                input
            };
            let window = match flexible_window {
                Some(m) => json!({ "Mode": "FLEXIBLE", "MaximumWindowInMinutes": m }),
                None => json!({ "Mode": "OFF" }),
            };
            let mut body = json!({
                "ScheduleExpression": expression,
                "FlexibleTimeWindow": window,
                "Target": { "Arn": arn, "RoleArn": "arn:aws:iam::000000000000:role/stratus-scheduler" },
                "State": if disabled { "DISABLED" } else { "ENABLED" },
                "ActionAfterCompletion": if delete_after_completion { "DELETE" } else { "NONE" },
            });
            if let Some(i) = input {
                body["Target"]["Input"] = json!(i);
            }
            if let Some(tz) = timezone {
                body["ScheduleExpressionTimezone"] = json!(tz);
            }
            if let Some(g) = group {
                body["GroupName"] = json!(g);
            }
            let resp = http
                .post(ep.url(&format!("/schedules/{}", seg(&name))))
                .json(&body)
                .send_signed()
                .await
                .with_context(reach)?;
            let r: Value = check(resp).await?.json().await?;
            println!("{}", r["ScheduleArn"].as_str().unwrap_or(""));
        }
        Action::Get { name, group } => {
            let resp = http.get(ep.url(&one(&name, group.as_deref()))).send_signed().await.with_context(reach)?;
            let r: Value = check(resp).await?.json().await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Action::Delete { name, group } => {
            check(http.delete(ep.url(&one(&name, group.as_deref()))).send_signed().await.with_context(reach)?).await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}
