//! Holds: actions stopped in the kernel while a person decides.
//!
//! A backend (LSM restart hold, exec stop, seccomp notification) opens a hold
//! and blocks on it; the API (`guard approve` / `guard deny` / the terminal
//! prompt) resolves it; an unanswered hold resolves by the policy's timeout
//! decision. One broker per controller.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    action::Action,
    decision::{Decision, Verdict},
};

pub type HoldId = u64;

/// What a backend asks about.
#[derive(Debug, Clone, Serialize)]
pub struct HoldRequest {
    pub session: String,
    pub pid: u32,
    pub action: Action,
    pub verdict: Verdict,
    /// Which mechanism holds the process: "lsm", "exec-stop", "seccomp".
    pub backend: &'static str,
}

/// A pending hold as listed by `guard holds`.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub id: HoldId,
    #[serde(flatten)]
    pub request: HoldRequest,
    pub since: SystemTime,
}

/// How long an approval lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// This one action only.
    Once,
    /// The same action for the rest of the session.
    Session,
    /// The same action for this long.
    For(Duration),
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Resolution {
    Approved {
        approver: String,
        scope: GrantScope,
    },
    Denied {
        approver: String,
    },
    Killed {
        approver: String,
    },
    /// Nobody answered within the ask timeout; the policy's timeout decision applies.
    TimedOut {
        decision: Decision,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldError {
    #[error(
        "no pending hold {0} (already decided, timed out, or never existed); see `guard holds`"
    )]
    NotPending(HoldId),
}

#[derive(Default)]
struct State {
    next_id: HoldId,
    pending: BTreeMap<HoldId, Hold>,
    resolved: BTreeMap<HoldId, Resolution>,
}

/// The set of pending holds, shared by backends and the API.
#[derive(Default)]
pub struct HoldBroker {
    state: Mutex<State>,
    changed: Condvar,
}

impl HoldBroker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a hold and returns its id; the caller then `wait`s on it.
    pub fn open(&self, request: HoldRequest) -> HoldId {
        let mut state = self.state.lock().expect("hold broker poisoned");
        state.next_id += 1;
        let id = state.next_id;
        state.pending.insert(
            id,
            Hold {
                id,
                request,
                since: SystemTime::now(),
            },
        );
        self.changed.notify_all();
        id
    }

    /// Blocks until the hold is resolved or `timeout` passes; a timeout
    /// resolves the hold with `on_timeout`.
    pub fn wait(&self, id: HoldId, timeout: Duration, on_timeout: Decision) -> Resolution {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("hold broker poisoned");
        loop {
            if let Some(resolution) = state.resolved.remove(&id) {
                return resolution;
            }
            let now = Instant::now();
            if now >= deadline {
                state.pending.remove(&id);
                return Resolution::TimedOut {
                    decision: on_timeout,
                };
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .expect("hold broker poisoned")
                .0;
        }
    }

    /// What a backend calls: open a hold for `request` and block until it is
    /// resolved or times out. Grants and audit records are applied here, so
    /// backends never need to know about them.
    pub fn ask(&self, request: HoldRequest, timeout: Duration, on_timeout: Decision) -> Resolution {
        let id = self.open(request);
        self.wait(id, timeout, on_timeout)
    }

    /// Resolves a pending hold (from the API or the terminal prompt).
    pub fn resolve(&self, id: HoldId, resolution: Resolution) -> Result<Hold, HoldError> {
        let mut state = self.state.lock().expect("hold broker poisoned");
        let hold = state.pending.remove(&id).ok_or(HoldError::NotPending(id))?;
        state.resolved.insert(id, resolution);
        self.changed.notify_all();
        Ok(hold)
    }

    /// Pending holds, oldest first.
    pub fn pending(&self) -> Vec<Hold> {
        self.state
            .lock()
            .expect("hold broker poisoned")
            .pending
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn request() -> HoldRequest {
        HoldRequest {
            session: "s1".into(),
            pid: 1,
            action: Action::Unlink {
                path: PathBuf::from("/prod/db"),
            },
            verdict: Verdict {
                decision: Decision::Ask,
                rule: "file.protected".into(),
                reason: "protected".into(),
            },
            backend: "seccomp",
        }
    }

    #[test]
    fn approve_from_another_thread_wakes_the_waiter() {
        let broker = HoldBroker::new();
        let id = broker.open(request());
        assert_eq!(broker.pending().len(), 1);
        let b = broker.clone();
        let approver = std::thread::spawn(move || {
            b.resolve(
                id,
                Resolution::Approved {
                    approver: "alice".into(),
                    scope: GrantScope::Once,
                },
            )
            .unwrap()
        });
        let got = broker.wait(id, Duration::from_secs(5), Decision::Deny);
        approver.join().unwrap();
        assert_eq!(
            got,
            Resolution::Approved {
                approver: "alice".into(),
                scope: GrantScope::Once
            }
        );
        assert!(broker.pending().is_empty());
        assert_eq!(
            broker
                .resolve(
                    id,
                    Resolution::Denied {
                        approver: "bob".into()
                    }
                )
                .unwrap_err(),
            HoldError::NotPending(id)
        );
    }

    #[test]
    fn unanswered_hold_times_out_to_policy_decision() {
        let broker = HoldBroker::new();
        let id = broker.open(request());
        assert_eq!(
            broker.wait(id, Duration::from_millis(20), Decision::Deny),
            Resolution::TimedOut {
                decision: Decision::Deny
            }
        );
        assert!(
            broker.pending().is_empty(),
            "a timed-out hold must not stay listed"
        );
    }
}
