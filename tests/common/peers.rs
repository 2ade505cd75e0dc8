//! Finding the processes and sockets the library made, from the outside: a process's direct
//! children, and which of our unix sockets a given process holds the other end of (the
//! kernel's `sock_diag`, as `ss -x` asks it).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The direct children of `pid`, from `/proc/*/stat`.
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

/// The parent of `pid`, if it still exists.
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The inodes of the sockets `pid` holds (`"self"` for this process), with their descriptors.
fn sockets_of(pid: &str) -> Vec<(RawFd, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse::<RawFd>().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let ino = link
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, ino))
        })
        .collect()
}

/// The inode of the peer of the unix socket whose inode is `ino`.
pub(crate) fn unix_peer(ino: u64) -> std::io::Result<u64> {
    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UNIX_DIAG_PEER: u16 = 2;
    // SAFETY: a plain socket(2) call; the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let ino32 = u32::try_from(ino).map_err(std::io::Error::other)?;
    // nlmsghdr, then unix_diag_req: family, protocol, pad, states, inode, show, cookie.
    let mut request = Vec::with_capacity(40);
    request.extend_from_slice(&40u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    request.extend_from_slice(&ino32.to_ne_bytes());
    request.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: sends a local buffer on our own socket.
    let sent = unsafe { libc::send(sock.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut reply = [0u8; 8192];
    // SAFETY: receives into a local buffer of the given length.
    let got = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let reply = &reply[..got as usize];
    let u16_at = |i: usize| {
        reply
            .get(i..i + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        reply
            .get(i..i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u16_at(4) != Some(SOCK_DIAG_BY_FAMILY) {
        return Err(std::io::Error::other(format!(
            "no diagnosis for socket {ino}"
        )));
    }
    let len = u32_at(0).unwrap_or(0) as usize;
    // Attributes follow the 16-byte header and the 16-byte unix_diag_msg.
    let mut at = 32;
    while at + 4 <= len.min(reply.len()) {
        let (Some(attr_len), Some(kind)) = (u16_at(at), u16_at(at + 2)) else {
            break;
        };
        if kind == UNIX_DIAG_PEER {
            return u32_at(at + 4)
                .map(u64::from)
                .ok_or_else(|| std::io::Error::other("short peer attribute"));
        }
        if attr_len < 4 {
            break;
        }
        at += (usize::from(attr_len) + 3) & !3;
    }
    Err(std::io::Error::other(format!("socket {ino} has no peer")))
}

/// This process's descriptors whose unix-socket peer `pid` holds.
pub(crate) fn sockets_to(pid: i32) -> Vec<RawFd> {
    let theirs: Vec<u64> = sockets_of(&pid.to_string())
        .into_iter()
        .map(|(_, ino)| ino)
        .collect();
    sockets_of("self")
        .into_iter()
        .filter(|&(_, ino)| unix_peer(ino).is_ok_and(|peer| theirs.contains(&peer)))
        .map(|(fd, _)| fd)
        .collect()
}

/// Writes one stray byte on this process's socket to `pid` (the fork server, or a pool's
/// zygote): what any corruption of the stream between them looks like. Fails unless exactly one
/// socket leads there.
pub(crate) fn write_stray_byte(pid: i32) -> Result<(), String> {
    let fds = sockets_to(pid);
    let [fd] = fds[..] else {
        return Err(format!("expected one socket to pid {pid}, found {fds:?}"));
    };
    // SAFETY: one byte from a local buffer on a socket of ours; no SIGPIPE.
    let n = unsafe { libc::send(fd, b"!".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    if n != 1 {
        return Err(format!(
            "cannot write on the socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
