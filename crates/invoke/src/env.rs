//! One execution environment: a sandboxed process tree running a runtime, its own Runtime
//! API endpoint, and the capture of its output. It serves one invocation at a time.
//!
//! Start-up (a cold start): bind the endpoint, spawn the runtime through the sandbox, and wait
//! until the runtime first asks for an event (init done), reports an init error, exits, or
//! overruns the init timeout. An invocation: hand the event to the endpoint and wait for the
//! answer, the process's exit, or the deadline. A timed-out or crashed environment is killed
//! and never reused.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use model::logfmt::{self, Report, ReportStatus};
use model::{FunctionConfig, Scope};
use runtime_api::{Endpoint, Invocation, Outcome, Signal, StreamEnd, StreamEvent};
use tokio::sync::mpsc;

use crate::StreamMsg;
use runtimes::Launch;
use sandbox::{Backend, Exit, Mounts, Sandboxed, Spec};
use store::LogSink;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::capture::Capture;

/// What an environment needs to know about its function, shared by all its environments.
#[derive(Debug)]
pub struct Blueprint {
    pub config: Arc<FunctionConfig>,
    pub scope: Scope,
    /// Unqualified function ARN.
    pub arn: String,
    /// Host directory of the unpacked code.
    pub code_dir: PathBuf,
    /// Host directory shown at `/opt`: the function's layers, merged in order.
    pub opt_dir: Option<PathBuf>,
    /// Host directory of the runtime bootstraps.
    pub runtime_dir: PathBuf,
    /// Host directory under which each environment gets its private directories.
    pub envs_dir: PathBuf,
    pub launch: Launch,
    /// Host directories the runtime needs shown read-only (interpreters outside `/usr`).
    pub host_dirs: Vec<PathBuf>,
    /// Give each environment a network of its own with only its Runtime API in it.
    pub isolated_network: bool,
    pub init_timeout: Duration,
    pub runtime_api_ip: std::net::IpAddr,
    /// The platform's service endpoints and the account's credentials (set last).
    pub service_env: Arc<Vec<(String, String)>>,
    /// This version's metric handles, registered on first use.
    pub metrics: std::sync::OnceLock<crate::meter::Handles>,
}

/// The Runtime API port inside an isolated network (Lambda's own).
const ISOLATED_RUNTIME_API_PORT: u16 = 9001;

/// How one invocation ended: the answer (or failure), whether the environment may serve
/// again, and the REPORT status.
type Answered = (Result<(Bytes, Option<String>), FunctionFailure>, bool, ReportStatus);

fn timed_out(request_id: &str, timeout: Duration) -> Answered {
    let f = FunctionFailure::platform(
        "Sandbox.Timedout",
        format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", timeout.as_secs_f64()),
    );
    (Err(f), false, ReportStatus::Timeout)
}

/// An error the caller sees as the function's (HTTP 200, `X-Amz-Function-Error: Unhandled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionFailure {
    /// The error type for REPORT lines and logs (`Runtime.ExitError`, …).
    pub error_type: String,
    /// The body returned to the caller, verbatim.
    pub body: Bytes,
}

impl FunctionFailure {
    pub fn platform(error_type: &str, message: String) -> Self {
        let body = serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string();
        Self { error_type: error_type.to_string(), body: Bytes::from(body) }
    }
}

/// How one invocation in an environment ended.
#[derive(Debug)]
pub struct Completed {
    pub result: Result<(Bytes, Option<String>), FunctionFailure>,
    /// Whether the environment can serve another invocation.
    pub reusable: bool,
    pub log_tail: Option<String>,
    pub report: Report,
    /// The runtime streamed its response (to the sink, if there was one).
    pub streamed: bool,
}

/// How old a peak-memory reading may be before an invocation reads it again.
const PEAK_MEMORY_MAX_AGE: Duration = Duration::from_millis(10);

