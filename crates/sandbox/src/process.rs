//! The unisolated development backend: each environment is a process group of its own with
//! resource limits, killed as a group, and nothing more. Functions can see the host.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

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
        let stderr = spec.output.try_clone().map_err(SandboxError::Prepare)?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(spec.output))
            .stderr(Stdio::from(stderr));
        let nofile = spec.limits.max_open_files;
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (setsid, prctl, setrlimit); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                // Die with the platform: an orphaned environment must not outlive it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|source| SandboxError::Spawn { program: spec.program.display().to_string(), source })?;
        let pid = child.id() as i32;
        let pidfd = pidfd_open(pid).map_err(|source| SandboxError::Pidfd { pid, source })?;
        Ok(Box::new(ProcessGroup { child, pidfd, exited: None }))
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
    child: Child,
    pidfd: OwnedFd,
    exited: Option<Exit>,
}

impl Sandboxed for ProcessGroup {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    fn try_wait(&mut self) -> Option<Exit> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(match (status.code(), status.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                (None, None) => Exit::Code(-1),
            });
        }
        self.exited
    }

    fn kill(&mut self) {
        let pid = Pid::from_raw(self.pid());
        // The group id is the root's pid (setsid); kill stragglers even after the root exited.
        let _ = killpg(pid, Signal::SIGKILL);
        if self.exited.is_none() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = self.child.wait();
            self.try_wait();
        }
    }

    fn peak_memory_bytes(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
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
            mounts: Mounts { task_root: "/".into(), runtime_dir: "/".into(), opt: None, tmp },
            limits: Limits::default(),
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
    fn kill_ends_the_whole_group() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut sb = ProcessBackend.spawn(spec("/bin/sh", &["-c", "sleep 100 & sleep 100"], w)).unwrap();
        sb.kill();
        assert_eq!(sb.try_wait(), Some(Exit::Signal(9)));
        // Every writer of the pipe is gone, so reading reaches EOF instead of blocking.
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(Exit::Signal(9).to_string(), "signal: killed");
    }
}
