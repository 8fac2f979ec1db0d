//! The controller: the one owner of holds, grants, the audit log, the session
//! registry and the event stream. `guard daemon` runs one for the host; a
//! `guard session` with no daemon embeds one for itself. The socket API
//! (`api::server`) is a thin layer over `Controller::handle`.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, Weak, mpsc},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    api::{
        peer::Peer,
        wire::{ApiError, Counts, ErrorCode, Op, SessionInfo},
    },
    audit::{AuditLog, AuditRecord},
    cgroup::Cgroup,
    holds::{GrantScope, Hold, HoldBroker, HoldId, HoldObserver, HoldRequest, Outcome, Resolution},
    users,
};

/// Events kept for `guard events` without `--follow`.
const RECENT_EVENTS: usize = 1000;

/// Something that happened, as `guard events` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControlEvent {
    SessionStarted {
        time: String,
        session: SessionInfo,
    },
    SessionEnded {
        time: String,
        session: String,
    },
    HoldOpened {
        time: String,
        hold: Hold,
    },
    /// Every decision, exactly as written to the audit log.
    Decision {
        record: AuditRecord,
    },
}

/// A registered session and its tallies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionEntry {
    #[serde(flatten)]
    pub info: SessionInfo,
    pub counts: Counts,
}

#[derive(Default)]
struct EventBus {
    recent: VecDeque<ControlEvent>,
    followers: Vec<mpsc::Sender<ControlEvent>>,
}

pub struct Controller {
    broker: Arc<HoldBroker>,
    audit: Option<AuditLog>,
    sessions: Mutex<BTreeMap<String, SessionEntry>>,
    events: Mutex<EventBus>,
}

/// Observes the broker without keeping the controller alive.
struct BrokerLink(Weak<Controller>);