static NEXT_ENV_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A running environment.
pub struct Environment {
    pub id: u64,
    blueprint: Arc<Blueprint>,
    endpoint: Endpoint,
    /// `None` only while dropping.
    sandbox: Option<Box<dyn Sandboxed>>,
    exited: watch::Receiver<bool>,
    capture: Capture,
    /// Set until the first invocation reports it.
    init_duration: Option<Duration>,
    /// When it last finished an invocation (for the idle reaper).
    pub last_used: Instant,
    /// Paused by the freezer while idle.
    frozen: bool,
    /// Kept initialised for provisioned concurrency: never stopped for being idle.
    pub provisioned: bool,
    /// The runtime's program, as the environment sees it (for error messages).
    program: PathBuf,
    /// Highest memory use seen so far, and when it was last read.
    peak: u64,
    peak_read_at: Option<Instant>,
    dir: PathBuf,
}

/// Why an environment could not start; `failure` goes to the invocation that waited for it.
pub struct StartFailure {
    pub failure: FunctionFailure,
    pub log_tail: Option<String>,
    /// The failed start's REPORT (`None` if it failed before it could run anything).
    pub report: Option<Report>,
}

fn exit_message(request_id: &str, exit: Option<Exit>) -> String {
    match exit {
        Some(Exit::Code(0)) | None => {
            format!("RequestId: {request_id} Error: Runtime exited without providing a reason")
        }
        Some(e) => format!("RequestId: {request_id} Error: Runtime exited with error: {e}"),
    }
}

/// `permission denied`, as Go (and so Lambda) spells an errno.
fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

impl Environment {
    /// Starts an environment for `bp`. `request_id` names the invocation waiting for it; on
    /// failure that invocation's log lines (and tail, if `want_tail`) are written here.
    pub async fn start(
        bp: Arc<Blueprint>,
        backend: &dyn Backend,
        sink: LogSink,
        request_id: &str,
        want_tail: bool,
        provisioned: bool,
    ) -> Result<Self, StartFailure> {
        let began = Instant::now();
        let id = NEXT_ENV_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = bp.envs_dir.join(id.to_string());
        let stream: Arc<str> = logfmt::log_stream_name(logfmt::now_ms(), &bp.config.version).into();
        let (reader, writer) = match tokio::net::unix::pipe::pipe().and_then(|(w, r)| Ok((r, w.into_blocking_fd()?))) {
            Ok(p) => p,
            Err(e) => {
                return Err(StartFailure {
                    failure: FunctionFailure::platform(
                        "Sandbox.Failure",
                        format!("RequestId: {request_id} Error: {e}"),
                    ),
                    log_tail: None,
                    report: None,
                });
            }
        };
        let capture = Capture::start(reader, sink, bp.config.name.as_str().into(), stream.clone());
        if let Some(rt_version) = runtime_version(&bp.config.runtime) {
            capture.line(rt_version).await;
        }
        let booted =
            Self::boot(&bp, backend, id, dir.clone(), &stream, writer, capture.clone(), request_id, began, provisioned)
                .await;
        let failure = match booted {
            Ok(env) => return Ok(env),
            Err(f) => f,
        };
        // The failed start is this invocation's whole life: INIT_REPORT, then START/END/REPORT
        // with the start-up time folded into the invocation's duration (a "suppressed init").
        let init = began.elapsed();
        let status = if failure.error_type == "Sandbox.Timedout" {
            ReportStatus::Timeout
        } else {
            ReportStatus::Error(failure.error_type.clone())
        };
        capture.line(logfmt::init_report_line(init, &status)).await;
        capture.start_invocation(logfmt::start_line(request_id, &bp.config.version)).await;
        let report = Report {
            request_id: request_id.to_string(),
            duration: init,
            memory_mb: bp.config.memory_mb,
            max_memory_used_mb: 0,
            init_duration: None,
            status,
        };
        let log_tail = capture.end(vec![logfmt::end_line(request_id), report.line()], want_tail).await;
        let _ = std::fs::remove_dir_all(&dir);
        Err(StartFailure { failure, log_tail, report: Some(report) })
    }

