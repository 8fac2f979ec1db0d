//! Who is on the other end of a socket: SO_PEERCRED, checked against session
//! cgroups. Nothing the client says about itself is trusted.

use std::os::fd::AsRawFd;

use crate::{ancestry, cgroup::SLICE};

/// Kernel-reported credentials of a connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// 0 when the peer is in a pid namespace we cannot see into.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Peer {
    /// Reads SO_PEERCRED of a connected Unix socket.
    pub fn of(socket: &impl AsRawFd) -> std::io::Result<Self> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            pid: cred.pid as u32,
            uid: cred.uid,
            gid: cred.gid,
        })
    }

    /// Why this peer may not change anything, if it may not: it runs inside a
    /// guarded session (or we cannot tell where it runs, which fails closed).
    pub fn session_refusal(&self) -> Option<String> {
        if self.pid == 0 {
            return Some(
                "refused: the peer's pid is not visible here (another pid namespace), so it \
                 cannot be shown to be outside every guarded session"
                    .into(),
            );
        }
        match ancestry::cgroup_of(self.pid) {
            Ok(path) if in_guard_slice(&path) => Some(format!(
                "refused: pid {} runs inside guarded session cgroup {path}; approvals, denials, \
                 kills and policy changes must come from outside every session",
                self.pid
            )),
            Ok(_) => None,
            Err(e) => Some(format!(
                "refused: cannot read the cgroup of pid {} ({e}), so it cannot be shown to be \
                 outside every guarded session",
                self.pid
            )),
        }
    }
}

/// Whether a cgroup v2 path is guard.slice or below it. Any component
/// counts: from inside a cgroup namespace a session shows as
/// `/../../guard.slice/session-x`, and a false match only refuses more.
pub fn in_guard_slice(path: &str) -> bool {
    path.split('/').any(|c| c == SLICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_membership() {
        assert!(in_guard_slice("/guard.slice/session-a"));
        assert!(in_guard_slice("/guard.slice/session-a/sub/deeper"));
        assert!(in_guard_slice("/guard.slice"));
        assert!(in_guard_slice("/../../guard.slice/session-a"));
        assert!(!in_guard_slice("/guard.slice2/x"));
        assert!(!in_guard_slice("/user.slice/session-1.scope"));
        assert!(!in_guard_slice("/"));
    }

    #[test]
    fn socketpair_reports_ourselves() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.pid, std::process::id());
        // SAFETY: getuid has no preconditions.
        assert_eq!(peer.uid, unsafe { libc::getuid() });
    }
}
