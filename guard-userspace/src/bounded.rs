//! Bounded mode: for processes guard watches but did not launch, on a kernel
//! without BPF LSM. The raw tracepoint in guard-ebpf/src/bounded.rs stops a
//! bounded session's process at a watched syscall; SIGSTOP lands when the call
//! returns, so **the first call completes** and the process stops before the
//! next one. guard then asks policy (and a person) whether it may go on:
//! SIGCONT, or SIGKILL. Always reported as bounded, never as prevention.

use std::{
    ffi::OsString,
    os::unix::ffi::OsStringExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{HashMap, MapData, RingBuf};
use guard_common::bounded::{BoundedStop, NO_PATH_ARG};

use crate::{
    action::Action,
    decision::{Decision, Verdict},
    holds::{HoldBroker, HoldRequest, Resolution},
    policy::Policy,
    programs::ProgramSet,
};

/// Watched syscalls: (number, index of the path argument, name).
#[cfg(target_arch = "x86_64")]
pub const WATCHED: &[(i64, u32, &str)] = &[
    (libc::SYS_unlink, 0, "unlink"),
    (libc::SYS_unlinkat, 1, "unlinkat"),
    (libc::SYS_rmdir, 0, "rmdir"),
    (libc::SYS_rename, 0, "rename"),
    (libc::SYS_renameat, 1, "renameat"),
    (libc::SYS_renameat2, 1, "renameat2"),
    (libc::SYS_truncate, 0, "truncate"),
    (libc::SYS_ftruncate, NO_PATH_ARG, "ftruncate"),
    (libc::SYS_creat, 0, "creat"),
];

/// One process stopped after a watched call.
#[derive(Debug, Clone)]
pub struct Stop {
    pub pid: u32,
    pub tid: u32,
    pub syscall: &'static str,
    pub cgroup_id: u64,
    /// The path argument resolved against the caller's cwd or dirfd (the
    /// caller is stopped, so they are stable), when the call has one.
    pub path: Option<PathBuf>,
}

impl Stop {
    /// The completed call as an action. A rename reports its source only (the
    /// destination is not copied in the kernel): `to` is "?".
    pub fn action(&self) -> Option<Action> {
        let path = self.path.clone()?;
        Some(match self.syscall {
            "unlink" => Action::Unlink { path },
            "unlinkat" => Action::Unlink { path },
            "rmdir" => Action::Rmdir { path },
            "rename" | "renameat" | "renameat2" => Action::Rename {
                from: path,
                to: PathBuf::from("?"),
            },
            _ => Action::Truncate { path },
        })
    }
}

/// The bounded-mode ring buffer reader.
pub struct BoundedMode {
    events: RingBuf<MapData>,
}

impl BoundedMode {
    /// Fills the syscall table and takes the stop ring buffer. `set` must have
    /// `Probe::Bounded` attached.
    pub fn enable(set: &mut ProgramSet) -> anyhow::Result<Self> {
        let map = set
            .map_mut("BOUNDED_SYSCALLS")
            .context("BOUNDED_SYSCALLS map missing")?;
        let mut syscalls: HashMap<_, u32, u32> = HashMap::try_from(map)?;
        for &(nr, arg, _) in WATCHED {
            syscalls.insert(nr as u32, arg, 0)?;
        }
        let events = set
            .take_map("BOUNDED_EVENTS")
            .context("BOUNDED_EVENTS already taken")?;
        Ok(Self {
            events: RingBuf::try_from(events)?,
        })
    }

    /// Puts a session cgroup (and everything below it) under bounded mode.
    pub fn add_session(set: &mut ProgramSet, cgroup_id: u64) -> anyhow::Result<()> {
        let map = set
            .map_mut("BOUNDED_SESSIONS")
            .context("BOUNDED_SESSIONS map missing")?;
        let mut sessions: HashMap<_, u64, u32> = HashMap::try_from(map)?;
        sessions.insert(cgroup_id, 1, 0)?;
        Ok(())
    }

    /// Takes a session cgroup out of bounded mode.
    pub fn remove_session(set: &mut ProgramSet, cgroup_id: u64) {
        if let Some(map) = set.map_mut("BOUNDED_SESSIONS")
            && let Ok(mut sessions) = HashMap::<_, u64, u32>::try_from(map)
        {
            let _ = sessions.remove(&cgroup_id);
        }
    }

    /// The next stop, if one is queued.
    pub fn try_next(&mut self) -> Option<Stop> {
        let record = self.events.next()?;
        if record.len() < std::mem::size_of::<BoundedStop>() {
            return None;
        }
        // SAFETY: length checked; BoundedStop is plain data.
        let raw: BoundedStop = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        drop(record);
        let syscall = WATCHED
            .iter()
            .find(|(nr, _, _)| *nr as u32 == raw.nr)
            .map_or("unknown", |w| w.2);
        let len = (raw.path_len as usize).min(raw.path.len());
        let path = (len > 0).then(|| resolve(raw.pid, raw.dirfd, raw.path[..len].to_vec()));
        Some(Stop {
            pid: raw.pid,
            tid: raw.tid,
            syscall,
            cgroup_id: raw.cgroup_id,
            path,
        })
    }

    /// Waits up to `timeout` for a stop.
    pub fn wait(&mut self, timeout: Duration) -> Option<Stop> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(stop) = self.try_next() {
                return Some(stop);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn resolve(pid: u32, dirfd: i32, raw: Vec<u8>) -> PathBuf {
    let path = PathBuf::from(OsString::from_vec(raw));
    if path.is_absolute() {
        return path;
    }
    let base = if dirfd == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dirfd}")
    };
    std::fs::read_link(&base)
        .map(|b| b.join(&path))
        .unwrap_or(path)
}

/// Decides one stop: continue (SIGCONT) when policy allows or a person
/// approves, SIGKILL otherwise. The call that caused the stop has already run;
/// the hold says so. Returns whether the process was let go on.
pub fn decide(stop: &Stop, policy: &Policy, broker: &HoldBroker, session: &str) -> bool {
    let verdict = match stop.action() {
        Some(action) => policy.evaluate(&action),
        None => Verdict {
            decision: Decision::Ask,
            rule: "bounded.unknown".into(),
            reason: format!("{} without a readable path", stop.syscall),
        },
    };
    let action = stop.action().unwrap_or(Action::Truncate {
        path: Path::new("?").into(),
    });
    let request = HoldRequest {
        session: session.into(),
        pid: stop.pid,
        action,
        verdict: Verdict {
            reason: format!(
                "{} (bounded mode: this {} already completed; the process is stopped before its next call)",
                verdict.reason, stop.syscall
            ),
            ..verdict.clone()
        },
        backend: "bounded",
    };
    let go_on = match verdict.decision {
        Decision::Allow => true,
        Decision::Log => {
            broker.report(request);
            true
        }
        Decision::Deny | Decision::Kill => {
            broker.report(request);
            false
        }
        Decision::Ask | Decision::Freeze => {
            match broker.ask(request, policy.ask_timeout(), policy.timeout_decision()) {
                Resolution::Approved { .. } => true,
                Resolution::TimedOut { decision } => {
                    matches!(decision, Decision::Allow | Decision::Log)
                }
                _ => false,
            }
        }
    };
    let signal = if go_on { libc::SIGCONT } else { libc::SIGKILL };
    // SAFETY: a signal to the stopped process.
    unsafe { libc::kill(stop.pid as i32, signal) };
    go_on
}

/// Decides every stop of one bounded session, each on its own thread (a
/// hold may wait minutes for a person while other processes go on).
pub struct BoundedDecider {
    stop: Arc<AtomicBool>,
    released: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BoundedDecider {
    pub fn start(
        mut mode: BoundedMode,
        policy: Arc<Policy>,
        broker: Arc<HoldBroker>,
        session: String,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let (halt, free) = (stop.clone(), released.clone());
        let thread = std::thread::Builder::new()
            .name("guard-bounded".into())
            .spawn(move || {
                loop {
                    let halting = halt.load(Ordering::SeqCst);
                    // After a halt, drain what is queued: nothing may stay stopped.
                    let next = if halting {
                        mode.try_next()
                    } else {
                        mode.wait(Duration::from_millis(100))
                    };
                    let Some(stop) = next else {
                        if halting {
                            return;
                        }
                        continue;
                    };
                    if halting || free.load(Ordering::SeqCst) {
                        // Released: the call has completed and the process is
                        // no longer guarded, so it goes on unasked.
                        // SAFETY: a signal to a process, no memory involved.
                        unsafe { libc::kill(stop.pid as i32, libc::SIGCONT) };
                        continue;
                    }
                    let (policy, broker, session) =
                        (policy.clone(), broker.clone(), session.clone());
                    std::thread::spawn(move || decide(&stop, &policy, &broker, &session));
                }
            })
            .context("starting the bounded-mode thread")?;
        Ok(Self {
            stop,
            released,
            thread: Some(thread),
        })
    }

    /// From now on stops are not asked about: their processes are being
    /// released (and the stopping call already completed).
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    /// Stops reading, after continuing every stop still queued. Call once
    /// the session is out of bounded mode.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
