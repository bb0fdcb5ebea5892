//! The first process of an isolated environment (PID 1 of its PID namespace).
//!
//! It starts the runtime, forwards termination signals to it, reaps every orphan (as an init
//! must), and exits when the runtime does, after writing how it ended to fd 3 (the status pipe
//! to the server). When it exits, the kernel kills everything left in the namespace, so a
//! process a function detached into the background cannot outlive its environment.
//!
//! The `stratus` binary runs this when started as `stratus-init PROGRAM ARGS…` (see
//! [`is_init`]); the server starts it by descriptor, as it is not visible inside the new root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

/// The name the environment's init is started under.
pub const INIT_ARGV0: &str = "stratus-init";

/// True when this process was started as an environment's init.
pub fn is_init() -> bool {
    std::env::args_os().next().is_some_and(|a| a.as_bytes() == INIT_ARGV0.as_bytes())
}

const STATUS_FD: i32 = 3;
/// The read end of the server's lifeline pipe: it reaches end-of-file when the server dies.
/// (A parent-death signal cannot do this job: an init ignores signals it has no handler for.)
const LIFELINE_FD: i32 = 4;

fn report(line: &str) {
    // SAFETY: write(2) on our own status descriptor with a valid buffer.
    unsafe {
        libc::write(STATUS_FD, line.as_ptr() as *const libc::c_void, line.len());
    }
}

/// Runs the init; never returns.
pub fn main() -> ! {
    let args: Vec<CString> = std::env::args_os().skip(1).filter_map(|a| CString::new(a.as_bytes()).ok()).collect();
    if args.is_empty() {
        report("execfail 22\n");
        std::process::exit(127);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: signal-mask and process calls of a single-threaded process; the child branch only
    // makes async-signal-safe calls before exec.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let signals = libc::signalfd(-1, &all, libc::SFD_CLOEXEC);
        // The runtime must not inherit the status pipe or the lifeline.
        libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(LIFELINE_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        let child = libc::fork();
        if child < 0 {
            report(&format!("execfail {}\n", *libc::__errno_location()));
            std::process::exit(127);
        }
        if child == 0 {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execv(argv[0], argv.as_ptr());
            // Exec failed: tell the server why (the pipe is still open in this process).
            let errno = *libc::__errno_location();
            let mut buf = *b"execfail    \n";
            let digits = errno.to_string();
            buf[9..9 + digits.len().min(3)].copy_from_slice(&digits.as_bytes()[..digits.len().min(3)]);
            libc::write(STATUS_FD, buf.as_ptr() as *const libc::c_void, buf.len());
            libc::_exit(127);
        }
        loop {
            let mut fds = [
                libc::pollfd { fd: signals, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: LIFELINE_FD, events: libc::POLLIN, revents: 0 },
            ];
            if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
                continue;
            }
            if fds[1].revents != 0 {
                // The server is gone: so is the environment (everything dies with this init).
                libc::_exit(0);
            }
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let n = libc::read(
                signals,
                &mut info as *mut _ as *mut libc::c_void,
                std::mem::size_of::<libc::signalfd_siginfo>(),
            );
            if n != std::mem::size_of::<libc::signalfd_siginfo>() as isize {
                continue;
            }
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == child {
                        if libc::WIFEXITED(status) {
                            report(&format!("exited {}\n", libc::WEXITSTATUS(status)));
                        } else if libc::WIFSIGNALED(status) {
                            report(&format!("signaled {}\n", libc::WTERMSIG(status)));
                        }
                        // Everything else in the namespace dies with us.
                        libc::_exit(0);
                    }
                }
            } else {
                libc::kill(child, sig);
            }
        }
    }
}

/// Parses a status line written by [`main`].
pub(crate) fn parse_status(line: &str) -> Option<crate::Exit> {
    let mut it = line.split_whitespace();
    let kind = it.next()?;
    let n: i32 = it.next()?.parse().ok()?;
    Some(match kind {
        "exited" => crate::Exit::Code(n),
        "signaled" => crate::Exit::Signal(n),
        "execfail" => crate::Exit::ExecFailed(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Exit;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status("exited 3\n"), Some(Exit::Code(3)));
        assert_eq!(parse_status("signaled 9\n"), Some(Exit::Signal(9)));
        assert_eq!(parse_status("execfail 13   \n"), Some(Exit::ExecFailed(13)));
        assert_eq!(parse_status(""), None);
    }
}
