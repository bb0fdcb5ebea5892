//! Starting a process without copying the platform's address space, optionally inside new
//! namespaces and a new root.
//!
//! `fork()` from a large multi-threaded server costs 1–3 ms here (page tables are copied);
//! `posix_spawn` avoids it with `clone(CLONE_VM | CLONE_VFORK)` but cannot set up a sandbox.
//! This module does what `posix_spawn` does, plus the steps of docs/sandbox.md: the child runs on
//! a small stack in the parent's memory until it calls `execve`, and does only async-signal-safe
//! system calls on data prepared before the clone (no allocation, no locks, no unwinding).
//!
//! Child steps, in order (docs/sandbox.md numbers them the same way):
//!  1. reset signal dispositions
//!  2. new session; die with the parent
//!  3. join the environment's cgroups
//!  4. enter the environment's network namespace (isolated network only)
//!  5. build the root filesystem and pivot into it
//!  6. set the hostname
//!  7. resource limits
//!  8. stdio (and the status pipe as fd 3, the server's lifeline as fd 4)
//!  9. working directory
//! 10. drop to the environment's uid and gid; then, where the host allows, a user namespace
//!     in which that uid and gid appear as Lambda's (993 and 990) and nothing else is mapped
//! 11. no new privileges; the seccomp filter
//! 12. empty signal mask; exec
//!
//! A failure at any step is reported through memory shared with the parent and the child exits.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::mounts::MountOp;

pub(crate) fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

/// A mount step as C data.
enum CMountOp {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    ReadOnly {
        target: CString,
    },
    Mkdir {
        path: CString,
    },
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    WriteFile {
        path: CString,
        contents: Vec<u8>,
    },
}

impl CMountOp {
    fn from(op: &MountOp) -> io::Result<Self> {
        let c = |p: &Path| cstring(p.as_os_str());
        let s = |v: &str| cstring(OsStr::new(v));
        Ok(match op {
            MountOp::Mount { source, target, fstype, flags, data } => CMountOp::Mount {
                source: source.as_deref().map(c).transpose()?,
                target: c(target)?,
                fstype: fstype.as_deref().map(s).transpose()?,
                flags: *flags as libc::c_ulong,
                data: data.as_deref().map(s).transpose()?,
            },
            MountOp::ReadOnly { target } => CMountOp::ReadOnly { target: c(target)? },
            MountOp::Mkdir { path } => CMountOp::Mkdir { path: c(path)? },
            MountOp::Touch { path } => CMountOp::Touch { path: c(path)? },
            MountOp::Symlink { target, link } => CMountOp::Symlink { target: c(target)?, link: c(link)? },
            MountOp::WriteFile { path, contents } => {
                CMountOp::WriteFile { path: c(path)?, contents: contents.as_bytes().to_vec() }
            }
        })
    }
}

/// The namespace, filesystem and privilege steps of an isolated start.
pub(crate) struct Isolation {
    /// CLONE_NEW* flags for the clone.
    pub clone_flags: libc::c_int,
    /// A network namespace to enter instead of the host's.
    pub netns: Option<RawFd>,
    /// `cgroup.procs` files (opened for writing) to join.
    pub cgroup_procs: Vec<RawFd>,
    mounts: Vec<CMountOp>,
    /// Where the new root is built, and the old root's mount point inside it.
    staging: CString,
    oldroot_in_staging: CString,
    hostname: CString,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// The `uid_map` and `gid_map` lines of the user namespace entered after dropping
    /// privileges, if any.
    user_maps: Option<(Vec<u8>, Vec<u8>)>,
    /// The compiled seccomp filter.
    seccomp: Vec<libc::sock_filter>,
    /// The executable to run (by descriptor: it is not visible inside the new root).
    exec_fd: RawFd,
    /// Becomes fd 3: where the environment's init reports how the runtime ended.
    status_fd: RawFd,
    /// Becomes fd 4: the read end of the server's lifeline pipe.
    lifeline_fd: RawFd,
}

