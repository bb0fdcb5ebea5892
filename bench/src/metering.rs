//! `metering`: what recording every invocation costs on the warm path.
//!
//! Two servers from the same binary, one with metering on (the default: a ledger row handed to
//! the ledger's writer thread and the Prometheus metrics updated per invocation) and one with
//! `--no-metering`, each running the same no-op Rust function (`examples/rust-echo`) under the
//! same sandbox as `warm`. The sides alternate (off, on, off, on, ...) for both the latency and
//! the throughput rounds, so neither always runs on a warmer (or more tired) machine. The idle
//! server's environments are frozen while the other one is measured.
//!
//! At the end the ledger and `/metrics` of both servers are read, to show that the "on" side
//! did record every invocation and the "off" side did not.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use super::{
    EVENT, HttpClient, Stratus, cpu_seconds, http_client, latency_samples, ms, percentile, request, throughput_to,
    zip_of,
};

/// The name of the server's thread that commits ledger rows (`store::ledger`).
const LEDGER_THREAD: &str = "stratus-ledger";

/// One side's figures, summed over its rounds.
#[derive(Default)]
struct Side {
    /// Sequential request times at concurrency 1, from every latency round.
    latency: Vec<Duration>,
    /// Requests per second of each throughput round.
    rps: Vec<f64>,
    /// Failed requests counted during the throughput rounds.
    errors: u64,
    /// Server CPU seconds per request, per round.
    server_cpu: Vec<f64>,
    /// CPU seconds per request of the server's descendants (the function processes), per round.
    function_cpu: Vec<f64>,
    /// CPU seconds per request of the server's ledger writer thread, per round.
    ledger_cpu: Vec<f64>,
    /// Requests known to have reached the function (timed ones only; warm-ups not counted).
    invoked: f64,
}

/// CPU seconds used so far by the threads of process `pid` named `name` (0 if there are none).
fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if &stat[open + 1..close] != name {
            continue;
        }
        // utime and stime are the 12th and 13th fields after the command name, in USER_HZ.
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks: f64 = f.get(11..13).into_iter().flatten().filter_map(|v| v.parse::<f64>().ok()).sum();
        total += ticks / 100.0;
    }
    total
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Ledger rows the server holds (all accounts, month to date), and the status of `/metrics`.
async fn recorded(client: &HttpClient, stratus: &Stratus) -> anyhow::Result<(u64, u16)> {
    let (status, body) = request(client, "GET", &stratus.proc.url("/_stratus/usage"), Bytes::new()).await?;
    if status != 200 {
        anyhow::bail!("usage: {status} {}", String::from_utf8_lossy(&body));
    }
    let usage: serde_json::Value = serde_json::from_slice(&body)?;
    let rows = usage["accounts"]
        .as_array()
        .context("no accounts in the usage")?
        .iter()
        .filter_map(|a| a["requests"].as_u64())
        .sum();
    let (metrics, _) = request(client, "GET", &stratus.proc.url("/metrics"), Bytes::new()).await?;
    Ok((rows, metrics))
}

