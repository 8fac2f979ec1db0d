//! Decoding ring buffer records into events. The one place that reads the
//! kernel's bytes.

use std::{
    ffi::OsStr,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
};

use guard_common::{
    ConnectEvent, EventHeader, EventKind, ExecEvent, FileEvent,
    event::{path_flags, verdict},
};
use serde::Serialize;

use crate::action::{Action, Endpoint};

/// What the kernel did with the action it reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelVerdict {
    /// Reported only; the action went ahead.
    Observed,
    /// Refused in the kernel by a rule.
    Denied,
    /// The task is stopped and waits for userspace.
    Stopped,
}

/// A decoded kernel event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelEvent {
    Exec {
        pid: u32,
        tid: u32,
        cgroup_id: u64,
        /// The program's path as execve(2) was given it; lossy only for display.
        filename: String,
        /// The path did not fit in the kernel buffer: never treat it as allowed.
        truncated: bool,
        verdict: KernelVerdict,
    },
    /// unlink, rmdir, rename, truncate or a writable open that needs a
    /// decision (or was refused in the kernel).
    File {
        op: FileOp,
        pid: u32,
        tid: u32,
        cgroup_id: u64,
        verdict: KernelVerdict,
        /// What a grant for this action is keyed by.
        object_id: u64,
        path: PathBuf,
        /// The new name of a rename.
        target: Option<PathBuf>,
        /// A path did not resolve in full: never treat it as allowed.
        truncated: bool,
        /// The kernel charged this op to the session's rate budget:
        /// `Some(true)` if it spent it. `None`: not counted in the kernel.
        rate: Option<bool>,
    },
    Connect {
        pid: u32,
        tid: u32,
        cgroup_id: u64,
        verdict: KernelVerdict,
        object_id: u64,
        endpoint: Endpoint,
        /// A unix socket path that is relative to the task's cwd.
        relative: bool,
    },
}

/// The file operation of a [`KernelEvent::File`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Unlink,
    Rmdir,
    Rename,
    Truncate,
    OpenWrite,
}

impl FileOp {
    pub fn kind(self) -> EventKind {
        match self {
            FileOp::Unlink => EventKind::Unlink,
            FileOp::Rmdir => EventKind::Rmdir,
            FileOp::Rename => EventKind::Rename,
            FileOp::Truncate => EventKind::Truncate,
            FileOp::OpenWrite => EventKind::OpenWrite,
        }
    }
}

impl KernelEvent {
    pub fn pid(&self) -> u32 {
        match self {
            KernelEvent::Exec { pid, .. }
            | KernelEvent::File { pid, .. }
            | KernelEvent::Connect { pid, .. } => *pid,
        }
    }

    pub fn tid(&self) -> u32 {
        match self {
            KernelEvent::Exec { tid, .. }
            | KernelEvent::File { tid, .. }
            | KernelEvent::Connect { tid, .. } => *tid,
        }
    }

    pub fn cgroup_id(&self) -> u64 {
        match self {
            KernelEvent::Exec { cgroup_id, .. }
            | KernelEvent::File { cgroup_id, .. }
            | KernelEvent::Connect { cgroup_id, .. } => *cgroup_id,
        }
    }

    pub fn verdict(&self) -> KernelVerdict {
        match self {
            KernelEvent::Exec { verdict, .. }
            | KernelEvent::File { verdict, .. }
            | KernelEvent::Connect { verdict, .. } => *verdict,
        }
    }

    /// The op code grants for this event use.
    pub fn kind(&self) -> EventKind {
        match self {
            KernelEvent::Exec { .. } => EventKind::Exec,
            KernelEvent::File { op, .. } => op.kind(),
            KernelEvent::Connect { .. } => EventKind::Connect,
        }
    }

