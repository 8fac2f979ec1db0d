//! The seccomp backend: prevention on kernels without BPF LSM.
//!
//! `guard session` installs a user-notification filter in the agent just
//! before exec (after the cgroup move). The filter is inherited by every
//! descendant and cannot be removed. Destructive file syscalls, truncating
//! opens and connect go to a supervisor thread in guard; ordinary opens never
//! leave the kernel; escapes (io_uring, ptrace, bpf, mount...) are refused.
//! See docs/backends.md for the full list and docs/limitations.md for what it
//! cannot see.
//!
//! ```no_run
//! # use std::{process::Command, sync::Arc};
//! # use guard::{seccomp::SessionFilter, policy::Policy, holds::HoldBroker};
//! # let cgroup = guard::cgroup::Cgroup::create("session-x").unwrap();
//! let mut command = Command::new("agent");
//! let (child, supervisor) = guard::seccomp::spawn_supervised(
//!     &mut command,
//!     &cgroup,
//!     Arc::new(Policy::embedded_default()),
//!     HoldBroker::new(),
//!     "s1".into(),
//! )
//! .unwrap();
//! ```
//!
//! Or in two steps, when the caller registers its own cgroup move:
//! [`SessionFilter::prepare`] before spawn, [`PendingSupervisor::start`] after.
//!
//! If the supervisor dies (guard crashes or is killed), the kernel fails every
//! pending and future notified call with ENOSYS: the session fails closed.

mod call;
mod creds;
pub mod filter;
mod listener;
pub mod probe;
mod supervisor;
mod task;

use std::{
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::Command,
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;

pub use supervisor::SupervisorStats;

use crate::{cgroup::Cgroup, holds::HoldBroker, policy::Policy};

/// The io_uring refusal for sessions whose file and connect calls BPF LSM
/// holds ([`filter::io_uring_program`]); build it before fork, install it
/// in the child.
pub struct RingRefusal {
    program: Vec<libc::sock_filter>,
}

impl RingRefusal {
    pub fn new() -> Self {
        Self {
            program: filter::io_uring_program(),
        }
    }

    /// Installs the filter in the calling process. Async-signal-safe: call
    /// it between fork and exec, before dropping root (as root it needs no
    /// no_new_privs, so setuid programs keep working in the session).
    pub fn install(&self) -> io::Result<()> {
        listener::install_plain(&self.program)
    }
}

impl Default for RingRefusal {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs the session filter in a [`Command`] before it execs.
pub struct SessionFilter;

impl SessionFilter {
    /// Registers a `pre_exec` step that installs the filter and sends its
    /// listener to guard. Register the cgroup move *before* calling this:
    /// `pre_exec` steps run in order, and the move writes a file, which must
    /// happen before the filter exists. Then spawn, then [`PendingSupervisor::start`].
    pub fn prepare(command: &mut Command) -> anyhow::Result<PendingSupervisor> {
        let (parent, child) = socketpair().context("creating the listener socketpair")?;
        let program = filter::session_program();
        let child_fd = child.as_raw_fd();
        // SAFETY: the closure only makes syscalls (seccomp, prctl, sendmsg,
        // close) on data prepared before fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || listener::install_and_send(&program, child_fd));
        }
        Ok(PendingSupervisor {
            parent,
            child: Some(child),
            cgroup: None,
            emulate: true,
        })
    }
}

/// The whole launch for `guard session`: moves the child into `cgroup`, then
/// installs the filter (in that order, before exec), spawns it and starts the
/// supervisor. Stop the returned handle after the session's processes are gone.
pub fn spawn_supervised(
    command: &mut Command,
    cgroup: &Cgroup,
    policy: Arc<Policy>,
    broker: Arc<HoldBroker>,
    session: String,
) -> anyhow::Result<(std::process::Child, SupervisorHandle)> {
    let procs = cgroup.path().join("cgroup.procs");
    // SAFETY: one write to a cgroup file between fork and exec; the path was
    // allocated before fork.
    unsafe { command.pre_exec(move || std::fs::write(&procs, b"0")) };
    let pending = SessionFilter::prepare(command)?;
    let child = command.spawn().with_context(|| {
        format!(
            "starting {:?} under the seccomp backend (cgroup move, then filter)",
            command.get_program()
        )
    })?;
    let supervisor = match pending
        .with_cgroup(cgroup.clone())
        .start(policy, broker, session)
    {
        Ok(s) => s,
        Err(e) => {
            // Without a supervisor every watched call would fail: do not leave it running.
            // SAFETY: signal to the child we just spawned.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            return Err(e);
        }
    };
    Ok((child, supervisor))
}

/// A filter registered on a command, waiting for the child to send its listener.
pub struct PendingSupervisor {
    parent: OwnedFd,
    child: Option<OwnedFd>,
    cgroup: Option<Cgroup>,
    emulate: bool,
}

impl PendingSupervisor {
    /// The session cgroup, frozen while a `freeze` decision is held.
    pub fn with_cgroup(mut self, cgroup: Cgroup) -> Self {
        self.cgroup = Some(cgroup);
        self
    }

    /// Answers allowed file calls with "continue" instead of performing them:
    /// the racy behaviour emulation exists to prevent (docs/limitations.md).
    /// Only for the test that shows the race is real.
    #[doc(hidden)]
    pub fn continue_allowed_calls_racily(mut self) -> Self {
        self.emulate = false;
        self
    }

    /// Call after `spawn`: receives the listener from the child and starts the
    /// supervisor thread. Fails if the child died before installing the filter.
    pub fn start(
        mut self,
        policy: Arc<Policy>,
        broker: Arc<HoldBroker>,
        session: String,
    ) -> anyhow::Result<SupervisorHandle> {
        // Our copy of the child's end must go, or a child that died early
        // would leave us waiting for the full timeout.
        drop(self.child.take());
        let listener = listener::recv_fd(&self.parent, Duration::from_secs(10))
            .context("receiving the seccomp listener from the session's first process")?;
        if !listener::prefer_sync_wakeup(listener.as_raw_fd()) {
            log::debug!("seccomp: no SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (kernel before 6.6)");
        }
        let shared =
            supervisor::Shared::new(listener, policy, broker, session, self.cgroup, self.emulate);
        let (stop_read, stop_write) = pipe().context("creating the supervisor stop pipe")?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("guard-seccomp".into())
            .spawn(move || supervisor::run(thread_shared, stop_read))
            .context("starting the seccomp supervisor thread")?;
        Ok(SupervisorHandle {
            shared,
            stop: Some(stop_write),
            thread: Some(thread),
        })
    }
}

/// A running supervisor. Dropping it stops it (see [`SupervisorHandle::stop`]).
pub struct SupervisorHandle {
    shared: Arc<supervisor::Shared>,
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl SupervisorHandle {
    pub fn stats(&self) -> SupervisorStats {
        self.shared.stats()
    }

    /// Whether the receive loop has ended (no task uses the filter any more).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops receiving. Held calls already handed to a person keep their
    /// threads until answered; once the last reference to the listener goes,
    /// every notified call of the session fails with ENOSYS.
    pub fn stop(mut self) -> SupervisorStats {
        self.shutdown();
        self.shared.stats()
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SupervisorHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe whose write end closing (on drop) wakes the supervisor.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