/// Warm Invoke with metering on against off: p50/p99 at concurrency 1 (`requests` per side,
/// split over the rounds), requests/s and CPU per request at concurrency 32 (`rounds` rounds of
/// `seconds` per side, alternating).
pub async fn metering(bin_dir: &Path, requests: usize, seconds: u64, rounds: usize) -> anyhow::Result<()> {
    let rounds = rounds.max(1);
    let off = Stratus::start_with(bin_dir, &["--no-metering"])?;
    let on = Stratus::start(bin_dir)?;
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    let zip = zip_of(&[("bootstrap", &echo, 0o755)])?;
    for s in [&off, &on] {
        s.create("bench-meter", "provided.al2023", "bootstrap", &zip).await?;
    }
    let client = http_client();
    let body = Bytes::from_static(EVENT.as_bytes());
    let servers = [&off, &on];
    let mut sides = [Side::default(), Side::default()];

    println!("## metering: warm invoke (no-op Rust function) with metering on (default) vs off (--no-metering)");
    let per_round = requests.div_ceil(rounds).max(1);
    for _ in 0..rounds {
        for (s, side) in servers.iter().zip(sides.iter_mut()) {
            let samples = latency_samples(&client, &s.invoke_url("bench-meter"), None, body.clone(), per_round).await?;
            side.invoked += samples.len() as f64;
            side.latency.extend(samples);
        }
    }
    for _ in 0..rounds {
        for (s, side) in servers.iter().zip(sides.iter_mut()) {
            let pid = s.proc.child.id();
            let (c0, l0) = (cpu_seconds(pid), thread_cpu_seconds(pid, LEDGER_THREAD));
            let (r, e) = throughput_to(&client, &s.invoke_url("bench-meter"), None, body.clone(), 32, seconds).await?;
            let (c1, l1) = (cpu_seconds(pid), thread_cpu_seconds(pid, LEDGER_THREAD));
            // CPU is read around the 2 s warm-up too, which runs at the same rate.
            let served = r * (seconds + 2) as f64;
            side.rps.push(r);
            side.errors += e;
            side.server_cpu.push((c1.0 - c0.0) / served);
            side.function_cpu.push((c1.1 - c0.1) / served);
            side.ledger_cpu.push((l1 - l0) / served);
            side.invoked += r * seconds as f64;
        }
    }

    let [o, n] = &mut sides;
    o.latency.sort();
    n.latency.sort();
    let cost = |off: f64, on: f64| (on / off - 1.0) * 100.0;
    println!(
        "| latency, concurrency 1, {} requests per side in {rounds} alternating rounds | off | on | on/off | cost |",
        o.latency.len()
    );
    println!("|---|---|---|---|---|");
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (a, b) = (ms(percentile(&o.latency, p)), ms(percentile(&n.latency, p)));
        println!("| {label} | {a:.3} ms | {b:.3} ms | {:.3}x | {:+.1}% |", b / a, cost(a, b));
    }
    println!();
    let (orps, nrps) = (mean(&o.rps), mean(&n.rps));
    let (os, ns) = (mean(&o.server_cpu) * 1e6, mean(&n.server_cpu) * 1e6);
    let (of, nf) = (mean(&o.function_cpu) * 1e6, mean(&n.function_cpu) * 1e6);
    let (ol, nl) = (mean(&o.ledger_cpu) * 1e6, mean(&n.ledger_cpu) * 1e6);
    println!(
        "| throughput, concurrency 32, {rounds} alternating rounds of {seconds} s per side | off | on | on/off | cost |"
    );
    println!("|---|---|---|---|---|");
    println!("| requests/s | {orps:.0} | {nrps:.0} | {:.3} | {:+.1}% |", nrps / orps, (1.0 - nrps / orps) * 100.0);
    println!("| errors | {} | {} | | |", o.errors, n.errors);
    println!("| server CPU per request | {os:.1} µs | {ns:.1} µs | {:.3}x | {:+.1}% |", ns / os, cost(os, ns));
    println!("| of which the ledger writer thread (`{LEDGER_THREAD}`) | {ol:.1} µs | {nl:.1} µs | | |");
    println!(
        "| function processes' CPU per request | {of:.1} µs | {nf:.1} µs | {:.3}x | {:+.1}% |",
        nf / of,
        cost(of, nf)
    );
    let rounds_rps: Vec<String> = o.rps.iter().zip(&n.rps).map(|(a, b)| format!("{a:.0} / {b:.0}")).collect();
    println!("| requests/s by round (off / on) | {} | | | |", rounds_rps.join(", "));
    let rounds_cpu: Vec<String> =
        o.server_cpu.iter().zip(&n.server_cpu).map(|(a, b)| format!("{:.0} / {:.0}", a * 1e6, b * 1e6)).collect();
    println!("| server CPU per request by round (off / on, µs) | {} | | | |", rounds_cpu.join(", "));
    println!();

    // The ledger's writer batches its commits: give it a moment before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (orows, ometrics) = recorded(&client, &off).await?;
    let (nrows, nmetrics) = recorded(&client, &on).await?;
    println!(
        "Ledger rows: off {orows}, on {nrows} (each side served at least {:.0} timed invocations, plus warm-ups); \
         GET /metrics: off {ometrics}, on {nmetrics}.",
        o.invoked.min(n.invoked)
    );
    println!();
    Ok(())
}