impl Isolation {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        clone_flags: libc::c_int,
        netns: Option<RawFd>,
        cgroup_procs: Vec<RawFd>,
        mounts: &[MountOp],
        staging: &Path,
        hostname: &str,
        uid: u32,
        gid: u32,
        user_namespace: Option<(u32, u32)>,
        seccomp: Vec<libc::sock_filter>,
        exec_fd: RawFd,
        status_fd: RawFd,
        lifeline_fd: RawFd,
    ) -> io::Result<Self> {
        Ok(Self {
            clone_flags,
            netns,
            cgroup_procs,
            mounts: mounts.iter().map(CMountOp::from).collect::<io::Result<_>>()?,
            staging: cstring(staging.as_os_str())?,
            oldroot_in_staging: cstring(staging.join(".oldroot").as_os_str())?,
            hostname: cstring(OsStr::new(hostname))?,
            uid,
            gid,
            user_maps: user_namespace.map(|(inner_uid, inner_gid)| {
                (format!("{inner_uid} {uid} 1\n").into_bytes(), format!("{inner_gid} {gid} 1\n").into_bytes())
            }),
            seccomp,
            exec_fd,
            status_fd,
            lifeline_fd,
        })
    }
}

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
    isolation: Option<Isolation>,
    /// The parent's pid, to catch a parent that died before PR_SET_PDEATHSIG took effect.
    parent: libc::pid_t,
    /// Which step failed (0 = none), its errno, and (for mounts) which operation.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
    failed_index: AtomicI32,
}

impl Prepared {
    /// `argv0` overrides the program name seen by the new process (the init's name).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        program: &Path,
        argv0: Option<&str>,
        args: &[std::ffi::OsString],
        env: &[(String, String)],
        cwd: &Path,
        output: RawFd,
        input: RawFd,
        max_open_files: u64,
        isolation: Option<Isolation>,
    ) -> io::Result<Self> {
        let program = cstring(program.as_os_str())?;
        let mut c_args = vec![match argv0 {
            Some(a) => cstring(OsStr::new(a))?,
            None => program.clone(),
        }];
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
            isolation,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            failed_step: AtomicI32::new(0),
            failed_errno: AtomicI32::new(0),
            failed_index: AtomicI32::new(-1),
        })
    }
}

/// The step of the child that failed, for error messages.
fn step_name(step: i32) -> &'static str {
    match step {
        1 => "resetting signals",
        2 => "setsid or the parent-death signal",
        3 => "joining the cgroups",
        4 => "entering the network namespace",
        5 => "building the root filesystem",
        6 => "setting the hostname",
        7 => "setting resource limits",
        8 => "setting up stdio",
        9 => "changing to the working directory",
        10 => "dropping privileges (or entering the user namespace)",
        11 => "installing the seccomp filter",
        12 => "exec",
        _ => "an unknown step",
    }
}

/// The kernel's `struct sigaction` (x86_64 layout; on aarch64 the `restorer` slot is the mask,
/// and every field is zero here anyway).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: libc::c_ulong,
    mask: u64,
}

const STEP_MOUNTS: i32 = 5;

/// Enters a new user namespace owned by the (already unprivileged) uid, and maps that uid and
/// gid, and only them, into it. An unprivileged process may map exactly its own ids, after
/// giving up `setgroups` in the namespace. Once the process execs as a non-zero uid of the
/// namespace it holds no capabilities there either.
///
/// # Safety
/// Must run in the child of [`spawn`]; only async-signal-safe calls on prepared data.
unsafe fn enter_user_namespace(uid_map: &[u8], gid_map: &[u8]) -> Result<(), ()> {
    // SAFETY: system calls on NUL-terminated literals and buffers owned by the caller.
    unsafe {
        let write_file = |path: &std::ffi::CStr, data: &[u8]| -> bool {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return false;
            }
            let ok = libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) == data.len() as isize;
            libc::close(fd) == 0 && ok
        };
        // Dropping privileges made the process non-dumpable, which hands its /proc files to
        // root; it must own its own uid_map to write it. (The flag belongs to the address
        // space, which exec replaces.)
        if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 || libc::unshare(libc::CLONE_NEWUSER) != 0 {
            return Err(());
        }
        if !write_file(c"/proc/self/setgroups", b"deny")
            || !write_file(c"/proc/self/uid_map", uid_map)
            || !write_file(c"/proc/self/gid_map", gid_map)
        {
            return Err(());
        }
        // Entering the namespace may clear the parent-death signal, as a credential change does.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(());
        }
    }
    Ok(())
}

