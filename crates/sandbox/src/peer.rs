//! Who is on the other end of a loopback TCP connection: the uid owning the peer socket, asked
//! of the kernel through `NETLINK_SOCK_DIAG` (the interface `ss` uses), by exact address.
//!
//! Environments sharing the host's network could otherwise connect to each other's Runtime API;
//! as each isolated environment runs as its own uid, the endpoint accepts only connections whose
//! peer socket belongs to its environment's uid.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const HEADER: usize = 16;
/// inet_diag_req_v2: family, protocol, ext, pad, states, then the 48-byte socket id.
const REQUEST: usize = 56;
/// Offset of `idiag_uid` in `inet_diag_msg`: 4 bytes, the socket id, expires/rqueue/wqueue.
const UID_OFFSET: usize = 4 + 48 + 12;

fn ipv4(ip: IpAddr) -> Option<[u8; 4]> {
    match ip {
        IpAddr::V4(v4) => Some(v4.octets()),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v| v.octets()),
    }
}

/// Builds the request for the socket whose local end is `peer` and remote end is `local`.
fn request(local: SocketAddr, peer: SocketAddr) -> Option<Vec<u8>> {
    let (l, p) = (ipv4(local.ip())?, ipv4(peer.ip())?);
    let mut msg = Vec::with_capacity(HEADER + REQUEST);
    msg.extend_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    msg.push(libc::AF_INET as u8);
    msg.push(libc::IPPROTO_TCP as u8);
    msg.push(0); // no extensions
    msg.push(0);
    msg.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    // The peer's socket: its source is the peer, its destination is us.
    msg.extend_from_slice(&peer.port().to_be_bytes());
    msg.extend_from_slice(&local.port().to_be_bytes());
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&p);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&l);
    msg.extend_from_slice(&src);
    msg.extend_from_slice(&dst);
    msg.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    msg.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    msg.extend_from_slice(&u32::MAX.to_ne_bytes());
    Some(msg)
}

/// Parses the kernel's answer: `Ok(Some(uid))`, `Ok(None)` if no such socket.
fn parse(answer: &[u8]) -> io::Result<Option<u32>> {
    if answer.len() < HEADER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink answer"));
    }
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    if kind == NLMSG_ERROR {
        let errno = answer.get(HEADER..HEADER + 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
        return if -errno == libc::ENOENT { Ok(None) } else { Err(io::Error::from_raw_os_error(-errno)) };
    }
    let at = HEADER + UID_OFFSET;
    let uid =
        answer.get(at..at + 4).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short socket record"))?;
    Ok(Some(u32::from_ne_bytes([uid[0], uid[1], uid[2], uid[3]])))
}

/// The uid owning the other end of the TCP connection `local` ↔ `peer` (IPv4, this host).
pub fn tcp_peer_uid(local: SocketAddr, peer: SocketAddr) -> io::Result<Option<u32>> {
    let Some(msg) = request(local, peer) else { return Ok(None) };
    // SAFETY: a netlink socket used for one request and closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; family set, the rest zero (the kernel).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sendto/recv on our socket with buffers that outlive the calls.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    // SAFETY: as above.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse(&buf[..n as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn finds_the_uid_of_a_loopback_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        let uid = tcp_peer_uid(server_side.local_addr().unwrap(), peer).unwrap();
        // SAFETY: getuid has no preconditions.
        assert_eq!(uid, Some(unsafe { libc::getuid() }));
        drop(client);
        let unknown = tcp_peer_uid(server_side.local_addr().unwrap(), "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(unknown, None);
    }
}
