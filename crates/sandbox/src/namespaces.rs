//! The isolating backend: every environment in its own mount, PID, IPC and UTS namespaces (and
//! network namespace when asked), in its own cgroups, on a minimal read-only root, as its own
//! unprivileged uid, under a seccomp allowlist. docs/sandbox.md lists the steps in order.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cgroup::{CgroupLimits, Cgroups, EnvCgroup};
use crate::mounts::{self, RootSpec};
use crate::process::pidfd_open;
use crate::spawn::{self, Isolation, Prepared};
use crate::{Backend, Exit, Layout, Mounts, SandboxError, Sandboxed, Spec};

/// Settings of the isolating backend.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    /// The executable that becomes each environment's init (the `stratus` binary itself).
    pub init_exe: PathBuf,
    /// An empty directory over which each environment builds its root (in its own mount
    /// namespace, so one directory serves all).
    pub staging: PathBuf,
    /// `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Environments run as uids from `uid_base` on, one per environment: each server on the
    /// host claims a block of `uid_count` (by lock file), so servers never share uids.
    pub uid_base: u32,
    pub uid_count: u32,
    /// Where the uid blocks' lock files live.
    pub uid_lock_dir: PathBuf,
    /// Run each environment in a user namespace of its own, where the host allows
    /// unprivileged user namespaces.
    pub user_namespace: bool,
}

/// The uid and gid a function sees inside its user namespace: those of Lambda's
/// `sbx_user1051`.
pub const FUNCTION_UID: u32 = 993;
pub const FUNCTION_GID: u32 = 990;

impl NamespaceConfig {
    pub fn new(init_exe: PathBuf, staging: PathBuf) -> Self {
        Self {
            init_exe,
            staging,
            cgroup_root: "/sys/fs/cgroup".into(),
            uid_base: 900_000,
            uid_count: 10_000,
            uid_lock_dir: "/run/stratus/uid-blocks".into(),
            user_namespace: true,
        }
    }
}

/// Why this host cannot isolate environments.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("isolation needs root (running as uid {0})")]
    NotRoot(u32),
    #[error("cgroups are not usable")]
    Cgroups(#[source] crate::cgroup::CgroupError),
    #[error("the seccomp filter cannot be built")]
    Seccomp(#[source] crate::seccomp::SeccompError),
    #[error("cannot prepare {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a test environment failed to start")]
    Probe(#[source] SandboxError),
}

/// Starts environments in namespaces and cgroups.
pub struct NamespaceBackend {
    config: NamespaceConfig,
    cgroups: Cgroups,
    seccomp: Vec<libc::sock_filter>,
    /// The init executable, opened once; environments exec it by descriptor.
    init: File,
    /// Every environment's init holds the read end; only this server holds the write end, so
    /// when the server dies (even by SIGKILL) every init sees end-of-file and exits.
    lifeline: (OwnedFd, OwnedFd),
    next_uid: AtomicU64,
    next_id: AtomicU64,
    /// The claimed uid block: its first uid, and the locked file that holds the claim.
    uid_first: u32,
    _uid_claim: File,
    /// Why environments run without a user namespace, if they do.
    no_user_namespace: Option<String>,
}

impl std::fmt::Debug for NamespaceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceBackend")
            .field("config", &self.config)
            .field("cgroups", &self.cgroups.version)
            .finish()
    }
}

