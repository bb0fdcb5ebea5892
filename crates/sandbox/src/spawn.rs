//! Starting a process without copying the platform's address space.
//!
//! `fork()` from a large multi-threaded server costs 1–3 ms here (page tables are copied);
//! `posix_spawn` avoids it with `clone(CLONE_VM | CLONE_VFORK)` but cannot set a parent-death
//! signal. This module does what `posix_spawn` does, plus the few steps an environment needs:
//! the child runs on a small stack in the parent's memory until it calls `execve`, and does only
//! async-signal-safe system calls on data prepared before the clone (no allocation, no locks).
//!
//! Child steps, in order: reset signal dispositions, new session (its own process group), die
//! with the parent, resource limits, stdio, working directory, empty signal mask, exec. A
//! failure at any step is reported through memory shared with the parent and the child exits.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// Everything the child needs, as C data prepared in advance.
pub(crate) struct Prepared {
    program: CString,
    /// Keeps the argument strings alive for `argv`.
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// Keeps the environment strings alive for `envp`.
    _env: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    /// Becomes the child's stdout and stderr.
    output: RawFd,
    /// Becomes the child's stdin (`/dev/null`).
    input: RawFd,
    nofile: libc::rlimit,
    nproc: Option<libc::rlimit>,
    /// The parent's pid, to catch a parent that died before PR_SET_PDEATHSIG took effect.
    parent: libc::pid_t,
    /// Which step failed (0 = none) and its errno, written by the child.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

impl Prepared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        program: &Path,
        args: &[std::ffi::OsString],
        env: &[(String, String)],
        cwd: &Path,
        output: RawFd,
        input: RawFd,
        max_open_files: u64,
        max_processes: Option<u64>,
    ) -> io::Result<Self> {
        let program = cstring(program.as_os_str())?;
        let mut c_args = vec![program.clone()];
        for a in args {
            c_args.push(cstring(a)?);
        }
        let c_env: Vec<CString> =
            env.iter().map(|(k, v)| cstring(OsStr::new(&format!("{k}={v}")))).collect::<io::Result<_>>()?;
        let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = c_env.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(Self {
            program,
            _args: c_args,
            argv,
            _env: c_env,
            envp,
            cwd: cstring(cwd.as_os_str())?,
            output,
            input,
            nofile: libc::rlimit { rlim_cur: max_open_files, rlim_max: max_open_files },
            nproc: max_processes.map(|n| libc::rlimit { rlim_cur: n, rlim_max: n }),
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            failed_step: AtomicI32::new(0),
            failed_errno: AtomicI32::new(0),
        })
    }
}

/// The step of the child that failed, for error messages.
fn step_name(step: i32) -> &'static str {
    match step {
        1 => "setsid",
        2 => "prctl(PR_SET_PDEATHSIG)",
        3 => "the parent exited",
        4 => "setrlimit",
        5 => "dup2",
        6 => "chdir",
        7 => "execve",
        _ => "unknown step",
    }
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: libc::c_ulong,
    mask: u64,
}

/// Runs in the child, in the parent's memory, until `execve`.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the `Prepared` the parent keeps alive (and does not touch) until
    // this child has exec'd or exited: CLONE_VFORK suspends the parent until then.
    let p = unsafe { &*(arg as *const Prepared) };
    let fail = |step: i32| -> libc::c_int {
        p.failed_errno.store(io::Error::last_os_error().raw_os_error().unwrap_or(0), Ordering::Relaxed);
        p.failed_step.store(step, Ordering::Relaxed);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };
    // SAFETY (whole block): each call is an async-signal-safe system call on data prepared by the
    // parent; nothing here allocates, locks or unwinds.
    unsafe {
        // Handlers installed by the platform must not run in the child, and an ignored SIGPIPE
        // (Rust's default) must not leak into the function.
        // The raw system call, because glibc refuses to touch the two signals it reserves.
        let default_action = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default_action,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        if libc::setsid() < 0 {
            return fail(1);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return fail(2);
        }
        if libc::getppid() != p.parent {
            return fail(3);
        }
        if libc::setrlimit(libc::RLIMIT_NOFILE, &p.nofile) != 0 {
            return fail(4);
        }
        if let Some(nproc) = &p.nproc
            && libc::setrlimit(libc::RLIMIT_NPROC, nproc) != 0
        {
            return fail(4);
        }
        if libc::dup2(p.input, 0) < 0 || libc::dup2(p.output, 1) < 0 || libc::dup2(p.output, 2) < 0 {
            return fail(5);
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            return fail(6);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(7)
    }
}

/// Starts the prepared process and returns its pid once it has exec'd.
pub(crate) fn spawn(p: &Prepared) -> io::Result<libc::pid_t> {
    const STACK: usize = 64 * 1024;
    let mut stack = vec![0u8; STACK];
    // The stack grows down: hand clone the (16-byte aligned) top.
    let top = ((stack.as_mut_ptr() as usize + STACK) & !15) as *mut libc::c_void;
    // Block every signal so no platform handler runs on the child's borrowed memory before it
    // resets them; restored right after.
    // SAFETY: sigset manipulation on local values; pthread_sigmask only affects this thread.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: child_main only performs async-signal-safe calls on `p`, which outlives the clone
    // (CLONE_VFORK returns only after the child exec'd or exited); `stack` outlives it too.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            p as *const Prepared as *mut libc::c_void,
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores this thread's previous mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    drop(stack);
    if pid < 0 {
        return Err(clone_err);
    }
    let step = p.failed_step.load(Ordering::Relaxed);
    if step != 0 {
        let errno = p.failed_errno.load(Ordering::Relaxed);
        let mut status = 0;
        // SAFETY: reaps the child we just created, which has exited.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
        let err = io::Error::from_raw_os_error(errno);
        if step == 7 {
            return Err(err);
        }
        return Err(io::Error::new(err.kind(), format!("{} failed: {err}", step_name(step))));
    }
    Ok(pid)
}
