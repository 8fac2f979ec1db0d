//! One notified syscall: decoding its arguments into an [`Action`] for policy,
//! and performing it in the supervisor when allowed.
//!
//! File operations are *emulated*, not continued: the supervisor resolves the
//! path once, pins the parent directory (or the file) with an fd, shows policy
//! the canonical path of exactly that object, and then operates on the fd. The
//! kernel never re-reads the caller's memory, so a second thread rewriting the
//! path after the decision changes nothing (docs/limitations.md).

use std::{
    ffi::OsStr,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::PathBuf,
};

use crate::action::{Action, Endpoint};

use super::task::{self, Creds, Task};

/// What to do with a notification after decoding.
pub enum Call {
    /// Nothing guard decides on (e.g. connect on a netlink socket): let it run.
    Pass,
    /// Answer with this errno without asking policy (bad pointer, bad fd...),
    /// the same errno the kernel would have given.
    Fail(i32),
    /// An action for policy, and how to carry it out if allowed.
    Guarded { action: Action, op: Op },
}

/// An operation prepared against pinned objects.
pub enum Op {
    Unlink {
        dir: OwnedFd,
        name: Vec<u8>,
        flags: i32,
    },
    Rename {
        from_dir: OwnedFd,
        from: Vec<u8>,
        to_dir: OwnedFd,
        to: Vec<u8>,
        flags: u32,
    },
    /// truncate(2): `target` is an O_PATH handle on the file.
    Truncate { target: OwnedFd, len: i64 },
    /// ftruncate(2): `file` is the caller's own open file.
    FTruncate { file: OwnedFd, len: i64 },
    /// open with O_TRUNC of an existing regular file (O_PATH handle).
    Open { target: OwnedFd, flags: i32 },
    /// open with O_CREAT|O_TRUNC of a name that did not exist: created with
    /// O_EXCL, so a file that appears meanwhile is never truncated.
    Create {
        dir: OwnedFd,
        name: Vec<u8>,
        flags: i32,
        mode: u32,
    },
    /// connect(2) of an IP socket: `sock` is the caller's socket.
    ConnectInet { sock: OwnedFd, addr: SocketAddr },
    /// Unix socket paths resolve against the caller's cwd and root: let the
    /// kernel do it (residual race, docs/limitations.md).
    ConnectUnix,
}

/// The result of performing an [`Op`].
pub enum Outcome {
    Value(i64),
    Errno(i32),
    /// An fd to install in the caller as the syscall's result.
    Fd {
        fd: OwnedFd,
        cloexec: bool,
    },
    Continue,
    /// The object changed between decoding and performing (a file appeared
    /// where none was): decode again.
    Retry,
}

