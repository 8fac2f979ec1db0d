//! What the kernel backends (LSM restart hold, exec stop) share: finding a
//! session's policy, turning a verdict and a person's answer into an
//! outcome, and the thread that reads kernel events and hands held tasks to
//! the right backend.

use std::{
    collections::HashMap,
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};

use crate::{
    cgroup::Cgroup,
    decision::{Decision, Verdict},
    events::{self, KernelEvent, KernelVerdict},
    exec_stop::ExecStop,
    holds::{GrantScope, HoldBroker, HoldRequest, Resolution},
    lsm_backend::LsmBackend,
    policy::Policy,
};

/// Finds the session (name and policy) of a session cgroup id.
pub trait SessionDirectory: Send + Sync {
    fn lookup(&self, cgroup_id: u64) -> Option<(String, Arc<Policy>)>;

    /// The session's cgroup, for the `freeze` decision.
    fn cgroup(&self, _cgroup_id: u64) -> Option<Cgroup> {
        None
    }
}

/// Asks the broker about a held action. A `freeze` verdict freezes the
/// whole session while the person decides (siblings and sub-agents stop
/// too) and thaws it before the answer is applied.
pub fn ask(
    broker: &HoldBroker,
    sessions: &dyn SessionDirectory,
    cgroup_id: u64,
    policy: &Policy,
    request: HoldRequest,
) -> Resolution {
    let frozen = (request.verdict.decision == Decision::Freeze)
        .then(|| sessions.cgroup(cgroup_id))
        .flatten()
        .filter(|cg| match cg.set_frozen(true) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("could not freeze session {}: {e:#}", request.session);
                false
            }
        });
    let resolution = broker.ask(request, policy.ask_timeout(), policy.timeout_decision());
    if let Some(cg) = frozen
        && let Err(e) = cg.set_frozen(false)
    {
        log::error!("could not thaw {}: {e:#}", cg.path().display());
    }
    resolution
}

/// A plain in-memory session directory.
#[derive(Default)]
pub struct SessionMap {
    sessions: RwLock<HashMap<u64, (String, Arc<Policy>)>>,
    cgroups: RwLock<HashMap<u64, Cgroup>>,
}

impl SessionMap {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn insert(&self, cgroup_id: u64, name: impl Into<String>, policy: Arc<Policy>) {
        self.sessions
            .write()
            .expect("session map poisoned")
            .insert(cgroup_id, (name.into(), policy));
    }

    /// Registers the session's cgroup too, so `freeze` verdicts can freeze it.
    pub fn insert_cgroup(&self, cgroup_id: u64, cgroup: Cgroup) {
        self.cgroups
            .write()
            .expect("session map poisoned")
            .insert(cgroup_id, cgroup);
    }

    pub fn remove(&self, cgroup_id: u64) {
        self.cgroups
            .write()
            .expect("session map poisoned")
            .remove(&cgroup_id);
        self.sessions
            .write()
            .expect("session map poisoned")
            .remove(&cgroup_id);
    }
}

impl SessionDirectory for SessionMap {
    fn lookup(&self, cgroup_id: u64) -> Option<(String, Arc<Policy>)> {
        self.sessions
            .read()
            .expect("session map poisoned")
            .get(&cgroup_id)
            .cloned()
    }

    fn cgroup(&self, cgroup_id: u64) -> Option<Cgroup> {
        self.cgroups
            .read()
            .expect("session map poisoned")
            .get(&cgroup_id)
            .cloned()
    }
}

/// What a backend did with a held action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let through once.
    Allowed,
    /// Let through, and the same action for a while (session or duration).
    AllowedFor(GrantScope),
    /// Refused (EPERM, or for an exec: killed before it ran).
    Denied { rule: String },
    /// The process was killed.
    Killed { rule: String },
    /// The task was gone before a decision could be applied.
    Gone,
}

