//! Holds: actions stopped in the kernel while a person decides.
//!
//! A backend (LSM restart hold, exec stop, seccomp notification) opens a hold
//! and blocks on it; the API (`guard approve` / `guard deny` / the terminal
//! prompt) resolves it; an unanswered hold resolves by the policy's timeout
//! decision. One broker per controller.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    action::Action,
    decision::{Decision, Verdict},
    grants::{GrantKey, GrantTable},
};

pub type HoldId = u64;

/// What a backend asks about.
#[derive(Debug, Clone, Serialize)]
pub struct HoldRequest {
    pub session: String,
    pub pid: u32,
    pub action: Action,
    pub verdict: Verdict,
    /// Which mechanism holds the process: "lsm", "exec-stop", "seccomp",
    /// "bounded" (the call already completed).
    pub backend: &'static str,
}

/// `HoldRequest` as it arrives over the API, with the backend as a string.
#[derive(Deserialize)]
struct HoldRequestWire {
    session: String,
    pid: u32,
    action: Action,
    verdict: Verdict,
    backend: String,
}

impl<'de> Deserialize<'de> for HoldRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = HoldRequestWire::deserialize(d)?;
        // Keep the known names; an unknown one is only a label, never trusted.
        let backend = match w.backend.as_str() {
            "lsm" => "lsm",
            "exec-stop" => "exec-stop",
            "seccomp" => "seccomp",
            "bounded" => "bounded",
            _ => "other",
        };
        Ok(Self {
            session: w.session,
            pid: w.pid,
            action: w.action,
            verdict: w.verdict,
            backend,
        })
    }
}

/// A pending hold as listed by `guard holds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    #[serde(flatten)]
    pub request: HoldRequest,
    /// When the action was stopped; RFC 3339 with milliseconds on the wire
    /// and in `guard holds --json`.
    #[serde(with = "rfc3339")]
    pub since: SystemTime,
}

/// `SystemTime` as an RFC 3339 string (`2026-11-21T15:27:04.123Z`).
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text)
            .map_err(|e| D::Error::custom(format!("since: {e}: {text:?} is not an RFC 3339 time")))
    }
}

/// How long an approval lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// This one action only.
    Once,
    /// The same action for the rest of the session.
    Session,
    /// The same action for this long. On the wire and in JSON output a
    /// duration as text, `{"for":"10m"}`; also read as whole seconds
    /// (`{"for":600}`) and as older builds wrote it (`{"secs":600,"nanos":0}`).
    For(#[serde(with = "scope_duration")] Duration),
}

mod scope_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Seconds(u64),
        Struct { secs: u64, nanos: u32 },
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Written::deserialize(d).map_err(|_| {
            D::Error::custom("a grant duration is text such as \"10m\" or a number of seconds")
        })? {
            Written::Text(text) => humantime::parse_duration(&text).map_err(|e| {
                D::Error::custom(format!(
                    "grant duration {text:?}: {e} (write it as 30s, 10m or 2h)"
                ))
            }),
            Written::Seconds(secs) => Ok(Duration::from_secs(secs)),
            Written::Struct { secs, nanos } => Ok(Duration::new(secs, nanos)),
        }
    }
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
    /// Opened but not yet seen by every observer: not listed, so nobody can
    /// act on a hold whose audit record has not been written yet.
    announcing: BTreeSet<HoldId>,
    resolved: BTreeMap<HoldId, (Hold, Resolution)>,
}

/// How one ask ended, as observers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The hold; id 0 when a standing grant answered without opening one.
    pub hold: Hold,
    pub resolution: Resolution,
    pub waited: Duration,
    /// A standing grant (`--for session|DURATION`) let it through.
    pub by_grant: bool,
}

impl Outcome {
    /// An approval given earlier (a grant or a cover) answered at once: no
    /// hold was opened (id 0).
    fn granted(
        request: HoldRequest,
        approver: String,
        scope: GrantScope,
        waited: Duration,
    ) -> Self {
        Self {
            hold: Hold {
                id: 0,
                request,
                since: SystemTime::now(),
            },
            resolution: Resolution::Approved { approver, scope },
            waited,
            by_grant: true,
        }
    }
}

/// Told about every hold and decision (audit log, `guard events`, the terminal
/// prompt, the session summary). Called outside the broker's lock.
pub trait HoldObserver: Send + Sync {
    fn opened(&self, _hold: &Hold) {}
    fn closed(&self, _outcome: &Outcome) {}
    /// A decision the backend applied without a hold (allow+log, deny, kill).
    fn reported(&self, _request: &HoldRequest) {}
}