    /// The action for policy, for file and connect events (exec events need
    /// argv and cwd from /proc: see `exec_stop`).
    pub fn action(&self) -> Option<Action> {
        match self {
            KernelEvent::Exec { .. } => None,
            KernelEvent::File {
                op, path, target, ..
            } => {
                let path = path.clone();
                Some(match op {
                    FileOp::Unlink => Action::Unlink { path },
                    FileOp::Rmdir => Action::Rmdir { path },
                    FileOp::Truncate => Action::Truncate { path },
                    FileOp::OpenWrite => Action::OpenWrite { path },
                    FileOp::Rename => Action::Rename {
                        from: path,
                        to: target.clone().unwrap_or_default(),
                    },
                })
            }
            KernelEvent::Connect { endpoint, .. } => Some(Action::Connect {
                endpoint: endpoint.clone(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

fn kernel_verdict(v: u32) -> KernelVerdict {
    match v {
        verdict::DENIED => KernelVerdict::Denied,
        verdict::STOPPED => KernelVerdict::Stopped,
        _ => KernelVerdict::Observed,
    }
}

fn path_of(buf: &[u8], len: u32) -> PathBuf {
    let len = (len as usize).min(buf.len());
    PathBuf::from(OsStr::from_bytes(&buf[..len]))
}

/// Decodes one ring buffer record.
pub fn decode(record: &[u8]) -> Result<KernelEvent, DecodeError> {
    let header: EventHeader = read(record)?;
    let verdict = kernel_verdict(header.verdict);
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let op = match kind {
        EventKind::Exec => {
            let event: ExecEvent = read(record)?;
            let len = (event.filename_len as usize).min(event.filename.len());
            return Ok(KernelEvent::Exec {
                pid: header.pid,
                tid: header.tid,
                cgroup_id: header.cgroup_id,
                filename: String::from_utf8_lossy(&event.filename[..len]).into_owned(),
                truncated: event.truncated != 0,
                verdict,
            });
        }
        EventKind::Connect => {
            let event: ConnectEvent = read(record)?;
            let endpoint = if event.family == 1 {
                Endpoint::Unix {
                    path: path_of(&event.unix_path, event.unix_path_len),
                }
            } else {
                let v6 = Ipv6Addr::from(event.addr);
                let ip = match v6.to_ipv4_mapped() {
                    Some(v4) if event.family == 2 => IpAddr::V4(v4),
                    _ => IpAddr::V6(v6),
                };
                Endpoint::Inet {
                    addr: SocketAddr::new(ip, event.port),
                }
            };
            return Ok(KernelEvent::Connect {
                pid: header.pid,
                tid: header.tid,
                cgroup_id: header.cgroup_id,
                verdict,
                object_id: event.object_id,
                endpoint,
                relative: event.flags & path_flags::RELATIVE != 0,
            });
        }
        EventKind::Unlink => FileOp::Unlink,
        EventKind::Rmdir => FileOp::Rmdir,
        EventKind::Rename => FileOp::Rename,
        EventKind::Truncate => FileOp::Truncate,
        EventKind::OpenWrite => FileOp::OpenWrite,
    };
    let event: FileEvent = read(record)?;
    Ok(KernelEvent::File {
        op,
        pid: header.pid,
        tid: header.tid,
        cgroup_id: header.cgroup_id,
        verdict,
        object_id: event.object_id,
        path: path_of(&event.path, event.path_len),
        target: (op == FileOp::Rename).then(|| path_of(&event.target, event.target_len)),
        truncated: event.flags & (path_flags::PATH_TRUNCATED | path_flags::TARGET_TRUNCATED) != 0,
        rate: (event.flags & path_flags::RATE_CHARGED != 0)
            .then_some(event.flags & path_flags::RATE_EXCEEDED != 0),
    })
}

/// Copies a `#[repr(C)]` plain-data struct out of a record, checking its length.
fn read<T: Copy>(record: &[u8]) -> Result<T, DecodeError> {
    if record.len() < size_of::<T>() {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: length checked above; T is a repr(C) plain-data type from
    // guard-common for which every bit pattern is valid.
    Ok(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain-data struct's bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            pid: 42,
            tid: 42,
            verdict: 0,
            cgroup_id: 7,
            ktime_ns: 1,
        }
    }

    #[test]
    fn decodes_exec_with_non_utf8_path() {
        let mut event = ExecEvent {
            header: header(EventKind::Exec),
            filename_len: 6,
            truncated: 0,
            filename: [0; guard_common::PATH_MAX],
        };
        event.filename[..6].copy_from_slice(b"/a\xffb c");
        let decoded = decode(&bytes_of(&event)).unwrap();
        assert_eq!(
            decoded,
            KernelEvent::Exec {
                pid: 42,
                tid: 42,
                cgroup_id: 7,
                filename: "/a\u{fffd}b c".into(),
                truncated: false,
                verdict: KernelVerdict::Observed,
            }
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0; 4]), Err(DecodeError::Short(4)));
        let mut h = header(EventKind::Exec);
        h.kind = 99;
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        // A header that claims exec but is cut short.
        assert_eq!(
            decode(&bytes_of(&header(EventKind::Exec))),
            Err(DecodeError::Short(size_of::<EventHeader>()))
        );
    }

    #[test]
    fn decodes_held_rename_with_non_utf8_target() {
        let mut event = FileEvent {
            header: header(EventKind::Rename),
            object_id: 99,
            flags: guard_common::event::path_flags::TARGET_TRUNCATED,
            path_len: 4,
            target_len: 3,
            _pad: 0,
            path: [0; guard_common::PATH_MAX],
            target: [0; guard_common::PATH_MAX],
        };
        event.header.verdict = verdict::STOPPED;
        event.path[..4].copy_from_slice(b"/a b");
        event.target[..3].copy_from_slice(b"/\xffc");
        let decoded = decode(&bytes_of(&event)).unwrap();
        assert_eq!(decoded.verdict(), KernelVerdict::Stopped);
        assert_eq!(decoded.kind(), EventKind::Rename);
        assert_eq!(
            decoded.action(),
            Some(Action::Rename {
                from: PathBuf::from("/a b"),
                to: PathBuf::from(OsStr::from_bytes(b"/\xffc")),
            })
        );
        let KernelEvent::File {
            truncated,
            object_id,
            ..
        } = decoded
        else {
            panic!("not a file event: {decoded:?}")
        };
        assert!(truncated, "a cut target must be flagged");
        assert_eq!(object_id, 99);
    }

    #[test]
    fn decodes_ipv4_connect_from_mapped_address() {
        let mut event = ConnectEvent {
            header: header(EventKind::Connect),
            object_id: 5,
            family: 2,
            port: 5432,
            flags: 0,
            addr: [0; 16],
            unix_path_len: 0,
            unix_path: [0; guard_common::event::UNIX_PATH_MAX],
        };
        event.addr[10] = 0xff;
        event.addr[11] = 0xff;
        event.addr[12..].copy_from_slice(&[127, 0, 0, 2]);
        assert_eq!(
            decode(&bytes_of(&event)).unwrap().action(),
            Some(Action::Connect {
                endpoint: Endpoint::Inet {
                    addr: "127.0.0.2:5432".parse().unwrap()
                }
            })
        );
        event.family = 1;
        event.unix_path[..20].copy_from_slice(b"/var/run/docker.sock");
        event.unix_path_len = 20;
        assert_eq!(
            decode(&bytes_of(&event)).unwrap().action(),
            Some(Action::Connect {
                endpoint: Endpoint::Unix {
                    path: PathBuf::from("/var/run/docker.sock")
                }
            })
        );
    }

    #[test]
    fn length_beyond_buffer_is_clamped() {
        let event = ExecEvent {
            header: header(EventKind::Exec),
            filename_len: u32::MAX,
            truncated: 1,
            filename: [b'a'; guard_common::PATH_MAX],
        };
        match decode(&bytes_of(&event)).unwrap() {
            KernelEvent::Exec {
                filename,
                truncated,
                ..
            } => {
                assert_eq!(filename.len(), guard_common::PATH_MAX);
                assert!(truncated);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