impl HoldObserver for BrokerLink {
    fn opened(&self, hold: &Hold) {
        if let Some(c) = self.0.upgrade() {
            c.on_opened(hold);
        }
    }
    fn closed(&self, outcome: &Outcome) {
        if let Some(c) = self.0.upgrade() {
            c.on_closed(outcome);
        }
    }
    fn reported(&self, request: &HoldRequest) {
        if let Some(c) = self.0.upgrade() {
            c.on_reported(request);
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn refused(message: String) -> ApiError {
    ApiError::new(ErrorCode::Refused, message)
}

impl Controller {
    /// A controller deciding with `broker` and writing decisions to `audit`.
    pub fn new(broker: Arc<HoldBroker>, audit: Option<AuditLog>) -> Arc<Self> {
        let controller = Arc::new(Self {
            broker,
            audit,
            sessions: Mutex::new(BTreeMap::new()),
            events: Mutex::new(EventBus::default()),
        });
        controller
            .broker
            .observe(Arc::new(BrokerLink(Arc::downgrade(&controller))));
        controller
    }

    pub fn broker(&self) -> &Arc<HoldBroker> {
        &self.broker
    }

    pub fn audit_path(&self) -> Option<&std::path::Path> {
        self.audit.as_ref().map(|a| a.path())
    }

    fn publish(&self, event: ControlEvent) {
        let mut bus = self.events.lock().expect("event bus poisoned");
        if bus.recent.len() == RECENT_EVENTS {
            bus.recent.pop_front();
        }
        bus.recent.push_back(event.clone());
        bus.followers.retain(|f| f.send(event.clone()).is_ok());
    }

    /// Recent events, then every new one on the receiver.
    pub fn subscribe(&self) -> (Vec<ControlEvent>, mpsc::Receiver<ControlEvent>) {
        let (tx, rx) = mpsc::channel();
        let mut bus = self.events.lock().expect("event bus poisoned");
        bus.followers.push(tx);
        (bus.recent.iter().cloned().collect(), rx)
    }

    pub fn recent_events(&self) -> Vec<ControlEvent> {
        let bus = self.events.lock().expect("event bus poisoned");
        bus.recent.iter().cloned().collect()
    }

    fn count(&self, session: &str, f: impl FnOnce(&mut Counts)) {
        if let Some(entry) = self
            .sessions
            .lock()
            .expect("session registry poisoned")
            .get_mut(session)
        {
            f(&mut entry.counts);
        }
    }

    fn write_audit(&self, record: &AuditRecord) {
        if let Some(audit) = &self.audit
            && let Err(e) = audit.append(record)
        {
            // Nowhere better to say it: the decision itself already happened.
            log::error!("guard: audit record lost: {e:#}");
            eprintln!("guard: audit record lost: {e:#}");
        }
    }

    fn on_opened(&self, hold: &Hold) {
        self.count(&hold.request.session, |c| c.held += 1);
        self.write_audit(&AuditRecord::opened(hold));
        self.publish(ControlEvent::HoldOpened {
            time: now(),
            hold: hold.clone(),
        });
    }

    fn on_closed(&self, outcome: &Outcome) {
        self.count(&outcome.hold.request.session, |c| {
            tally(c, outcome);
        });
        let record = AuditRecord::closed(outcome);
        self.write_audit(&record);
        self.publish(ControlEvent::Decision { record });
    }

    fn on_reported(&self, request: &HoldRequest) {
        self.count(&request.session, |c| {
            c.seen += 1;
            match request.verdict.decision {
                crate::decision::Decision::Deny => c.denied += 1,
                crate::decision::Decision::Kill => c.killed += 1,
                _ => {}
            }
        });
        let record = AuditRecord::reported(request);
        self.write_audit(&record);
        self.publish(ControlEvent::Decision { record });
    }

    /// Adds a session, or updates one registered by the same supervisor
    /// (its agent pid once spawned, or again after a daemon restart).
    pub fn register(&self, info: SessionInfo) -> Result<(), ApiError> {
        let mut sessions = self.sessions.lock().expect("session registry poisoned");
        if let Some(entry) = sessions.get_mut(&info.name)
            && entry.info.supervisor_pid == info.supervisor_pid
        {
            entry.info = info;
            return Ok(());
        }
        if sessions.contains_key(&info.name) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "a session named {:?} is already registered; pick another --name",
                    info.name
                ),
            ));
        }
        sessions.insert(
            info.name.clone(),
            SessionEntry {
                info: info.clone(),
                counts: Counts::default(),
            },
        );
        drop(sessions);
        self.publish(ControlEvent::SessionStarted {
            time: now(),
            session: info,
        });
        Ok(())
    }

    /// Forgets a session: its holds end as killed (nothing is left to resume)
    /// and its grants lapse.
    pub fn unregister(&self, name: &str) -> Option<SessionEntry> {
        let entry = self
            .sessions
            .lock()
            .expect("session registry poisoned")
            .remove(name)?;
        self.broker.resolve_session(
            name,
            Resolution::Killed {
                approver: "guard (session ended)".into(),
            },
        );
        self.broker.grants().end_session(name);
        self.publish(ControlEvent::SessionEnded {
            time: now(),
            session: name.to_owned(),
        });
        Some(entry)
    }

    /// Unregisters sessions whose `guard session` supervisor died without
    /// saying so (crash, SIGKILL), so their holds and grants do not linger.
    pub fn reap_dead_sessions(&self) -> Vec<String> {
        let dead: Vec<String> = self
            .sessions()
            .into_iter()
            .filter(|s| {
                s.info.supervisor_pid != 0
                    && !std::path::Path::new(&format!("/proc/{}", s.info.supervisor_pid)).exists()
            })
            .map(|s| s.info.name)
            .collect();
        for name in &dead {
            log::warn!("session {name}: its guard session process is gone; unregistering");
            self.unregister(name);
        }
        dead
    }

    pub fn sessions(&self) -> Vec<SessionEntry> {
        self.sessions
            .lock()
            .expect("session registry poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn session(&self, name: &str) -> Option<SessionEntry> {
        self.sessions
            .lock()
            .expect("session registry poisoned")
            .get(name)
            .cloned()
    }

    /// Whether `peer` may decide for `session`: root, or the session's own
    /// user (the agent runs as that user too, but the cgroup check has already
    /// refused every process inside a session).
    fn may_decide(&self, peer: &Peer, session: &str) -> Result<(), ApiError> {
        if peer.uid == 0 {
            return Ok(());
        }
        match self.session(session) {
            Some(entry) if entry.info.uid == peer.uid => Ok(()),
            _ => Err(refused(format!(
                "refused: uid {} may not decide for session {session:?}; run as root or as the \
                 session's user",
                peer.uid
            ))),
        }
    }

    fn pending_hold(&self, id: HoldId) -> Result<Hold, ApiError> {
        self.broker
            .pending()
            .into_iter()
            .find(|h| h.id == id)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "no pending hold {id} (already decided, timed out, or never existed); \
                         see `guard holds`"
                    ),
                )
            })
    }

    fn approver(peer: &Peer) -> String {
        format!(
            "{} (uid {}, pid {})",
            users::name_of(peer.uid),
            peer.uid,
            peer.pid
        )
    }

    pub fn approve(&self, id: HoldId, scope: GrantScope, peer: &Peer) -> Result<Hold, ApiError> {
        let hold = self.pending_hold(id)?;
        self.may_decide(peer, &hold.request.session)?;
        self.resolve(
            id,
            Resolution::Approved {
                approver: Self::approver(peer),
                scope,
            },
        )
    }

    pub fn deny(&self, id: HoldId, peer: &Peer) -> Result<Hold, ApiError> {
        let hold = self.pending_hold(id)?;
        self.may_decide(peer, &hold.request.session)?;
        self.resolve(
            id,
            Resolution::Denied {
                approver: Self::approver(peer),
            },
        )
    }

    fn resolve(&self, id: HoldId, resolution: Resolution) -> Result<Hold, ApiError> {
        self.broker
            .resolve(id, resolution)
            .map_err(|e| ApiError::new(ErrorCode::NotFound, e.to_string()))
    }

    /// SIGKILLs the whole session cgroup and ends its holds as killed.
    pub fn kill(&self, session: &str, peer: &Peer) -> Result<Vec<Hold>, ApiError> {
        let Some(entry) = self.session(session) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no session named {session:?}; see `guard sessions`"),
            ));
        };
        self.may_decide(peer, session)?;
        Cgroup::open(&entry.info.cgroup).kill().map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("killing session {session:?}: {e:#}"),
            )
        })?;
        Ok(self.broker.resolve_session(
            session,
            Resolution::Killed {
                approver: Self::approver(peer),
            },
        ))
    }

    /// Answers every single-response op. `ask` and `events` with `follow`
    /// stream and are served by `api::server` directly.
    pub fn handle(&self, op: Op, peer: &Peer) -> Result<Value, ApiError> {
        if op.mutates()
            && let Some(why) = peer.session_refusal()
        {
            return Err(refused(why));
        }
        if op.from_session_supervisor() && peer.uid != 0 {
            return Err(refused(format!(
                "refused: only root (a `guard session` supervisor) may send this op; peer uid is {}",
                peer.uid
            )));
        }
        match op {
            Op::Ping => Ok(json!({"pong": true, "version": env!("CARGO_PKG_VERSION")})),
            Op::Holds => Ok(to_value(&self.broker.pending())),
            Op::Approve { id, scope } => self.approve(id, scope, peer).map(|h| to_value(&h)),
            Op::Deny { id } => self.deny(id, peer).map(|h| to_value(&h)),
            Op::Kill { session } => self.kill(&session, peer).map(|h| to_value(&h)),
            Op::Sessions => Ok(to_value(&self.sessions())),
            Op::Grants => Ok(to_value(&self.broker.grants().list())),
            Op::Events { follow: false } => Ok(to_value(&self.recent_events())),
            Op::Register { session } => {
                self.register(session).map(|()| json!({"registered": true}))
            }
            Op::Unregister { session } => match self.unregister(&session) {
                Some(entry) => Ok(to_value(&entry)),
                None => Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no session named {session:?}"),
                )),
            },
            Op::Report { request } => {
                self.broker.report(request);
                Ok(json!({"recorded": true}))
            }
            Op::Events { follow: true } | Op::Ask { .. } => Err(ApiError::new(
                ErrorCode::Internal,
                "streaming op reached the single-response handler",
            )),
        }
    }
}

