//! The seccomp filter of isolated environments: an allowlist kept as reviewed data below (each
//! group says why its system calls are allowed), compiled into a compact BPF program.
//!
//! Everything not listed fails with `ENOSYS`, which programs read as "not supported here" and
//! route around (glibc falls back from `clone3` to `clone`, for instance). Denied by omission,
//! among others: `mount`, `umount2`, `pivot_root`, `chroot`, `unshare`, `setns`, `ptrace`,
//! `process_vm_readv`/`writev`, `pidfd_getfd`, `bpf`, `perf_event_open`, `kexec_*`,
//! `*_module`, `keyctl`/`add_key`/`request_key`, `reboot`, `swapon`/`swapoff`,
//! `settimeofday`/`clock_settime`/`adjtimex`, `sethostname`, `mknod`, `open_by_handle_at`,
//! `userfaultfd`, `io_uring_*`, `fanotify_init`, `iopl`/`ioperm`, `syslog`, `acct`,
//! `quotactl`, `clone3`. `clone` is allowed only without namespace flags. Calls from another
//! architecture (x32, i386) kill the process.
//!
//! The program is a binary search over ranges of allowed numbers (~10 instructions per call)
//! rather than one comparison per system call: installing a filter makes the kernel run it for
//! every system-call number to precompute which are always allowed, and with a linear program of
//! ~1,400 instructions that alone took over a millisecond of every cold start.

