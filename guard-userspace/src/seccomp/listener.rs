//! The notification listener: installing the filter in the child, passing the
//! listener fd to guard over a socketpair, and the notify ioctls.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use libc::{seccomp_notif, seccomp_notif_addfd, seccomp_notif_resp, sock_filter};

use super::filter;

/// Runs in the child between fork and exec: no allocation, only syscalls.
/// Installs `program` with a new listener and sends the listener over `sock`.
pub fn install_and_send(program: &[sock_filter], sock: RawFd) -> io::Result<()> {
    let fprog = filter::fprog(program);
    let listener = install(&fprog)?;
    let sent = send_fd(sock, listener);
    // SAFETY: the listener fd is ours; guard holds its own copy once sent.
    unsafe { libc::close(listener) };
    sent
}

/// seccomp(SET_MODE_FILTER, NEW_LISTENER [| WAIT_KILLABLE_RECV]). Tries the
/// killable flag first (5.19+: a held call is not restarted by stray signals or
/// the cgroup freezer), then without; sets no_new_privs only when the caller
/// lacks CAP_SYS_ADMIN, so setuid programs keep working under a root guard.
fn install(fprog: &libc::sock_fprog) -> io::Result<RawFd> {
    let base = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    set_filter(
        fprog,
        &[base | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, base],
    )
    .map(|fd| fd as RawFd)
}

/// Installs `program` with no listener (a filter that only returns errnos
/// or allows). Runs between fork and exec: no allocation, only syscalls.
pub fn install_plain(program: &[sock_filter]) -> io::Result<()> {
    set_filter(&filter::fprog(program), &[0]).map(drop)
}

/// seccomp(SET_MODE_FILTER) with the first of `flag_choices` this kernel
/// takes (EINVAL moves on to the next); sets no_new_privs and tries again
/// only if the caller lacks CAP_SYS_ADMIN (EACCES).
fn set_filter(fprog: &libc::sock_fprog, flag_choices: &[libc::c_ulong]) -> io::Result<i64> {
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for no_new_privs in [false, true] {
        if no_new_privs {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for &flags in flag_choices {
            // SAFETY: fprog points at a live program for the call's duration.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    flags,
                    fprog as *const libc::sock_fprog,
                )
            };
            if fd >= 0 {
                return Ok(fd);
            }
            last = io::Error::last_os_error();
            match last.raw_os_error() {
                Some(libc::EINVAL) => continue,
                Some(libc::EACCES) => break,
                _ => return Err(last),
            }
        }
    }
    Err(last)
}

/// Sends one fd with SCM_RIGHTS; stack buffers only (called after fork).
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Aligned buffer big enough for one cmsghdr carrying one int.
    let mut control = [0u64; 4];
    // SAFETY: msghdr points at live stack buffers; CMSG macros stay inside `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one fd sent with [`send_fd`], waiting at most `timeout`.
pub fn recv_fd(sock: &OwnedFd, timeout: Duration) -> io::Result<OwnedFd> {
    if !poll_in(sock.as_raw_fd(), timeout)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the child did not send its seccomp listener",
        ));
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: as in send_fd; the received fd is checked before use.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n == 0
            || cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the child exited before installing the seccomp filter",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Waits until `fd` is readable; false on timeout.
pub fn poll_in(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6+): the kernel wakes the supervisor
/// and the caller on the same CPU, which roughly halves the cost of a round
/// trip. Older kernels refuse it (EINVAL); that only costs speed.
pub fn prefer_sync_wakeup(listener: RawFd) -> bool {
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
    // SAFETY: the ioctl takes the flags by value.
    unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        ) == 0
    }
}

/// SECCOMP_IOCTL_NOTIF_RECV. Err(ENOENT) means the caller died before we read it.
pub fn recv(listener: RawFd) -> io::Result<seccomp_notif> {
    // SAFETY: the kernel requires a zeroed struct and fills it.
    let mut notif: seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a seccomp_notif for the ioctl.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(notif)
}

/// Whether notification `id` is still waiting (its task alive, not yet answered).
/// Call after reading the task's memory or /proc entries: the pid may have been
/// reused otherwise.
pub fn id_valid(listener: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: valid pointer to a u64.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
}

/// How the supervisor answers one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Let the kernel run the syscall as the caller made it.
    Continue,
    /// Return this value as if the syscall had run (emulated in the supervisor).
    Value(i64),
    /// Fail with this errno.
    Errno(i32),
}

/// SECCOMP_IOCTL_NOTIF_SEND. Err(ENOENT) means the caller is gone.
pub fn send(listener: RawFd, id: u64, answer: Answer) -> io::Result<()> {
    let (val, error, flags) = match answer {
        Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Answer::Value(v) => (v, 0, 0),
        Answer::Errno(e) => (0, -e, 0),
    };
    let mut resp = seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: valid pointer to a seccomp_notif_resp.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SECCOMP_IOCTL_NOTIF_ADDFD with SEND (5.14+): installs `fd` in the caller and
/// answers with its number, atomically. Used to emulate opens.
pub fn send_fd_answer(listener: RawFd, id: u64, fd: RawFd, cloexec: bool) -> io::Result<i32> {
    let mut addfd = seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: fd as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: valid pointer to a seccomp_notif_addfd.
    let n = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut addfd) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}
