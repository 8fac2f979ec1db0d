//! The supervisor thread: receives notifications, asks policy, and answers
//! continue, an errno, an emulated result, or holds the caller in the kernel
//! while a person decides.

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use libc::seccomp_notif;
use serde::Serialize;

use crate::{
    action::Action,
    cgroup::Cgroup,
    decision::{Decision, Verdict},
    holds::{HoldBroker, HoldRequest, Resolution},
    notice,
    policy::Policy,
};

use super::{
    call::{self, Call, Op, Outcome},
    creds::{self, AsCaller},
    listener::{self, Answer},
    task::{Creds, Task},
};

/// Counters a session reports at its end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SupervisorStats {
    /// Notifications received.
    pub notifications: u64,
    /// Calls allowed (performed by the supervisor or continued).
    pub allowed: u64,
    /// Calls refused by policy (deny, kill, denied or timed-out holds).
    pub denied: u64,
    /// Calls held for a person.
    pub held: u64,
}

#[derive(Default)]
struct Counters {
    notifications: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    held: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SupervisorStats {
        SupervisorStats {
            notifications: self.notifications.load(Ordering::Relaxed),
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
        }
    }
}

/// Everything the supervisor and its hold threads share.
pub(super) struct Shared {
    pub listener: OwnedFd,
    pub policy: Arc<Policy>,
    pub broker: Arc<HoldBroker>,
    pub session: String,
    pub cgroup: Option<Cgroup>,
    /// Perform allowed calls in guard (false only in the race demonstration).
    emulate: bool,
    counters: Counters,
}

impl Shared {
    pub fn new(
        listener: OwnedFd,
        policy: Arc<Policy>,
        broker: Arc<HoldBroker>,
        session: String,
        cgroup: Option<Cgroup>,
        emulate: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            policy,
            broker,
            session,
            cgroup,
            emulate,
            counters: Counters::default(),
        })
    }

    pub fn stats(&self) -> SupervisorStats {
        self.counters.snapshot()
    }

    fn request(&self, creds: &Creds, action: &Action, verdict: &Verdict) -> HoldRequest {
        HoldRequest {
            session: self.session.clone(),
            pid: creds.tgid,
            action: action.clone(),
            verdict: verdict.clone(),
            backend: "seccomp",
        }
    }

    fn answer(&self, id: u64, answer: Answer) {
        if let Err(e) = listener::send(self.listener.as_raw_fd(), id, answer) {
            // ENOENT: the caller died or was answered already; nothing to do.
            if e.raw_os_error() != Some(libc::ENOENT) {
                log::warn!("seccomp: answering notification {id}: {e}");
            }
        }
    }
}

/// The receive loop. Returns when `stop` becomes readable or no task uses the
/// filter any more (the kernel reports POLLHUP on the listener).
pub(super) fn run(shared: Arc<Shared>, stop: OwnedFd) {
    if let Err(e) = creds::detach_fs_struct() {
        log::warn!("seccomp supervisor: unshare(CLONE_FS): {e}; creating files uses guard's umask");
    }
    loop {
        let mut fds = [
            libc::pollfd {
                fd: shared.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!(
                "seccomp supervisor: poll: {}",
                std::io::Error::last_os_error()
            );
            fail_closed(&shared);
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match listener::recv(shared.listener.as_raw_fd()) {
                Ok(notif) => {
                    shared
                        .counters
                        .notifications
                        .fetch_add(1, Ordering::Relaxed);
                    handle(&shared, &notif, 0);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
                Err(e) => {
                    log::error!("seccomp supervisor: receiving a notification: {e}");
                    fail_closed(&shared);
                    return;
                }
            }
        } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return;
        }
    }
}

/// The loop cannot go on: drop the listener now (by putting /dev/null in its
/// fd slot), so the kernel fails the session's watched calls with ENOSYS
/// instead of leaving them asleep with nobody to answer.
fn fail_closed(shared: &Shared) {
    log::error!("seccomp supervisor stopped: the session's watched calls now fail with ENOSYS");
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: replaces our own fd atomically; the old file is released.
        unsafe {
            libc::dup3(
                null.as_raw_fd(),
                shared.listener.as_raw_fd(),
                libc::O_CLOEXEC,
            )
        };
    }
}

