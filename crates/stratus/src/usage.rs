//! `stratus usage`: what was used and what it cost, from the server's ledger.

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::cli::{Endpoint, check, client};
use crate::sign::SendSigned;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum By {
    Function,
    Version,
    Day,
    Trigger,
}

impl By {
    fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Version => "version",
            Self::Day => "day",
            Self::Trigger => "trigger",
        }
    }
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this account (12 digits); all accounts by default.
    #[arg(long)]
    account: Option<String>,
    /// Start of the period: a date (2026-12-01, midnight UTC), an RFC 3339 time or Unix
    /// milliseconds. Default: the start of this month (UTC).
    #[arg(long)]
    from: Option<String>,
    /// End of the period (exclusive). Default: now.
    #[arg(long)]
    to: Option<String>,
    /// Break the totals down.
    #[arg(long)]
    by: Option<By>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
    #[command(flatten)]
    endpoint: Endpoint,
}

const COLUMNS: [&str; 7] = ["requests", "errors", "throttles", "timeouts", "cold_starts", "billed_ms", "gb_seconds"];

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    for (k, v) in [("account", &args.account), ("from", &args.from), ("to", &args.to)] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    if let Some(by) = args.by {
        query.push(("by", by.as_str().to_string()));
    }
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)))
        .collect();
    let resp = client()?
        .get(args.endpoint.url(&format!("/_stratus/usage?{}", query.join("&"))))
        .send_signed()
        .await
        .with_context(|| format!("cannot reach Stratus at {}", args.endpoint.endpoint))?;
    let report: Value = check(resp).await?.json().await?;
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    let accounts = report["accounts"].as_array().cloned().unwrap_or_default();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Csv => {
            // One line per row; the account totals follow with `key` = `TOTAL`.
            println!("account,key,architecture,{},cost_usd", COLUMNS.join(","));
            for r in &rows {
                let mut line = vec![cell(&r["account"]), csv_field(&cell(&r["key"])), cell(&r["architecture"])];
                line.extend(COLUMNS.iter().map(|c| cell(&r[*c])));
                line.push(cell(&r["cost_usd"]));
                println!("{}", line.join(","));
            }
            for a in &accounts {
                let mut line = vec![cell(&a["account"]), "TOTAL".to_string(), String::new()];
                line.extend(COLUMNS.iter().map(|c| cell(&a[*c])));
                line.push(cell(&a["cost"]["total_usd"]));
                println!("{}", line.join(","));
            }
        }
        Output::Table => {
            println!("Usage from {} to {}", cell(&report["from"]), cell(&report["to"]));
            if accounts.is_empty() {
                println!("no invocations in this period");
                return Ok(());
            }
            if !rows.is_empty() {
                println!();
                println!(
                    "{:<12}  {:<36} {:<7} {:>10} {:>7} {:>9} {:>12} {:>12}",
                    "ACCOUNT", "KEY", "ARCH", "REQUESTS", "ERRORS", "THROTTLES", "GB-SECONDS", "COST (USD)"
                );
                for r in &rows {
                    println!(
                        "{:<12}  {:<36} {:<7} {:>10} {:>7} {:>9} {:>12.3} {:>12.6}",
                        cell(&r["account"]),
                        cell(&r["key"]),
                        cell(&r["architecture"]),
                        cell(&r["requests"]),
                        cell(&r["errors"]),
                        cell(&r["throttles"]),
                        r["gb_seconds"].as_f64().unwrap_or(0.0),
                        r["cost_usd"].as_f64().unwrap_or(0.0),
                    );
                }
            }
            for a in &accounts {
                let c = &a["cost"];
                println!();
                println!("Account {}", cell(&a["account"]));
                println!(
                    "  requests {}  errors {}  throttles {}  timeouts {}  cold starts {}",
                    cell(&a["requests"]),
                    cell(&a["errors"]),
                    cell(&a["throttles"]),
                    cell(&a["timeouts"]),
                    cell(&a["cold_starts"])
                );
                println!("  billed {} ms = {:.6} GB-s", cell(&a["billed_ms"]), a["gb_seconds"].as_f64().unwrap_or(0.0));
                println!(
                    "  cost: requests ${:.6} + duration ${:.6}{} = ${:.2}",
                    c["requests_usd"].as_f64().unwrap_or(0.0),
                    c["duration_usd"].as_f64().unwrap_or(0.0),
                    if a["free_tier"].as_bool().unwrap_or(false) {
                        format!(" - free tier ${:.6}", c["free_tier_usd"].as_f64().unwrap_or(0.0))
                    } else {
                        String::new()
                    },
                    c["total_usd"].as_f64().unwrap_or(0.0),
                );
            }
        }
    }
    Ok(())
}