/// Adds one outcome to a session's tallies.
pub fn tally(c: &mut Counts, outcome: &Outcome) {
    c.seen += 1;
    if outcome.by_grant {
        c.by_grant += 1;
        c.approved += 1;
        return;
    }
    match &outcome.resolution {
        Resolution::Approved { .. } => c.approved += 1,
        Resolution::Denied { .. } => c.denied += 1,
        Resolution::Killed { .. } => c.killed += 1,
        Resolution::TimedOut { decision } => {
            c.timed_out += 1;
            match decision {
                crate::decision::Decision::Kill => c.killed += 1,
                d if d.holds() || *d == crate::decision::Decision::Deny => c.denied += 1,
                _ => c.approved += 1,
            }
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// How long a remote ask may take beyond its own timeout before the
/// supervisor gives up on the daemon.
pub const ASK_GRACE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        action::Action,
        decision::{Decision, Verdict},
    };

    fn info(name: &str, supervisor: u32, uid: u32) -> SessionInfo {
        SessionInfo {
            name: name.into(),
            cgroup: "/nonexistent".into(),
            cgroup_id: 0,
            supervisor_pid: supervisor,
            agent_pid: 0,
            uid,
            command: vec![],
            started: String::new(),
            socket: None,
        }
    }

    fn peer(uid: u32) -> Peer {
        // A socketpair gives a real peer (this process); the uid is then set
        // to the one under test.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut p = Peer::of(&a).unwrap();
        p.uid = uid;
        p
    }

    fn request(session: &str) -> HoldRequest {
        HoldRequest {
            session: session.into(),
            pid: std::process::id(),
            action: Action::Unlink {
                path: PathBuf::from("/x"),
            },
            verdict: Verdict {
                decision: Decision::Ask,
                rule: "r".into(),
                reason: "why".into(),
            },
            backend: "seccomp",
        }
    }

    #[test]
    fn registration_updates_only_for_the_same_supervisor() {
        let c = Controller::new(HoldBroker::new(), None);
        c.register(info("s", 10, 0)).unwrap();
        let mut again = info("s", 10, 0);
        again.agent_pid = 42;
        c.register(again).unwrap();
        assert_eq!(c.session("s").unwrap().info.agent_pid, 42);
        let err = c.register(info("s", 11, 0)).unwrap_err();
        assert!(err.message.contains("--name"), "{err}");
        // One session_started event, not one per update.
        let started = c
            .recent_events()
            .iter()
            .filter(|e| matches!(e, ControlEvent::SessionStarted { .. }))
            .count();
        assert_eq!(started, 1);
    }

    #[test]
    fn only_root_or_the_sessions_user_decides() {
        let c = Controller::new(HoldBroker::new(), None);
        c.register(info("s", 10, 1000)).unwrap();
        let broker = c.broker().clone();
        let waiter = std::thread::spawn(move || {
            broker.ask(
                request("s"),
                std::time::Duration::from_secs(10),
                Decision::Deny,
            )
        });
        while c.broker().pending().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let id = c.broker().pending()[0].id;
        let refused = c.approve(id, GrantScope::Once, &peer(1001)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Refused);
        assert!(c.broker().is_pending(id));
        c.approve(id, GrantScope::Once, &peer(1000)).unwrap();
        assert!(matches!(
            waiter.join().unwrap(),
            Resolution::Approved { .. }
        ));
        assert_eq!(c.session("s").unwrap().counts.approved, 1);
        assert_eq!(c.session("s").unwrap().counts.held, 1);
    }

    #[test]
    fn supervisor_only_ops_need_root() {
        let c = Controller::new(HoldBroker::new(), None);
        let err = c
            .handle(
                Op::Register {
                    session: info("x", 1, 1000),
                },
                &peer(1000),
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Refused);
        assert!(c.sessions().is_empty());
    }

    #[test]
    fn a_dead_supervisor_is_reaped_and_its_holds_end() {
        let c = Controller::new(HoldBroker::new(), None);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        c.register(info("gone", dead, 0)).unwrap();
        c.register(info("alive", std::process::id(), 0)).unwrap();
        let broker = c.broker().clone();
        let waiter = std::thread::spawn(move || {
            broker.ask(
                request("gone"),
                std::time::Duration::from_secs(10),
                Decision::Deny,
            )
        });
        while c.broker().pending().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(c.reap_dead_sessions(), ["gone"]);
        assert!(matches!(waiter.join().unwrap(), Resolution::Killed { .. }));
        assert_eq!(c.sessions().len(), 1);
    }
}