/// Where asks go when another process owns the decisions (a running `guard
/// daemon`): the daemon keeps holds, grants and the audit log.
pub trait HoldUpstream: Send + Sync {
    /// Blocks until the daemon resolves the ask; `opened` is called with the
    /// daemon's hold as soon as it exists.
    fn ask(
        &self,
        request: &HoldRequest,
        timeout: Duration,
        on_timeout: Decision,
        opened: &dyn Fn(&Hold),
    ) -> Outcome;
    fn report(&self, request: &HoldRequest);
}

/// How long an approved command's cover lasts (see [`Cover`]).
pub const COVER_TTL: Duration = Duration::from_secs(600);

/// What a person's approval of a command covers, for that process and its
/// descendants, for [`COVER_TTL`]: the file actions on the paths the command
/// names (and below them), and the execs of the programs its command line
/// starts with exactly the arguments it gives them. `rm terraform.tfstate`
/// approved at exec is not asked about again at its unlink, nor `terraform
/// destroy` after `sh -c "terraform destroy"` was approved. Rules that deny
/// or kill still apply.
#[derive(Debug, Clone)]
pub struct Cover {
    pub session: String,
    /// The approved process.
    pub pid: u32,
    pub paths: Vec<PathBuf>,
    /// Program base names and their arguments, as the approved command line
    /// starts them (not the approved program itself).
    pub commands: Vec<(String, Vec<String>)>,
    /// Who approved, what, and the hold's id: the audit record's approver.
    pub approver: String,
    pub until: Instant,
}

impl Cover {
    fn covers(&self, request: &HoldRequest) -> bool {
        let under = |p: &std::path::Path| self.paths.iter().any(|c| p.starts_with(c));
        let paths_covered = match &request.action {
            Action::Unlink { path }
            | Action::Rmdir { path }
            | Action::Truncate { path }
            | Action::OpenWrite { path } => under(path),
            Action::Rename { from, to } => under(from) && under(to),
            Action::Exec { filename, argv, .. } => {
                let first = argv
                    .first()
                    .map_or_else(|| filename.to_string_lossy(), |a| a.to_string_lossy());
                let program = crate::policy::exec::program_name(&first);
                let args: Vec<String> = argv
                    .iter()
                    .skip(1)
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                self.commands
                    .iter()
                    .any(|(p, a)| *p == program && *a == args)
            }
            Action::Connect { .. } => false,
        };
        paths_covered
            && request.session == self.session
            && matches!(request.verdict.decision, Decision::Ask | Decision::Freeze)
            && (request.pid == self.pid
                || crate::ancestry::of(request.pid)
                    .chain
                    .iter()
                    .any(|link| link.pid == self.pid))
    }
}

/// The set of pending holds, shared by backends and the API.
#[derive(Default)]
pub struct HoldBroker {
    covers: Mutex<Vec<Cover>>,
    state: Mutex<State>,
    changed: Condvar,
    grants: GrantTable,
    observers: Mutex<Vec<Arc<dyn HoldObserver>>>,
    upstream: Mutex<Option<Arc<dyn HoldUpstream>>>,
}