impl Op {
    /// Whether performing may block for long (a blocking connect).
    pub fn may_block(&self) -> bool {
        match self {
            Op::ConnectInet { sock, .. } => {
                // SAFETY: F_GETFL on a live fd.
                let fl = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) };
                fl >= 0 && fl & libc::O_NONBLOCK == 0
            }
            _ => false,
        }
    }

    /// Carries the operation out. Run as the caller ([`super::creds::AsCaller`]).
    pub fn perform(self) -> Outcome {
        // SAFETY (all arms): fds are live, names NUL-terminated by cstr().
        match self {
            Op::Unlink { dir, name, flags } => {
                let Ok(name) = cstr(&name) else {
                    return Outcome::Errno(libc::EINVAL);
                };
                result(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) } as i64)
            }
            Op::Rename {
                from_dir,
                from,
                to_dir,
                to,
                flags,
            } => {
                let (Ok(from), Ok(to)) = (cstr(&from), cstr(&to)) else {
                    return Outcome::Errno(libc::EINVAL);
                };
                result(unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        from_dir.as_raw_fd(),
                        from.as_ptr(),
                        to_dir.as_raw_fd(),
                        to.as_ptr(),
                        flags,
                    )
                })
            }
            Op::Truncate { target, len } => {
                match reopen(&target, libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOCTTY) {
                    Ok(file) => result(unsafe { libc::ftruncate(file.as_raw_fd(), len) } as i64),
                    Err(e) => Outcome::Errno(e),
                }
            }
            Op::FTruncate { file, len } => {
                result(unsafe { libc::ftruncate(file.as_raw_fd(), len) } as i64)
            }
            Op::Open { target, flags } => {
                let cloexec = flags & libc::O_CLOEXEC != 0;
                let flags =
                    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC);
                match reopen(&target, flags) {
                    Ok(fd) => Outcome::Fd { fd, cloexec },
                    Err(e) => Outcome::Errno(e),
                }
            }
            Op::Create {
                dir,
                name,
                flags,
                mode,
            } => {
                let cloexec = flags & libc::O_CLOEXEC != 0;
                match task::openat(
                    dir.as_raw_fd(),
                    &name,
                    (flags & !libc::O_CLOEXEC) | libc::O_EXCL,
                    mode,
                ) {
                    Ok(fd) => Outcome::Fd { fd, cloexec },
                    Err(libc::EEXIST) if flags & libc::O_EXCL == 0 => Outcome::Retry,
                    Err(e) => Outcome::Errno(e),
                }
            }
            Op::ConnectInet { sock, addr } => {
                let (storage, len) = sockaddr(&addr);
                result(
                    unsafe { libc::connect(sock.as_raw_fd(), (&raw const storage).cast(), len) }
                        as i64,
                )
            }
            Op::ConnectUnix => Outcome::Continue,
        }
    }
}

fn result(rc: i64) -> Outcome {
    if rc < 0 {
        Outcome::Errno(task::errno())
    } else {
        Outcome::Value(rc)
    }
}

fn cstr(bytes: &[u8]) -> Result<std::ffi::CString, i32> {
    std::ffi::CString::new(bytes).map_err(|_| libc::EINVAL)
}

/// Opens the object an O_PATH fd pins, with new flags, under the current creds.
fn reopen(target: &OwnedFd, flags: i32) -> Result<OwnedFd, i32> {
    task::open_path(&format!("/proc/self/fd/{}", target.as_raw_fd()), flags)
}

/// Decodes notification data for the syscalls in `filter::NOTIFIED` and
/// truncating opens. Runs as the caller: resolution checks its permissions.
pub fn decode(t: &Task, creds: &Creds, nr: i64, args: [u64; 6]) -> Call {
    match decode_inner(t, creds, nr, args) {
        Ok(call) => call,
        Err(errno) => Call::Fail(errno),
    }
}

fn decode_inner(t: &Task, creds: &Creds, nr: i64, a: [u64; 6]) -> Result<Call, i32> {
    let at = |i: usize| a[i] as i32;
    #[cfg(target_arch = "x86_64")]
    match nr {
        libc::SYS_unlink => return unlink(t, libc::AT_FDCWD, a[0], 0),
        libc::SYS_rmdir => return unlink(t, libc::AT_FDCWD, a[0], libc::AT_REMOVEDIR),
        libc::SYS_rename => return rename(t, libc::AT_FDCWD, a[0], libc::AT_FDCWD, a[1], 0),
        libc::SYS_truncate => return truncate(t, libc::AT_FDCWD, a[0], a[1] as i64),
        libc::SYS_open => return open(t, libc::AT_FDCWD, a[0], at(1), a[2] as u32),
        libc::SYS_creat => {
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
            return open(t, libc::AT_FDCWD, a[0], flags, a[1] as u32);
        }
        _ => {}
    }
    match nr {
        libc::SYS_unlinkat => {
            let flags = at(2);
            if flags & !libc::AT_REMOVEDIR != 0 {
                return Err(libc::EINVAL);
            }
            unlink(t, at(0), a[1], flags)
        }
        libc::SYS_renameat => rename(t, at(0), a[1], at(2), a[3], 0),
        libc::SYS_renameat2 => rename(t, at(0), a[1], at(2), a[3], a[4] as u32),
        libc::SYS_ftruncate => {
            let path = task::task_fd_path(t.tid, at(0))?;
            let file = t.dup_fd(creds.tgid, at(0))?;
            Ok(Call::Guarded {
                action: Action::Truncate { path },
                op: Op::FTruncate {
                    file,
                    len: a[1] as i64,
                },
            })
        }
        libc::SYS_openat => open(t, at(0), a[1], at(2), a[3] as u32),
        libc::SYS_connect => connect(t, creds, at(0), a[1], a[2]),
        // Not a syscall this filter notifies: let it run rather than guess.
        _ => Ok(Call::Pass),
    }
}

