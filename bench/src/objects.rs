//! `objects`: what the object API costs over the disk it writes to, and how long an upload
//! takes to reach the function its bucket notifies.
//!
//! - Throughput: `concurrency` clients PUT (then GET) objects of 4 KB and 8 MB for `seconds`
//!   over unsigned requests (development mode, the default on loopback), against the same
//!   number of threads writing (then reading) the same bytes as files in a directory on the
//!   same disk. Writes replace 64 keys per client, as the API's writes replace objects.
//! - Latency: a Python function that calls back to this process; the time from sending a PUT
//!   to a notified bucket until the callback arrives, against the time from sending an async
//!   (Event) Invoke of the same function until its callback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

use super::{HttpClient, Stratus, http_client, ms, percentile, request, zip_of};

/// One side's throughput.
struct Rate {
    ops: f64,
    errors: u64,
}

impl Rate {
    fn mb(&self, size: usize) -> f64 {
        self.ops * size as f64 / (1024.0 * 1024.0)
    }
}

async fn s3_rate(
    client: &HttpClient,
    base: &str,
    method: &'static str,
    body: Bytes,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Rate> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (client, base, body) = (client.clone(), base.to_string(), body.clone());
        let (done, errors, counting, stop) = (done.clone(), errors.clone(), counting.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{base}/obj-{t}-{}", i % 64);
                i += 1;
                let payload = if method == "PUT" { body.clone() } else { Bytes::new() };
                let ok = matches!(request(&client, method, &url, payload).await, Ok((200, _)));
                if counting.load(Ordering::Relaxed) {
                    if ok { &done } else { &errors }.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok(Rate {
        ops: done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// The same bytes as files: written whole (create, write, close) or read whole.
fn disk_rate(dir: &Path, write: bool, body: &Bytes, concurrency: usize, seconds: u64) -> anyhow::Result<Rate> {
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..concurrency {
        let (dir, body): (PathBuf, Bytes) = (dir.to_path_buf(), body.clone());
        let (stop, counting, done) = (stop.clone(), counting.clone(), done.clone());
        threads.push(std::thread::spawn(move || -> std::io::Result<()> {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let path = dir.join(format!("obj-{t}-{}", i % 64));
                i += 1;
                if write {
                    std::fs::write(&path, &body)?;
                } else {
                    std::hint::black_box(std::fs::read(&path)?);
                }
                if counting.load(Ordering::Relaxed) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    counting.store(false, Ordering::Relaxed);
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().map_err(|_| anyhow::anyhow!("a disk thread panicked"))??;
    }
    Ok(Rate { ops: done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(), errors: 0 })
}

/// A listener the function calls back; each callback's body (an id) is sent on the channel.
async fn callbacks() -> anyhow::Result<(String, tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let at = Instant::now();
                        let body = req.into_body().collect().await?.to_bytes();
                        let _ = tx.send((String::from_utf8_lossy(&body).into_owned(), at));
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
            });
        }
    });
    Ok((url, rx))
}

const CALLBACK: &str = r#"import os, urllib.parse, urllib.request
def handler(event, context):
    if 'Records' in event:
        key = urllib.parse.unquote_plus(event['Records'][0]['s3']['object']['key'])
    else:
        key = event['id']
    urllib.request.urlopen(urllib.request.Request(os.environ['CALLBACK'], data=key.encode(), method='POST'), timeout=10)
"#;

/// Waits for the callback naming `id` (others are stragglers of earlier samples).
async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    id: &str,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((got, at))) if got == id => return Ok(at),
            Ok(Some(_)) => continue,
            _ => bail!("no callback for {id} within 30 s"),
        }
    }
}

