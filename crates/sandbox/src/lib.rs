//! The sandbox: turns a [`Spec`] (program, environment, the directories to show, limits) into
//! a running, killable process tree, and reports how much memory it used.
//!
//! It knows nothing of HTTP, tokio, functions or tenants. A [`Backend`] decides how confined
//! the tree is; [`ProcessBackend`] is the unisolated development backend (a process group
//! with resource limits, no namespaces). The caller waits for exit by polling the
//! [`Sandboxed::exit_fd`] (a pidfd, readable once the root process has exited) with whatever
//! event loop it uses.
//!
//! This crate holds the project's `unsafe` code; every block says why it is sound.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cgroup;
pub mod init;
pub mod mounts;
mod namespaces;
pub mod netns;
pub mod peer;
mod process;
pub mod seccomp;
mod spawn;
pub mod tuning;

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

pub use namespaces::{NamespaceBackend, NamespaceConfig, Unavailable};
pub use process::ProcessBackend;

/// Errors setting up or controlling a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open a pidfd for process {pid}")]
    Pidfd {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to prepare the environment's directories")]
    Prepare(#[source] std::io::Error),
}

/// Host directories an environment is given, by role.
#[derive(Debug, Clone)]
pub struct Mounts {
    /// The function's code, shown read-only (`/var/task` inside an isolated environment).
    pub task_root: PathBuf,
    /// The runtime's bootstrap files (`/var/runtime`).
    pub runtime_dir: PathBuf,
    /// Merged layers (`/opt`), if any.
    pub opt: Option<PathBuf>,
    /// A private writable directory for `/tmp`, owned by this environment (unisolated
    /// backend; the isolating one uses a tmpfs).
    pub tmp: PathBuf,
    /// Host directories shown read-only at the same path (interpreters outside `/usr`).
    pub extra_ro: Vec<PathBuf>,
}

/// The paths a process sees for each [`Mounts`] role.
#[derive(Debug, Clone)]
pub struct Layout {
    pub task_root: PathBuf,
    pub runtime_dir: PathBuf,
    pub opt: PathBuf,
    pub tmp: PathBuf,
}

/// Resource limits for one environment.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: u64,
    pub tmp_bytes: u64,
    pub max_processes: u64,
    pub max_open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_bytes: 128 << 20, tmp_bytes: 512 << 20, max_processes: 1024, max_open_files: 1024 }
    }
}

/// Everything needed to start one environment's process tree.
#[derive(Debug)]
pub struct Spec {
    /// The program to run, as a path the process sees (see [`Backend::layout`]).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment; nothing is inherited from the platform.
    pub env: Vec<(String, String)>,
    /// Working directory, as a path the process sees.
    pub cwd: PathBuf,
    /// Where the tree's stdout and stderr go (the write end of a pipe).
    pub output: OwnedFd,
    pub mounts: Mounts,
    pub limits: Limits,
    /// A network namespace to run in instead of the host's (see [`netns`]).
    pub netns: Option<OwnedFd>,
    /// The uid to run as, from [`Backend::reserve_uid`] (isolating backends only).
    pub uid: Option<u32>,
}

/// How an environment's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The program could not be executed (errno).
    ExecFailed(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(*s).map(|s| s.as_str()).unwrap_or("unknown");
                let name = name.trim_start_matches("SIG").to_ascii_lowercase();
                let name = match name.as_str() {
                    "kill" => "killed".to_string(),
                    "term" => "terminated".to_string(),
                    "segv" => "segmentation fault".to_string(),
                    "abrt" => "aborted".to_string(),
                    _ => name,
                };
                write!(f, "signal: {name}")
            }
            Exit::ExecFailed(errno) => write!(f, "{}", std::io::Error::from_raw_os_error(*errno)),
        }
    }
}

/// A running environment. Dropping it kills the whole tree and waits for it (blocking).
pub trait Sandboxed: Send + Sync {
    /// The root process id (as the host sees it).
    fn pid(&self) -> i32;
    /// Readable once the root process has exited.
    fn exit_fd(&self) -> BorrowedFd<'_>;
    /// Collects the exit status if the root process has exited.
    fn try_wait(&mut self) -> Option<Exit>;
    /// Kills every process of the environment, without waiting for them to die (reaping
    /// happens on drop, which may block: drop off the async threads).
    fn kill(&mut self);
    /// The highest memory use of the environment so far, in bytes.
    fn peak_memory_bytes(&self) -> Option<u64>;
    /// Whether the kernel killed a process of the environment for exceeding its memory.
    fn oom_killed(&self) -> bool {
        false
    }
    /// Pauses every process of the environment; false if it cannot.
    fn freeze(&self) -> bool {
        false
    }
    /// Resumes a paused environment.
    fn thaw(&self) -> bool {
        false
    }
    /// The uid the environment's processes run as, if it has its own.
    fn uid(&self) -> Option<u32> {
        None
    }
}

/// A way of starting environments.
pub trait Backend: Send + Sync {
    /// A short name for logs (`process`, `namespaces`, …).
    fn name(&self) -> &'static str;
    /// Whether environments are confined (false only for the development backend).
    fn isolated(&self) -> bool;
    /// The paths a process sees for the given host directories.
    fn layout(&self, mounts: &Mounts) -> Layout;
    /// Starts an environment.
    fn spawn(&self, spec: Spec) -> Result<Box<dyn Sandboxed>, SandboxError>;
    /// The uid the next environment will run as, reserved now so that its Runtime API can be
    /// told whom to accept before the environment exists (`None`: no uid of its own).
    fn reserve_uid(&self) -> Option<u32> {
        None
    }
}