impl NamespaceBackend {
    /// Checks that this host can isolate (root, cgroups, seccomp) and prepares it.
    pub fn new(config: NamespaceConfig) -> Result<Self, Unavailable> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(Unavailable::NotRoot(euid));
        }
        let cgroups = Cgroups::detect(&config.cgroup_root).map_err(Unavailable::Cgroups)?;
        cgroups.prepare().map_err(Unavailable::Cgroups)?;
        let seccomp = crate::seccomp::compile().map_err(Unavailable::Seccomp)?;
        fs::create_dir_all(&config.staging)
            .map_err(|source| Unavailable::Prepare { path: config.staging.clone(), source })?;
        let init = File::open(&config.init_exe)
            .map_err(|source| Unavailable::Prepare { path: config.init_exe.clone(), source })?;
        let lifeline = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Unavailable::Prepare { path: "lifeline pipe".into(), source: e.into() })?;
        let (uid_first, uid_claim) = claim_uid_block(&config)?;
        let no_user_namespace =
            if config.user_namespace { user_namespaces_allowed().err() } else { Some("turned off".into()) };
        Ok(Self {
            config,
            cgroups,
            seccomp,
            init,
            lifeline,
            next_uid: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            uid_first,
            _uid_claim: uid_claim,
            no_user_namespace,
        })
    }

    /// Why environments run without a user namespace (`None`: each has one).
    pub fn no_user_namespace(&self) -> Option<&str> {
        self.no_user_namespace.as_deref()
    }

    /// The cgroup flavour in use.
    pub fn cgroup_version(&self) -> crate::cgroup::Version {
        self.cgroups.version
    }

    fn allocate_uid(&self) -> u32 {
        let n = self.next_uid.fetch_add(1, Ordering::Relaxed) % u64::from(self.config.uid_count.max(1));
        self.uid_first + n as u32
    }
}

/// Whether an unprivileged process may create a user namespace here (the environment enters
/// its own after dropping to its uid).
fn user_namespaces_allowed() -> Result<(), String> {
    let sysctl = |path: &str| fs::read_to_string(path).ok().map(|v| v.trim().to_string());
    if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err("user.max_user_namespaces is 0".into());
    }
    // Debian's switch for unprivileged user namespaces (absent on other kernels).
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err("kernel.unprivileged_userns_clone is 0".into());
    }
    if !Path::new("/proc/self/ns/user").exists() {
        return Err("the kernel has no user namespaces".into());
    }
    Ok(())
}

/// Claims the first free block of uids (a lock file held for the server's life).
fn claim_uid_block(config: &NamespaceConfig) -> Result<(u32, File), Unavailable> {
    let prepare = |source| Unavailable::Prepare { path: config.uid_lock_dir.clone(), source };
    fs::create_dir_all(&config.uid_lock_dir).map_err(prepare)?;
    for block in 0..100u32 {
        let path = config.uid_lock_dir.join(format!("{block}.lock"));
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(prepare)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok((config.uid_base + block * config.uid_count, file));
        }
    }
    Err(prepare(io::Error::other("every uid block is claimed by another server")))
}

impl Drop for NamespaceBackend {
    fn drop(&mut self) {
        self.cgroups.release();
    }
}

const VIEW_TASK: &str = "/var/task";
const VIEW_RUNTIME: &str = "/var/runtime";
const VIEW_OPT: &str = "/opt";
const VIEW_TMP: &str = "/tmp";

impl Backend for NamespaceBackend {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn isolated(&self) -> bool {
        true
    }

    fn reserve_uid(&self) -> Option<u32> {
        Some(self.allocate_uid())
    }

    fn layout(&self, _mounts: &Mounts) -> Layout {
        Layout {
            task_root: VIEW_TASK.into(),
            runtime_dir: VIEW_RUNTIME.into(),
            opt: VIEW_OPT.into(),
            tmp: VIEW_TMP.into(),
        }
    }

