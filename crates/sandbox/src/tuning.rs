//! Host tuning the isolating backend benefits from, applied only when the operator allows it.
//!
//! Moving a process into a cgroup (every cold start does, once per environment) takes the
//! kernel's cgroup threadgroup lock for writing, which waits for an RCU grace period: 6–7 ms on
//! this project's machines, more than everything else a sandbox costs. With expedited grace
//! periods (`/sys/kernel/rcu_expedited`) the same move takes ~0.3 ms. The setting is
//! host-wide (expedited grace periods interrupt every CPU briefly), so Stratus says when it
//! changes it and puts it back when it stops.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

/// Holds `rcu_expedited` at 1 while alive; restores the previous value on drop.
#[derive(Debug)]
pub struct ExpeditedRcu {
    path: PathBuf,
    previous: String,
}

impl ExpeditedRcu {
    /// Turns expedited RCU on. `Ok(None)` if it already was.
    pub fn enable() -> io::Result<Option<Self>> {
        Self::enable_at(Path::new(RCU_EXPEDITED))
    }

    fn enable_at(path: &Path) -> io::Result<Option<Self>> {
        let previous = fs::read_to_string(path)?.trim().to_string();
        if previous != "0" {
            return Ok(None);
        }
        fs::write(path, "1")?;
        Ok(Some(Self { path: path.to_path_buf(), previous }))
    }
}

impl Drop for ExpeditedRcu {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, &self.previous);
    }
}

/// Lowers the calling thread's scheduling priority (nice 10). The platform's bookkeeping
/// threads (the ledger's and the logs' writers) batch work that can wait a few milliseconds;
/// at nice 0 their bursts preempt the request path and functions on a small machine
/// (BENCHMARKS.md: p99 latency with the ledger on). Best effort: failures are ignored.
pub fn background_thread() {
    // SAFETY: gettid and setpriority take no pointers; on Linux, PRIO_PROCESS with a thread id
    // sets that one thread's nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rcu_expedited");
        fs::write(&f, "0\n").unwrap();
        let guard = ExpeditedRcu::enable_at(&f).unwrap().unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "1");
        drop(guard);
        assert_eq!(fs::read_to_string(&f).unwrap(), "0");
        fs::write(&f, "1\n").unwrap();
        assert!(ExpeditedRcu::enable_at(&f).unwrap().is_none(), "left alone when already on");
    }
}