/// A path split into a pinned parent directory and its last component.
struct Resolved {
    dir: OwnedFd,
    /// The last component as given (trailing slashes kept, the kernel checks them).
    name: Vec<u8>,
    /// Canonical path of the object, for policy.
    path: PathBuf,
}

fn resolve(t: &Task, dirfd: i32, addr: u64) -> Result<Resolved, i32> {
    let raw = t.read_cstr(addr)?;
    if raw.is_empty() {
        return Err(libc::ENOENT);
    }
    let trimmed_len = raw.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    if trimmed_len == 0 {
        // "/" (or "///"): the root is never removed or renamed.
        return Err(libc::EBUSY);
    }
    let trimmed = &raw[..trimmed_len];
    let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (Some(&b"/"[..]), &raw[1..]),
        Some(i) => (Some(&raw[..i]), &raw[i + 1..]),
        None => (None, &raw[..]),
    };
    let dir = if raw[0] == b'/' {
        // Same root and mount namespace as guard: the filter refuses chroot,
        // pivot_root, mount and new mount namespaces.
        task::openat(
            libc::AT_FDCWD,
            parent.unwrap_or(b"/"),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?
    } else {
        let base = t.open_dir(dirfd)?;
        match parent {
            Some(p) => task::openat(base.as_raw_fd(), p, libc::O_PATH | libc::O_DIRECTORY, 0)?,
            None => base,
        }
    };
    let name_only = &name[..name.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1)];
    let path = task::fd_path(dir.as_raw_fd())?.join(OsStr::from_bytes(name_only));
    Ok(Resolved {
        dir,
        name: name.to_vec(),
        path,
    })
}

fn unlink(t: &Task, dirfd: i32, addr: u64, flags: i32) -> Result<Call, i32> {
    let r = resolve(t, dirfd, addr)?;
    let action = if flags & libc::AT_REMOVEDIR != 0 {
        Action::Rmdir { path: r.path }
    } else {
        Action::Unlink { path: r.path }
    };
    Ok(Call::Guarded {
        action,
        op: Op::Unlink {
            dir: r.dir,
            name: r.name,
            flags,
        },
    })
}

fn rename(t: &Task, from_fd: i32, from: u64, to_fd: i32, to: u64, flags: u32) -> Result<Call, i32> {
    let from = resolve(t, from_fd, from)?;
    let to = resolve(t, to_fd, to)?;
    Ok(Call::Guarded {
        action: Action::Rename {
            from: from.path,
            to: to.path,
        },
        op: Op::Rename {
            from_dir: from.dir,
            from: from.name,
            to_dir: to.dir,
            to: to.name,
            flags,
        },
    })
}

fn truncate(t: &Task, dirfd: i32, addr: u64, len: i64) -> Result<Call, i32> {
    let r = resolve(t, dirfd, addr)?;
    // truncate follows a final symlink: pin and name what it points at.
    let target = task::openat(r.dir.as_raw_fd(), &r.name, libc::O_PATH, 0)?;
    let path = task::fd_path(target.as_raw_fd())?;
    Ok(Call::Guarded {
        action: Action::Truncate { path },
        op: Op::Truncate { target, len },
    })
}