/// Decides one notification. `attempt` counts re-decodes after [`Outcome::Retry`].
fn handle(shared: &Arc<Shared>, notif: &seccomp_notif, attempt: u32) {
    let id = notif.id;
    let task = Task { tid: notif.pid };
    let Ok(creds) = task.creds() else {
        // The caller is gone (or /proc is unreadable): refuse, never guess.
        shared.answer(id, Answer::Errno(libc::EPERM));
        return;
    };
    let call = match AsCaller::enter(&creds) {
        Ok(_as_caller) => call::decode(&task, &creds, notif.data.nr as i64, notif.data.args),
        Err(e) => {
            log::warn!("seccomp: cannot act as pid {}: {e}; refusing", notif.pid);
            Call::Fail(libc::EPERM)
        }
    };
    // Everything read above is only trustworthy if the caller still waits:
    // otherwise its pid may now name another task.
    if !listener::id_valid(shared.listener.as_raw_fd(), id) {
        return;
    }
    match call {
        Call::Pass => shared.answer(id, Answer::Continue),
        Call::Fail(errno) => shared.answer(id, Answer::Errno(errno)),
        Call::Guarded { action, op } => {
            let verdict = shared.policy.evaluate(&action);
            match verdict.decision {
                Decision::Allow | Decision::Log => {
                    if verdict.decision == Decision::Log {
                        shared
                            .broker
                            .report(shared.request(&creds, &action, &verdict));
                    }
                    if op.may_block() {
                        let (shared, notif) = (shared.clone(), *notif);
                        std::thread::spawn(move || {
                            let _ = creds::detach_fs_struct();
                            perform(&shared, &notif, &creds, op, attempt)
                        });
                    } else {
                        perform(shared, notif, &creds, op, attempt);
                    }
                }
                Decision::Deny | Decision::Kill => refuse(
                    shared,
                    id,
                    Refusal {
                        creds: &creds,
                        action: &action,
                        verdict: &verdict,
                        kill: verdict.decision == Decision::Kill,
                        report: true,
                    },
                ),
                Decision::Ask | Decision::Freeze => {
                    shared.counters.held.fetch_add(1, Ordering::Relaxed);
                    let (shared, notif) = (shared.clone(), *notif);
                    std::thread::spawn(move || {
                        let _ = creds::detach_fs_struct();
                        hold(&shared, &notif, creds, action, op, verdict)
                    });
                }
            }
        }
    }
}

/// Carries out an allowed call as the caller and answers with its result.
fn perform(shared: &Arc<Shared>, notif: &seccomp_notif, creds: &Creds, op: Op, attempt: u32) {
    let id = notif.id;
    // Never act for a caller that is gone (killed while held, for example).
    if !listener::id_valid(shared.listener.as_raw_fd(), id) {
        return;
    }
    let outcome = match AsCaller::enter(creds) {
        Ok(_) if !shared.emulate => Outcome::Continue,
        Ok(_as_caller) => op.perform(),
        Err(e) => {
            log::warn!("seccomp: cannot act as pid {}: {e}; refusing", notif.pid);
            Outcome::Errno(libc::EPERM)
        }
    };
    shared.counters.allowed.fetch_add(1, Ordering::Relaxed);
    match outcome {
        Outcome::Value(v) => shared.answer(id, Answer::Value(v)),
        Outcome::Errno(e) => shared.answer(id, Answer::Errno(e)),
        Outcome::Continue => shared.answer(id, Answer::Continue),
        Outcome::Fd { fd, cloexec } => {
            match listener::send_fd_answer(shared.listener.as_raw_fd(), id, fd.as_raw_fd(), cloexec)
            {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    // Kernels before 5.14 cannot install the fd: fail closed.
                    log::warn!("seccomp: SECCOMP_IOCTL_NOTIF_ADDFD: {e}; refusing the open");
                    shared.answer(id, Answer::Errno(libc::EPERM));
                }
            }
        }
        Outcome::Retry if attempt < 3 => {
            shared.counters.allowed.fetch_sub(1, Ordering::Relaxed);
            handle(shared, notif, attempt + 1)
        }
        Outcome::Retry => shared.answer(id, Answer::Errno(libc::EAGAIN)),
    }
}

