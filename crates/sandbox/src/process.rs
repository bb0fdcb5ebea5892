//! The unisolated development backend: each environment is a process group of its own with
//! resource limits, killed as a group, and nothing more. Functions can see the host.
//! Processes are started with [`spawn`](crate::spawn) (no copy of the server's memory).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::spawn::{self, Prepared};
use crate::{Backend, Exit, Layout, Mounts, SandboxError, Sandboxed, Spec};

/// Starts environments as plain process groups (no namespaces, no cgroups).
#[derive(Debug, Default, Clone)]
pub struct ProcessBackend;

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn isolated(&self) -> bool {
        false
    }

    fn layout(&self, mounts: &Mounts) -> Layout {
        Layout {
            task_root: mounts.task_root.clone(),
            runtime_dir: mounts.runtime_dir.clone(),
            opt: mounts.opt.clone().unwrap_or_else(|| mounts.tmp.join(".opt-empty")),
            tmp: mounts.tmp.clone(),
        }
    }

    fn spawn(&self, spec: Spec) -> Result<Box<dyn Sandboxed>, SandboxError> {
        fs::create_dir_all(&spec.mounts.tmp).map_err(SandboxError::Prepare)?;
        let spawn_error = |source| SandboxError::Spawn { program: spec.program.display().to_string(), source };
        let devnull = fs::File::open("/dev/null").map_err(SandboxError::Prepare)?;
        // No RLIMIT_NPROC: it counts every process of the user, so it cannot bound one
        // environment without its own user; the isolating backend uses the pids cgroup.
        let prepared = Prepared::new(
            &spec.program,
            None,
            &spec.args,
            &spec.env,
            &spec.cwd,
            spec.output.as_raw_fd(),
            devnull.as_raw_fd(),
            spec.limits.max_open_files,
            None,
        )
        .map_err(spawn_error)?;
        let pid = spawn::spawn(&prepared).map_err(spawn_error)?;
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(source) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
                return Err(SandboxError::Pidfd { pid, source });
            }
        };
        // Kept open: re-reading one descriptor is much cheaper than opening the file per invoke.
        let status = fs::File::open(format!("/proc/{pid}/status")).ok();
        Ok(Box::new(ProcessGroup { pid, pidfd, exited: None, status }))
    }
}

/// Opens a pidfd for `pid` (Linux 5.3+).
pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

struct ProcessGroup {
    pid: i32,
    pidfd: OwnedFd,
    exited: Option<Exit>,
    /// `/proc/<pid>/status` of the root process, for its peak memory (VmHWM).
    status: Option<fs::File>,
}

impl Sandboxed for ProcessGroup {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    fn try_wait(&mut self) -> Option<Exit> {
        if self.exited.is_none() {
            self.exited = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some(Exit::Code(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => Some(Exit::Signal(sig as i32)),
                _ => None,
            };
        }
        self.exited
    }

    fn kill(&mut self) {
        let pid = Pid::from_raw(self.pid());
        // The group id is the root's pid (setsid); kill stragglers even after the root exited.
        let _ = killpg(pid, Signal::SIGKILL);
        if self.exited.is_none() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }

    fn peak_memory_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 4096];
        let n = self.status.as_ref()?.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
        if self.exited.is_none() {
            let _ = waitpid(Pid::from_raw(self.pid), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use std::io::Read;
    use std::path::PathBuf;

    fn spec(program: &str, args: &[&str], out: OwnedFd) -> Spec {
        let tmp = std::env::temp_dir().join(format!("stratus-sandbox-test-{}", std::process::id()));
        Spec {
            program: PathBuf::from(program),
            args: args.iter().map(Into::into).collect(),
            env: vec![("GREETING".into(), "hi".into())],
            cwd: PathBuf::from("/"),
            output: out,
            mounts: Mounts { task_root: "/".into(), runtime_dir: "/".into(), opt: None, tmp, extra_ro: vec![] },
            limits: Limits::default(),
            netns: None,
            uid: None,
        }
    }

    #[test]
    fn runs_with_only_the_given_environment_and_reports_exit() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut sb = ProcessBackend.spawn(spec("/bin/sh", &["-c", "echo $GREETING $HOME; exit 3"], w)).unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hi\n");
        let mut exit = None;
        for _ in 0..200 {
            exit = sb.try_wait();
            if exit.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(exit, Some(Exit::Code(3)));
    }

    #[test]
    fn exec_failures_are_reported_with_their_cause() {
        let (_r, w) = nix::unistd::pipe().unwrap();
        let err = match ProcessBackend.spawn(spec("/no/such/program", &[], w)) {
            Err(e) => e,
            Ok(_) => panic!("spawned a missing program"),
        };
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("No such file"), "{source}");
        let data = std::env::temp_dir().join(format!("stratus-not-executable-{}", std::process::id()));
        std::fs::write(&data, "#!/bin/sh\n").unwrap();
        let (_r, w) = nix::unistd::pipe().unwrap();
        let err = match ProcessBackend.spawn(spec(data.to_str().unwrap(), &[], w)) {
            Err(e) => e,
            Ok(_) => panic!("executed a data file"),
        };
        assert!(std::error::Error::source(&err).unwrap().to_string().contains("Permission denied"));
    }

    #[test]
    fn signals_start_at_their_defaults() {
        // Rust ignores SIGPIPE in this process; the child must not inherit that.
        let (r, w) = nix::unistd::pipe().unwrap();
        let _sb = ProcessBackend.spawn(spec("/bin/sh", &["-c", "grep SigIgn /proc/self/status"], w)).unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), "SigIgn:\t0000000000000000");
    }

    #[test]
    fn kill_ends_the_whole_group() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut sb = ProcessBackend.spawn(spec("/bin/sh", &["-c", "sleep 100 & sleep 100"], w)).unwrap();
        sb.kill();
        let mut exit = None;
        for _ in 0..500 {
            exit = sb.try_wait();
            if exit.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(exit, Some(Exit::Signal(9)));
        // Every writer of the pipe is gone, so reading reaches EOF instead of blocking.
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(Exit::Signal(9).to_string(), "signal: killed");
    }
}