fn open(t: &Task, dirfd: i32, addr: u64, flags: i32, mode: u32) -> Result<Call, i32> {
    if flags & libc::O_TRUNC == 0 {
        return Ok(Call::Pass);
    }
    let r = resolve(t, dirfd, addr)?;
    let follow = if flags & libc::O_NOFOLLOW != 0 {
        libc::O_NOFOLLOW
    } else {
        0
    };
    match task::openat(r.dir.as_raw_fd(), &r.name, libc::O_PATH | follow, 0) {
        Ok(_) if flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL => {
            Err(libc::EEXIST)
        }
        Ok(target) => {
            if !is_regular(target.as_raw_fd()) {
                // O_TRUNC does nothing to fifos, devices and sockets.
                return Ok(Call::Pass);
            }
            let path = task::fd_path(target.as_raw_fd())?;
            Ok(Call::Guarded {
                action: Action::Truncate { path },
                op: Op::Open { target, flags },
            })
        }
        // A dangling symlink: the kernel would create its target. Nothing
        // exists to lose; let it (residual race: docs/limitations.md).
        Err(libc::ENOENT)
            if flags & libc::O_CREAT != 0
                && task::openat(
                    r.dir.as_raw_fd(),
                    &r.name,
                    libc::O_PATH | libc::O_NOFOLLOW,
                    0,
                )
                .is_ok() =>
        {
            Ok(Call::Pass)
        }
        // A new file: nothing to lose, and O_EXCL keeps it that way.
        Err(libc::ENOENT) if flags & libc::O_CREAT != 0 => {
            let path = r.path.clone();
            Ok(Call::Guarded {
                action: Action::OpenWrite { path },
                op: Op::Create {
                    dir: r.dir,
                    name: r.name,
                    flags,
                    mode: mode & 0o7777,
                },
            })
        }
        Err(e) => Err(e),
    }
}

fn is_regular(fd: RawFd) -> bool {
    // SAFETY: fstat into a zeroed struct.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    }
}

fn connect(t: &Task, creds: &Creds, fd: i32, addr: u64, len: u64) -> Result<Call, i32> {
    if len < 2 || len > std::mem::size_of::<libc::sockaddr_storage>() as u64 {
        return Err(libc::EINVAL);
    }
    let mut buf = vec![0u8; len as usize];
    t.read_exact(addr, &mut buf)?;
    let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
    match family {
        libc::AF_INET | libc::AF_INET6 => {
            let Some(addr) = parse_inet(&buf) else {
                return Err(libc::EINVAL);
            };
            let sock = t.dup_fd(creds.tgid, fd)?;
            Ok(Call::Guarded {
                action: Action::Connect {
                    endpoint: Endpoint::Inet { addr },
                },
                op: Op::ConnectInet { sock, addr },
            })
        }
        libc::AF_UNIX => {
            let path = &buf[2..];
            let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
            let path = if buf.len() > 2 && buf[2] == 0 {
                // Abstract namespace: no file; shown with a leading '@'.
                let name = &buf[3..];
                let mut p = b"@".to_vec();
                p.extend_from_slice(name);
                PathBuf::from(task::os(&p))
            } else if path.first() == Some(&b'/') {
                PathBuf::from(task::os(path))
            } else {
                let cwd =
                    std::fs::read_link(format!("/proc/{}/cwd", t.tid)).map_err(|_| libc::ESRCH)?;
                cwd.join(OsStr::from_bytes(path))
            };
            Ok(Call::Guarded {
                action: Action::Connect {
                    endpoint: Endpoint::Unix { path },
                },
                op: Op::ConnectUnix,
            })
        }
        _ => Ok(Call::Pass),
    }
}

fn parse_inet(buf: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
    let port = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]);
    match family {
        libc::AF_INET if buf.len() >= 8 => {
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if buf.len() >= 28 => {
            let flow = u32::from_be_bytes(buf[4..8].try_into().ok()?);
            let ip: [u8; 16] = buf[8..24].try_into().ok()?;
            let scope = u32::from_ne_bytes(buf[24..28].try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; we fill the variant we use.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_addresses_round_trip_through_sockaddr_bytes() {
        for addr in ["127.0.0.2:5432", "[::1]:8080"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, len) = sockaddr(&addr);
            // SAFETY: reading the bytes we just wrote.
            let bytes = unsafe {
                std::slice::from_raw_parts((&raw const storage).cast::<u8>(), len as usize)
            };
            assert_eq!(parse_inet(bytes), Some(addr));
        }
        assert_eq!(parse_inet(&[2, 0, 0, 80]), None);
    }
}