pub async fn objects(bin_dir: &Path, seconds: u64, events: usize) -> anyhow::Result<()> {
    let stratus = Stratus::start(bin_dir)?;
    let s3 = format!("http://{}", stratus.proc.more[1]);
    let client = http_client();
    let (status, body) = request(&client, "PUT", &format!("{s3}/bench"), Bytes::new()).await?;
    if status != 200 {
        bail!("create bucket: {status} {}", String::from_utf8_lossy(&body));
    }
    let disk = tempfile::tempdir()?;
    println!("## object API (unsigned requests, development mode) vs files on the same disk");
    println!();
    println!("| object | op | clients | Stratus ops/s | Stratus MB/s | disk ops/s | disk MB/s | ratio | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, size, concurrency) in [("4 KB", 4096usize, 8usize), ("8 MB", 8 << 20, 2)] {
        let body = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let base = format!("{s3}/bench");
        for (op, write) in [("PUT", true), ("GET", false)] {
            let api = s3_rate(&client, &base, op, body.clone(), concurrency, seconds).await?;
            let (dir, b) = (disk.path().to_path_buf(), body.clone());
            let direct =
                tokio::task::spawn_blocking(move || disk_rate(&dir, write, &b, concurrency, seconds)).await??;
            println!(
                "| {label} | {op} | {concurrency} | {:.0} | {:.1} | {:.0} | {:.1} | {:.3} | {} |",
                api.ops,
                api.mb(size),
                direct.ops,
                direct.mb(size),
                api.ops / direct.ops,
                api.errors
            );
        }
    }
    println!();

    // Upload to invocation.
    let (callback, mut rx) = callbacks().await?;
    let zip = zip_of(&[("app.py", CALLBACK.as_bytes(), 0o644)])?;
    let body = serde_json::json!({
        "FunctionName": "onupload", "Runtime": "python3.11", "Handler": "app.handler", "Timeout": 30,
        "Role": "arn:aws:iam::123456789012:role/bench",
        "Environment": { "Variables": { "CALLBACK": callback } },
        "Code": { "ZipFile": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &zip) },
    });
    let (status, resp) =
        request(&client, "POST", &stratus.proc.url("/2015-03-31/functions"), body.to_string().into()).await?;
    if status != 201 {
        bail!("create function: {status} {}", String::from_utf8_lossy(&resp));
    }
    // S3's XML names a LambdaFunctionConfiguration `CloudFunctionConfiguration`.
    let notification = "<NotificationConfiguration><CloudFunctionConfiguration><Id>bench</Id>\
        <CloudFunction>arn:aws:lambda:us-east-1:000000000000:function:onupload</CloudFunction>\
        <Event>s3:ObjectCreated:*</Event></CloudFunctionConfiguration></NotificationConfiguration>";
    let (status, resp) = request(&client, "PUT", &format!("{s3}/bench?notification"), notification.into()).await?;
    if status != 200 {
        bail!("put notification: {status} {}", String::from_utf8_lossy(&resp));
    }
    let invoke_url = stratus.proc.url("/2015-03-31/functions/onupload/invocations");
    let (mut upload, mut invoke) = (Vec::new(), Vec::new());
    for i in 0..events + 5 {
        let id = format!("u{i}");
        let t = Instant::now();
        let (status, _) = request(&client, "PUT", &format!("{s3}/bench/{id}"), Bytes::from_static(b"x")).await?;
        if status != 200 {
            bail!("upload: {status}");
        }
        let at = wait_for(&mut rx, &id).await?;
        let id = format!("e{i}");
        let t2 = Instant::now();
        let mut req = hyper::Request::builder().method("POST").uri(&invoke_url);
        req = req.header("x-amz-invocation-type", "Event");
        let payload = serde_json::json!({ "id": id }).to_string();
        let resp = client.request(req.body(Full::new(Bytes::from(payload)))?).await?;
        if resp.status().as_u16() != 202 {
            bail!("async invoke: {}", resp.status());
        }
        let at2 = wait_for(&mut rx, &id).await?;
        if i >= 5 {
            upload.push(at - t);
            invoke.push(at2 - t2);
        }
    }
    upload.sort();
    invoke.sort();
    println!("## upload to invocation (warm Python function calling back) vs async Invoke of it");
    println!();
    println!("| path | samples | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (label, v) in [("PUT to a notified bucket", &upload), ("Invoke, InvocationType=Event", &invoke)] {
        println!("| {label} | {} | {:.2} | {:.2} |", v.len(), ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
    }
    println!(
        "\nupload/invoke p50 ratio: {:.2}",
        percentile(&upload, 0.5).as_secs_f64() / percentile(&invoke, 0.5).as_secs_f64()
    );
    Ok(())
}
