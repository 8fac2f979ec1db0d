//! The thread that made a notified syscall: its memory, credentials, cwd and
//! file descriptors, read through process_vm_readv, /proc and pidfds.

use std::{
    ffi::{CString, OsString},
    fs, io,
    os::{
        fd::{FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStringExt as _,
    },
    path::PathBuf,
};

/// Longest path the kernel accepts, including the NUL.
pub const PATH_MAX: usize = 4096;

/// fs credentials and umask of the calling thread, from /proc/TID/status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub tgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub umask: u32,
}

/// A thread (by tid, as the notification names it).
#[derive(Debug, Clone, Copy)]
pub struct Task {
    pub tid: u32,
}

impl Task {
    /// Reads a NUL-terminated string at `addr` (at most PATH_MAX bytes).
    /// Errors: EFAULT for unreadable memory, ENAMETOOLONG past PATH_MAX.
    pub fn read_cstr(&self, addr: u64) -> Result<Vec<u8>, i32> {
        if addr == 0 {
            return Err(libc::EFAULT);
        }
        let mut out = Vec::with_capacity(256);
        let mut at = addr;
        let mut chunk = [0u8; 4096];
        while out.len() < PATH_MAX {
            // Stop at page ends: the next page may be unmapped.
            let to_page_end = 4096 - (at % 4096) as usize;
            let want = to_page_end.min(PATH_MAX - out.len());
            let n = self
                .read(at, &mut chunk[..want])
                .map_err(|_| libc::EFAULT)?;
            if n == 0 {
                return Err(libc::EFAULT);
            }
            if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
            at += n as u64;
        }
        Err(libc::ENAMETOOLONG)
    }

    /// Reads exactly `buf.len()` bytes at `addr` or fails with EFAULT.
    pub fn read_exact(&self, addr: u64, buf: &mut [u8]) -> Result<(), i32> {
        match self.read(addr, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            _ => Err(libc::EFAULT),
        }
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: local points at `buf`; the kernel checks the remote range.
        let n = unsafe { libc::process_vm_readv(self.tid as i32, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Credentials and umask from /proc/TID/status.
    pub fn creds(&self) -> io::Result<Creds> {
        let text = fs::read_to_string(format!("/proc/{}/status", self.tid))?;
        parse_status(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected /proc/{}/status format", self.tid),
            )
        })
    }

    /// An O_PATH handle on the thread's cwd (AT_FDCWD) or on its dirfd.
    pub fn open_dir(&self, dirfd: i32) -> Result<OwnedFd, i32> {
        let path = if dirfd == libc::AT_FDCWD {
            format!("/proc/{}/cwd", self.tid)
        } else {
            format!("/proc/{}/fd/{}", self.tid, dirfd)
        };
        match open_path(&path, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => Ok(fd),
            // No such fd in the caller.
            Err(libc::ENOENT) if dirfd != libc::AT_FDCWD => Err(libc::EBADF),
            Err(e) => Err(e),
        }
    }

    /// A duplicate of the caller's fd `fd` (same open file description).
    pub fn dup_fd(&self, tgid: u32, fd: i32) -> Result<OwnedFd, i32> {
        crate::pidfd::dup_process_fd(tgid, fd).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }
}

fn parse_status(text: &str) -> Option<Creds> {
    let mut tgid = None;
    let mut fsuid = None;
    let mut fsgid = None;
    let mut groups = Vec::new();
    let mut umask = 0o022;
    for line in text.lines() {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        match key {
            "Tgid" => tgid = value.parse().ok(),
            // Real, effective, saved, filesystem: permission checks use the last.
            "Uid" => fsuid = value.split_whitespace().nth(3)?.parse().ok(),
            "Gid" => fsgid = value.split_whitespace().nth(3)?.parse().ok(),
            "Groups" => {
                groups = value
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            }
            "Umask" => umask = u32::from_str_radix(value, 8).ok()?,
            _ => {}
        }
    }
    Some(Creds {
        tgid: tgid?,
        fsuid: fsuid?,
        fsgid: fsgid?,
        groups,
        umask,
    })
}

pub fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// open(2) with O_CLOEXEC; Err(errno).
pub fn open_path(path: &str, flags: i32) -> Result<OwnedFd, i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat(2) with raw bytes; Err(errno).
pub fn openat(dir: RawFd, name: &[u8], flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    let c = CString::new(name).map_err(|_| libc::EINVAL)?;
    // SAFETY: NUL-terminated name; dir is a live fd or AT_FDCWD.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path an open fd names, as the kernel prints it in /proc/self/fd.
pub fn fd_path(fd: RawFd) -> Result<PathBuf, i32> {
    fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// The path of the caller's fd `fd` (for ftruncate), via /proc/TID/fd/N.
pub fn task_fd_path(tid: u32, fd: i32) -> Result<PathBuf, i32> {
    fs::read_link(format!("/proc/{tid}/fd/{fd}")).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => libc::EBADF,
        other => other.unwrap_or(libc::EIO),
    })
}

pub fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_fs_ids_groups_and_umask() {
        let text = "Name:\tsh\nUmask:\t0027\nState:\tS\nTgid:\t41\nPid:\t42\n\
                    Uid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t101\nGroups:\t4 24 27 \n";
        assert_eq!(
            parse_status(text),
            Some(Creds {
                tgid: 41,
                fsuid: 1001,
                fsgid: 101,
                groups: vec![4, 24, 27],
                umask: 0o027,
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn reads_strings_from_our_own_memory() {
        let s = b"/tmp/some path\0";
        let task = Task {
            tid: std::process::id(),
        };
        assert_eq!(
            task.read_cstr(s.as_ptr() as u64).unwrap(),
            b"/tmp/some path"
        );
        assert_eq!(task.read_cstr(0), Err(libc::EFAULT));
        let long = vec![b'a'; PATH_MAX + 10];
        assert_eq!(
            task.read_cstr(long.as_ptr() as u64),
            Err(libc::ENAMETOOLONG)
        );
    }
}
