//! Who is on the other end of a socket: SO_PEERCRED, checked against session
//! cgroups. Nothing the client says about itself is trusted.

use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};

use crate::{ancestry, cgroup::SLICE};

/// Kernel-reported credentials of a connected peer.
#[derive(Debug)]
pub struct Peer {
    /// 0 when the peer is in a pid namespace we cannot see into.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// A pidfd of the peer (SO_PEERPIDFD, Linux 6.5+): proves that the
    /// /proc/PID we read still belongs to the peer, not to a reused pid.
    pidfd: Option<OwnedFd>,
}

/// SO_PEERPIDFD from the kernel uapi (not in every libc target's constants).
const SO_PEERPIDFD: libc::c_int = 77;

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
        let mut pidfd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: pidfd and len are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERPIDFD,
                (&mut pidfd as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        // SAFETY: on success the kernel gave us a new pidfd we now own.
        let pidfd = (rc == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        Ok(Self {
            pid: cred.pid as u32,
            uid: cred.uid,
            gid: cred.gid,
            pidfd,
        })
    }

    /// Whether the peer process has exited (its pid may since name another).
    fn exited(&self) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a pidfd polls readable once the process exits.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
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
        let cgroup = ancestry::cgroup_of(self.pid);
        if self.exited() {
            return Some(
                "refused: the peer exited, so where it ran cannot be checked; run the command \
                 again"
                    .into(),
            );
        }
        match cgroup {
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
        assert!(!peer.exited());
    }

    #[test]
    fn an_exited_peer_is_refused() {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = std::env::temp_dir().join(format!("guard-peer-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        // A short-lived process connects and exits; its connection lives on in us.
        // SAFETY: the child only connects (one socket syscall pair) and _exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ok = UnixStream::connect(&path).is_ok();
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(status, 0, "the child could not connect");
        let (stream, _) = listener.accept().unwrap();
        let peer = Peer::of(&stream).unwrap();
        if peer.pidfd.is_none() {
            eprintln!("SKIPPED an_exited_peer_is_refused: no SO_PEERPIDFD (Linux < 6.5)");
            return;
        }
        let why = peer
            .session_refusal()
            .expect("an exited peer must be refused");
        assert!(why.contains("exited"), "{why}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