/// Allowed system calls (x86_64), by group.
#[cfg(target_arch = "x86_64")]
pub const ALLOWED: &[(libc::c_long, &str)] = &[
    // process and thread lifecycle
    (libc::SYS_arch_prctl, "arch_prctl"),
    (libc::SYS_brk, "brk"),
    (libc::SYS_execve, "execve"),
    (libc::SYS_execveat, "execveat"),
    (libc::SYS_exit, "exit"),
    (libc::SYS_exit_group, "exit_group"),
    (libc::SYS_fork, "fork"),
    (libc::SYS_vfork, "vfork"),
    (libc::SYS_getpid, "getpid"),
    (libc::SYS_getppid, "getppid"),
    (libc::SYS_gettid, "gettid"),
    (libc::SYS_getpgid, "getpgid"),
    (libc::SYS_getpgrp, "getpgrp"),
    (libc::SYS_getsid, "getsid"),
    (libc::SYS_setpgid, "setpgid"),
    (libc::SYS_setsid, "setsid"),
    (libc::SYS_set_tid_address, "set_tid_address"),
    (libc::SYS_set_robust_list, "set_robust_list"),
    (libc::SYS_get_robust_list, "get_robust_list"),
    (libc::SYS_rseq, "rseq"),
    (libc::SYS_wait4, "wait4"),
    (libc::SYS_waitid, "waitid"),
    (libc::SYS_kill, "kill"),
    (libc::SYS_tgkill, "tgkill"),
    (libc::SYS_tkill, "tkill"),
    (libc::SYS_pidfd_open, "pidfd_open"),
    (libc::SYS_pidfd_send_signal, "pidfd_send_signal"),
    (libc::SYS_prctl, "prctl"),
    (libc::SYS_prlimit64, "prlimit64"),
    (libc::SYS_getrlimit, "getrlimit"),
    (libc::SYS_setrlimit, "setrlimit"),
    (libc::SYS_getrusage, "getrusage"),
    (libc::SYS_times, "times"),
    (libc::SYS_uname, "uname"),
    (libc::SYS_personality, "personality"),
    (libc::SYS_sysinfo, "sysinfo"),
    (libc::SYS_getcpu, "getcpu"),
    (libc::SYS_restart_syscall, "restart_syscall"),
    // memory
    (libc::SYS_mmap, "mmap"),
    (libc::SYS_munmap, "munmap"),
    (libc::SYS_mprotect, "mprotect"),
    (libc::SYS_mremap, "mremap"),
    (libc::SYS_madvise, "madvise"),
    (libc::SYS_mincore, "mincore"),
    (libc::SYS_msync, "msync"),
    (libc::SYS_mlock, "mlock"),
    (libc::SYS_mlock2, "mlock2"),
    (libc::SYS_munlock, "munlock"),
    (libc::SYS_mlockall, "mlockall"),
    (libc::SYS_munlockall, "munlockall"),
    (libc::SYS_membarrier, "membarrier"),
    (libc::SYS_memfd_create, "memfd_create"),
    (libc::SYS_pkey_alloc, "pkey_alloc"),
    (libc::SYS_pkey_free, "pkey_free"),
    (libc::SYS_pkey_mprotect, "pkey_mprotect"),
    (libc::SYS_remap_file_pages, "remap_file_pages"),
    // signals
    (libc::SYS_rt_sigaction, "rt_sigaction"),
    (libc::SYS_rt_sigprocmask, "rt_sigprocmask"),
    (libc::SYS_rt_sigreturn, "rt_sigreturn"),
    (libc::SYS_rt_sigpending, "rt_sigpending"),
    (libc::SYS_rt_sigsuspend, "rt_sigsuspend"),
    (libc::SYS_rt_sigtimedwait, "rt_sigtimedwait"),
    (libc::SYS_rt_sigqueueinfo, "rt_sigqueueinfo"),
    (libc::SYS_rt_tgsigqueueinfo, "rt_tgsigqueueinfo"),
    (libc::SYS_sigaltstack, "sigaltstack"),
    (libc::SYS_signalfd, "signalfd"),
    (libc::SYS_signalfd4, "signalfd4"),
    (libc::SYS_pause, "pause"),
    (libc::SYS_alarm, "alarm"),
    // time and timers
    (libc::SYS_clock_gettime, "clock_gettime"),
    (libc::SYS_clock_getres, "clock_getres"),
    (libc::SYS_clock_nanosleep, "clock_nanosleep"),
    (libc::SYS_nanosleep, "nanosleep"),
    (libc::SYS_gettimeofday, "gettimeofday"),
    (libc::SYS_time, "time"),
    (libc::SYS_getitimer, "getitimer"),
    (libc::SYS_setitimer, "setitimer"),
    (libc::SYS_timer_create, "timer_create"),
    (libc::SYS_timer_delete, "timer_delete"),
    (libc::SYS_timer_getoverrun, "timer_getoverrun"),
    (libc::SYS_timer_gettime, "timer_gettime"),
    (libc::SYS_timer_settime, "timer_settime"),
    (libc::SYS_timerfd_create, "timerfd_create"),
    (libc::SYS_timerfd_gettime, "timerfd_gettime"),
    (libc::SYS_timerfd_settime, "timerfd_settime"),
    // scheduling
    (libc::SYS_sched_yield, "sched_yield"),
    (libc::SYS_sched_getaffinity, "sched_getaffinity"),
    (libc::SYS_sched_setaffinity, "sched_setaffinity"),
    (libc::SYS_sched_getattr, "sched_getattr"),
    (libc::SYS_sched_setattr, "sched_setattr"),
    (libc::SYS_sched_getparam, "sched_getparam"),
    (libc::SYS_sched_setparam, "sched_setparam"),
    (libc::SYS_sched_getscheduler, "sched_getscheduler"),
    (libc::SYS_sched_setscheduler, "sched_setscheduler"),
    (libc::SYS_sched_get_priority_max, "sched_get_priority_max"),
    (libc::SYS_sched_get_priority_min, "sched_get_priority_min"),
    (libc::SYS_sched_rr_get_interval, "sched_rr_get_interval"),
    (libc::SYS_getpriority, "getpriority"),
    (libc::SYS_setpriority, "setpriority"),
    (libc::SYS_ioprio_get, "ioprio_get"),
    (libc::SYS_ioprio_set, "ioprio_set"),
    // futexes
    (libc::SYS_futex, "futex"),
    (libc::SYS_futex_waitv, "futex_waitv"),
    (libc::SYS_get_thread_area, "get_thread_area"),
    (libc::SYS_set_thread_area, "set_thread_area"),
    // identity (only within what the process already has)
    (libc::SYS_getuid, "getuid"),
    (libc::SYS_geteuid, "geteuid"),
    (libc::SYS_getgid, "getgid"),
    (libc::SYS_getegid, "getegid"),
    (libc::SYS_getgroups, "getgroups"),
    (libc::SYS_getresuid, "getresuid"),
    (libc::SYS_getresgid, "getresgid"),
    (libc::SYS_setuid, "setuid"),
    (libc::SYS_setgid, "setgid"),
    (libc::SYS_setreuid, "setreuid"),
    (libc::SYS_setregid, "setregid"),
    (libc::SYS_setresuid, "setresuid"),
    (libc::SYS_setresgid, "setresgid"),
    (libc::SYS_setgroups, "setgroups"),
    (libc::SYS_setfsuid, "setfsuid"),
    (libc::SYS_setfsgid, "setfsgid"),
    (libc::SYS_capget, "capget"),
    (libc::SYS_capset, "capset"),
    // files: open, read, write
    (libc::SYS_open, "open"),
    (libc::SYS_openat, "openat"),
    (libc::SYS_openat2, "openat2"),
    (libc::SYS_creat, "creat"),
    (libc::SYS_close, "close"),
    (libc::SYS_close_range, "close_range"),
    (libc::SYS_read, "read"),
    (libc::SYS_write, "write"),
    (libc::SYS_readv, "readv"),
    (libc::SYS_writev, "writev"),
    (libc::SYS_pread64, "pread64"),
    (libc::SYS_pwrite64, "pwrite64"),
    (libc::SYS_preadv, "preadv"),
    (libc::SYS_pwritev, "pwritev"),
    (libc::SYS_preadv2, "preadv2"),
    (libc::SYS_pwritev2, "pwritev2"),
    (libc::SYS_lseek, "lseek"),
    (libc::SYS_sendfile, "sendfile"),
    (libc::SYS_splice, "splice"),
    (libc::SYS_tee, "tee"),
    (libc::SYS_vmsplice, "vmsplice"),
    (libc::SYS_copy_file_range, "copy_file_range"),
    (libc::SYS_readahead, "readahead"),
    (libc::SYS_fadvise64, "fadvise64"),
    (libc::SYS_fallocate, "fallocate"),
    (libc::SYS_ftruncate, "ftruncate"),
    (libc::SYS_truncate, "truncate"),
    (libc::SYS_fsync, "fsync"),
    (libc::SYS_fdatasync, "fdatasync"),
    (libc::SYS_sync, "sync"),
    (libc::SYS_syncfs, "syncfs"),
    (libc::SYS_sync_file_range, "sync_file_range"),
    (libc::SYS_flock, "flock"),
    (libc::SYS_fcntl, "fcntl"),
    (libc::SYS_ioctl, "ioctl"),
    (libc::SYS_dup, "dup"),
    (libc::SYS_dup2, "dup2"),
    (libc::SYS_dup3, "dup3"),
    (libc::SYS_pipe, "pipe"),
    (libc::SYS_pipe2, "pipe2"),
    // files: metadata and directories
    (libc::SYS_stat, "stat"),
    (libc::SYS_fstat, "fstat"),
    (libc::SYS_lstat, "lstat"),
    (libc::SYS_newfstatat, "newfstatat"),
    (libc::SYS_statx, "statx"),
    (libc::SYS_statfs, "statfs"),
    (libc::SYS_fstatfs, "fstatfs"),
    (libc::SYS_access, "access"),
    (libc::SYS_faccessat, "faccessat"),
    (libc::SYS_faccessat2, "faccessat2"),
    (libc::SYS_getcwd, "getcwd"),
    (libc::SYS_chdir, "chdir"),
    (libc::SYS_fchdir, "fchdir"),
    (libc::SYS_mkdir, "mkdir"),
    (libc::SYS_mkdirat, "mkdirat"),
    (libc::SYS_rmdir, "rmdir"),
    (libc::SYS_rename, "rename"),
    (libc::SYS_renameat, "renameat"),
    (libc::SYS_renameat2, "renameat2"),
    (libc::SYS_link, "link"),
    (libc::SYS_linkat, "linkat"),
    (libc::SYS_symlink, "symlink"),
    (libc::SYS_symlinkat, "symlinkat"),
    (libc::SYS_unlink, "unlink"),
    (libc::SYS_unlinkat, "unlinkat"),
    (libc::SYS_readlink, "readlink"),
    (libc::SYS_readlinkat, "readlinkat"),
    (libc::SYS_chmod, "chmod"),
    (libc::SYS_fchmod, "fchmod"),
    (libc::SYS_fchmodat, "fchmodat"),
    (libc::SYS_fchmodat2, "fchmodat2"),
    (libc::SYS_chown, "chown"),
    (libc::SYS_fchown, "fchown"),
    (libc::SYS_fchownat, "fchownat"),
    (libc::SYS_lchown, "lchown"),
    (libc::SYS_umask, "umask"),
    (libc::SYS_utime, "utime"),
    (libc::SYS_utimes, "utimes"),
    (libc::SYS_utimensat, "utimensat"),
    (libc::SYS_futimesat, "futimesat"),
    (libc::SYS_getdents, "getdents"),
    (libc::SYS_getdents64, "getdents64"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    // extended attributes
    (libc::SYS_getxattr, "getxattr"),
    (libc::SYS_lgetxattr, "lgetxattr"),
    (libc::SYS_fgetxattr, "fgetxattr"),
    (libc::SYS_setxattr, "setxattr"),
    (libc::SYS_lsetxattr, "lsetxattr"),
    (libc::SYS_fsetxattr, "fsetxattr"),
    (libc::SYS_listxattr, "listxattr"),
    (libc::SYS_llistxattr, "llistxattr"),
    (libc::SYS_flistxattr, "flistxattr"),
    (libc::SYS_removexattr, "removexattr"),
    (libc::SYS_lremovexattr, "lremovexattr"),
    (libc::SYS_fremovexattr, "fremovexattr"),
    // event notification and polling
    (libc::SYS_poll, "poll"),
    (libc::SYS_ppoll, "ppoll"),
    (libc::SYS_select, "select"),
    (libc::SYS_pselect6, "pselect6"),
    (libc::SYS_epoll_create, "epoll_create"),
    (libc::SYS_epoll_create1, "epoll_create1"),
    (libc::SYS_epoll_ctl, "epoll_ctl"),
    (libc::SYS_epoll_wait, "epoll_wait"),
    (libc::SYS_epoll_pwait, "epoll_pwait"),
    (libc::SYS_epoll_pwait2, "epoll_pwait2"),
    (libc::SYS_eventfd, "eventfd"),
    (libc::SYS_eventfd2, "eventfd2"),
    (libc::SYS_inotify_init, "inotify_init"),
    (libc::SYS_inotify_init1, "inotify_init1"),
    (libc::SYS_inotify_add_watch, "inotify_add_watch"),
    (libc::SYS_inotify_rm_watch, "inotify_rm_watch"),
    // asynchronous I/O (libaio; not io_uring)
    (libc::SYS_io_setup, "io_setup"),
    (libc::SYS_io_destroy, "io_destroy"),
    (libc::SYS_io_submit, "io_submit"),
    (libc::SYS_io_cancel, "io_cancel"),
    (libc::SYS_io_getevents, "io_getevents"),
    // sockets (the network is the host's or the environment's own)
    (libc::SYS_socket, "socket"),
    (libc::SYS_socketpair, "socketpair"),
    (libc::SYS_bind, "bind"),
    (libc::SYS_listen, "listen"),
    (libc::SYS_accept, "accept"),
    (libc::SYS_accept4, "accept4"),
    (libc::SYS_connect, "connect"),
    (libc::SYS_getsockname, "getsockname"),
    (libc::SYS_getpeername, "getpeername"),
    (libc::SYS_getsockopt, "getsockopt"),
    (libc::SYS_setsockopt, "setsockopt"),
    (libc::SYS_shutdown, "shutdown"),
    (libc::SYS_sendto, "sendto"),
    (libc::SYS_recvfrom, "recvfrom"),
    (libc::SYS_sendmsg, "sendmsg"),
    (libc::SYS_recvmsg, "recvmsg"),
    (libc::SYS_sendmmsg, "sendmmsg"),
    (libc::SYS_recvmmsg, "recvmmsg"),
    // System V and POSIX IPC (inside the environment's own IPC namespace)
    (libc::SYS_shmget, "shmget"),
    (libc::SYS_shmat, "shmat"),
    (libc::SYS_shmdt, "shmdt"),
    (libc::SYS_shmctl, "shmctl"),
    (libc::SYS_semget, "semget"),
    (libc::SYS_semop, "semop"),
    (libc::SYS_semtimedop, "semtimedop"),
    (libc::SYS_semctl, "semctl"),
    (libc::SYS_msgget, "msgget"),
    (libc::SYS_msgsnd, "msgsnd"),
    (libc::SYS_msgrcv, "msgrcv"),
    (libc::SYS_msgctl, "msgctl"),
    (libc::SYS_mq_open, "mq_open"),
    (libc::SYS_mq_unlink, "mq_unlink"),
    (libc::SYS_mq_timedsend, "mq_timedsend"),
    (libc::SYS_mq_timedreceive, "mq_timedreceive"),
    (libc::SYS_mq_notify, "mq_notify"),
    (libc::SYS_mq_getsetattr, "mq_getsetattr"),
    // randomness
    (libc::SYS_getrandom, "getrandom"),
    // self-sandboxing a function may add on top of ours
    (libc::SYS_seccomp, "seccomp"),
    (libc::SYS_landlock_create_ruleset, "landlock_create_ruleset"),
    (libc::SYS_landlock_add_rule, "landlock_add_rule"),
    (libc::SYS_landlock_restrict_self, "landlock_restrict_self"),
];

/// Namespace flags `clone` may not carry: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET, NEWTIME.
const CLONE_NS_FLAGS: u32 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x80;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JGT_K: u16 = 0x25;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp policy for this architecture ({0})")]
    UnsupportedArch(&'static str),
    #[error("the seccomp program is too large to encode ({0} instructions)")]
    TooLarge(usize),
}

/// A jump target while the program is being laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Next,
    Allow,
    Deny,
    At(usize),
}