    #[allow(clippy::too_many_arguments)]
    async fn boot(
        bp: &Arc<Blueprint>,
        backend: &dyn Backend,
        id: u64,
        dir: PathBuf,
        stream: &str,
        writer: std::os::fd::OwnedFd,
        capture: Capture,
        request_id: &str,
        began: Instant,
        provisioned: bool,
    ) -> Result<Self, FunctionFailure> {
        let fail = |error_type: &str, message: String| FunctionFailure::platform(error_type, message);
        let mounts = Mounts {
            task_root: bp.code_dir.clone(),
            runtime_dir: bp.runtime_dir.clone(),
            opt: bp.opt_dir.clone(),
            tmp: dir.join("tmp"),
            extra_ro: bp.host_dirs.clone(),
        };
        let layout = backend.layout(&mounts);
        let (program, args) = match &bp.launch {
            Launch::Program { program, args } => (program.clone(), args.clone()),
            Launch::Bootstrap => {
                // The package's own bootstrap: /var/task/bootstrap, then /opt/bootstrap.
                let candidates = [
                    (layout.task_root.join("bootstrap"), mounts.task_root.join("bootstrap")),
                    (layout.opt.join("bootstrap"), mounts.opt.clone().unwrap_or_default().join("bootstrap")),
                ];
                match candidates.iter().find(|(_, host)| host.is_file()) {
                    Some((view, host)) if is_executable(host) => (view.clone(), Vec::new()),
                    Some((view, _)) => {
                        return Err(fail(
                            "Runtime.InvalidEntrypoint",
                            format!("RequestId: {request_id} Error: fork/exec {}: permission denied", view.display()),
                        ));
                    }
                    None => {
                        return Err(fail(
                            "Runtime.InvalidEntrypoint",
                            format!(
                                "RequestId: {request_id} Error: Couldn't find valid bootstrap(s): [{} {}]",
                                candidates[0].0.display(),
                                candidates[1].0.display()
                            ),
                        ));
                    }
                }
            }
        };
        let sandbox_failure =
            |e: std::io::Error| fail("Sandbox.Failure", format!("RequestId: {request_id} Error: {e}"));
        let uid = backend.reserve_uid();
        let (endpoint, netns) = if bp.isolated_network && backend.isolated() {
            // Alone in its own network: nobody else can reach this endpoint.
            let net = sandbox::netns::create(ISOLATED_RUNTIME_API_PORT).map_err(sandbox_failure)?;
            (Endpoint::from_listener(net.listener).map_err(sandbox_failure)?, Some(net.netns))
        } else {
            // On the host's network every environment could reach this port: accept only
            // connections from this environment's own uid.
            let admit: Option<runtime_api::Admit> = uid.map(|uid| -> runtime_api::Admit {
                std::sync::Arc::new(
                    move |local, peer| matches!(sandbox::peer::tcp_peer_uid(local, peer), Ok(Some(u)) if u == uid),
                )
            });
            (Endpoint::bind(bp.runtime_api_ip, admit).await.map_err(sandbox_failure)?, None)
        };
        let mut env_vars = environment_variables(bp, &layout, &endpoint.addr().to_string(), stream);
        if provisioned {
            for (k, v) in env_vars.iter_mut() {
                if k == "AWS_LAMBDA_INITIALIZATION_TYPE" {
                    *v = "provisioned-concurrency".into();
                }
            }
        }
        let spec = Spec {
            program: program.clone(),
            args: args.into_iter().map(Into::into).collect(),
            env: env_vars,
            cwd: layout.task_root.clone(),
            output: writer,
            mounts,
            limits: sandbox::Limits {
                memory_bytes: u64::from(bp.config.memory_mb) << 20,
                tmp_bytes: bp.config.ephemeral_bytes(),
                ..Default::default()
            },
            netns,
            uid,
        };
        let spawn_started = Instant::now();
        let prepared = began.elapsed();
        let sandbox = backend.spawn(spec).map_err(|e| {
            let reason = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
            let reason = match std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(|e| e.raw_os_error())
            {
                Some(errno) => errno_text(errno),
                None => reason.to_lowercase(),
            };
            fail(
                "Runtime.InvalidEntrypoint",
                format!("RequestId: {request_id} Error: fork/exec {}: {reason}", program.display()),
            )
        })?;
        let spawned = spawn_started.elapsed();
        let exited = watch_exit(sandbox.as_ref());
        let mut env = Environment {
            id,
            blueprint: bp.clone(),
            endpoint,
            sandbox: Some(sandbox),
            exited,
            capture,
            init_duration: None,
            last_used: Instant::now(),
            peak: 0,
            peak_read_at: None,
            program: program.clone(),
            frozen: false,
            provisioned,
            dir,
        };
        let mut exited = env.exited.clone();
        let remaining = bp.init_timeout.saturating_sub(began.elapsed());
        let signal = tokio::select! {
            sig = env.endpoint.signal() => Some(sig),
            _ = async { let _ = exited.wait_for(|e| *e).await; } => Some(None),
            _ = tokio::time::sleep(remaining) => None,
        };
        match signal {
            Some(Some(Signal::Ready)) => {
                env.init_duration = Some(began.elapsed());
                env.capture.sync().await;
                tracing::debug!(
                    function = %bp.config.name,
                    env = id,
                    prepare_us = prepared.as_micros() as u64,
                    spawn_us = spawned.as_micros() as u64,
                    init_us = began.elapsed().as_micros() as u64,
                    "environment started"
                );
                Ok(env)
            }
            Some(Some(Signal::InitError { error_type, body })) => {
                let error_type = error_type.unwrap_or_else(|| "Runtime.Unknown".into());
                Err(FunctionFailure { error_type, body })
            }
            Some(None) => Err(env.exit_failure(request_id).await),
            None => Err(fail(
                "Sandbox.Timedout",
                format!(
                    "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                    bp.init_timeout.as_secs_f64()
                ),
            )),
        }
    }

