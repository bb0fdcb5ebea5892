//! The seccomp filter of isolated environments: an allowlist kept as reviewed data in
//! `seccomp/x86_64.json` (each entry says why it is allowed). Everything else fails with
//! `ENOSYS`, which programs read as "not supported here" and route around (glibc falls back
//! from `clone3` to `clone`, for instance). Denied by omission, among others: `mount`,
//! `umount2`, `pivot_root`, `chroot`, `unshare`, `setns`, `ptrace`, `process_vm_readv/writev`,
//! `bpf`, `perf_event_open`, `kexec_*`, `*_module`, `keyctl`/`add_key`/`request_key`,
//! `reboot`, `swapon`/`swapoff`, `settimeofday`/`clock_settime`/`adjtimex`, `sethostname`,
//! `mknod`, `open_by_handle_at`, `userfaultfd`, `io_uring_*`, `fanotify_init`, `iopl`/`ioperm`,
//! `syslog`, `acct`, `quotactl`, `clone3`; `clone` is allowed only without namespace flags.

use std::collections::HashMap;

/// The policy as shipped.
const POLICY_X86_64: &str = include_str!("../seccomp/x86_64.json");

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp policy for this architecture ({0})")]
    UnsupportedArch(&'static str),
    #[error("the seccomp policy is invalid: {0}")]
    Policy(String),
}

/// Compiles the environment filter for this machine.
pub fn compile() -> Result<Vec<libc::sock_filter>, SeccompError> {
    let (policy, arch) = match std::env::consts::ARCH {
        "x86_64" => (POLICY_X86_64, seccompiler::TargetArch::x86_64),
        other => return Err(SeccompError::UnsupportedArch(other)),
    };
    let mut programs: HashMap<String, seccompiler::BpfProgram> =
        seccompiler::compile_from_json(policy.as_bytes(), arch).map_err(|e| SeccompError::Policy(e.to_string()))?;
    let program = programs.remove("function").ok_or_else(|| SeccompError::Policy("no \"function\" filter".into()))?;
    Ok(program.into_iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_compiles_and_denies_by_default() {
        let prog = super::compile().unwrap();
        assert!(prog.len() > 100);
        let policy = super::POLICY_X86_64;
        assert!(policy.contains("\"errno\": 38"), "unlisted syscalls fail with ENOSYS");
        for denied in [
            "\"mount\"",
            "\"ptrace\"",
            "\"unshare\"",
            "\"setns\"",
            "\"bpf\"",
            "\"kexec_load\"",
            "\"init_module\"",
            "\"keyctl\"",
            "\"clone3\"",
            "\"open_by_handle_at\"",
        ] {
            assert!(!policy.contains(denied), "{denied} must not be allowed");
        }
    }
}
