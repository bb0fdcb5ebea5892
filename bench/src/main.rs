//! Stratus benchmarks. Every number is reported next to a baseline measured in the same run,
//! on the same machine, by the same client, so the ratios mean something on any host:
//!
//! - `warm`: latency (p50, p99 at concurrency 1) and throughput (concurrency 32) of a no-op
//!   Rust function (`examples/rust-echo`) through Invoke, against a plain hyper server doing the
//!   same JSON echo (`floor`).
//! - `cold`: the time of an invocation that starts a new environment, per runtime, against
//!   starting the same interpreter and handler directly.
//! - `http`: a function URL against Invoke of the same function (latency and throughput).
//! - `metering`: the same warm Invoke with metering on (the default) against `--no-metering`.
//! - `objects`: the S3 API's PUT/GET throughput against the same bytes written and read on the
//!   same disk directly, and upload-to-invocation latency against an async Invoke.
//! - `schedules`: 10,000 schedules due at the same top of a minute against one: idle CPU and
//!   the lateness of the firings.
//! - `mappings`: records per second through event source mappings (NATS JetStream, Redis
//!   Streams, RabbitMQ, MQTT, PostgreSQL) into a no-op function, against a plain client of the
//!   same broker consuming as many records in batches of the same size with the same
//!   acknowledgement or checkpoint per batch. It needs brokers: `bench/brokers.py` starts them.
//!
//! Run `cargo build --release --workspace && target/release/stratus-bench all` (see README.md).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cluster;
mod mappings;
mod metering;
mod objects;
mod schedules;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Parser)]
#[command(about = "Stratus benchmarks (each against a baseline from the same run)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Directory holding the release binaries (stratus, rust-echo).
    #[arg(long, default_value = "target/release", global = true)]
    bin_dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every benchmark.
    All,
    /// Warm invoke latency and throughput against the hyper floor.
    Warm {
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Cold-start time per runtime against a direct start.
    Cold {
        #[arg(long, default_value_t = 15)]
        iterations: usize,
    },
    /// What the sandbox costs: cold starts isolated vs unisolated, warm latency with freezing
    /// at every idle moment, after 50 ms idle, and never.
    Sandbox {
        #[arg(long, default_value_t = 15)]
        iterations: usize,
        #[arg(long, default_value_t = 3000)]
        requests: usize,
    },
    /// Scale-out from zero to 200 concurrent environments, and the async queue's enqueue and
    /// drain rates.
    Scale {
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        #[arg(long, default_value_t = 2000)]
        events: usize,
    },
    /// A function URL against Invoke of the same function: latency and throughput.
    Http {
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What metering costs: warm Invoke with a ledger row and metrics per invocation (the
    /// default) against `--no-metering`, in alternating rounds.
    Metering {
        /// Sequential requests per side for p50/p99, split over the rounds.
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        /// Seconds measured per throughput round (after a 2 s warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds per side; the sides alternate (off, on, off, on, ...).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The object API: PUT and GET throughput (4 KB and 8 MB objects) against writing and
    /// reading the same bytes on the same disk directly, and upload-to-invocation latency
    /// against an asynchronous Invoke of the same function.
    Objects {
        /// Seconds measured per throughput run (after a 1 s warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Uploads timed for the upload-to-invocation latency.
        #[arg(long, default_value_t = 200)]
        events: usize,
    },
    /// The scheduler: 10,000 schedules due at the same top of a minute vs one; the server's
    /// idle CPU and the lateness of the firings.
    Schedules {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Seconds of idle CPU measured on each side.
        #[arg(long, default_value_t = 20)]
        idle_secs: u64,
    },
    /// Event source mappings: records/s through a no-op function with BatchSize 100, per
    /// source, against a plain client of the same broker. Sources without a URL are skipped;
    /// `bench/brokers.py` starts private brokers and passes their URLs in the environment.
    Mappings {
        #[arg(long, env = "STRATUS_BENCH_NATS")]
        nats: Option<String>,
        #[arg(long, env = "STRATUS_BENCH_REDIS")]
        redis: Option<String>,
        /// A superuser URL (the bench creates databases, tables and replication slots); the
        /// server needs wal_level=logical and wal2json.
        #[arg(long, env = "STRATUS_BENCH_POSTGRES")]
        postgres: Option<String>,
        #[arg(long, env = "STRATUS_BENCH_RABBITMQ")]
        rabbitmq: Option<String>,
        #[arg(long, env = "STRATUS_BENCH_MQTT")]
        mqtt: Option<String>,
        /// Bootstrap servers (`host:port`); topics are created and deleted by the bench.
        #[arg(long, env = "STRATUS_BENCH_KAFKA")]
        kafka: Option<String>,
        /// Records per side and source (rounded up to a whole number of batches).
        #[arg(long, default_value_t = 50_000)]
        records: usize,
        /// Records per side for PostgreSQL (inserted in transactions of 100).
        #[arg(long, default_value_t = 10_000)]
        pg_records: usize,
        /// Rounds per source, each with fresh copies; the side that goes first alternates.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Cluster mode: the forwarding hop against a local invocation, failover after kill -9,
    /// and the background load many nodes put on one PostgreSQL.
    Cluster {
        /// A PostgreSQL superuser URL (the bench creates its databases).
        #[arg(long, env = "STRATUS_BENCH_POSTGRES")]
        postgres: String,
        #[arg(long, env = "STRATUS_BENCH_NATS")]
        nats: String,
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        /// Simulated nodes driving the database at once.
        #[arg(long, default_value_t = 32)]
        nodes: usize,
    },
    /// The floor: a plain hyper server echoing JSON (used by `warm`).
    Floor,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(conn)
}

async fn request(client: &HttpClient, method: &str, url: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
    request_to(client, method, url, None, body).await
}

/// A request with its own `Host` (function URLs are named by host, reached at 127.0.0.1).
async fn request_to(
    client: &HttpClient,
    method: &str,
    url: &str,
    host: Option<&str>,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let mut req = hyper::Request::builder().method(method).uri(url).header("content-type", "application/json");
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let req = req.body(Full::new(body))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A child process that prints `... http://ADDR` on its first stdout line (and, for Stratus,
/// its HTTP front's on the second).
struct Proc {
    child: Child,
    addr: SocketAddr,
    /// The addresses of the further lines read.
    more: Vec<SocketAddr>,
}

impl Proc {
    fn start(cmd: Command) -> anyhow::Result<Self> {
        Self::start_lines(cmd, 1)
    }

    fn start_lines(mut cmd: Command, lines: usize) -> anyhow::Result<Self> {
        // STRATUS_BENCH_LOG=FILE keeps the processes' logs (appended), to see why a run failed.
        let stderr = match std::env::var_os("STRATUS_BENCH_LOG") {
            Some(path) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
            None => Stdio::null(),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().context("cannot start process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut addrs = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let addr: SocketAddr =
                line.trim().rsplit("http://").next().context("no address")?.parse().context("bad address")?;
            addrs.push(addr);
        }
        let addr = addrs.remove(0);
        Ok(Self { child, addr, more: addrs })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn zip_of(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default().unix_permissions(*mode))?;
        w.write_all(data)?;
    }
    Ok(w.finish()?.into_inner())
}

struct Stratus {
    proc: Proc,
    _dir: tempfile::TempDir,
    client: HttpClient,
}

impl Stratus {
    fn start(bin_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin_dir, &[])
    }

    fn start_with(bin_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(bin_dir.join("stratus"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0"]);
        cmd.arg("--data-dir").arg(dir.path());
        if !extra.contains(&"--max-environments") {
            cmd.args(["--max-environments", "64"]);
        }
        cmd.args(extra);
        // Quiet unless asked (STRATUS_LOG=info with STRATUS_BENCH_LOG=FILE, to see a failure).
        cmd.env("STRATUS_LOG", std::env::var("STRATUS_LOG").unwrap_or_else(|_| "warn".into()));
        if let Ok(v) = std::env::var("STRATUS_WORKER_THREADS") {
            cmd.env("STRATUS_WORKER_THREADS", v);
        }
        let proc = Proc::start_lines(cmd, 3)?;
        Ok(Self { proc, _dir: dir, client: http_client() })
    }

    async fn create(&self, name: &str, runtime: &str, handler: &str, zip: &[u8]) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "FunctionName": name, "Runtime": runtime, "Handler": handler, "Timeout": 30,
            "Role": "arn:aws:iam::123456789012:role/bench",
            "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
        });
        let (status, body) =
            request(&self.client, "POST", &self.proc.url("/2015-03-31/functions"), body.to_string().into()).await?;
        if status != 201 {
            bail!("create {name}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// Retires `name`'s warm environments (a configuration change does that).
    async fn retire(&self, name: &str, i: usize) -> anyhow::Result<()> {
        self.set_env(name, serde_json::json!({ "ITERATION": i.to_string() })).await
    }

    /// Sets `name`'s environment variables (UpdateFunctionConfiguration).
    async fn set_env(&self, name: &str, variables: serde_json::Value) -> anyhow::Result<()> {
        let body = serde_json::json!({ "Environment": { "Variables": variables } });
        let url = self.proc.url(&format!("/2015-03-31/functions/{name}/configuration"));
        let (status, _) = request(&self.client, "PUT", &url, body.to_string().into()).await?;
        if status != 200 {
            bail!("update {name}: {status}");
        }
        Ok(())
    }

    /// Stops the server as an operator would (SIGTERM), so it stops its environments and
    /// restores what it changed; killed (on drop) if it has not exited within 10 s.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.proc.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && matches!(self.proc.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// How the server ended, if it has (a bench that fails says whether the server died).
    fn exited(&self) -> Option<String> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let pid = nix::unistd::Pid::from_raw(self.proc.child.id() as i32);
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(WaitStatus::Exited(_, code)) => Some(format!("exit code {code}")),
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                Some(format!("killed by {signal:?}{}", if core { " (core dumped)" } else { "" }))
            }
            Ok(other) => Some(format!("{other:?}")),
            Err(e) => Some(format!("cannot tell: {e}")),
        }
    }

    fn invoke_url(&self, name: &str) -> String {
        self.proc.url(&format!("/2015-03-31/functions/{name}/invocations"))
    }
}

const EVENT: &str = r#"{"hello":"world","n":42}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 of `n` sequential requests (after a warm-up).
async fn latency(client: &HttpClient, url: &str, n: usize) -> anyhow::Result<(Duration, Duration)> {
    latency_to(client, url, None, Bytes::from_static(EVENT.as_bytes()), n).await
}

async fn latency_to(
    client: &HttpClient,
    url: &str,
    host: Option<&str>,
    body: Bytes,
    n: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut samples = latency_samples(client, url, host, body, n).await?;
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// The times of `n` sequential requests (after 200 not timed), unsorted.
async fn latency_samples(
    client: &HttpClient,
    url: &str,
    host: Option<&str>,
    body: Bytes,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..200 {
        request_to(client, "POST", url, host, body.clone()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = request_to(client, "POST", url, host, body.clone()).await?;
        samples.push(t.elapsed());
        if status != 200 {
            bail!("status {status}");
        }
    }
    Ok(samples)
}

/// CPU seconds used so far by process `pid` (all threads) and by all its live descendants
/// (function processes are grandchildren under an isolated environment's init).
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let ticks = 100.0; // USER_HZ on Linux
    let parse = |stat: &str| -> Option<(u32, f64)> {
        // Fields after the command name (which may contain spaces) start at ") ".
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1)?.parse().ok()?;
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((ppid, (utime + stime) / ticks))
    };
    let own =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parse(&s)).map(|x| x.1).unwrap_or(0.0);
    let mut procs: Vec<(u32, u32, f64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(me) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some((ppid, cpu)) = parse(&stat)
        {
            procs.push((me, ppid, cpu));
        }
    }
    // Function processes are grandchildren under an isolated environment's init.
    let mut tree = std::collections::HashSet::from([pid]);
    loop {
        let before = tree.len();
        for (me, ppid, _) in &procs {
            if tree.contains(ppid) {
                tree.insert(*me);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let descendants = procs.iter().filter(|(me, _, _)| *me != pid && tree.contains(me)).map(|p| p.2).sum();
    (own, descendants)
}

/// Requests per second with `concurrency` clients for `seconds` (after a 2 s warm-up).
async fn throughput(client: &HttpClient, url: &str, concurrency: usize, seconds: u64) -> anyhow::Result<(f64, u64)> {
    throughput_to(client, url, None, Bytes::from_static(EVENT.as_bytes()), concurrency, seconds).await
}

async fn throughput_to(
    client: &HttpClient,
    url: &str,
    host: Option<&str>,
    body: Bytes,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, host, body) = (client.clone(), url.to_string(), host.map(str::to_string), body.clone());
        let (done, errors, counting, stop) = (done.clone(), errors.clone(), counting.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = request_to(&client, "POST", &url, host.as_deref(), body.clone());
                let ok = matches!(sent.await, Ok((200, _)));
                if counting.load(Ordering::Relaxed) {
                    if ok { &done } else { &errors }.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok((done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(), errors.load(Ordering::Relaxed)))
}

async fn warm(bin_dir: &Path, requests: usize, seconds: u64) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let floor = Proc::start({
        let mut c = Command::new(exe);
        c.arg("floor");
        c
    })?;
    let stratus = Stratus::start(bin_dir)?;
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    stratus.create("bench-echo", "provided.al2023", "bootstrap", &zip_of(&[("bootstrap", &echo, 0o755)])?).await?;
    let client = http_client();
    let floor_url = floor.url("/echo");
    let invoke_url = stratus.invoke_url("bench-echo");

    println!("## warm invoke (no-op Rust function, lambda_runtime) vs a plain hyper JSON echo");
    let (f50, f99) = latency(&client, &floor_url, requests).await?;
    let (s50, s99) = latency(&client, &invoke_url, requests).await?;
    println!("| latency, concurrency 1 | floor | Stratus | ratio |");
    println!("|---|---|---|---|");
    println!("| p50 | {:.3} ms | {:.3} ms | {:.2}x |", ms(f50), ms(s50), ms(s50) / ms(f50));
    println!("| p99 | {:.3} ms | {:.3} ms | {:.2}x |", ms(f99), ms(s99), ms(s99) / ms(f99));
    let floor_cpu0 = cpu_seconds(floor.child.id());
    let (frps, ferr) = throughput(&client, &floor_url, 32, seconds).await?;
    let floor_cpu1 = cpu_seconds(floor.child.id());
    let stratus_cpu0 = cpu_seconds(stratus.proc.child.id());
    let (srps, serr) = throughput(&client, &invoke_url, 32, seconds).await?;
    let stratus_cpu1 = cpu_seconds(stratus.proc.child.id());
    // Both runs last `seconds` plus the 2 s warm-up.
    let total = (seconds + 2) as f64;
    let per_req = |cpu: f64, rps: f64| cpu / (rps * total) * 1e6;
    println!();
    println!("| throughput, concurrency 32, {seconds} s | floor | Stratus | ratio |");
    println!("|---|---|---|---|");
    println!("| requests/s | {frps:.0} | {srps:.0} | {:.2} |", srps / frps);
    println!("| errors | {ferr} | {serr} | |");
    println!(
        "| server CPU per request | {:.0} µs | {:.0} µs | {:.2}x |",
        per_req(floor_cpu1.0 - floor_cpu0.0, frps),
        per_req(stratus_cpu1.0 - stratus_cpu0.0, srps),
        per_req(stratus_cpu1.0 - stratus_cpu0.0, srps) / per_req(floor_cpu1.0 - floor_cpu0.0, frps)
    );
    println!(
        "| function processes' CPU per request | – | {:.0} µs | |",
        per_req(stratus_cpu1.1 - stratus_cpu0.1, srps)
    );
    println!();
    Ok(())
}

/// A function URL against Invoke of the same no-op Rust function, in the same run.
async fn http(bin_dir: &Path, requests: usize, seconds: u64) -> anyhow::Result<()> {
    let stratus = Stratus::start(bin_dir)?;
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    stratus.create("bench-url", "provided.al2023", "bootstrap", &zip_of(&[("bootstrap", &echo, 0o755)])?).await?;
    let (status, body) = request(
        &stratus.client,
        "POST",
        &stratus.proc.url("/2021-10-31/functions/bench-url/url"),
        Bytes::from_static(br#"{"AuthType":"NONE"}"#),
    )
    .await?;
    if status != 201 {
        bail!("create the function URL: {status} {}", String::from_utf8_lossy(&body));
    }
    let config: serde_json::Value = serde_json::from_slice(&body)?;
    // AuthType NONE answers only once the resource policy lets anyone invoke the URL.
    let permission = serde_json::json!({
        "StatementId": "public", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE",
    });
    let policy_url = stratus.proc.url("/2015-03-31/functions/bench-url/policy");
    let (status, body) = request(&stratus.client, "POST", &policy_url, permission.to_string().into()).await?;
    if status != 201 {
        bail!("allow the function URL: {status} {}", String::from_utf8_lossy(&body));
    }
    let function_url = config["FunctionUrl"].as_str().context("no FunctionUrl")?;
    let host = function_url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let front = *stratus.proc.more.first().context("no HTTP front address")?;
    let url = format!("http://{front}/");
    let invoke_url = stratus.invoke_url("bench-url");
    let client = http_client();

    // The echo function returns its event: one URL call yields the payload 2.0 event a URL
    // request becomes, so Invoke can carry the very same event (same work in the function).
    let small = Bytes::from_static(EVENT.as_bytes());
    let (_, url_event) = request_to(&client, "POST", &url, Some(&host), small.clone()).await?;

    println!("## function URL vs Invoke (the same no-op Rust function, lambda_runtime)");
    println!(
        "Invoke carries the {}-byte payload 2.0 event the URL request becomes; the URL request carries the {}-byte body.",
        url_event.len(),
        small.len()
    );
    let (i50, i99) = latency_to(&client, &invoke_url, None, url_event.clone(), requests).await?;
    let (u50, u99) = latency_to(&client, &url, Some(&host), small.clone(), requests).await?;
    println!("| latency, concurrency 1 | Invoke | function URL | ratio |");
    println!("|---|---|---|---|");
    println!("| p50 | {:.3} ms | {:.3} ms | {:.2}x |", ms(i50), ms(u50), ms(u50) / ms(i50));
    println!("| p99 | {:.3} ms | {:.3} ms | {:.2}x |", ms(i99), ms(u99), ms(u99) / ms(i99));
    let pid = stratus.proc.child.id();
    // Alternating rounds, so neither side always runs on a warmer (or more tired) machine.
    let (mut irps, mut ierr, mut urps, mut uerr) = (0.0, 0, 0.0, 0);
    let (mut icpu, mut ucpu) = ((0.0, 0.0), (0.0, 0.0));
    let round = seconds.div_ceil(2).max(1);
    for _ in 0..2 {
        let c0 = cpu_seconds(pid);
        let (r, e) = throughput_to(&client, &invoke_url, None, url_event.clone(), 32, round).await?;
        let c1 = cpu_seconds(pid);
        let (r2, e2) = throughput_to(&client, &url, Some(&host), small.clone(), 32, round).await?;
        let c2 = cpu_seconds(pid);
        (irps, ierr, urps, uerr) = (irps + r / 2.0, ierr + e, urps + r2 / 2.0, uerr + e2);
        icpu = (icpu.0 + (c1.0 - c0.0) / (r * (round + 2) as f64), icpu.1 + (c1.1 - c0.1) / (r * (round + 2) as f64));
        ucpu = (ucpu.0 + (c2.0 - c1.0) / (r2 * (round + 2) as f64), ucpu.1 + (c2.1 - c1.1) / (r2 * (round + 2) as f64));
    }
    let (is, us) = (icpu.0 / 2.0 * 1e6, ucpu.0 / 2.0 * 1e6);
    let (if_, uf) = (icpu.1 / 2.0 * 1e6, ucpu.1 / 2.0 * 1e6);
    println!();
    println!("| throughput, concurrency 32, 2 alternating rounds of {round} s | Invoke | function URL | ratio |");
    println!("|---|---|---|---|");
    println!("| requests/s | {irps:.0} | {urps:.0} | {:.2} |", urps / irps);
    println!("| errors | {ierr} | {uerr} | |");
    println!("| server CPU per request | {is:.0} µs | {us:.0} µs | {:.2}x |", us / is);
    println!("| function processes' CPU per request | {if_:.0} µs | {uf:.0} µs | {:.2}x |", uf / if_);
    println!();
    Ok(())
}

/// A minimal Runtime API serving one event, for timing a custom runtime started directly.
async fn one_shot_runtime_api() -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Receiver<()>)> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let resp = if path.ends_with("/next") {
                            let deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_millis())
                                .unwrap_or(0);
                            if tx.lock().map(|t| t.is_none()).unwrap_or(true) {
                                // Second /next: park forever (the process is killed).
                                std::future::pending::<()>().await;
                            }
                            hyper::Response::builder()
                                .header("lambda-runtime-aws-request-id", "bench")
                                .header("lambda-runtime-deadline-ms", deadline.to_string())
                                .header(
                                    "lambda-runtime-invoked-function-arn",
                                    "arn:aws:lambda:us-east-1:000000000000:function:b",
                                )
                                .body(Full::new(Bytes::from_static(EVENT.as_bytes())))
                        } else {
                            let _ = req.into_body().collect().await;
                            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                                let _ = tx.send(());
                            }
                            hyper::Response::builder().status(202).body(Full::new(Bytes::from_static(b"{}")))
                        };
                        Ok::<_, hyper::http::Error>(resp.unwrap_or_default())
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    Ok((addr, rx))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn cold(bin_dir: &Path, iterations: usize) -> anyhow::Result<()> {
    let stratus = Stratus::start(bin_dir)?;
    let work = tempfile::tempdir()?;
    let py_src = "def handler(event, context):\n    return event\n";
    let node_src = "exports.handler = async (event) => event;\n";
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    let python = ["/usr/bin/python3.11", "/usr/local/bin/python3.11"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("python3.11 not found")?;
    std::fs::write(work.path().join("app.py"), py_src)?;
    std::fs::write(work.path().join("index.js"), node_src)?;
    std::fs::write(work.path().join("bootstrap"), &echo)?;
    std::process::Command::new("chmod").arg("755").arg(work.path().join("bootstrap")).status()?;

    stratus.create("cold-py", "python3.11", "app.handler", &zip_of(&[("app.py", py_src.as_bytes(), 0o644)])?).await?;
    stratus
        .create("cold-node", "nodejs20.x", "index.handler", &zip_of(&[("index.js", node_src.as_bytes(), 0o644)])?)
        .await?;
    stratus.create("cold-rust", "provided.al2023", "bootstrap", &zip_of(&[("bootstrap", &echo, 0o755)])?).await?;

    println!("## cold start: one invocation on a new environment vs starting the same program directly");
    println!("| runtime | direct start (median) | Stratus cold invoke (median) | overhead |");
    println!("|---|---|---|---|");
    let cases: [(&str, &str); 3] =
        [("python3.11", "cold-py"), ("nodejs20.x", "cold-node"), ("provided.al2023 (Rust)", "cold-rust")];
    for (label, name) in cases {
        let mut direct = Vec::new();
        let mut via = Vec::new();
        for i in 0..iterations {
            // Direct: the interpreter imports the handler and calls it once.
            let t = Instant::now();
            match name {
                "cold-py" | "cold-node" => {
                    // Timed until the result is printed (not until the interpreter exits), the
                    // same point at which a Stratus invocation returns.
                    let mut cmd = if name == "cold-py" {
                        let mut c = Command::new(&python);
                        c.args(["-c", "import app, json, sys; sys.stdout.write(json.dumps(app.handler({'hello': 'world'}, None)) + '\\n'); sys.stdout.flush()"]);
                        c
                    } else {
                        let mut c = Command::new("node");
                        c.args(["-e", "require('./index.js').handler({hello:'world'}).then(r => process.stdout.write(JSON.stringify(r) + '\\n'))"]);
                        c
                    };
                    // A clean environment, as Stratus gives functions (this host's shell sets e.g.
                    // NODE_EXTRA_CA_CERTS, which costs Node ~75 ms at start).
                    cmd.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin").env("LANG", "en_US.UTF-8");
                    let mut child = cmd.current_dir(work.path()).stdout(Stdio::piped()).spawn()?;
                    let mut line = String::new();
                    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
                    direct.push(t.elapsed());
                    let _ = child.wait();
                    if !line.contains("world") {
                        bail!("direct {name} printed {line:?}");
                    }
                }
                _ => {
                    let (addr, answered) = one_shot_runtime_api().await?;
                    let mut child = Command::new(work.path().join("bootstrap"))
                        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
                        .env("AWS_LAMBDA_FUNCTION_NAME", "b")
                        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()?;
                    let _ = answered.await;
                    direct.push(t.elapsed());
                    let _ = child.kill();
                    let _ = child.wait();
                    stratus.retire(name, i).await?;
                    let t = Instant::now();
                    let (status, _) = request(
                        &stratus.client,
                        "POST",
                        &stratus.invoke_url(name),
                        Bytes::from_static(EVENT.as_bytes()),
                    )
                    .await?;
                    via.push(t.elapsed());
                    if status != 200 {
                        bail!("invoke {name}: {status}");
                    }
                    continue;
                }
            }
            stratus.retire(name, i).await?;
            let t = Instant::now();
            let (status, _) =
                request(&stratus.client, "POST", &stratus.invoke_url(name), Bytes::from_static(EVENT.as_bytes()))
                    .await?;
            via.push(t.elapsed());
            if status != 200 {
                bail!("invoke {name}: {status}");
            }
        }
        let (d, v) = (median(direct), median(via));
        println!("| {label} | {:.1} ms | {:.1} ms | {:+.1} ms |", ms(d), ms(v), ms(v) - ms(d));
    }
    println!();
    Ok(())
}

/// Median time of an invocation that starts a new environment.
async fn cold_median(stratus: &Stratus, name: &str, iterations: usize) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        stratus.retire(name, i).await?;
        // Let the retired environment's teardown finish: it is not part of a cold start.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let t = Instant::now();
        let (status, body) =
            request(&stratus.client, "POST", &stratus.invoke_url(name), Bytes::from_static(EVENT.as_bytes())).await?;
        samples.push(t.elapsed());
        if status != 200 {
            bail!("invoke {name}: {status} {}", String::from_utf8_lossy(&body));
        }
    }
    Ok(median(samples))
}

async fn sandbox(bin_dir: &Path, iterations: usize, requests: usize) -> anyhow::Result<()> {
    let py_src = "def handler(event, context):\n    return event\n";
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    let py_zip = zip_of(&[("app.py", py_src.as_bytes(), 0o644)])?;
    let rust_zip = zip_of(&[("bootstrap", &echo, 0o755)])?;
    println!("## sandbox: cold start isolated vs unisolated (same binary, same run)");
    println!(
        "| runtime | unisolated (median) | isolated (median) | sandbox cost | isolated without a user namespace | user namespace cost |"
    );
    println!("|---|---|---|---|---|---|");
    let bare = Stratus::start_with(bin_dir, &["--unisolated"])?;
    let isolated = Stratus::start(bin_dir)?;
    let no_userns = Stratus::start_with(bin_dir, &["--no-user-namespace"])?;
    for s in [&bare, &isolated, &no_userns] {
        s.create("cold-py", "python3.11", "app.handler", &py_zip).await?;
        s.create("cold-rust", "provided.al2023", "bootstrap", &rust_zip).await?;
    }
    for (label, name) in [("python3.11", "cold-py"), ("provided.al2023 (Rust)", "cold-rust")] {
        // Interleaved so that all three see the same machine state.
        let (mut b, mut i, mut n) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..iterations {
            b.push(cold_median(&bare, name, 1).await?);
            i.push(cold_median(&isolated, name, 1).await?);
            n.push(cold_median(&no_userns, name, 1).await?);
        }
        let (b, i, n) = (median(b), median(i), median(n));
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {:+.1} ms | {:.1} ms | {:+.1} ms |",
            ms(b),
            ms(i),
            ms(i) - ms(b),
            ms(n),
            ms(i) - ms(n)
        );
    }
    drop(bare);
    drop(isolated);
    drop(no_userns);
    println!();
    println!("## sandbox: warm invoke latency (Rust no-op), concurrency 1, by freezing policy");
    println!("| freezing | p50 | p99 |");
    println!("|---|---|---|");
    for (label, args) in [
        ("unisolated (no sandbox)", &["--unisolated"][..]),
        ("isolated, never frozen", &["--no-freeze"][..]),
        ("isolated, frozen after 50 ms idle (default)", &[][..]),
        ("isolated, frozen after every invocation", &["--freeze-after-ms", "0"][..]),
    ] {
        let s = Stratus::start_with(bin_dir, args)?;
        s.create("warm-rust", "provided.al2023", "bootstrap", &rust_zip).await?;
        let (p50, p99) = latency(&s.client, &s.invoke_url("warm-rust"), requests).await?;
        println!("| {label} | {:.3} ms | {:.3} ms |", ms(p50), ms(p99));
    }
    println!();
    Ok(())
}

/// Runs `n` requests at `concurrency`, returning (elapsed, failures).
async fn burst(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    n: usize,
    concurrency: usize,
) -> (Duration, usize) {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, failed) = (client.clone(), url.to_string(), next.clone(), failed.clone());
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let body = Bytes::copy_from_slice(body);
        tasks.push(tokio::spawn(async move {
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < n {
                let mut req = hyper::Request::builder().method("POST").uri(&url);
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let ok = match req.body(Full::new(body.clone())) {
                    Ok(r) => match client.request(r).await {
                        Ok(resp) => {
                            let s = resp.status().as_u16();
                            let _ = resp.into_body().collect().await;
                            (200..300).contains(&s)
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (started.elapsed(), failed.load(Ordering::Relaxed) as usize)
}

async fn queued(stratus: &Stratus) -> anyhow::Result<u64> {
    let (_, body) = request(&stratus.client, "GET", &stratus.proc.url("/_stratus/health"), Bytes::new()).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["queued_async_events"].as_u64().context("no queue length")
}

async fn scale(bin_dir: &Path, concurrency: usize, events: usize) -> anyhow::Result<()> {
    let stratus = Stratus::start_with(bin_dir, &["--max-environments", "1000"])?;
    let py_sleep = "import time\ndef handler(event, context):\n    time.sleep(0.1)\n    return event\n";
    stratus.create("sleepy", "python3.11", "app.handler", &zip_of(&[("app.py", py_sleep.as_bytes(), 0o644)])?).await?;
    let python = PathBuf::from("/usr/bin/python3.11");
    println!("## scale-out: {concurrency} concurrent invocations of a Python function that sleeps 100 ms, from zero");
    // Baseline: the same number of interpreters started directly, all at once, each running
    // the same handler, timed until the last prints.
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("app.py"), py_sleep)?;
    let t = Instant::now();
    let mut children = Vec::new();
    for _ in 0..concurrency {
        children.push(
            Command::new(&python)
                .args(["-c", "import app; app.handler({}, None)"])
                .current_dir(work.path())
                .env_clear()
                .stdout(Stdio::null())
                .spawn()?,
        );
    }
    for mut c in children {
        c.wait()?;
    }
    let direct = t.elapsed();
    let url = stratus.invoke_url("sleepy");
    let (elapsed, failures) = burst(&stratus.client, &url, &[], EVENT.as_bytes(), concurrency, concurrency).await;
    let (_, body) =
        request(&stratus.client, "GET", &stratus.proc.url("/_stratus/functions/sleepy/environments"), Bytes::new())
            .await?;
    let envs: serde_json::Value = serde_json::from_slice(&body)?;
    println!("| | time until all {concurrency} answered | errors | environments started |");
    println!("|---|---|---|---|");
    println!("| {concurrency} interpreters started directly | {:.2} s | – | – |", direct.as_secs_f64());
    println!("| Stratus, from zero | {:.2} s | {failures} | {} |", elapsed.as_secs_f64(), envs["live"]);
    println!("| ratio | {:.2}x | | |", elapsed.as_secs_f64() / direct.as_secs_f64());
    println!();
    drop(stratus);

    println!("## async queue: {events} Event invocations of a no-op Rust function, 16 clients");
    let stratus = Stratus::start(bin_dir)?;
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    stratus.create("async-echo", "provided.al2023", "bootstrap", &zip_of(&[("bootstrap", &echo, 0o755)])?).await?;
    let url = stratus.invoke_url("async-echo");
    // Baseline for enqueueing: the same durable insert straight into SQLite (WAL, synchronous=NORMAL,
    // one transaction per event), as the queue does it.
    let db_dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(db_dir.path().join("q.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch("CREATE TABLE q (id INTEGER PRIMARY KEY, request_id TEXT, payload BLOB, at INTEGER)")?;
    let t = Instant::now();
    for i in 0..events {
        conn.execute(
            "INSERT INTO q (request_id, payload, at) VALUES (?1, ?2, ?3)",
            rusqlite::params![i.to_string(), EVENT.as_bytes(), i as i64],
        )?;
    }
    let sqlite_rate = events as f64 / t.elapsed().as_secs_f64();
    // Enqueue rate, measured while the queue is not being drained: the target function can run
    // one invocation at a time and each takes a second. It is deleted afterwards (and its
    // queued events with it).
    let py_slow = "import time\ndef handler(event, context):\n    time.sleep(1)\n";
    stratus
        .create("async-parked", "python3.11", "app.handler", &zip_of(&[("app.py", py_slow.as_bytes(), 0o644)])?)
        .await?;
    let conc = stratus.proc.url("/2017-10-31/functions/async-parked/concurrency");
    request(&stratus.client, "PUT", &conc, Bytes::from_static(br#"{"ReservedConcurrentExecutions": 1}"#)).await?;
    let parked = stratus.invoke_url("async-parked");
    let (enqueue_time, enqueue_failures) =
        burst(&stratus.client, &parked, &[("x-amz-invocation-type", "Event")], EVENT.as_bytes(), events, 16).await;
    let enqueue_rate = events as f64 / enqueue_time.as_secs_f64();
    request(&stratus.client, "DELETE", &stratus.proc.url("/2015-03-31/functions/async-parked"), Bytes::new()).await?;
    // Drain rate: everything queued at once for the no-op function, timed until the queue is empty.
    let started = Instant::now();
    let _ = burst(&stratus.client, &url, &[("x-amz-invocation-type", "Event")], EVENT.as_bytes(), events, 16).await;
    while queued(&stratus).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_rate = events as f64 / started.elapsed().as_secs_f64();
    let (sync_time, _) = burst(&stratus.client, &url, &[], EVENT.as_bytes(), events, 16).await;
    let sync_rate = events as f64 / sync_time.as_secs_f64();
    println!("| | Stratus | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| enqueue (202s per second) vs direct SQLite inserts | {enqueue_rate:.0}/s | {sqlite_rate:.0}/s | {:.2} |",
        enqueue_rate / sqlite_rate
    );
    println!(
        "| end-to-end drain, from the first 202 to an empty queue, vs warm sync invokes | {drain_rate:.0}/s | {sync_rate:.0}/s | {:.2} |",
        drain_rate / sync_rate
    );
    println!("| enqueue errors | {enqueue_failures} | | |");
    println!();
    Ok(())
}

/// The floor: a hyper server that parses and re-serializes a JSON body.
async fn floor() -> anyhow::Result<()> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("floor listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await?.to_bytes();
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let out = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(out)))
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.command {
            Cmd::Floor => floor().await,
            Cmd::Cluster { postgres, nats, requests, nodes } => {
                cluster::cluster(&cli.bin_dir, &cluster::Services { postgres, nats }, requests, nodes).await
            }
            Cmd::Warm { requests, seconds } => warm(&cli.bin_dir, requests, seconds).await,
            Cmd::Cold { iterations } => cold(&cli.bin_dir, iterations).await,
            Cmd::Sandbox { iterations, requests } => sandbox(&cli.bin_dir, iterations, requests).await,
            Cmd::Scale { concurrency, events } => scale(&cli.bin_dir, concurrency, events).await,
            Cmd::Http { requests, seconds } => http(&cli.bin_dir, requests, seconds).await,
            Cmd::Metering { requests, seconds, rounds } => {
                metering::metering(&cli.bin_dir, requests, seconds, rounds).await
            }
            Cmd::Objects { seconds, events } => objects::objects(&cli.bin_dir, seconds, events).await,
            Cmd::Schedules { count, idle_secs } => schedules::schedules(&cli.bin_dir, count, idle_secs).await,
            Cmd::Mappings { nats, redis, postgres, rabbitmq, mqtt, kafka, records, pg_records, rounds } => {
                let brokers = mappings::Brokers { nats, redis, postgres, rabbitmq, mqtt, kafka };
                mappings::mappings(&cli.bin_dir, &brokers, records, pg_records, rounds).await
            }
            Cmd::All => {
                warm(&cli.bin_dir, 3000, 10).await?;
                cold(&cli.bin_dir, 15).await?;
                sandbox(&cli.bin_dir, 15, 3000).await?;
                scale(&cli.bin_dir, 200, 2000).await?;
                http(&cli.bin_dir, 3000, 10).await?;
                metering::metering(&cli.bin_dir, 3000, 5, 3).await?;
                objects::objects(&cli.bin_dir, 5, 200).await?;
                schedules::schedules(&cli.bin_dir, 10_000, 20).await?;
                let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let brokers = mappings::Brokers {
                    nats: var("STRATUS_BENCH_NATS"),
                    redis: var("STRATUS_BENCH_REDIS"),
                    postgres: var("STRATUS_BENCH_POSTGRES"),
                    rabbitmq: var("STRATUS_BENCH_RABBITMQ"),
                    mqtt: var("STRATUS_BENCH_MQTT"),
                    kafka: var("STRATUS_BENCH_KAFKA"),
                };
                if brokers.any() {
                    mappings::mappings(&cli.bin_dir, &brokers, 50_000, 10_000, 2).await
                } else {
                    println!("mappings: skipped (no broker URLs in the environment; see bench/README.md)");
                    Ok(())
                }
            }
        }
    })
}
