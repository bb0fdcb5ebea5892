//! A PostgreSQL server for the store's tests: `STRATUS_TEST_DATABASE_URL` if set, otherwise a
//! private one started once per test process (initdb in a temporary directory, on a free
//! loopback port, as the `postgres` user when the tests run as root) and stopped at exit.
//! Each test gets a database of its own. Without PostgreSQL's binaries the PostgreSQL half of
//! a test is skipped with a message, except under CI (`CI` set), where it fails.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Server {
    /// URL of the server's maintenance database (`postgres`).
    base: String,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path().join("bin")).collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| d.join("initdb").is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(55432)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// `cmd` as the `postgres` user when we are root (PostgreSQL refuses to run as root);
/// `setpriv` execs it, so the shell's `$!` is the server itself.
fn as_postgres(cmd: &str) -> String {
    if is_root() {
        format!("setpriv --reuid=postgres --regid=postgres --clear-groups -- {cmd}")
    } else {
        cmd.to_string()
    }
}

fn start() -> Result<Server, String> {
    if let Ok(url) = std::env::var("STRATUS_TEST_DATABASE_URL") {
        return Ok(Server { base: url });
    }
    let bin = bin_dir().ok_or("PostgreSQL's binaries are not installed (/usr/lib/postgresql/*/bin)")?;
    let dir = tempfile::Builder::new().prefix("stratus-pg-").tempdir().map_err(|e| e.to_string())?.keep();
    if is_root() {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
        if !ok.is_ok_and(|s| s.success()) {
            return Err("cannot give the test cluster's directory to the postgres user".into());
        }
    }
    let d = dir.display();
    let b = bin.display();
    let init = as_postgres(&format!("{b}/initdb -D {d}/data -U postgres --auth=trust -E UTF8"));
    let out = Command::new("sh").args(["-c", &init]).output().map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port();
    // The server lives as long as this test process: a watcher stops it and removes its
    // directory once the process is gone.
    let server = as_postgres(&format!(
        "{b}/postgres -D {d}/data -p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    ));
    let script = format!(
        "{server} >{d}/log 2>&1 & pg=$!; while kill -0 {me} 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 0.3; done; \
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf {d}",
        me = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            return Err(format!("postgres did not start: {log}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(Server { base: format!("postgres://postgres@127.0.0.1:{port}/postgres") })
}

/// A fresh, empty database's URL, or `None` (and a message) when there is no server.
pub(crate) fn database() -> Option<String> {
    let server = SERVER.get_or_init(|| match start() {
        Ok(s) => Some(s),
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL is required under CI: {e}");
            }
            eprintln!("skipping the PostgreSQL half of the store tests: {e}");
            None
        }
    });
    let server = server.as_ref()?;
    let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    // CREATE DATABASE copies template1 and fails while another copy is under way: one at a
    // time, and again after a pause if it still collides.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    let mut attempt = 0;
    loop {
        let created = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&server.base, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(&format!("CREATE DATABASE {name}")).await
        });
        match created {
            Ok(()) => break,
            Err(e) if attempt < 20 => {
                attempt += 1;
                eprintln!("creating a test database: {e:?}; trying again");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("cannot create a test database: {e:?}"),
        }
    }
    let base = server.base.rsplit_once('/').map_or(server.base.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}