#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, k, jt: Target::Next, jf: Target::Next }
}

fn jump(code: u16, k: u32, jt: Target, jf: Target) -> Insn {
    Insn { code, k, jt, jf }
}

/// Merges sorted numbers into inclusive ranges.
fn ranges(mut nrs: Vec<u32>) -> Vec<(u32, u32)> {
    nrs.sort_unstable();
    nrs.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for n in nrs {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// Emits a binary search over `rs` (the accumulator holds the system-call number).
fn search(rs: &[(u32, u32)], prog: &mut Vec<Insn>) {
    match rs {
        [] => prog.push(stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32)),
        [(lo, hi)] => {
            prog.push(jump(BPF_JGE_K, *lo, Target::Next, Target::Deny));
            prog.push(jump(BPF_JGT_K, *hi, Target::Deny, Target::Allow));
        }
        _ => {
            let mid = rs.len() / 2;
            let at = prog.len();
            prog.push(jump(BPF_JGE_K, rs[mid].0, Target::Next, Target::Next)); // patched below
            search(&rs[..mid], prog);
            let right = prog.len();
            search(&rs[mid..], prog);
            prog[at].jt = Target::At(right);
        }
    }
}

/// Builds the filter from the allowlist and the `clone` rule.
fn build(allowed: &[libc::c_long], clone_nr: u32) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, 4), // seccomp_data.arch
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, Target::Next, Target::At(usize::MAX)),
        stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
        jump(BPF_JGE_K, X32_SYSCALL_BIT, Target::At(usize::MAX), Target::Next),
    ];
    // clone: allowed unless a namespace flag is set in its first argument (low 32 bits).
    let clone_at = prog.len();
    prog.push(jump(BPF_JEQ_K, clone_nr, Target::Next, Target::Next)); // jf patched below
    prog.push(stmt(BPF_LD_W_ABS, 16)); // seccomp_data.args[0], low word
    prog.push(jump(BPF_JSET_K, CLONE_NS_FLAGS, Target::Deny, Target::Allow));
    let after_clone = prog.len();
    prog[clone_at].jf = Target::At(after_clone);
    let nrs: Vec<u32> = allowed.iter().map(|n| *n as u32).filter(|n| *n != clone_nr).collect();
    search(&ranges(nrs), &mut prog);
    let allow = prog.len();
    prog.push(stmt(BPF_RET_K, RET_ALLOW));
    let deny = prog.len();
    prog.push(stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32));
    let kill = prog.len();
    prog.push(stmt(BPF_RET_K, RET_KILL_PROCESS));
    // Resolve targets into relative offsets (classic BPF jumps forward only, by at most 255).
    let resolve = |from: usize, t: Target| -> Result<u8, SeccompError> {
        let to = match t {
            Target::Next => from + 1,
            Target::Allow => allow,
            Target::Deny => deny,
            Target::At(usize::MAX) => kill,
            Target::At(i) => i,
        };
        u8::try_from(to - from - 1).map_err(|_| SeccompError::TooLarge(prog.len()))
    };
    prog.iter()
        .enumerate()
        .map(|(i, ins)| {
            let is_jump = ins.code & 0x07 == 0x05;
            let (jt, jf) = if is_jump { (resolve(i, ins.jt)?, resolve(i, ins.jf)?) } else { (0, 0) };
            Ok(libc::sock_filter { code: ins.code, jt, jf, k: ins.k })
        })
        .collect()
}

