//! Where controllers listen, and how the CLI finds them.
//!
//! - The daemon: `GUARD_SOCKET`, else /run/guard/guard.sock.
//! - A session with no daemon embeds a controller on
//!   `<dir of the daemon socket>/sessions/<name>.sock`
//!   (/run/guard/sessions/NAME.sock by default).
//!
//! The CLI talks to the daemon when it answers; otherwise to every session
//! socket that answers.

use std::{
    io,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use anyhow::bail;

pub const DEFAULT_SOCKET: &str = "/run/guard/guard.sock";

/// The daemon's socket: the flag, else GUARD_SOCKET, else the default.
pub fn daemon_socket(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("GUARD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Directory of embedded controllers' sockets, next to the daemon socket.
pub fn sessions_dir(daemon_socket: &Path) -> PathBuf {
    daemon_socket
        .parent()
        .unwrap_or(Path::new("/"))
        .join("sessions")
}

pub fn session_socket(daemon_socket: &Path, session: &str) -> PathBuf {
    sessions_dir(daemon_socket).join(format!("{session}.sock"))
}

/// Who the CLI should talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Daemon(PathBuf),
    /// Embedded controllers of running sessions (no daemon).
    Sessions(Vec<PathBuf>),
}

impl Target {
    pub fn sockets(&self) -> Vec<PathBuf> {
        match self {
            Target::Daemon(p) => vec![p.clone()],
            Target::Sessions(v) => v.clone(),
        }
    }
}

/// Whether something accepts connections on `path`.
pub fn answers(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// The daemon if it answers, else every answering session socket.
pub fn discover(daemon: &Path) -> anyhow::Result<Target> {
    match UnixStream::connect(daemon) {
        Ok(_) => return Ok(Target::Daemon(daemon.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            bail!(
                "permission denied connecting to {}: run as root (or the session's user for a \
                 session socket)",
                daemon.display()
            )
        }
        Err(_) => {}
    }
    let dir = sessions_dir(daemon);
    let mut sockets: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .filter(|p| answers(p))
            .collect(),
        Err(_) => Vec::new(),
    };
    sockets.sort();
    if sockets.is_empty() {
        bail!(
            "no guard daemon answers on {} and no session socket answers in {}: start `guard \
             daemon`, or run an agent with `guard session -- CMD` (set GUARD_SOCKET if they \
             use another path)",
            daemon.display(),
            dir.display()
        );
    }
    Ok(Target::Sessions(sockets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_sockets_sit_next_to_the_daemon_socket() {
        let d = Path::new("/tmp/x/guard.sock");
        assert_eq!(
            session_socket(d, "a"),
            PathBuf::from("/tmp/x/sessions/a.sock")
        );
    }
}