impl HoldBroker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds an observer of every hold and decision.
    pub fn observe(&self, observer: Arc<dyn HoldObserver>) {
        self.observers
            .lock()
            .expect("hold broker poisoned")
            .push(observer);
    }

    /// Sends every ask to `upstream` (a daemon) instead of deciding here.
    pub fn set_upstream(&self, upstream: Arc<dyn HoldUpstream>) {
        *self.upstream.lock().expect("hold broker poisoned") = Some(upstream);
    }

    pub fn grants(&self) -> &GrantTable {
        &self.grants
    }

    fn observers(&self) -> Vec<Arc<dyn HoldObserver>> {
        self.observers.lock().expect("hold broker poisoned").clone()
    }

    /// Registers a hold and returns its id; the caller then `wait`s on it.
    pub fn open(&self, request: HoldRequest) -> HoldId {
        self.open_held(request, Duration::ZERO).id
    }

    /// `open` for an action that has been held for `held` already.
    fn open_held(&self, request: HoldRequest, held: Duration) -> Hold {
        let now = SystemTime::now();
        let hold = {
            let mut state = self.state.lock().expect("hold broker poisoned");
            state.next_id += 1;
            let id = state.next_id;
            let hold = Hold {
                id,
                request,
                since: now.checked_sub(held).unwrap_or(now),
            };
            state.pending.insert(id, hold.clone());
            state.announcing.insert(id);
            hold
        };
        for observer in self.observers() {
            observer.opened(&hold);
        }
        let mut state = self.state.lock().expect("hold broker poisoned");
        state.announcing.remove(&hold.id);
        self.changed.notify_all();
        hold
    }

    /// Blocks until the hold is resolved or `timeout` passes; a timeout
    /// resolves the hold with `on_timeout`.
    pub fn wait(&self, id: HoldId, timeout: Duration, on_timeout: Decision) -> Resolution {
        self.wait_hold(id, timeout, on_timeout)
            .map(|(_, r)| r)
            .unwrap_or(Resolution::TimedOut {
                decision: on_timeout,
            })
    }

    fn wait_hold(
        &self,
        id: HoldId,
        timeout: Duration,
        on_timeout: Decision,
    ) -> Option<(Hold, Resolution)> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("hold broker poisoned");
        loop {
            if let Some(done) = state.resolved.remove(&id) {
                return Some(done);
            }
            let now = Instant::now();
            if now >= deadline {
                let hold = state.pending.remove(&id)?;
                self.changed.notify_all();
                return Some((
                    hold,
                    Resolution::TimedOut {
                        decision: on_timeout,
                    },
                ));
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
        self.ask_outcome(request, timeout, on_timeout).resolution
    }

    /// Lets the file actions an approved command names through without
    /// asking again (see [`Cover`]).
    pub fn cover(&self, cover: Cover) {
        self.live_covers().push(cover);
    }

    /// The approval that already covers `request`, if one does.
    fn covered(&self, request: &HoldRequest) -> Option<Cover> {
        self.live_covers()
            .iter()
            .find(|c| c.covers(request))
            .cloned()
    }

    /// The covers, expired ones dropped.
    fn live_covers(&self) -> std::sync::MutexGuard<'_, Vec<Cover>> {
        let mut covers = self.covers.lock().expect("hold broker poisoned");
        let now = Instant::now();
        covers.retain(|c| c.until > now);
        covers
    }

    /// `ask`, returning the whole outcome (the daemon answers remote asks with it).
    pub fn ask_outcome(
        &self,
        request: HoldRequest,
        timeout: Duration,
        on_timeout: Decision,
    ) -> Outcome {
        let upstream = self.upstream.lock().expect("hold broker poisoned").clone();
        let outcome = if let Some(cover) = self.covered(&request) {
            if let Some(upstream) = &upstream {
                // The daemon keeps the audit log: it records the covered action.
                let mut allowed = request.clone();
                allowed.verdict.decision = Decision::Allow;
                allowed.verdict.reason = format!(
                    "{}; covered by the approval {}",
                    request.verdict.reason, cover.approver
                );
                upstream.report(&allowed);
            }
            Outcome::granted(request, cover.approver, GrantScope::Once, Duration::ZERO)
        } else {
            match upstream {
                Some(upstream) => upstream.ask(&request, timeout, on_timeout, &|hold| {
                    for observer in self.observers() {
                        observer.opened(hold);
                    }
                }),
                None => self.decide_here(request, timeout, on_timeout, Duration::ZERO, &|_| {}),
            }
        };
        for observer in self.observers() {
            observer.closed(&outcome);
        }
        outcome
    }

    /// `ask` for a remote caller (the daemon serving a session's `ask` op):
    /// `opened` hears the hold as soon as it exists. `held` is how long the
    /// session has held the action already (it asked a daemon that died), so
    /// the hold's `since` and the outcome's `waited` count from the start.
    pub fn ask_streaming(
        &self,
        request: HoldRequest,
        timeout: Duration,
        on_timeout: Decision,
        held: Duration,
        opened: &dyn Fn(&Hold),
    ) -> Outcome {
        let outcome = self.decide_here(request, timeout, on_timeout, held, opened);
        for observer in self.observers() {
            observer.closed(&outcome);
        }
        outcome
    }

    fn decide_here(
        &self,
        request: HoldRequest,
        timeout: Duration,
        on_timeout: Decision,
        held: Duration,
        opened: &dyn Fn(&Hold),
    ) -> Outcome {
        let key = GrantKey::of(&request.session, &request.action);
        if let Some(grant) = self.grants.take(&key) {
            return Outcome::granted(request, grant.approver, grant.scope, held);
        }
        let started = Instant::now();
        let hold = self.open_held(request.clone(), held);
        let id = hold.id;
        if self.is_pending(id) {
            opened(&hold);
        }
        let (hold, resolution) = self.wait_hold(id, timeout, on_timeout).unwrap_or_else(|| {
            (
                Hold {
                    id,
                    request,
                    since: SystemTime::now(),
                },
                Resolution::TimedOut {
                    decision: on_timeout,
                },
            )
        });
        if let Resolution::Approved { approver, scope } = &resolution
            && *scope != GrantScope::Once
        {
            self.grants.add(key, *scope, approver);
        }
        Outcome {
            hold,
            resolution,
            waited: held + started.elapsed(),
            by_grant: false,
        }
    }

    /// What a backend calls after applying a decision that needed no hold
    /// (log, deny, kill), so it reaches the audit log and `guard events`.
    pub fn report(&self, request: HoldRequest) {
        let upstream = self.upstream.lock().expect("hold broker poisoned").clone();
        if let Some(upstream) = upstream {
            upstream.report(&request);
        }
        for observer in self.observers() {
            observer.reported(&request);
        }
    }

    /// Resolves a pending hold (from the API or the terminal prompt).
    pub fn resolve(&self, id: HoldId, resolution: Resolution) -> Result<Hold, HoldError> {
        let mut state = self.state.lock().expect("hold broker poisoned");
        let hold = state.pending.remove(&id).ok_or(HoldError::NotPending(id))?;
        state.resolved.insert(id, (hold.clone(), resolution));
        self.changed.notify_all();
        Ok(hold)
    }

    /// Resolves every pending hold of a session (`guard kill`, session end).
    pub fn resolve_session(&self, session: &str, resolution: Resolution) -> Vec<Hold> {
        let mut state = self.state.lock().expect("hold broker poisoned");
        let ids: Vec<HoldId> = state
            .pending
            .values()
            .filter(|h| h.request.session == session)
            .map(|h| h.id)
            .collect();
        let mut holds = Vec::new();
        for id in ids {
            if let Some(hold) = state.pending.remove(&id) {
                state
                    .resolved
                    .insert(id, (hold.clone(), resolution.clone()));
                holds.push(hold);
            }
        }
        self.changed.notify_all();
        holds
    }

    /// Whether `id` is still waiting for a decision.
    pub fn is_pending(&self, id: HoldId) -> bool {
        self.state
            .lock()
            .expect("hold broker poisoned")
            .pending
            .contains_key(&id)
    }

    /// Pending holds, oldest first; a hold appears once every observer
    /// (the audit log among them) has recorded it.
    pub fn pending(&self) -> Vec<Hold> {
        let state = self.state.lock().expect("hold broker poisoned");
        state
            .pending
            .values()
            .filter(|h| !state.announcing.contains(&h.id))
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
    fn a_timed_grant_is_written_as_text_and_read_in_every_form() {
        let ten = GrantScope::For(Duration::from_secs(600));
        assert_eq!(serde_json::to_string(&ten).unwrap(), r#"{"for":"10m"}"#);
        for written in [
            r#"{"for":"10m"}"#,
            r#"{"for":600}"#,
            r#"{"for":{"secs":600,"nanos":0}}"#,
        ] {
            assert_eq!(
                serde_json::from_str::<GrantScope>(written).unwrap(),
                ten,
                "{written}"
            );
        }
        assert_eq!(
            serde_json::from_str::<GrantScope>(r#""session""#).unwrap(),
            GrantScope::Session
        );
        let bad = serde_json::from_str::<GrantScope>(r#"{"for":"soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("30s, 10m or 2h"), "{bad}");
        assert!(serde_json::from_str::<GrantScope>(r#"{"for":-1}"#).is_err());
    }

    /// Sees what `guard holds` would list while the audit record is written.
    struct Peek(std::sync::Weak<HoldBroker>, Mutex<Vec<usize>>);

    impl HoldObserver for Peek {
        fn opened(&self, _hold: &Hold) {
            let listed = self.0.upgrade().map_or(0, |b| b.pending().len());
            self.1.lock().unwrap().push(listed);
        }
    }

    #[test]
    fn an_approved_command_covers_its_own_file_actions_only() {
        let broker = HoldBroker::new();
        broker.cover(Cover {
            session: "s1".into(),
            pid: std::process::id(),
            paths: vec![PathBuf::from("/prod")],
            commands: vec![("terraform".into(), vec!["destroy".into()])],
            approver: "alice (approved `rm -r /prod` at exec)".into(),
            until: Instant::now() + COVER_TTL,
        });
        let short = Duration::from_millis(50);
        // This process and a child of it: covered, no hold.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        for pid in [std::process::id(), child.id()] {
            let mut r = request();
            r.pid = pid;
            let outcome = broker.ask_outcome(r, short, Decision::Deny);
            assert!(outcome.by_grant, "{outcome:?}");
            assert!(
                matches!(&outcome.resolution, Resolution::Approved { approver, .. } if approver.starts_with("alice")),
                "{outcome:?}"
            );
        }
        // The program the approved command line starts, with its arguments.
        let exec = |argv: &[&str]| {
            let mut r = request();
            r.pid = child.id();
            r.action = Action::Exec {
                filename: PathBuf::from("/w/bin/terraform"),
                argv: argv.iter().map(std::ffi::OsString::from).collect(),
                cwd: PathBuf::from("/w"),
            };
            r
        };
        let outcome = broker.ask_outcome(
            exec(&["/w/bin/terraform", "destroy"]),
            short,
            Decision::Deny,
        );
        assert!(outcome.by_grant, "{outcome:?}");
        let outcome = broker.ask_outcome(
            exec(&["terraform", "destroy", "-auto-approve"]),
            short,
            Decision::Deny,
        );
        assert!(
            matches!(outcome.resolution, Resolution::TimedOut { .. }),
            "other arguments are asked about: {outcome:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
        // Another process, another path, another session: asked as usual.
        let mut other_pid = request();
        other_pid.pid = 1;
        let mut other_path = request();
        other_path.action = Action::Unlink {
            path: PathBuf::from("/prodx/db"),
        };
        let mut other_session = request();
        other_session.session = "s2".into();
        for r in [other_pid, other_path, other_session] {
            let outcome = broker.ask_outcome(r, short, Decision::Deny);
            assert!(
                matches!(outcome.resolution, Resolution::TimedOut { .. }),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn since_is_an_rfc3339_time_on_the_wire() {
        let hold = Hold {
            id: 3,
            request: request(),
            since: std::time::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        };
        let json = serde_json::to_value(&hold).unwrap();
        assert_eq!(json["since"], "2026-11-18T11:06:40.123Z");
        let back: Hold = serde_json::from_value(json).unwrap();
        assert_eq!(back.since, hold.since);
        let bad = serde_json::json!({"id": 1, "session": "s", "pid": 1,
            "action": {"unlink": {"path": "/x"}}, "verdict": hold.request.verdict,
            "backend": "lsm", "since": "yesterday"});
        let err = serde_json::from_value::<Hold>(bad).unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn a_hold_is_listed_only_after_every_observer_recorded_it() {
        let broker = HoldBroker::new();
        let peek = Arc::new(Peek(Arc::downgrade(&broker), Mutex::default()));
        broker.observe(peek.clone());
        let id = broker.open(request());
        assert_eq!(
            *peek.1.lock().unwrap(),
            [0],
            "listed before it was recorded"
        );
        assert!(broker.is_pending(id));
        assert_eq!(broker.pending().len(), 1);
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

    #[test]
    fn an_ask_held_before_a_restart_keeps_its_age() {
        let broker = HoldBroker::new();
        let held = Duration::from_secs(90);
        let b = broker.clone();
        let denier = std::thread::spawn(move || {
            let mut holds = b.pending();
            while holds.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
                holds = b.pending();
            }
            let age = holds[0].since.elapsed().unwrap();
            b.resolve(
                holds[0].id,
                Resolution::Denied {
                    approver: "bob".into(),
                },
            )
            .unwrap();
            age
        });
        let outcome = broker.ask_streaming(
            request(),
            Duration::from_secs(5),
            Decision::Deny,
            held,
            &|_| {},
        );
        let age = denier.join().unwrap();
        assert!(age >= held, "the hold is listed as {age:?} old");
        assert!(outcome.waited >= held, "{outcome:?}");
        assert!(
            outcome.waited < held + Duration::from_secs(5),
            "{outcome:?}"
        );
    }
}
