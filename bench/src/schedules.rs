//! `schedules`: what many schedules cost the scheduler.
//!
//! Two servers from the same binary, each with the same no-op Rust function (reserved
//! concurrency 4, so delivering the invocations stays out of the scheduler's way). The first
//! has one schedule, the second `count` (10,000 by default), all `cron(* * * * ? *)`, so at the
//! top of a minute every one is due at once. For each: the server's CPU while idle (between
//! minutes, before any schedule exists and with all of them registered) and the lateness of
//! the firings at the top of a minute (seconds from the tick to the commit that fired it,
//! `scheduler_fire_lateness_seconds` on `/metrics`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;

use super::{Stratus, cpu_seconds, request, zip_of};

/// Sleeps until `offset` seconds past the next top of a minute.
async fn until_minute(offset: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let into = now.as_millis() as u64 % 60_000;
    let target = offset * 1000;
    let wait = if into < target { target - into } else { 60_000 - into + target };
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// The quantiles and count of the lateness summary.
fn lateness(metrics: &str) -> (Vec<(String, f64)>, f64) {
    let mut q = Vec::new();
    let mut count = 0.0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("scheduler_fire_lateness_seconds{") {
            if let (Some(qs), Some(v)) = (rest.split("quantile=\"").nth(1), rest.rsplit(' ').next()) {
                let quantile = qs.split('"').next().unwrap_or("").to_string();
                q.push((quantile, v.parse().unwrap_or(f64::NAN)));
            }
        } else if let Some(rest) = line.strip_prefix("scheduler_fire_lateness_seconds_count") {
            count = rest.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        }
    }
    (q, count)
}

struct Side {
    idle_before: f64,
    idle_after: f64,
    register_secs: f64,
    quantiles: Vec<(String, f64)>,
    fired: f64,
}

async fn side(bin_dir: &Path, count: usize, idle_secs: u64) -> anyhow::Result<Side> {
    let stratus = Arc::new(Stratus::start(bin_dir)?);
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    stratus.create("tick", "provided.al2023", "bootstrap", &zip_of(&[("bootstrap", &echo, 0o755)])?).await?;
    let (status, _) = request(
        &stratus.client,
        "PUT",
        &stratus.proc.url("/2017-10-31/functions/tick/concurrency"),
        Bytes::from_static(br#"{"ReservedConcurrentExecutions": 4}"#),
    )
    .await?;
    if status != 200 {
        bail!("put concurrency: {status}");
    }
    let pid = stratus.proc.child.id();
    let idle = |secs: u64| async move {
        let c0 = cpu_seconds(pid).0;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        (cpu_seconds(pid).0 - c0) / secs as f64
    };
    // Registered and idle well before a minute's top.
    until_minute(2).await;
    let idle_before = idle(idle_secs).await;
    let t = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (stratus, next) = (stratus.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = serde_json::json!({
                    "ScheduleExpression": "cron(* * * * ? *)",
                    "FlexibleTimeWindow": { "Mode": "OFF" },
                    "Target": { "Arn": "arn:aws:lambda:us-east-1:000000000000:function:tick", "RoleArn": "arn:aws:iam::000000000000:role/b" },
                });
                let (status, resp) =
                    request(&stratus.client, "POST", &stratus.proc.url(&format!("/schedules/s{i}")), body.to_string().into())
                        .await?;
                if status != 200 {
                    bail!("create schedule: {status} {}", String::from_utf8_lossy(&resp));
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let register_secs = t.elapsed().as_secs_f64();
    // The first top of a minute after registering: all fire; read the summary 15 s later.
    until_minute(15).await;
    let (_, metrics) = request(&stratus.client, "GET", &stratus.proc.url("/metrics"), Bytes::new()).await?;
    let (quantiles, fired) = lateness(&String::from_utf8_lossy(&metrics));
    until_minute(25).await;
    let idle_after = idle(idle_secs).await;
    Ok(Side { idle_before, idle_after, register_secs, quantiles, fired })
}

pub async fn schedules(bin_dir: &Path, count: usize, idle_secs: u64) -> anyhow::Result<()> {
    let one = side(bin_dir, 1, idle_secs).await?;
    let many = side(bin_dir, count, idle_secs).await?;
    println!("## scheduler: {count} schedules firing at the same top of a minute vs one schedule");
    println!();
    println!(
        "| schedules | registered in | idle CPU before (s/s) | idle CPU after (s/s) | fired | lateness p50 | p90 | p99 | max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, s) in [(1, &one), (count, &many)] {
        let q = |k: &str| s.quantiles.iter().find(|(q, _)| q == k).map_or(f64::NAN, |x| x.1 * 1000.0);
        println!(
            "| {n} | {:.1} s | {:.4} | {:.4} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            s.register_secs,
            s.idle_before,
            s.idle_after,
            s.fired,
            q("0.5"),
            q("0.9"),
            q("0.99"),
            q("1")
        );
    }
    Ok(())
}
