//! `stratus mappings`: event source mappings (functions fed by NATS, Redis, PostgreSQL,
//! RabbitMQ, MQTT or Kafka), through the server's Lambda API (the same one
//! `aws lambda create-event-source-mapping` uses).

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::cli::{Endpoint, check, client};
use crate::sign::SendSigned;

#[derive(Debug, Args)]
pub struct MappingsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List mappings (the default) with their state and last processing result.
    List {
        /// Only this function's.
        #[arg(long)]
        function: Option<String>,
    },
    /// Feed a function from a stream, queue, topic or table:
    /// `stratus mappings create --function orders --source nats://127.0.0.1:4222 --topic ORDERS`.
    Create {
        /// The function (name or ARN, optionally `name:alias`).
        #[arg(long)]
        function: String,
        /// The server; its scheme says what it is: `nats://`, `redis://`, `postgres://`,
        /// `amqp://` (RabbitMQ), `mqtt://` or `kafka://host:9092`.
        #[arg(long)]
        source: String,
        /// The stream (NATS: `STREAM` or `STREAM:subject.filter`), stream key (Redis), table
        /// (`schema.table`), queue (RabbitMQ), topic filter (MQTT) or topic (Kafka).
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 100)]
        batch_size: u32,
        /// Seconds to wait for a batch to fill.
        #[arg(long, default_value_t = 0)]
        window: u32,
        /// Streams only: TRIM_HORIZON (from the start), LATEST or AT_TIMESTAMP.
        #[arg(long)]
        starting_position: Option<String>,
        /// Retries of a failing batch (-1: until it succeeds).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        retries: i64,
        /// Split a failing batch in two until the failing record is alone.
        #[arg(long)]
        bisect: bool,
        /// The function that gets records that run out of retries.
        #[arg(long)]
        on_failure: Option<String>,
        /// A filter pattern (EventBridge syntax; repeat for any-of).
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Show one mapping.
    Get {
        uuid: String,
    },
    /// Stop or restart a mapping's poller.
    Disable {
        uuid: String,
    },
    Enable {
        uuid: String,
    },
    /// Delete a mapping.
    Delete {
        uuid: String,
    },
}

const PATH: &str = "/2015-03-31/event-source-mappings/";

/// The endpoints key and address a `--source` URL names.
fn endpoints(source: &str) -> anyhow::Result<(&'static str, String, bool)> {
    let (scheme, _) = source
        .split_once("://")
        .context("--source needs a scheme: nats://, redis://, postgres://, amqp://, mqtt:// or kafka://")?;
    Ok(match scheme {
        "nats" => ("NATS_SERVERS", source.to_string(), true),
        "redis" | "rediss" => ("REDIS_SERVERS", source.to_string(), true),
        "postgres" | "postgresql" => ("POSTGRES_SERVERS", source.to_string(), true),
        "amqp" | "amqps" => ("RABBITMQ_BROKERS", source.to_string(), false),
        "mqtt" | "tcp" => ("MQTT_BROKERS", source.to_string(), false),
        "kafka" => ("KAFKA_BOOTSTRAP_SERVERS", source.trim_start_matches("kafka://").to_string(), true),
        other => bail!("unknown source scheme {other}://: use nats, redis, postgres, amqp, mqtt or kafka"),
    })
}

