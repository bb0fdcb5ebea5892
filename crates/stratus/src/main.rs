//! The `stratus` binary: `serve` wires the components together; the other subcommands are a
//! small CLI that talks to a running server over its HTTP API.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod accounts;
mod cli;
mod cluster;
mod mappings;
mod schedules;
mod serve;
mod sign;
mod usage;

use clap::{Parser, Subcommand};

/// Stratus: a self-hosted serverless platform that speaks AWS Lambda's APIs.
///
/// Run `stratus serve`, then point the AWS CLI or an AWS SDK at it with
/// `--endpoint-url http://127.0.0.1:9001` (on loopback, any credentials act as the default
/// account; `stratus accounts` creates accounts and keys).
#[derive(Debug, Parser)]
#[command(name = "stratus", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Stratus server (Lambda API, Runtime API, execution environments).
    Serve(Box<serve::ServeArgs>),
    /// Invoke a function and print its result (the log tail goes to stderr).
    Invoke(cli::InvokeArgs),
    /// List the functions.
    Functions(cli::FunctionsArgs),
    /// Print a function's log, optionally following new lines.
    Logs(cli::LogsArgs),
    /// List, add and remove HTTP routes (API Gateway HTTP API style) to functions.
    Routes(cli::RoutesArgs),
    /// Accounts (tenants) and their access keys (works on the data directory, or with
    /// --database-url on a cluster's database).
    Accounts(accounts::AccountsArgs),
    /// A cluster's nodes: their state, load and what each holds.
    Cluster(cluster::ClusterArgs),
    /// Usage and cost from the ledger (month to date by default), as a table, JSON or CSV.
    Usage(usage::UsageArgs),
    /// List, create and delete schedules that invoke functions (EventBridge Scheduler).
    Schedules(schedules::SchedulesArgs),
    /// List, create, disable and delete event source mappings (functions fed by NATS, Redis,
    /// PostgreSQL, RabbitMQ, MQTT or Kafka).
    Mappings(mappings::MappingsArgs),
}

/// Threads for the server's async work. Functions run on the same cores, so by default the
/// platform takes half of them (at least one); measured on 2 cores, one worker thread gave
/// lower warm latency than two at the same throughput (BENCHMARKS.md).
fn worker_threads() -> usize {
    if let Some(n) = std::env::var("STRATUS_WORKER_THREADS").ok().and_then(|v| v.parse().ok()) {
        return std::cmp::max(n, 1);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    std::cmp::max(cores / 2, 1)
}

fn main() -> std::process::ExitCode {
    // Started as an isolated environment's first process: be its init, nothing else.
    if sandbox::init::is_init() {
        sandbox::init::main();
    }
    let cli = Cli::parse();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads()).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await.map(|_| 0),
            Command::Invoke(args) => cli::invoke(args).await,
            Command::Functions(args) => cli::functions(args).await.map(|_| 0),
            Command::Logs(args) => cli::logs(args).await.map(|_| 0),
            Command::Routes(args) => cli::routes(args).await.map(|_| 0),
            Command::Schedules(args) => schedules::schedules(args).await.map(|_| 0),
            Command::Mappings(args) => mappings::mappings(args).await.map(|_| 0),
            Command::Accounts(args) => accounts::run(args).await.map(|_| 0),
            Command::Cluster(args) => cluster::run(args).await.map(|_| 0),
            Command::Usage(args) => usage::usage(args).await.map(|_| 0),
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
