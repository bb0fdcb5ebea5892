//! `stratus-bench cluster`: what cluster mode costs and how it fails over.
//!
//! 1. The forwarding hop: p50/p99 of a warm invocation of a no-op Rust function sent to the
//!    node that owns its version (served locally) against one sent to another node (forwarded
//!    to the owner), alternating rounds in the same run; and the database transactions the
//!    cluster commits per 1,000 warm invocations (ledger batches; nothing else is on the path).
//! 2. Failover: three nodes, a NATS mapping and async events claimed by the node that is then
//!    killed (`kill -9`): time until a survivor declares it dead (its claims and leases are
//!    released in that transaction), until the mapping is polled by a survivor, and until every
//!    event it had claimed has run.
//! 3. Scale on paper, measured: many simulated nodes' worth of the background statements a node
//!    makes (heartbeat, membership read, dead-node check, lease renewals, idle queue claims,
//!    ledger batches at a given invocation rate) against one PostgreSQL, as fast as it takes
//!    them: node-seconds of work per second is the node count it would carry.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::{HttpClient, Stratus, http_client, latency_samples, ms, percentile, request, zip_of};

/// Where the cluster's services are.
pub struct Services {
    /// A superuser URL (the bench makes a database of its own).
    pub postgres: String,
    pub nats: String,
}

async fn fresh_database(admin_url: &str) -> anyhow::Result<String> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let name = format!("stratus_bench_{}_{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1000);
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await?;
    client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

async fn transactions(url: &str) -> anyhow::Result<i64> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    // Statistics are flushed by each backend at most every second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let row = client
        .query_one("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()", &[])
        .await?;
    Ok(row.get(0))
}

fn node(bin_dir: &Path, services: &Services, database: &str, id: &str) -> anyhow::Result<Stratus> {
    Stratus::start_with(
        bin_dir,
        &["--database-url", database, "--nats-url", &services.nats, "--node-id", id, "--max-environments", "64"],
    )
}

async fn status(client: &HttpClient, node: &Stratus) -> anyhow::Result<serde_json::Value> {
    let (code, body) = request(client, "GET", &node.proc.url("/_stratus/cluster"), Bytes::new()).await?;
    if code != 200 {
        bail!("cluster status: {code}");
    }
    Ok(serde_json::from_slice(&body)?)
}

async fn wait_nodes(client: &HttpClient, node: &Stratus, live: usize) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let s = status(client, node).await?;
        let n = s["nodes"].as_array().map_or(0, |a| a.iter().filter(|n| n["state"] == "live").count());
        if n == live {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the cluster did not reach {live} live nodes")
}

/// Which node holds a function's environments.
async fn owner(client: &HttpClient, nodes: &[Stratus], name: &str) -> anyhow::Result<usize> {
    for (i, n) in nodes.iter().enumerate() {
        let (_, body) =
            request(client, "GET", &n.proc.url(&format!("/_stratus/functions/{name}/environments")), Bytes::new())
                .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if v["live"].as_u64().unwrap_or(0) > 0 {
            return Ok(i);
        }
    }
    bail!("no node runs {name}")
}

pub async fn cluster(
    bin_dir: &Path,
    services: &Services,
    requests: usize,
    nodes_simulated: usize,
) -> anyhow::Result<()> {
    hop(bin_dir, services, requests).await?;
    failover(bin_dir, services).await?;
    load(services, nodes_simulated).await
}

async fn hop(bin_dir: &Path, services: &Services, requests: usize) -> anyhow::Result<()> {
    let database = fresh_database(&services.postgres).await?;
    let nodes = vec![node(bin_dir, services, &database, "a")?, node(bin_dir, services, &database, "b")?];
    let client = http_client();
    wait_nodes(&client, &nodes[0], 2).await?;
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    nodes[0].create("bench-echo", "provided.al2023", "bootstrap", &zip_of(&[("bootstrap", &echo, 0o755)])?).await?;
    let body = Bytes::from_static(crate::EVENT.as_bytes());
    request(&client, "POST", &nodes[1].invoke_url("bench-echo"), body.clone()).await?;
    let own = owner(&client, &nodes, "bench-echo").await?;
    let (local, remote) = (&nodes[own], &nodes[1 - own]);
    let (mut here, mut there) = (Vec::new(), Vec::new());
    let before = transactions(&database).await?;
    let rounds = 3;
    for _ in 0..rounds {
        here.extend(
            latency_samples(&client, &local.invoke_url("bench-echo"), None, body.clone(), requests / rounds).await?,
        );
        there.extend(
            latency_samples(&client, &remote.invoke_url("bench-echo"), None, body.clone(), requests / rounds).await?,
        );
    }
    let after = transactions(&database).await?;
    here.sort();
    there.sort();
    let invocations = (here.len() + there.len() + 2 * 200 * rounds) as f64;
    println!("## cluster: the forwarding hop (no-op Rust function, 2 nodes, warm)");
    println!("| latency, concurrency 1 | on the owner | through another node | added |");
    println!("|---|---|---|---|");
    for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
        let (a, b) = (percentile(&here, p), percentile(&there, p));
        println!(
            "| {label} | {:.3} ms | {:.3} ms | {:.0} µs ({:.2}x) |",
            ms(a),
            ms(b),
            (ms(b) - ms(a)) * 1000.0,
            ms(b) / ms(a)
        );
    }
    println!();
    println!(
        "Database transactions during the rounds: {} for {invocations:.0} invocations, {:.1} per 1,000 (ledger batches, heartbeats and the nodes' background work; none on an invocation's path).",
        after - before,
        (after - before) as f64 / invocations * 1000.0
    );
    println!();
    Ok(())
}