/// The outcome of a verdict, and of a person's answer when the verdict held.
pub fn outcome_of(verdict: &Verdict, resolution: Option<&Resolution>) -> Outcome {
    let rule = verdict.rule.clone();
    let by_decision = |d: Decision, rule: String| match d {
        Decision::Allow | Decision::Log => Outcome::Allowed,
        Decision::Kill => Outcome::Killed { rule },
        // Deny, and an ask nobody can answer any more.
        Decision::Deny | Decision::Ask | Decision::Freeze => Outcome::Denied { rule },
    };
    match resolution {
        None => by_decision(verdict.decision, rule),
        Some(Resolution::Approved { scope, .. }) => match scope {
            GrantScope::Once => Outcome::Allowed,
            other => Outcome::AllowedFor(*other),
        },
        Some(Resolution::Denied { .. }) => Outcome::Denied { rule },
        Some(Resolution::Killed { .. }) => Outcome::Killed { rule },
        Some(Resolution::TimedOut { decision }) => by_decision(*decision, rule),
    }
}

/// Sends a signal to a process; a vanished process is not an error here.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        log::debug!(
            "signal {sig} to pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Sees every decoded kernel event (audit, summaries, tests).
pub type EventObserver = Arc<Mutex<dyn FnMut(&KernelEvent) + Send>>;

/// Hands kernel events to the backend that holds the task.
pub struct Backends {
    pub lsm: Arc<LsmBackend>,
    pub exec: Arc<ExecStop>,
}

impl Backends {
    /// Starts deciding one event; held tasks are decided on their own thread
    /// so one open hold never blocks the others.
    pub fn handle(&self, event: KernelEvent) {
        if event.verdict() != KernelVerdict::Stopped {
            return;
        }
        match event {
            KernelEvent::Exec {
                pid,
                cgroup_id,
                filename,
                ..
            } => {
                let exec = self.exec.clone();
                std::thread::spawn(move || exec.decide(pid, cgroup_id, Path::new(&filename)));
            }
            other => self.lsm.handle(other),
        }
    }

    /// Reads the ring buffer until `stop` is set, passing every event to
    /// `observe` (audit, summaries, tests) and held ones to their backend.
    pub fn spawn_reader(
        self: Arc<Self>,
        mut ring: RingBuf<MapData>,
        stop: Arc<AtomicBool>,
        observe: EventObserver,
    ) -> JoinHandle<()> {
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                poll_readable(ring.as_raw_fd(), 50);
                while let Some(record) = ring.next() {
                    match events::decode(&record) {
                        Ok(event) => {
                            (observe.lock().expect("observer poisoned"))(&event);
                            self.handle(event);
                        }
                        Err(e) => log::warn!("undecodable kernel event: {e}"),
                    }
                }
            }
        })
    }
}

fn poll_readable(fd: i32, timeout_ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}

/// How long a one-shot grant waits for its restarted syscall.
pub const ONCE_GRANT_TTL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(decision: Decision) -> Verdict {
        Verdict {
            decision,
            rule: "r1".into(),
            reason: "because".into(),
        }
    }

    #[test]
    fn outcomes_follow_verdict_then_answer() {
        assert_eq!(outcome_of(&verdict(Decision::Log), None), Outcome::Allowed);
        assert_eq!(
            outcome_of(&verdict(Decision::Deny), None),
            Outcome::Denied { rule: "r1".into() }
        );
        let approved = Resolution::Approved {
            approver: "a".into(),
            scope: GrantScope::Session,
        };
        assert_eq!(
            outcome_of(&verdict(Decision::Ask), Some(&approved)),
            Outcome::AllowedFor(GrantScope::Session)
        );
        let timed_out = Resolution::TimedOut {
            decision: Decision::Ask,
        };
        assert_eq!(
            outcome_of(&verdict(Decision::Ask), Some(&timed_out)),
            Outcome::Denied { rule: "r1".into() },
            "an ask that times out into another ask must not let the action through"
        );
        let killed = Resolution::Killed {
            approver: "a".into(),
        };
        assert_eq!(
            outcome_of(&verdict(Decision::Freeze), Some(&killed)),
            Outcome::Killed { rule: "r1".into() }
        );
    }
}