pub async fn mappings(args: MappingsArgs) -> anyhow::Result<()> {
    let http = client()?;
    let ep = &args.endpoint;
    let reach = || format!("cannot reach Stratus at {}", ep.endpoint);
    let one = |uuid: &str| ep.url(&format!("{PATH}{uuid}"));
    match args.action.unwrap_or(Action::List { function: None }) {
        Action::List { function } => {
            let mut rows = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let mut q = Vec::new();
                if let Some(f) = &function {
                    q.push(format!("FunctionName={}", crate::schedules::seg(f)));
                }
                if let Some(m) = &marker {
                    q.push(format!("Marker={}", crate::schedules::seg(m)));
                }
                let resp =
                    http.get(ep.url(&format!("{PATH}?{}", q.join("&")))).send_signed().await.with_context(reach)?;
                let body: Value = check(resp).await?.json().await?;
                rows.extend(body["EventSourceMappings"].as_array().cloned().unwrap_or_default());
                match body["NextMarker"].as_str() {
                    Some(m) => marker = Some(m.to_string()),
                    None => break,
                }
            }
            if rows.is_empty() {
                println!("no event source mappings");
                return Ok(());
            }
            println!("{:<36} {:<24} {:<40} {:<9} LAST RESULT", "UUID", "FUNCTION", "SOURCE", "STATE");
            for r in rows {
                let function = r["FunctionArn"].as_str().unwrap_or("").rsplit(":function:").next().unwrap_or("");
                let endpoints = r["SelfManagedEventSource"]["Endpoints"].as_object();
                let server = endpoints.and_then(|e| e.values().next()).and_then(|v| v[0].as_str()).unwrap_or("");
                let what = r["Topics"][0].as_str().or(r["Queues"][0].as_str()).unwrap_or("");
                println!(
                    "{:<36} {:<24} {:<40} {:<9} {}",
                    r["UUID"].as_str().unwrap_or(""),
                    function,
                    format!("{server} {what}"),
                    r["State"].as_str().unwrap_or(""),
                    r["LastProcessingResult"].as_str().unwrap_or("")
                );
            }
        }
        Action::Create {
            function,
            source,
            topic,
            batch_size,
            window,
            starting_position,
            retries,
            bisect,
            on_failure,
            filter,
        } => {
            let (key, address, stream) = endpoints(&source)?;
            let mut body = json!({
                "FunctionName": function,
                "SelfManagedEventSource": {"Endpoints": {key: [address]}},
                "BatchSize": batch_size,
                "MaximumBatchingWindowInSeconds": window,
                "MaximumRetryAttempts": retries,
                "BisectBatchOnFunctionError": bisect,
            });
            if key == "RABBITMQ_BROKERS" {
                body["Queues"] = json!([topic]);
            } else {
                body["Topics"] = json!([topic]);
            }
            if stream {
                body["StartingPosition"] = json!(starting_position.as_deref().unwrap_or("TRIM_HORIZON"));
            }
            if let Some(d) = on_failure {
                body["DestinationConfig"] = json!({"OnFailure": {"Destination": d}});
            }
            if !filter.is_empty() {
                body["FilterCriteria"] =
                    json!({"Filters": filter.iter().map(|p| json!({"Pattern": p})).collect::<Vec<_>>()});
            }
            let resp = http.post(ep.url(PATH)).json(&body).send_signed().await.with_context(reach)?;
            let r: Value = check(resp).await?.json().await?;
            println!("{}", r["UUID"].as_str().unwrap_or(""));
        }
        Action::Get { uuid } => {
            let r: Value = check(http.get(one(&uuid)).send_signed().await.with_context(reach)?).await?.json().await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Action::Disable { uuid } => set_enabled(&http, one(&uuid), false, &reach).await?,
        Action::Enable { uuid } => set_enabled(&http, one(&uuid), true, &reach).await?,
        Action::Delete { uuid } => {
            check(http.delete(one(&uuid)).send_signed().await.with_context(reach)?).await?;
            println!("deleted {uuid}");
        }
    }
    Ok(())
}

async fn set_enabled(
    http: &reqwest::Client,
    url: String,
    enabled: bool,
    reach: &impl Fn() -> String,
) -> anyhow::Result<()> {
    let resp = http.put(url).json(&json!({"Enabled": enabled})).send_signed().await.with_context(reach)?;
    let r: Value = check(resp).await?.json().await?;
    println!("{} {}", r["UUID"].as_str().unwrap_or(""), if enabled { "enabled" } else { "disabled" });
    Ok(())
}