async fn failover(bin_dir: &Path, services: &Services) -> anyhow::Result<()> {
    let database = fresh_database(&services.postgres).await?;
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(node(bin_dir, services, &database, id)?);
    }
    let client = http_client();
    wait_nodes(&client, &nodes[0], 3).await?;
    let echo = std::fs::read(bin_dir.join("rust-echo")).context("build examples/rust-echo in release first")?;
    nodes[0].create("bench-echo", "provided.al2023", "bootstrap", &zip_of(&[("bootstrap", &echo, 0o755)])?).await?;
    // A NATS stream and a mapping on it.
    let nc = async_nats::connect(&services.nats).await?;
    let js = async_nats::jetstream::new(nc);
    let stream = format!("FAILOVER{}", std::process::id());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        ..Default::default()
    })
    .await?;
    let mapping = serde_json::json!({
        "FunctionName": "bench-echo", "Topics": [stream], "StartingPosition": "TRIM_HORIZON",
        "SelfManagedEventSource": {"Endpoints": {"NATS_SERVERS": [services.nats]}},
    });
    let (code, body) =
        request(&client, "POST", &nodes[0].proc.url("/2015-03-31/event-source-mappings/"), mapping.to_string().into())
            .await?;
    if code != 202 {
        bail!("create mapping: {code} {}", String::from_utf8_lossy(&body));
    }
    let uuid = serde_json::from_slice::<serde_json::Value>(&body)?["UUID"].as_str().unwrap_or_default().to_string();
    // Who holds it.
    let holder = loop {
        let s = status(&client, &nodes[0]).await?;
        let found = s["nodes"].as_array().and_then(|a| {
            a.iter().find(|n| n["holds"]["mappings"].as_array().is_some_and(|m| m.iter().any(|u| u == uuid.as_str())))
        });
        if let Some(n) = found {
            break n["id"].as_str().unwrap_or_default().to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let victim = ["a", "b", "c"].iter().position(|id| *id == holder).context("holder")?;
    let survivor = (victim + 1) % 3;
    // Async events the victim has claimed and is delivering when it dies: sent through it (its
    // dispatcher claims them at once) to a function that takes two seconds.
    let slow = zip_of(&[("app.py", b"import time\ndef handler(e, c):\n    time.sleep(2)\n", 0o644)])?;
    nodes[0].create("bench-slow", "python3.11", "app.handler", &slow).await?;
    for i in 0..10 {
        let url = nodes[victim].proc.url("/2015-03-31/functions/bench-slow/invocations");
        let req = hyper::Request::builder()
            .method("POST")
            .uri(url)
            .header("x-amz-invocation-type", "Event")
            .body(http_body_util::Full::new(Bytes::from(format!("{{\"n\":{i}}}"))))?;
        let resp = client.request(req).await?;
        if resp.status() != 202 {
            bail!("async invoke: {}", resp.status());
        }
    }
    let (db, conn) = tokio_postgres::connect(&database, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let claimed_by_victim = format!("{holder}-%");
    let mut claimed: Vec<i64> = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while claimed.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        claimed = db
            .query("SELECT id FROM async_events WHERE leased_by LIKE $1", &[&claimed_by_victim])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    let killed = Instant::now();
    nodes[victim].proc.child.kill()?;
    let (mut dead_at, mut moved_at, mut redelivered_at) = (None, None, None);
    while (dead_at.is_none() || moved_at.is_none() || redelivered_at.is_none())
        && killed.elapsed() < Duration::from_secs(60)
    {
        let s = status(&client, &nodes[survivor]).await?;
        for n in s["nodes"].as_array().cloned().unwrap_or_default() {
            if n["id"] == holder.as_str() && n["state"] == "dead" {
                // Shown `dead` as soon as its heartbeat is 6 s late; the declaration (which
                // releases what it held) follows within a heartbeat.
                dead_at.get_or_insert(killed.elapsed());
            }
            if n["id"] != holder.as_str()
                && n["state"] == "live"
                && n["holds"]["mappings"].as_array().is_some_and(|m| m.iter().any(|u| u == uuid.as_str()))
            {
                moved_at.get_or_insert(killed.elapsed());
            }
        }
        let left: i64 = db.query_one("SELECT count(*) FROM async_events WHERE id = ANY($1)", &[&claimed]).await?.get(0);
        if left == 0 {
            redelivered_at.get_or_insert(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("## cluster: failover after kill -9 of the node polling a NATS mapping (3 nodes)");
    println!("| event | after the kill |");
    println!("|---|---|");
    let show = |d: Option<Duration>| d.map_or("not within 60 s".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!(
        "| shown dead (its claimed async events and leases are released within a heartbeat) | {} |",
        show(dead_at)
    );
    println!("| its mapping polled by a survivor | {} |", show(moved_at));
    println!(
        "| the {} async events it was delivering (2 s each) delivered again and done | {} |",
        claimed.len(),
        show(redelivered_at)
    );
    println!();
    Ok(())
}

async fn load(services: &Services, workers: usize) -> anyhow::Result<()> {
    let database = fresh_database(&services.postgres).await?;
    let pool = store::pg::PgPool::connect(&database).await?;
    let ledger_rate = 1000;
    let mappings = 10;
    let started = Instant::now();
    let seconds = Duration::from_secs(10);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let pool = pool.clone();
        let database = database.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            let mut statements = 0usize;
            let (client, conn) = tokio_postgres::connect(&database, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            while started.elapsed() < seconds {
                statements += node_second(&pool, &client, w, ledger_rate, mappings).await?;
                done += 1;
            }
            anyhow::Ok((done, statements))
        }));
    }
    let (mut node_seconds, mut statements) = (0, 0);
    for t in tasks {
        let (d, s) = t.await??;
        node_seconds += d;
        statements += s;
    }
    let wall = started.elapsed().as_secs_f64();
    println!("## cluster: background load on one PostgreSQL (simulated nodes, {workers} at once, 10 s)");
    println!(
        "Per node and second: a heartbeat, a membership read, a dead-node check, {} lease renewals ({mappings} mappings), 50 ledger batches ({ledger_rate} invocations/s), an idle queue claim.",
        mappings.div_ceil(3)
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| node-seconds of work done per second | {:.1} |", node_seconds as f64 / wall);
    println!("| statements per second | {:.0} |", statements as f64 / wall);
    println!(
        "| statements per 1,000 invocations/s (one node's share) | {:.0} |",
        statements as f64 / node_seconds as f64
    );
    println!();
    Ok(())
}

/// The statements one simulated node makes in one second of background work, with
/// `ledger_rate` invocations/s and `mappings` mappings; returns how many.
async fn node_second(
    pool: &store::pg::PgPool,
    c: &tokio_postgres::Client,
    node: usize,
    ledger_rate: usize,
    mappings: usize,
) -> anyhow::Result<usize> {
    let incarnation = format!("sim-{node}");
    let mut statements = 0;
    pool.heartbeat(&incarnation, "live", "{}").await?;
    pool.nodes().await?;
    pool.declare_dead().await?;
    statements += 3;
    for m in 0..mappings.div_ceil(3) {
        let name = format!("esm/sim/{node}-{m}");
        pool.acquire_lease(&name, &incarnation, Duration::from_secs(10)).await?;
        statements += 1;
    }
    let batches = 50;
    let ids: Vec<String> = (0..ledger_rate / batches).map(|i| format!("r{i}")).collect();
    for _ in 0..batches {
        c.execute(
            "INSERT INTO invocations (request_id, account, function, version, trigger, architecture, start_us, end_us,
                 duration_us, init_us, billed_ms, memory_mb, max_memory_mb, cold, outcome)
             SELECT id, '000000000000', 'f', '$LATEST', 'api', 'x86_64', 0, 1, 1, NULL, 1, 128, 10, false, 'success'
             FROM unnest($1::text[]) AS id",
            &[&ids],
        )
        .await?;
        statements += 1;
    }
    c.execute(
        "WITH due AS MATERIALIZED (SELECT id FROM async_events WHERE account = $1 AND next_attempt_ms <= $2
             ORDER BY next_attempt_ms, id LIMIT 256 FOR UPDATE SKIP LOCKED)
         UPDATE async_events e SET leased_by = $3 FROM due WHERE e.id = due.id",
        &[&"000000000000", &(i64::MAX - 1), &incarnation],
    )
    .await?;
    statements += 1;
    Ok(statements)
}
