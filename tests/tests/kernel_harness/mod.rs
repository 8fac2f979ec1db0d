//! Shared by the exec-stop and LSM enforcement tests: a session cgroup with
//! guard's kernel programs, the real backends deciding held tasks, and the
//! HoldBroker a test approves or denies through, from its own thread.
#![allow(dead_code)]

pub mod files;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use guard::{
    enforcer::Enforcer,
    events::KernelEvent,
    exec_stop::process_state,
    holds::{GrantScope, Hold, HoldBroker, Resolution},
    kernel_backends::{Backends, EventObserver},
    kernel_maps::{KernelMaps, KernelRuleSet},
    pin::PinDir,
    policy::Policy,
    programs::{Probe, ProgramSet},
};
use guard_tests::TestCgroup;

/// A guarded test session, enforced the way a controller does it.
pub struct Enforced {
    pub enforcer: Enforcer,
    pub cg: Arc<TestCgroup>,
    pub session: u64,
    pub broker: Arc<HoldBroker>,
    pub tables: Arc<Mutex<KernelMaps>>,
    pub backends: Arc<Backends>,
    /// Every event that reached userspace.
    pub events: Arc<Mutex<Vec<KernelEvent>>>,
}

impl Enforced {
    /// Loads `probes` (each must attach), registers the session with
    /// `flags` and `policy`, and starts the event reader.
    pub fn start(tag: &str, probes: &[Probe], flags: u32, policy: Policy) -> Self {
        let cg = Arc::new(TestCgroup::new(tag));
        let e = Self::with_pin(
            tag,
            cg,
            PinDir::ephemeral().expect("pin dir"),
            probes,
            flags,
            policy,
        );
        for &p in probes {
            e.enforcer
                .program_set()
                .require(p)
                .unwrap_or_else(|err| panic!("{p} must attach here: {err:#}"));
        }
        e
    }

    /// Starts a session whose probes need BPF LSM. Outside the VM tier a
    /// kernel without it is reported as a skip (None); inside it is a failure.
    pub fn start_lsm(test: &str, probes: &[Probe], flags: u32, policy: Policy) -> Option<Self> {
        let cg = Arc::new(TestCgroup::new(test));
        let e = Self::with_pin(
            test,
            cg,
            PinDir::ephemeral().expect("pin dir"),
            probes,
            flags,
            policy,
        );
        lsm_attached(test, e.enforcer.program_set(), probes).then_some(e)
    }

    /// Like [`Enforced::start`], with maps and links pinned in `pin` (a
    /// daemon's view: dropping this leaves the programs attached).
    pub fn with_pin(
        tag: &str,
        cg: Arc<TestCgroup>,
        pin: PinDir,
        probes: &[Probe],
        flags: u32,
        policy: Policy,
    ) -> Self {
        let depth = cg.cgroup.depth().expect("cgroup depth");
        let broker = HoldBroker::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let observer: EventObserver = Arc::new(Mutex::new(move |e: &KernelEvent| {
            seen.lock().unwrap().push(e.clone())
        }));
        let mut enforcer = Enforcer::start(pin, depth, probes, broker.clone(), Some(observer))
            .expect("starting kernel enforcement");
        let session = enforcer
            .add_session(
                &cg.cgroup,
                tag,
                Arc::new(policy),
                flags,
                &KernelRuleSet::default(),
            )
            .expect("adding the session");
        Self {
            tables: enforcer.tables.clone(),
            backends: enforcer.backends.clone(),
            enforcer,
            cg,
            session,
            broker,
            events,
        }
    }

    /// Waits for a pending hold and returns the oldest.
    pub fn wait_hold(&self, timeout: Duration) -> Hold {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(h) = self.broker.pending().into_iter().next() {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no hold within {timeout:?}; events: {:#?}",
                self.events.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn approve(&self, hold: &Hold) {
        self.broker
            .resolve(
                hold.id,
                Resolution::Approved {
                    approver: "test".into(),
                    scope: GrantScope::Once,
                },
            )
            .expect("approving a pending hold");
    }

    pub fn deny(&self, hold: &Hold) {
        self.broker
            .resolve(
                hold.id,
                Resolution::Denied {
                    approver: "test".into(),
                },
            )
            .expect("denying a pending hold");
    }

    pub fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// The events once at least `n` have arrived (the ring is read on its
    /// own thread) and a further 300 ms brought no surprise, so a test can
    /// assert the exact set without racing the reader.
    pub fn settled_events(&self, n: usize) -> Vec<KernelEvent> {
        guard_tests::wait_until(Duration::from_secs(10), "the kernel's events", || {
            self.event_count() >= n
        });
        std::thread::sleep(Duration::from_millis(300));
        self.events.lock().unwrap().clone()
    }
}

/// Waits until `pid` is held: stopped (state T), or frozen in a cgroup
/// (an exec stop parked in its frozen sub-cgroup may show as sleeping).
pub fn assert_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = process_state(pid);
        if matches!(state, Some('T') | Some('t')) || in_frozen_cgroup(pid) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "pid {pid} should be stopped (T) or frozen, is {state:?} in {}",
                cgroup_of(pid)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn in_frozen_cgroup(pid: u32) -> bool {
    let Ok(mount) = guard::cgroup::cgroup2_mount() else {
        return false;
    };
    let rel = cgroup_of(pid);
    let events = mount
        .join(rel.trim_start_matches('/'))
        .join("cgroup.events");
    fs::read_to_string(events).is_ok_and(|t| t.lines().any(|l| l == "frozen 1"))
}

/// A private scratch directory, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("guard-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating scratch dir");
        Self { dir }
    }

    /// Writes an executable script.
    pub fn script(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The cgroup v2 path of a process, from /proc/PID/cgroup.
pub fn cgroup_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap_or_default()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A command that joins the session cgroup before it execs.
pub fn session_command(cg: &TestCgroup, argv: &[&str]) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let procs = cg.cgroup.path().join("cgroup.procs");
    let mut command = std::process::Command::new(argv[0]);
    command.args(&argv[1..]);
    // SAFETY: only a write to a cgroup file between fork and exec.
    unsafe { command.pre_exec(move || std::fs::write(&procs, b"0")) };
    command
}

/// Waits for a child with a deadline; panics (after killing it) on timeout.
pub fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a piped stderr to the end.
pub fn stderr_of(child: &mut std::process::Child) -> String {
    use std::io::Read as _;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Whether every probe attached, reporting a skip (host) or panicking (VM tier).
pub fn lsm_attached(test: &str, set: &ProgramSet, probes: &[Probe]) -> bool {
    for &p in probes {
        if let Err(e) = set.require(p) {
            if guard_tests::in_vm_tier() {
                panic!("the VM tier boots with lsm=...,bpf, so {p} must attach: {e:#}");
            }
            guard_tests::report_skip(
                test,
                &format!("BPF LSM cannot attach here ({e:#}); it runs in `cargo xtask vm-test`"),
            );
            return false;
        }
    }
    true
}
