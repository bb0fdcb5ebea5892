//! The client subcommands: `invoke`, `functions`, `logs`, `routes`. They talk to a running server over
//! its HTTP API, exactly as any other client would.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Args;
use serde_json::Value;

use crate::sign::SendSigned;

#[derive(Debug, Args)]
pub struct Endpoint {
    /// URL of the Stratus server.
    #[arg(long, env = "STRATUS_ENDPOINT", default_value = "http://127.0.0.1:9001", global = true)]
    pub(crate) endpoint: String,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint.trim_end_matches('/'), path)
    }
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(960)).build()?)
}

fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Turns an error response into a readable message.
pub(crate) async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let code = resp.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let msg = body.get("message").or_else(|| body.get("Message")).and_then(Value::as_str).unwrap_or("");
    bail!("{code} ({status}): {msg}")
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Function name or ARN.
    name: String,
    /// The event: inline JSON, or @FILE to read it from a file ('-' reads stdin).
    #[arg(long, short = 'p', default_value = "{}")]
    payload: String,
    /// Queue the event and return at once (InvocationType Event).
    #[arg(long = "async")]
    asynchronous: bool,
    /// Version or alias to invoke.
    #[arg(long)]
    qualifier: Option<String>,
    #[command(flatten)]
    endpoint: Endpoint,
}

fn read_payload(p: &str) -> anyhow::Result<Vec<u8>> {
    if p == "-" || p == "@-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        return Ok(buf);
    }
    if let Some(file) = p.strip_prefix('@') {
        return std::fs::read(file).with_context(|| format!("cannot read {file}"));
    }
    Ok(p.as_bytes().to_vec())
}

