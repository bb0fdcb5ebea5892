//! Isolated networking: a network namespace of its own for an environment, holding only a
//! loopback interface and, on it, the environment's Runtime API listener. The listener is
//! created here, inside the namespace, and served by the platform from outside: the function
//! can reach its Runtime API at `127.0.0.1:9001` and nothing else.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};

/// A network namespace and the Runtime API listener inside it.
pub struct IsolatedNet {
    /// The namespace, entered by the environment's first process.
    pub netns: OwnedFd,
    /// Listening on `127.0.0.1:<port>` inside the namespace.
    pub listener: TcpListener,
}

/// Creates the namespace on a short-lived thread (namespaces are per thread, and the server's
/// own threads must stay in the host's).
pub fn create(port: u16) -> io::Result<IsolatedNet> {
    std::thread::Builder::new()
        .name("stratus-netns".into())
        .spawn(move || -> io::Result<IsolatedNet> {
            // SAFETY: unshare affects only this thread, which exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            loopback_up()?;
            let netns: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
            listener.set_nonblocking(true)?;
            Ok(IsolatedNet { netns, listener })
        })?
        .join()
        .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

/// Brings `lo` up in the current thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a socket used only for the interface ioctls below, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; the name is NUL-terminated within IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which outlives the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