    /// What the caller is told when the runtime's process ended: out of memory, not
    /// executable, or exited.
    async fn exit_failure(&mut self, request_id: &str) -> FunctionFailure {
        let exit = self.wait_exit().await;
        if self.sandbox().oom_killed() {
            return FunctionFailure::platform("Runtime.OutOfMemory", exit_message(request_id, exit));
        }
        if let Some(Exit::ExecFailed(errno)) = exit {
            return FunctionFailure::platform(
                "Runtime.InvalidEntrypoint",
                format!("RequestId: {request_id} Error: fork/exec {}: {}", self.program.display(), errno_text(errno)),
            );
        }
        FunctionFailure::platform("Runtime.ExitError", exit_message(request_id, exit))
    }

    async fn wait_exit(&mut self) -> Option<Exit> {
        for _ in 0..50 {
            if let Some(e) = self.sandbox().try_wait() {
                return Some(e);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    /// Runs one invocation.
    /// With `sink`, a streamed response goes there as it arrives (`Start`, then chunks; the
    /// caller sends `End`); without, it is collected like a buffered one (up to 6 MB).
    #[allow(clippy::too_many_arguments)]
    pub async fn invoke(
        &mut self,
        request_id: &str,
        invoked_arn: &str,
        trace_header: String,
        payload: Bytes,
        client_context: Option<String>,
        want_tail: bool,
        sink: Option<&mpsc::Sender<StreamMsg>>,
    ) -> Completed {
        let bp = self.blueprint.clone();
        let timeout = Duration::from_secs(u64::from(bp.config.timeout_s));
        let began = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let deadline_ms = logfmt::now_ms() + timeout.as_millis() as i64;
        self.capture.start_invocation(logfmt::start_line(request_id, &bp.config.version)).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inv = Invocation {
            request_id: request_id.to_string(),
            payload,
            deadline_ms,
            invoked_function_arn: invoked_arn.to_string(),
            trace_id: trace_header,
            client_context,
            cognito_identity: None,
            reply: tx,
        };
        let mut exited = self.exited.clone();
        let mut streamed = false;
        let submitted = self.endpoint.submit(inv).await.is_ok();
        let (result, reusable, status) = if !submitted {
            let f = FunctionFailure::platform("Runtime.ExitError", exit_message(request_id, None));
            let status = ReportStatus::Error(f.error_type.clone());
            (Err(f), false, status)
        } else {
            tokio::select! {
                out = rx => match out {
                    Ok(Outcome::Response { body, content_type }) => (Ok((body, content_type)), true, ReportStatus::Success),
                    Ok(Outcome::Stream { content_type, chunks }) => {
                        streamed = true;
                        self.stream(request_id, content_type, chunks, sink, deadline, timeout).await
                    }
                    Ok(Outcome::Error { error_type, body }) => {
                        let error_type = error_type.unwrap_or_else(|| "Unhandled".into());
                        (Err(FunctionFailure { error_type, body }), true, ReportStatus::Success)
                    }
                    Ok(Outcome::TooLarge) => {
                        let f = FunctionFailure::platform(
                            "Function.ResponseSizeTooLarge",
                            format!("Response payload size exceeded maximum allowed payload size ({} bytes).", model::invoke::MAX_RESPONSE_PAYLOAD),
                        );
                        let status = ReportStatus::Error(f.error_type.clone());
                        (Err(f), true, status)
                    }
                    Err(_) => {
                        let f = FunctionFailure::platform("Runtime.ExitError", exit_message(request_id, None));
                        let status = ReportStatus::Error(f.error_type.clone());
                        (Err(f), false, status)
                    }
                },
                _ = async { let _ = exited.wait_for(|e| *e).await; } => {
                    let f = self.exit_failure(request_id).await;
                    let status = ReportStatus::Error(f.error_type.clone());
                    (Err(f), false, status)
                }
                _ = tokio::time::sleep_until(deadline) => timed_out(request_id, timeout),
            }
        };
        let duration = began.elapsed();
        let peak = self.peak_memory();
        if !reusable {
            self.kill();
        }
        let report = Report {
            request_id: request_id.to_string(),
            duration,
            memory_mb: bp.config.memory_mb,
            max_memory_used_mb: peak.div_ceil(1 << 20),
            init_duration: self.init_duration.take(),
            status,
        };
        let log_tail = self.capture.end(vec![logfmt::end_line(request_id), report.line()], want_tail).await;
        self.last_used = Instant::now();
        Completed { result, reusable, log_tail, report, streamed }
    }

    /// Follows a streamed response to its end (or the deadline, or the runtime's death).
    async fn stream(
        &mut self,
        request_id: &str,
        content_type: Option<String>,
        mut chunks: mpsc::Receiver<StreamEvent>,
        sink: Option<&mpsc::Sender<StreamMsg>>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Answered {
        let mut exited = self.exited.clone();
        let mut sink = sink;
        if let Some(s) = sink {
            let start = StreamMsg::Start {
                content_type: content_type.clone(),
                executed_version: self.blueprint.config.version.clone(),
                streamed: true,
            };
            if s.send(start).await.is_err() {
                sink = None;
            }
        }
        let collect = sink.is_none();
        let mut collected = bytes::BytesMut::new();
        loop {
            let event = tokio::select! {
                ev = chunks.recv() => ev,
                _ = async { let _ = exited.wait_for(|e| *e).await; } => {
                    let f = self.exit_failure(request_id).await;
                    let status = ReportStatus::Error(f.error_type.clone());
                    return (Err(f), false, status);
                }
                _ = tokio::time::sleep_until(deadline) => return timed_out(request_id, timeout),
            };
            match event {
                Some(StreamEvent::Chunk(data)) => {
                    if let Some(s) = sink {
                        // The reader's pace sets the stream's, within the function's deadline.
                        match tokio::time::timeout_at(deadline, s.send(StreamMsg::Chunk(data))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => sink = None,
                            Err(_) => return timed_out(request_id, timeout),
                        }
                    } else if collect {
                        if collected.len() + data.len() > model::invoke::MAX_RESPONSE_PAYLOAD {
                            let f = FunctionFailure::platform(
                                "Function.ResponseSizeTooLarge",
                                format!(
                                    "Response payload size exceeded maximum allowed payload size ({} bytes).",
                                    model::invoke::MAX_RESPONSE_PAYLOAD
                                ),
                            );
                            let status = ReportStatus::Error(f.error_type.clone());
                            return (Err(f), false, status);
                        }
                        collected.extend_from_slice(&data);
                    }
                }
                Some(StreamEvent::End(StreamEnd::Complete)) => {
                    return (Ok((collected.freeze(), content_type)), true, ReportStatus::Success);
                }
                Some(StreamEvent::End(StreamEnd::Error { error_type, body })) => {
                    return (Err(FunctionFailure { error_type, body }), true, ReportStatus::Success);
                }
                Some(StreamEvent::End(StreamEnd::Oversized)) => {
                    let f = FunctionFailure::platform(
                        "Function.ResponseSizeTooLarge",
                        format!(
                            "Response payload size exceeded maximum allowed payload size ({} bytes).",
                            runtime_api::MAX_STREAMED_BYTES
                        ),
                    );
                    let status = ReportStatus::Error(f.error_type.clone());
                    return (Err(f), true, status);
                }
                None => {
                    let f = FunctionFailure::platform("Runtime.ExitError", exit_message(request_id, None));
                    let status = ReportStatus::Error(f.error_type.clone());
                    return (Err(f), false, status);
                }
            }
        }
    }

    /// The environment's peak memory. Reading it costs a system call and the kernel's rendering
    /// of the counter, so back-to-back invocations reuse a reading younger than
    /// [`PEAK_MEMORY_MAX_AGE`]; the peak only grows, so a reused reading can only be low by
    /// what the last few milliseconds added.
    fn peak_memory(&mut self) -> u64 {
        let fresh = self.peak_read_at.is_some_and(|t| t.elapsed() < PEAK_MEMORY_MAX_AGE);
        if !fresh {
            if let Some(p) = self.sandbox().peak_memory_bytes() {
                self.peak = self.peak.max(p);
            }
            self.peak_read_at = Some(Instant::now());
        }
        self.peak
    }

    /// Pauses the environment's processes (between invocations, as Lambda does).
    pub fn freeze(&mut self) -> bool {
        if !self.frozen {
            self.frozen = self.sandbox().freeze();
        }
        self.frozen
    }

    /// Resumes a paused environment.
    pub fn thaw(&mut self) {
        if self.frozen {
            self.sandbox().thaw();
            self.frozen = false;
        }
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Kills the environment's processes (idempotent, never waits).
    pub fn kill(&mut self) {
        self.sandbox().kill();
    }

    fn sandbox(&mut self) -> &mut dyn Sandboxed {
        // Only `drop` takes it out.
        self.sandbox.as_deref_mut().expect("the sandbox is present until the environment is dropped")
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if let Some(mut sandbox) = self.sandbox.take() {
            sandbox.kill();
            // Reaping waits for every process to die: never on an async thread.
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(move || drop(sandbox))),
                Err(_) => drop(sandbox),
            }
        }
        let dir = std::mem::take(&mut self.dir);
        if !dir.as_os_str().is_empty() {
            // Removing /tmp can take a while; never on the caller's thread.
            std::thread::spawn(move || {
                let _ = std::fs::remove_dir_all(dir);
            });
        }
    }
}

/// A watch that turns true when the environment's root process exits.
fn watch_exit(sb: &dyn Sandboxed) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    match sb.exit_fd().try_clone_to_owned() {
        Ok(fd) => {
            tokio::spawn(async move {
                // `with_interest` is deprecated because a caller could close the descriptor
                // under it; here the AsyncFd owns the only handle (an OwnedFd), so it cannot.
                #[allow(deprecated)]
                let registered = AsyncFd::with_interest(PidFd(fd), tokio::io::Interest::READABLE);
                if let Ok(afd) = registered {
                    let _ = afd.readable().await;
                }
                let _ = tx.send(true);
            });
        }
        Err(_) => {
            let _ = tx.send(true);
        }
    }
    rx
}

struct PidFd(std::os::fd::OwnedFd);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The `INIT_START` line for managed runtimes.
fn runtime_version(runtime: &str) -> Option<String> {
    runtimes::execution_env(runtime)?;
    let (lang, ver) = runtime
        .find(|c: char| c.is_ascii_digit())
        .map(|i| (&runtime[..i], runtime[i..].trim_end_matches(".x")))
        .unwrap_or((runtime, ""));
    Some(format!(
        "INIT_START Runtime Version: {lang}:{ver}.stratus\tRuntime Version ARN: arn:aws:lambda:::runtime:stratus-{runtime}"
    ))
}

/// The environment of the runtime process (docs/lambda-contract.md §1.5).
fn environment_variables(
    bp: &Blueprint,
    layout: &sandbox::Layout,
    runtime_api: &str,
    stream: &str,
) -> Vec<(String, String)> {
    let c = &bp.config;
    let task = layout.task_root.display().to_string();
    let opt = layout.opt.display().to_string();
    let rt = layout.runtime_dir.display().to_string();
    let mut vars: Vec<(String, String)> = vec![
        // Unreserved: the function's own variables may override these.
        ("LANG".into(), "en_US.UTF-8".into()),
        ("PATH".into(), format!("/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:{opt}/bin")),
        (
            "LD_LIBRARY_PATH".into(),
            format!("/var/lang/lib:/lib64:/usr/lib64:{rt}:{rt}/lib:{task}:{task}/lib:{opt}/lib"),
        ),
        ("TZ".into(), ":UTC".into()),
        ("NODE_PATH".into(), format!("{opt}/nodejs/node_modules:{rt}/node_modules:{rt}:{task}")),
        ("AWS_XRAY_CONTEXT_MISSING".into(), "LOG_ERROR".into()),
        ("TMPDIR".into(), layout.tmp.display().to_string()),
    ];
    if layout.opt != std::path::Path::new("/opt") {
        // Unisolated: the layers are not at /opt; tell the bootstraps where they are.
        vars.push(("STRATUS_OPT_DIR".into(), opt.clone()));
    }
    if let Some(user) = &c.environment {
        for (k, v) in user {
            vars.retain(|(key, _)| key != k);
            vars.push((k.clone(), v.clone()));
        }
    }
    // Reserved: set last so nothing overrides them.
    let reserved = [
        ("_HANDLER", c.handler.clone()),
        ("LAMBDA_TASK_ROOT", task.clone()),
        ("LAMBDA_RUNTIME_DIR", rt),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", c.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", c.version.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", c.memory_mb.to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", c.log_group.clone()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream.to_string()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_REGION", bp.scope.region.clone()),
        ("AWS_DEFAULT_REGION", bp.scope.region.clone()),
        ("AWS_LAMBDA_LOG_FORMAT", c.log_format.clone()),
    ];
    for (k, v) in reserved {
        vars.retain(|(key, _)| key != k);
        vars.push((k.to_string(), v));
    }
    for (k, v) in bp.service_env.iter() {
        vars.retain(|(key, _)| key != k);
        vars.push((k.clone(), v.clone()));
    }
    if let Some(exec_env) = runtimes::execution_env(&c.runtime) {
        vars.push(("AWS_EXECUTION_ENV".into(), exec_env));
    }
    vars
}