/// Carries out the mount plan, pivots into the new root and makes it read-only.
///
/// # Safety
/// Must run in the child of [`spawn`]; only async-signal-safe calls on prepared data.
unsafe fn build_root(p: &Prepared, iso: &Isolation) -> Result<(), i32> {
    let null = std::ptr::null::<libc::c_char>();
    for (i, op) in iso.mounts.iter().enumerate() {
        p.failed_index.store(i as i32, Ordering::Relaxed);
        // SAFETY: system calls on NUL-terminated strings owned by `iso`.
        let ok = unsafe {
            match op {
                CMountOp::Mount { source, target, fstype, flags, data } => {
                    libc::mount(
                        source.as_ref().map_or(null, |s| s.as_ptr()),
                        target.as_ptr(),
                        fstype.as_ref().map_or(null, |s| s.as_ptr()),
                        *flags,
                        data.as_ref().map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
                    ) == 0
                }
                CMountOp::ReadOnly { target } => {
                    libc::mount(
                        null,
                        target.as_ptr(),
                        null,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                        std::ptr::null(),
                    ) == 0
                }
                CMountOp::Mkdir { path } => {
                    libc::mkdir(path.as_ptr(), 0o755) == 0 || *libc::__errno_location() == libc::EEXIST
                }
                CMountOp::Touch { path } => {
                    let fd = libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                    fd >= 0 && libc::close(fd) == 0
                }
                CMountOp::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()) == 0,
                CMountOp::WriteFile { path, contents } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
                        0o644,
                    );
                    fd >= 0
                        && libc::write(fd, contents.as_ptr() as *const libc::c_void, contents.len())
                            == contents.len() as isize
                        && libc::close(fd) == 0
                }
            }
        };
        if !ok {
            return Err(STEP_MOUNTS);
        }
    }
    p.failed_index.store(-1, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe {
        if libc::syscall(libc::SYS_pivot_root, iso.staging.as_ptr(), iso.oldroot_in_staging.as_ptr()) != 0 {
            return Err(STEP_MOUNTS);
        }
        let root = c"/".as_ptr();
        let old = c"/.oldroot".as_ptr();
        if libc::chdir(root) != 0 || libc::umount2(old, libc::MNT_DETACH) != 0 || libc::rmdir(old) != 0 {
            return Err(STEP_MOUNTS);
        }
        if libc::mount(
            null,
            root,
            null,
            libc::MS_REMOUNT | libc::MS_BIND | crate::mounts::ROOT_READ_ONLY as libc::c_ulong,
            std::ptr::null(),
        ) != 0
        {
            return Err(STEP_MOUNTS);
        }
    }
    Ok(())
}