/// Compiles the environment filter for this machine.
pub fn compile() -> Result<Vec<libc::sock_filter>, SeccompError> {
    #[cfg(target_arch = "x86_64")]
    {
        let nrs: Vec<libc::c_long> = ALLOWED.iter().map(|(n, _)| *n).collect();
        build(&nrs, libc::SYS_clone as u32)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on (arch, nr, arg0) like the kernel would.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let mut pc = 0;
        let mut acc = 0u32;
        loop {
            let i = prog[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        0 => nr,
                        4 => arch,
                        16 => arg0,
                        _ => panic!("unexpected load"),
                    };
                    pc += 1;
                }
                BPF_RET_K => return i.k,
                code => {
                    let taken = match code {
                        BPF_JEQ_K => acc == i.k,
                        BPF_JGE_K => acc >= i.k,
                        BPF_JGT_K => acc > i.k,
                        BPF_JSET_K => acc & i.k != 0,
                        _ => panic!("unexpected instruction {code:#x}"),
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                }
            }
        }
    }

    const DENY: u32 = RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn allows_exactly_the_list() {
        let prog = compile().unwrap();
        assert!(prog.len() < 200, "{} instructions", prog.len());
        let allowed: std::collections::HashSet<u32> = ALLOWED.iter().map(|(n, _)| *n as u32).collect();
        for nr in 0..500u32 {
            let got = run(&prog, AUDIT_ARCH_X86_64, nr, 0);
            let expected = if allowed.contains(&nr) || nr == libc::SYS_clone as u32 { RET_ALLOW } else { DENY };
            assert_eq!(got, expected, "syscall {nr}");
        }
    }

    #[test]
    fn denies_what_functions_never_need() {
        let prog = compile().unwrap();
        for nr in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_ptrace,
            libc::SYS_bpf,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_keyctl,
            libc::SYS_clone3,
            libc::SYS_open_by_handle_at,
            libc::SYS_perf_event_open,
            libc::SYS_process_vm_readv,
        ] {
            assert_eq!(run(&prog, AUDIT_ARCH_X86_64, nr as u32, 0), DENY, "syscall {nr}");
        }
    }

    #[test]
    fn clone_without_namespaces_only_and_foreign_arches_die() {
        let prog = compile().unwrap();
        let clone = libc::SYS_clone as u32;
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, clone, 0x3d0f00), RET_ALLOW, "a thread");
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, clone, 0x1000_0000 | 0x11), DENY, "CLONE_NEWUSER");
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, clone, 0x2000_0000), DENY, "CLONE_NEWPID");
        assert_eq!(run(&prog, 0x4000_0003, 0, 0), RET_KILL_PROCESS, "i386");
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1, 0), RET_KILL_PROCESS, "x32");
    }
}