    fn spawn(&self, spec: Spec) -> Result<Box<dyn Sandboxed>, SandboxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let uid = spec.uid.unwrap_or_else(|| self.allocate_uid());
        let user_namespace = self.no_user_namespace.is_none().then_some((FUNCTION_UID, FUNCTION_GID));
        let spawn_error = |source| SandboxError::Spawn { program: spec.program.display().to_string(), source };
        let cgroup = self
            .cgroups
            .create(
                id,
                &CgroupLimits { memory_bytes: spec.limits.memory_bytes, max_processes: spec.limits.max_processes },
            )
            .map_err(|e| SandboxError::Prepare(io::Error::other(e.to_string())))?;
        let procs: Vec<File> = cgroup
            .procs_files()
            .iter()
            .map(|p| OpenOptions::new().write(true).open(p))
            .collect::<io::Result<_>>()
            .map_err(SandboxError::Prepare)?;
        let root = RootSpec {
            staging: &self.config.staging,
            task_root: &spec.mounts.task_root,
            runtime_dir: &spec.mounts.runtime_dir,
            opt: spec.mounts.opt.as_deref(),
            tmp_bytes: spec.limits.tmp_bytes,
            extra_ro: &spec.mounts.extra_ro,
            uid: if user_namespace.is_some() { FUNCTION_UID } else { uid },
            gid: if user_namespace.is_some() { FUNCTION_GID } else { uid },
        };
        let plan = mounts::plan(&root, Path::new("/"));
        let (status_read, status_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Prepare(e.into()))?;
        let devnull = File::open("/dev/null").map_err(SandboxError::Prepare)?;
        // A network namespace, if any, is entered with setns (it was made with the listener in it).
        let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        let isolation = Isolation::new(
            flags,
            spec.netns.as_ref().map(|n| n.as_raw_fd()),
            procs.iter().map(|f| f.as_raw_fd()).collect(),
            &plan,
            &self.config.staging,
            "stratus",
            uid,
            uid,
            user_namespace,
            self.seccomp.clone(),
            self.init.as_raw_fd(),
            status_write.as_raw_fd(),
            self.lifeline.0.as_raw_fd(),
        )
        .map_err(spawn_error)?;
        let mut args: Vec<std::ffi::OsString> = vec![spec.program.clone().into_os_string()];
        args.extend(spec.args.iter().cloned());
        let prepared = Prepared::new(
            &self.config.init_exe,
            Some(crate::init::INIT_ARGV0),
            &args,
            &spec.env,
            &spec.cwd,
            spec.output.as_raw_fd(),
            devnull.as_raw_fd(),
            spec.limits.max_open_files,
            Some(isolation),
        )
        .map_err(spawn_error)?;
        let pid = match spawn::spawn(&prepared) {
            Ok(pid) => pid,
            Err(e) => {
                cgroup.remove();
                return Err(spawn_error(e));
            }
        };
        drop(status_write);
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(source) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
                cgroup.kill_all();
                cgroup.remove();
                return Err(SandboxError::Pidfd { pid, source });
            }
        };
        Ok(Box::new(Isolated { pid, pidfd, status: File::from(status_read), cgroup, exited: None, uid }))
    }
}

/// A running isolated environment.
struct Isolated {
    /// The init's pid, as the host sees it.
    pid: i32,
    pidfd: OwnedFd,
    /// Read end of the init's status pipe.
    status: File,
    cgroup: EnvCgroup,
    exited: Option<Exit>,
    uid: u32,
}

impl Isolated {
    fn collect(&mut self, status: WaitStatus) -> Exit {
        let mut line = String::new();
        let _ = (&self.status).take(64).read_to_string(&mut line);
        match crate::init::parse_status(&line) {
            Some(e) => e,
            // No report: the init itself was killed (by us, or for lack of memory).
            None => match status {
                WaitStatus::Exited(_, c) => Exit::Code(c),
                WaitStatus::Signaled(_, s, _) => Exit::Signal(s as i32),
                _ => Exit::Signal(libc::SIGKILL),
            },
        }
    }
}

impl Sandboxed for Isolated {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    fn try_wait(&mut self) -> Option<Exit> {
        if self.exited.is_none()
            && let Ok(status) = waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG))
            && !matches!(status, WaitStatus::StillAlive)
        {
            self.exited = Some(self.collect(status));
        }
        self.exited
    }

    fn kill(&mut self) {
        // Lift the CPU limit and kill everything in the group, then the init, with which the
        // namespace dies. Nothing here waits.
        self.cgroup.kill_all();
        if self.exited.is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    fn peak_memory_bytes(&self) -> Option<u64> {
        self.cgroup.peak_memory_bytes()
    }

    fn oom_killed(&self) -> bool {
        self.cgroup.oom_kills() > 0
    }

    fn freeze(&self) -> bool {
        self.cgroup.set_frozen(true).is_ok()
    }

    fn thaw(&self) -> bool {
        self.cgroup.set_frozen(false).is_ok()
    }

    fn uid(&self) -> Option<u32> {
        Some(self.uid)
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        self.kill();
        if self.exited.is_none() {
            // Returns once every process of the namespace is gone.
            let status = waitpid(Pid::from_raw(self.pid), None).unwrap_or(WaitStatus::StillAlive);
            self.exited = Some(self.collect(status));
        }
        self.cgroup.remove();
    }
}