/// Runs in the child, in the parent's memory, until `execve`.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the `Prepared` the parent keeps alive (and does not touch) until
    // this child has exec'd or exited: CLONE_VFORK suspends the parent until then.
    let p = unsafe { &*(arg as *const Prepared) };
    let fail = |step: i32| -> libc::c_int {
        // SAFETY: reading this thread's errno location.
        let errno = unsafe { *libc::__errno_location() };
        p.failed_errno.store(errno, Ordering::Relaxed);
        p.failed_step.store(step, Ordering::Relaxed);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };
    // SAFETY (whole block): each call is an async-signal-safe system call on data prepared by the
    // parent; nothing here allocates, locks or unwinds.
    unsafe {
        // 1. Handlers installed by the platform must not run in the child, and an ignored
        // SIGPIPE (Rust's default) must not leak into the function. The raw system call,
        // because glibc refuses to touch the two signals it reserves.
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
        // 2.
        if libc::setsid() < 0 {
            return fail(2);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return fail(2);
        }
        if let Some(iso) = &p.isolation {
            // In a new PID namespace getppid() is 0: the parent is outside.
            if iso.clone_flags & libc::CLONE_NEWPID == 0 && libc::getppid() != p.parent {
                return fail(2);
            }
            // 3.
            for fd in &iso.cgroup_procs {
                if libc::write(*fd, b"0".as_ptr() as *const libc::c_void, 1) != 1 {
                    return fail(3);
                }
            }
            // 4.
            if let Some(ns) = iso.netns
                && libc::setns(ns, libc::CLONE_NEWNET) != 0
            {
                return fail(4);
            }
            // 5.
            if let Err(step) = build_root(p, iso) {
                return fail(step);
            }
            // 6.
            if libc::sethostname(iso.hostname.as_ptr(), iso.hostname.as_bytes().len()) != 0 {
                return fail(6);
            }
        } else if libc::getppid() != p.parent {
            return fail(2);
        }
        // 7.
        if libc::setrlimit(libc::RLIMIT_NOFILE, &p.nofile) != 0 {
            return fail(7);
        }
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if p.isolation.is_some() && libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
            return fail(7);
        }
        // 8.
        if libc::dup2(p.input, 0) < 0 || libc::dup2(p.output, 1) < 0 || libc::dup2(p.output, 2) < 0 {
            return fail(8);
        }
        if let Some(iso) = &p.isolation
            && (libc::dup2(iso.status_fd, 3) < 0 || libc::dup2(iso.lifeline_fd, 4) < 0)
        {
            return fail(8);
        }
        // 9.
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            return fail(9);
        }
        if let Some(iso) = &p.isolation {
            // 10. Raw system calls: glibc's wrappers apply the change to every thread of the
            // process by signalling them, and this child shares the platform's thread list.
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, iso.gid, iso.gid, iso.gid) != 0
                || libc::syscall(libc::SYS_setresuid, iso.uid, iso.uid, iso.uid) != 0
            {
                return fail(10);
            }
            // Changing credentials cleared the parent-death signal: set it again.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return fail(10);
            }
            if let Some((uid_map, gid_map)) = &iso.user_maps
                && enter_user_namespace(uid_map, gid_map).is_err()
            {
                return fail(10);
            }
            // 11.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return fail(11);
            }
            let prog = libc::sock_fprog {
                len: iso.seccomp.len() as libc::c_ushort,
                filter: iso.seccomp.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0 {
                return fail(11);
            }
        }
        // 12.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        match &p.isolation {
            Some(iso) => {
                libc::syscall(
                    libc::SYS_execveat,
                    iso.exec_fd,
                    c"".as_ptr(),
                    p.argv.as_ptr(),
                    p.envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            None => {
                libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            }
        }
        fail(12)
    }
}

/// Starts the prepared process and returns its pid (as the host sees it) once it has exec'd.
pub(crate) fn spawn(p: &Prepared) -> io::Result<libc::pid_t> {
    const STACK: usize = 64 * 1024;
    let mut stack = vec![0u8; STACK];
    // The stack grows down: hand clone the (16-byte aligned) top.
    let top = ((stack.as_mut_ptr() as usize + STACK) & !15) as *mut libc::c_void;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | p.isolation.as_ref().map_or(0, |i| i.clone_flags);
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
    let pid = unsafe { libc::clone(child_main, top, flags, p as *const Prepared as *mut libc::c_void) };
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
        let index = p.failed_index.load(Ordering::Relaxed);
        let mut status = 0;
        // SAFETY: reaps the child we just created, which has exited.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
        let err = io::Error::from_raw_os_error(errno);
        if step == 12 {
            return Err(err);
        }
        let what = if step == STEP_MOUNTS && index >= 0 {
            format!("{} (operation {index})", step_name(step))
        } else {
            step_name(step).to_string()
        };
        return Err(io::Error::new(err.kind(), format!("{what} failed: {err}")));
    }
    Ok(pid)
}
