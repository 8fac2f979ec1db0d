//! Shared by the exec-stop and LSM enforcement tests: a session cgroup with
//! guard's kernel programs, the real backends deciding held tasks, and the
//! HoldBroker a test approves or denies through, from its own thread.
#![allow(dead_code)]

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use guard::{
    backend::{Backends, EventObserver, SessionMap},
    events::KernelEvent,
    exec_stop::{ExecStop, process_state},
    holds::{GrantScope, Hold, HoldBroker, Resolution},
    kernel_tables::KernelTables,
    lsm_backend::LsmBackend,
    pin::PinDir,
    policy::Policy,
    programs::{Probe, ProgramSet},
};
use guard_common::SessionConfig;
use guard_tests::TestCgroup;

/// A guarded test session.
pub struct Enforced {
    pub set: ProgramSet,
    pub cg: Arc<TestCgroup>,
    pub session: u64,
    pub broker: Arc<HoldBroker>,
    pub tables: Arc<Mutex<KernelTables>>,
    pub backends: Arc<Backends>,
    /// Every event that reached userspace.
    pub events: Arc<Mutex<Vec<KernelEvent>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Enforced {
    /// Loads `probes` (each must attach), registers the session with
    /// `flags` and `policy`, and starts the event reader.
    pub fn start(tag: &str, probes: &[Probe], flags: u32, policy: Policy) -> Self {
        let cg = Arc::new(TestCgroup::new(tag));
        let depth = cg.cgroup.depth().expect("cgroup depth");
        let set = ProgramSet::load(depth, probes).expect("loading guard's programs");
        Self::with_set(tag, cg, set, probes, flags, policy)
    }

    /// Like [`Enforced::start`], with maps and links pinned in `pin` (a
    /// daemon's view: dropping this leaves the programs attached).
    pub fn start_pinned(
        tag: &str,
        cg: Arc<TestCgroup>,
        pin: PinDir,
        probes: &[Probe],
        flags: u32,
        policy: Policy,
    ) -> Self {
        let depth = cg.cgroup.depth().expect("cgroup depth");
        let set = ProgramSet::load_pinned(pin, depth, probes).expect("loading guard's programs");
        Self::with_set(tag, cg, set, probes, flags, policy)
    }

    fn with_set(
        tag: &str,
        cg: Arc<TestCgroup>,
        mut set: ProgramSet,
        probes: &[Probe],
        flags: u32,
        policy: Policy,
    ) -> Self {
        for &p in probes {
            set.require(p)
                .unwrap_or_else(|e| panic!("{p} must attach here: {e:#}"));
        }
        let session = cg.cgroup.id().expect("cgroup id");
        set.sessions()
            .expect("sessions map")
            .insert(session, SessionConfig { flags, _pad: 0 }, 0)
            .expect("adding the session");
        let tables = Arc::new(Mutex::new(set.tables().expect("opening kernel tables")));
        let broker = HoldBroker::new();
        let sessions = SessionMap::new();
        sessions.insert(session, tag, Arc::new(policy));
        let lsm = LsmBackend::new(tables.clone(), broker.clone(), sessions.clone());
        let exec = Arc::new(ExecStop {
            broker: broker.clone(),
            sessions,
        });
        let backends = Arc::new(Backends { lsm, exec });
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let observer: EventObserver = Arc::new(Mutex::new(move |e: &KernelEvent| {
            seen.lock().unwrap().push(e.clone())
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ring = set.take_events().expect("event ring");
        let reader = backends.clone().spawn_reader(ring, stop.clone(), observer);
        Self {
            set,
            cg,
            session,
            broker,
            tables,
            backends,
            events,
            stop,
            reader: Some(reader),
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

    /// Starts a session whose probes need BPF LSM. Outside the VM tier a
    /// kernel without it is reported as a skip (None); inside it is a failure.
    pub fn start_lsm(test: &str, probes: &[Probe], flags: u32, policy: Policy) -> Option<Self> {
        let cg = Arc::new(TestCgroup::new(test));
        let set = ProgramSet::load(cg.cgroup.depth().unwrap(), probes)
            .expect("loading guard's eBPF object");
        if !lsm_attached(test, &set, probes) {
            return None;
        }
        Some(Self::with_set(test, cg, set, probes, flags, policy))
    }
}

impl Drop for Enforced {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Waits until `pid` is stopped (state T) or panics.
pub fn assert_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match process_state(pid) {
            Some('T') | Some('t') => return,
            other if Instant::now() > deadline => {
                panic!("pid {pid} should be stopped (T), is {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
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
