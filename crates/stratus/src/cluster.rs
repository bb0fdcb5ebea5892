//! `stratus cluster status`: the nodes of a cluster as a table or JSON, read from any node's
//! `GET /_stratus/cluster` or, with --database-url, from the cluster's database directly.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cli::{Endpoint, check, client};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Read the cluster's database instead of asking a node.
    #[arg(long, env = "STRATUS_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Print JSON (`{"nodes": [...]}`) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<ClusterAction>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// List the nodes (the default): id, address, state, load, what each holds.
    Status,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let status: Value = match &args.database_url {
        Some(url) => {
            let pool = store::pg::PgPool::connect(url).await.context("cannot open the cluster's database")?;
            cluster::status(&pool).await.context("cannot read the cluster's nodes")?
        }
        None => {
            let resp = client()?
                .get(args.endpoint.url("/_stratus/cluster"))
                .send()
                .await
                .with_context(|| format!("cannot reach Stratus at {}", args.endpoint.endpoint))?;
            check(resp).await?.json().await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    println!("{:<16} {:<28} {:<9} {:>9}  HOLDS", "NODE", "ADDRESS", "STATE", "IN FLIGHT");
    for n in nodes {
        let holds = n["holds"].as_object().map(|h| {
            h.iter()
                .map(|(k, v)| match v {
                    Value::Array(a) => format!("{k}: {}", a.len()),
                    other => format!("{k}: {other}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        println!(
            "{:<16} {:<28} {:<9} {:>9}  {}",
            n["id"].as_str().unwrap_or(""),
            n["address"].as_str().unwrap_or(""),
            n["state"].as_str().unwrap_or(""),
            n["load"]["in_flight"].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            holds.unwrap_or_default()
        );
    }
    Ok(())
}
