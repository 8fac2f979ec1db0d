//! The LSM restart hold, userspace side. The kernel stopped a task inside a
//! file or connect hook and made the syscall restartable; here policy (and,
//! for an ask, a person through the HoldBroker) decides, a grant keyed by
//! (session, op, object) is written, and the task is continued. The
//! restarted syscall finds the grant: 0 (allow) or EPERM (deny). A stray
//! SIGCONT finds no grant and stops again.

use std::{
    collections::HashSet,
    fs,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use guard_common::{EventKind, HeldTask};

use crate::{
    action::{Action, Endpoint},
    events::{KernelEvent, KernelVerdict},
    exec_stop::{ExecStop, process_state, still_held},
    holds::{GrantScope, HoldBroker, HoldRequest},
    kernel_backends::{ONCE_GRANT_TTL, Outcome, SessionDirectory, ask, outcome_of, signal},
    kernel_maps::KernelMaps,
    notice::tell,
};

/// A grant for the rest of the session: far enough to never expire first.
const SESSION_GRANT_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Decides held file and connect actions.
pub struct LsmBackend {
    tables: Arc<Mutex<KernelMaps>>,
    broker: Arc<HoldBroker>,
    sessions: Arc<dyn SessionDirectory>,
    /// (tid, op, object) of holds being decided: the event a stray SIGCONT
    /// causes for the same held syscall is not asked twice.
    deciding: Mutex<HashSet<(u32, u32, u64)>>,
}

impl LsmBackend {
    pub fn new(
        tables: Arc<Mutex<KernelMaps>>,
        broker: Arc<HoldBroker>,
        sessions: Arc<dyn SessionDirectory>,
    ) -> Arc<Self> {
        Arc::new(Self {
            tables,
            broker,
            sessions,
            deciding: Mutex::new(HashSet::new()),
        })
    }

    /// Starts deciding a held event on its own thread (a hold may wait
    /// minutes for a person).
    pub fn handle(self: &Arc<Self>, event: KernelEvent) {
        if event.verdict() != KernelVerdict::Stopped {
            return;
        }
        let key = (event.tid(), event.kind() as u32, object_id(&event));
        if !self.deciding.lock().expect("poisoned").insert(key) {
            return;
        }
        let this = self.clone();
        std::thread::spawn(move || {
            let outcome = this.decide(&event);
            log::debug!("held {:?}: {outcome:?}", event.action());
            this.deciding.lock().expect("poisoned").remove(&key);
        });
    }

    /// Decides one held event and applies the outcome (blocking).
    pub fn decide(&self, event: &KernelEvent) -> Outcome {
        let pid = event.pid();
        let session_id = event.cgroup_id();
        let Some(mut action) = event.action() else {
            return Outcome::Gone;
        };
        if let KernelEvent::Connect { relative: true, .. } = event {
            action = resolve_relative_unix(pid, action);
        }
        let Some((session, policy)) = self.sessions.lookup(session_id) else {
            // A session nobody owns any more: refuse rather than guess.
            self.apply(
                event,
                &Outcome::Denied {
                    rule: "session.unknown".into(),
                },
                &action,
            );
            return Outcome::Denied {
                rule: "session.unknown".into(),
            };
        };
        let mut verdict = match event {
            // The kernel counted the policy's rate rule and says how it stands.
            KernelEvent::File {
                rate: Some(spent), ..
            } => policy.evaluate_from_kernel(&action, *spent),
            _ => policy.evaluate(&action),
        };
        if let KernelEvent::File {
            truncated: true, ..
        } = event
            && !verdict.decision.holds()
            && verdict.decision != crate::decision::Decision::Deny
            && verdict.decision != crate::decision::Decision::Kill
        {
            // Policy judged a cut path; the real one may be anywhere.
            verdict.decision = crate::decision::Decision::Ask;
            verdict.reason = format!("path too long to resolve in full: {}", verdict.reason);
        }
        let resolution = verdict.decision.holds().then(|| {
            ask(
                &self.broker,
                self.sessions.as_ref(),
                session_id,
                &policy,
                HoldRequest {
                    session,
                    pid,
                    action: action.clone(),
                    verdict: verdict.clone(),
                    backend: "lsm",
                },
            )
        });
        let outcome = outcome_of(&verdict, resolution.as_ref());
        self.apply(event, &outcome, &action);
        outcome
    }

    fn apply(&self, event: &KernelEvent, outcome: &Outcome, action: &Action) {
        let pid = event.pid();
        let grant = |allow: bool, once: bool, ttl: Duration| {
            let mut tables = self.tables.lock().expect("kernel tables poisoned");
            if let Err(e) = tables.grant(
                event.cgroup_id(),
                event.kind(),
                object_id(event),
                allow,
                once,
                ttl,
            ) {
                log::error!("writing grant for pid {pid}: {e:#}");
            }
            tables.forget_held(event.tid());
        };
        match outcome {
            Outcome::Allowed => grant(true, true, ONCE_GRANT_TTL),
            Outcome::AllowedFor(GrantScope::Once) => grant(true, true, ONCE_GRANT_TTL),
            Outcome::AllowedFor(GrantScope::Session) => grant(true, false, SESSION_GRANT_TTL),
            Outcome::AllowedFor(GrantScope::For(d)) => grant(true, false, *d),
            Outcome::Denied { rule } => {
                grant(false, true, ONCE_GRANT_TTL);
                tell(pid, &format!("guard: denied {action} (rule {rule})"));
            }
            Outcome::Killed { rule } => {
                tell(pid, &format!("guard: killed {action} (rule {rule})"));
                signal(pid, libc::SIGKILL);
                self.tables
                    .lock()
                    .expect("kernel tables poisoned")
                    .forget_held(event.tid());
                return;
            }
            Outcome::Gone => return,
        }
        // The restarted syscall reads the grant.
        signal(pid, libc::SIGCONT);
    }

    /// After a daemon restart: picks up tasks the kernel still holds. File
    /// and connect holds are continued once, which re-runs the hook: with no
    /// grant it stops the task again and sends a fresh event to this daemon.
    /// Stopped execs are decided again from /proc. Entries of vanished tasks
    /// are dropped. Returns the held tasks found.
    pub fn recover(&self, exec: &Arc<ExecStop>) -> Vec<(u32, HeldTask)> {
        let held = self.tables.lock().expect("kernel tables poisoned").held();
        for &(tid, task) in &held {
            let gone = process_state(task.pid).is_none();
            let exec_decided = task.kind == EventKind::Exec as u32 && !still_held(task.pid);
            if gone || exec_decided {
                self.tables
                    .lock()
                    .expect("kernel tables poisoned")
                    .forget_held(tid);
                continue;
            }
            if task.kind == EventKind::Exec as u32 {
                let exe = fs::read_link(format!("/proc/{}/exe", task.pid)).unwrap_or_default();
                let filename = script_path(task.pid).unwrap_or(exe);
                let (pid, session, exec) = (task.pid, task.session, exec.clone());
                std::thread::spawn(move || exec.decide(pid, session, &filename));
            } else {
                signal(task.pid, libc::SIGCONT);
            }
        }
        held
    }
}

fn object_id(event: &KernelEvent) -> u64 {
    match event {
        KernelEvent::File { object_id, .. } | KernelEvent::Connect { object_id, .. } => *object_id,
        KernelEvent::Exec { .. } => 0,
    }
}

/// For a script stopped at exec, the script path is argv[1] (or argv[2]).
fn script_path(pid: u32) -> Option<PathBuf> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    use std::os::unix::ffi::OsStrExt as _;
    args.iter()
        .skip(1)
        .take(2)
        .find(|a| a.starts_with(b"/"))
        .map(|a| PathBuf::from(std::ffi::OsStr::from_bytes(a)))
}

/// A relative unix socket path means the task's cwd: resolve it there
/// (stable while the task is stopped).
fn resolve_relative_unix(pid: u32, action: Action) -> Action {
    match action {
        Action::Connect {
            endpoint: Endpoint::Unix { path },
        } if path.is_relative() => {
            let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            Action::Connect {
                endpoint: Endpoint::Unix {
                    path: cwd.join(path),
                },
            }
        }
        other => other,
    }
}
