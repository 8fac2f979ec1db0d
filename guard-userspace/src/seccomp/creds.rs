//! Acting as the caller: the supervisor performs allowed file operations itself
//! (see `call.rs`), so it must pass the same permission checks the caller would.
//! fs uid/gid, supplementary groups and umask are per thread here: raw syscalls
//! (glibc's wrappers would change every thread) on a thread with its own fs_struct.

use std::io;

use super::task::Creds;

/// Gives the current thread its own cwd/umask so `umask` below stays local.
/// Call once at the start of every thread that uses [`AsCaller`].
pub fn detach_fs_struct() -> io::Result<()> {
    // SAFETY: unshare with a flag that only affects this thread.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// While alive, this thread's file-system identity is the caller's.
pub struct AsCaller {
    saved: Option<Saved>,
}

struct Saved {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
    umask: u32,
}

impl AsCaller {
    pub fn enter(creds: &Creds) -> io::Result<Self> {
        // SAFETY: plain id queries.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let groups = own_groups()?;
        // SAFETY: umask is set back right away; the thread has its own fs_struct.
        let umask = unsafe {
            let old = libc::umask(creds.umask as libc::mode_t);
            old as u32
        };
        let saved = Saved {
            fsuid: euid,
            fsgid: egid,
            groups,
            umask,
        };
        if creds.fsuid == euid && creds.fsgid == egid && creds.groups == saved.groups {
            return Ok(Self { saved: Some(saved) });
        }
        set_groups(&creds.groups)?;
        // SAFETY: per-thread credential syscalls; verified below.
        unsafe {
            libc::syscall(libc::SYS_setfsgid, creds.fsgid);
            libc::syscall(libc::SYS_setfsuid, creds.fsuid);
            let now_uid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
            let now_gid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
            if now_uid != creds.fsuid || now_gid != creds.fsgid {
                let me = Self { saved: Some(saved) };
                drop(me);
                return Err(io::Error::other(format!(
                    "could not take the caller's fs ids {}:{}",
                    creds.fsuid, creds.fsgid
                )));
            }
        }
        Ok(Self { saved: Some(saved) })
    }
}

impl Drop for AsCaller {
    fn drop(&mut self) {
        let Some(saved) = self.saved.take() else {
            return;
        };
        // SAFETY: restoring this thread's own ids and umask.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, saved.fsuid);
            libc::syscall(libc::SYS_setfsgid, saved.fsgid);
            libc::umask(saved.umask as libc::mode_t);
        }
        let _ = set_groups(&saved.groups);
    }
}

fn own_groups() -> io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 1024];
    // SAFETY: buffer of the given length.
    let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: raw syscall (this thread only), buffer of the given length.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