/// Refuses a call (and kills the caller for `kill`), telling it why on stderr.
/// `report`: the decision came from policy directly (a hold's outcome is
/// already known to the broker).
struct Refusal<'a> {
    creds: &'a Creds,
    action: &'a Action,
    verdict: &'a Verdict,
    kill: bool,
    report: bool,
}

fn refuse(shared: &Shared, id: u64, r: Refusal<'_>) {
    let Refusal {
        creds,
        action,
        verdict,
        kill,
        report,
    } = r;
    shared.counters.denied.fetch_add(1, Ordering::Relaxed);
    if report {
        shared.broker.report(shared.request(creds, action, verdict));
    }
    notice::tell_denied(creds.tgid, action, verdict);
    if kill {
        // SAFETY: signal to the caller's thread group, which is waiting in the kernel.
        unsafe { libc::kill(creds.tgid as i32, libc::SIGKILL) };
    }
    shared.answer(id, Answer::Errno(libc::EPERM));
}

/// Keeps the caller asleep in the kernel while a person decides.
fn hold(
    shared: &Arc<Shared>,
    notif: &seccomp_notif,
    creds: Creds,
    action: Action,
    op: Op,
    verdict: Verdict,
) {
    let freeze = verdict.decision == Decision::Freeze;
    if freeze && let Some(cg) = &shared.cgroup {
        // The caller sleeps killably, so freezing the cgroup stops everyone
        // else in the session without restarting the held call (5.19+).
        if let Err(e) = cg.set_frozen(true) {
            log::warn!("seccomp: freezing the session: {e:#}");
        }
    }
    notice::tell(
        creds.tgid,
        &format!(
            "guard: holding {action} (rule {}) until a person approves: {}",
            verdict.rule, verdict.reason
        ),
    );
    let request = shared.request(&creds, &action, &verdict);
    let watcher = CallerWatch::start(shared.clone(), notif.id, request.clone());
    let resolution = shared.broker.ask(
        request,
        shared.policy.ask_timeout(),
        shared.policy.timeout_decision(),
    );
    drop(watcher);
    if freeze && let Some(cg) = &shared.cgroup {
        let _ = cg.set_frozen(false);
    }
    let decided = match &resolution {
        Resolution::Approved { .. } => Decision::Allow,
        Resolution::Denied { .. } => Decision::Deny,
        Resolution::Killed { .. } => Decision::Kill,
        Resolution::TimedOut { decision } => *decision,
    };
    let timed_out = matches!(resolution, Resolution::TimedOut { .. });
    match decided {
        Decision::Allow | Decision::Log => perform(shared, notif, &creds, op, 0),
        Decision::Kill => refuse(
            shared,
            notif.id,
            Refusal {
                creds: &creds,
                action: &action,
                verdict: &verdict,
                kill: true,
                report: false,
            },
        ),
        _ => {
            let verdict = if timed_out {
                Verdict {
                    reason: format!(
                        "nobody answered within {:?}",
                        shared.policy.ask_timeout().max(Duration::ZERO)
                    ),
                    ..verdict
                }
            } else {
                verdict
            };
            refuse(
                shared,
                notif.id,
                Refusal {
                    creds: &creds,
                    action: &action,
                    verdict: &verdict,
                    kill: false,
                    report: false,
                },
            )
        }
    }
}

/// Ends a hold whose caller is gone (killed, or its session torn down), so
/// approvers never see a hold that can no longer mean anything.
struct CallerWatch {
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl CallerWatch {
    fn start(shared: Arc<Shared>, id: u64, request: HoldRequest) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if flag.load(Ordering::Relaxed)
                    || listener::id_valid(shared.listener.as_raw_fd(), id)
                {
                    continue;
                }
                let hold = shared.broker.pending().into_iter().find(|h| {
                    h.request.session == request.session
                        && h.request.pid == request.pid
                        && h.request.action == request.action
                        && h.request.backend == request.backend
                });
                if let Some(hold) = hold {
                    let _ = shared.broker.resolve(
                        hold.id,
                        Resolution::Denied {
                            approver: "guard (the held process exited)".into(),
                        },
                    );
                }
                return;
            }
        });
        Self { done }
    }
}

impl Drop for CallerWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
