//! Does seccomp user notification work here? Found by doing it: a forked child
//! installs the session filter and calls unlinkat; guard must receive the
//! notification and the child must see guard's answer.

use std::{os::fd::AsRawFd as _, time::Duration};

use super::{filter, listener};

/// The errno guard answers the probe with; nothing else produces it for unlinkat
/// of a missing file.
const PROBE_ERRNO: i32 = libc::EXDEV;

/// Ok(()) when a notification arrived and the answer reached the caller;
/// otherwise why not, for `guard doctor`.
pub fn seccomp_notify_works() -> Result<(), String> {
    let (parent, child) = super::socketpair().map_err(|e| format!("socketpair: {e}"))?;
    let program = filter::session_program();
    // SAFETY: the child only makes syscalls on data prepared before fork and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match listener::install_and_send(&program, child.as_raw_fd()) {
            Err(_) => 2,
            Ok(()) => {
                // SAFETY: static NUL-terminated path.
                let rc = unsafe {
                    libc::unlinkat(libc::AT_FDCWD, c"/nonexistent/guard-probe".as_ptr(), 0)
                };
                let errno = std::io::Error::last_os_error().raw_os_error();
                if rc != 0 && errno == Some(PROBE_ERRNO) {
                    0
                } else {
                    3
                }
            }
        };
        // SAFETY: leaving the forked child without running parent destructors.
        unsafe { libc::_exit(code) };
    }
    drop(child);
    let result = receive_and_answer(&parent);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe {
        if result.is_err() {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::waitpid(pid, &mut status, 0);
    }
    result?;
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(2) => Err(
            "installing a filter with SECCOMP_FILTER_FLAG_NEW_LISTENER failed (kernel before 5.0?)"
                .into(),
        ),
        Some(3) => Err("the notified call did not return guard's answer".into()),
        other => Err(format!("probe child ended unexpectedly ({other:?})")),
    }
}

fn receive_and_answer(parent: &std::os::fd::OwnedFd) -> Result<(), String> {
    let listener = listener::recv_fd(parent, Duration::from_secs(5))
        .map_err(|e| format!("no listener from the probe child: {e}"))?;
    if !listener::poll_in(listener.as_raw_fd(), Duration::from_secs(5)).unwrap_or(false) {
        return Err("no notification within 5 s".into());
    }
    let notif = listener::recv(listener.as_raw_fd()).map_err(|e| format!("NOTIF_RECV: {e}"))?;
    if notif.data.nr as i64 != libc::SYS_unlinkat {
        return Err(format!("unexpected syscall {} notified", notif.data.nr));
    }
    listener::send(
        listener.as_raw_fd(),
        notif.id,
        listener::Answer::Errno(PROBE_ERRNO),
    )
    .map_err(|e| format!("NOTIF_SEND: {e}"))
}