/// Returns the exit code: 0 on success, 1 when the function reported an error.
pub async fn invoke(args: InvokeArgs) -> anyhow::Result<u8> {
    let payload = read_payload(&args.payload)?;
    let mut url = args.endpoint.url(&format!("/2015-03-31/functions/{}/invocations", path_segment(&args.name)));
    if let Some(q) = &args.qualifier {
        url.push_str(&format!("?Qualifier={}", path_segment(q)));
    }
    let itype = if args.asynchronous { "Event" } else { "RequestResponse" };
    let resp = client()?
        .post(url)
        .header("X-Amz-Invocation-Type", itype)
        .header("X-Amz-Log-Type", "Tail")
        .body(payload)
        .send_signed()
        .await
        .with_context(|| format!("cannot reach Stratus at {}", args.endpoint.endpoint))?;
    let resp = check(resp).await?;
    let request_id = resp.headers().get("x-amzn-requestid").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if args.asynchronous {
        eprintln!("queued (request id {request_id})");
        return Ok(0);
    }
    let function_error = resp.headers().get("x-amz-function-error").and_then(|v| v.to_str().ok()).map(str::to_string);
    let tail = resp
        .headers()
        .get("x-amz-log-result")
        .and_then(|v| v.to_str().ok())
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let body = resp.bytes().await?;
    if let Some(tail) = tail {
        let mut err = std::io::stderr();
        let _ = err.write_all(&tail);
        if !tail.ends_with(b"\n") {
            let _ = writeln!(err);
        }
    }
    let mut out = std::io::stdout();
    out.write_all(&body)?;
    writeln!(out)?;
    if let Some(fe) = function_error {
        eprintln!("function error: {fe}");
        return Ok(1);
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct FunctionsArgs {
    /// Print the raw JSON of each function's configuration.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn functions(args: FunctionsArgs) -> anyhow::Result<()> {
    let http = client()?;
    let mut all = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut url = args.endpoint.url("/2015-03-31/functions?MaxItems=50");
        if let Some(m) = &marker {
            url.push_str(&format!("&Marker={}", path_segment(m)));
        }
        let resp = http
            .get(url)
            .send_signed()
            .await
            .with_context(|| format!("cannot reach Stratus at {}", args.endpoint.endpoint))?;
        let page: Value = check(resp).await?.json().await?;
        all.extend(page["Functions"].as_array().cloned().unwrap_or_default());
        marker = page.get("NextMarker").and_then(Value::as_str).map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no functions");
        return Ok(());
    }
    println!("{:<40} {:<16} {:>7} {:>8}  LAST MODIFIED", "NAME", "RUNTIME", "MEMORY", "TIMEOUT");
    for f in all {
        println!(
            "{:<40} {:<16} {:>5}MB {:>7}s  {}",
            f["FunctionName"].as_str().unwrap_or(""),
            f["Runtime"].as_str().unwrap_or(""),
            f["MemorySize"].as_u64().unwrap_or(0),
            f["Timeout"].as_u64().unwrap_or(0),
            f["LastModified"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Function name.
    name: String,
    /// Keep printing new lines as they arrive.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines newer than this (e.g. 30s, 10m, 2h, 1d).
    #[arg(long)]
    since: Option<String>,
    /// Also print each line's log stream.
    #[arg(long)]
    streams: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

fn parse_age(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}; use e.g. 30s, 10m, 2h, 1d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("bad duration unit in {s:?}; use s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let http = client()?;
    let since_ms = match &args.since {
        Some(s) => Some(model::logfmt::now_ms() - parse_age(s)?.as_millis() as i64),
        None => None,
    };
    let mut cursor: Option<String> = None;
    let mut out = std::io::stdout();
    loop {
        let mut url = args.endpoint.url(&format!("/_stratus/logs/{}?limit=1000", path_segment(&args.name)));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        if let Some(s) = since_ms {
            url.push_str(&format!("&since_ms={s}"));
        }
        let resp = http
            .get(url)
            .send_signed()
            .await
            .with_context(|| format!("cannot reach Stratus at {}", args.endpoint.endpoint))?;
        let page: Value = check(resp).await?.json().await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let ts = model::logfmt::iso_timestamp(e["timestamp"].as_i64().unwrap_or(0));
            let msg = e["message"].as_str().unwrap_or("").replace('\r', "\n");
            if args.streams {
                writeln!(out, "{ts} {} {msg}", e["stream"].as_str().unwrap_or(""))?;
            } else {
                writeln!(out, "{ts} {msg}")?;
            }
        }
        out.flush()?;
        cursor = page["cursor"].as_str().map(str::to_string);
        if events.len() >= 1000 {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(Debug, Args)]
pub struct RoutesArgs {
    #[command(subcommand)]
    action: Option<RoutesAction>,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(Debug, clap::Subcommand)]
enum RoutesAction {
    /// List the routes (the default).
    List,
    /// Route requests to a function: `stratus routes add 'GET /items/{id}' my-fn`.
    Add {
        /// `METHOD /path` (`ANY` for every method; `{name}` and a final `{name+}` capture
        /// path segments) or `$default` for requests no other route matches.
        route_key: String,
        /// Function name or ARN.
        function: String,
        /// Version or alias to invoke.
        #[arg(long)]
        qualifier: Option<String>,
        /// The event's payload format: 2.0 (API Gateway HTTP APIs' default) or 1.0.
        #[arg(long, default_value = "2.0")]
        payload_format: String,
    },
    /// Remove a route.
    Delete { route_key: String },
}

pub async fn routes(args: RoutesArgs) -> anyhow::Result<()> {
    let http = client()?;
    let reach = || format!("cannot reach Stratus at {}", args.endpoint.endpoint);
    match args.action.unwrap_or(RoutesAction::List) {
        RoutesAction::List => {
            let resp = http.get(args.endpoint.url("/_stratus/routes")).send_signed().await.with_context(reach)?;
            let body: Value = check(resp).await?.json().await?;
            let routes = body["Routes"].as_array().cloned().unwrap_or_default();
            if routes.is_empty() {
                println!("no routes");
                return Ok(());
            }
            println!("{:<36} {:<40} {:>7}  URL", "ROUTE", "FUNCTION", "PAYLOAD");
            for r in routes {
                let function = match r["Qualifier"].as_str() {
                    Some(q) => format!("{}:{q}", r["FunctionName"].as_str().unwrap_or("")),
                    None => r["FunctionName"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "{:<36} {:<40} {:>7}  {}",
                    r["RouteKey"].as_str().unwrap_or(""),
                    function,
                    r["PayloadFormatVersion"].as_str().unwrap_or(""),
                    r["Url"].as_str().unwrap_or("")
                );
            }
        }
        RoutesAction::Add { route_key, function, qualifier, payload_format } => {
            let body = serde_json::json!({
                "RouteKey": route_key,
                "FunctionName": function,
                "Qualifier": qualifier,
                "PayloadFormatVersion": payload_format,
            });
            let resp =
                http.put(args.endpoint.url("/_stratus/routes")).json(&body).send_signed().await.with_context(reach)?;
            let r: Value = check(resp).await?.json().await?;
            println!(
                "{} → {}  ({})",
                r["RouteKey"].as_str().unwrap_or(""),
                r["FunctionArn"].as_str().unwrap_or(""),
                r["Url"].as_str().unwrap_or("")
            );
        }
        RoutesAction::Delete { route_key } => {
            let url = args.endpoint.url(&format!("/_stratus/routes?RouteKey={}", path_segment(&route_key)));
            check(http.delete(url).send_signed().await.with_context(reach)?).await?;
            println!("deleted {route_key}");
        }
    }
    Ok(())
}
