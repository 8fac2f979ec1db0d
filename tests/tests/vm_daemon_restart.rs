//! VM tier (and host tier), end to end with the real binaries: `guard daemon`
//! is SIGKILLed while a real `guard session` holds `rm` of a protected file.
//! The rm stays held and the file stays while no daemon runs; the session
//! re-registers with a new daemon on the same socket and asks again; an
//! approval (or denial) given to the new daemon decides the rm; the shared
//! audit log has a "held" record from each daemon and the decision.
//!
//! The backend holding the rm is the BPF LSM one in the VM; on the host, where
//! BPF LSM cannot attach, `guard session` falls back to seccomp user
//! notification, so the same test runs on both tiers and checks which
//! backend the audit log names.

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime},
};

use guard::{
    audit::{self, AuditRecord},
    cgroup::Cgroup,
};
use guard_tests::{
    Reaped, TempDir, ask_before_unlink_policy, guard_cli, in_vm_tier, pending_holds, require_root,
};
use serde_json::Value;

/// Starting a session in the VM verifies the LSM programs under TCG: slow.
const START: Duration = Duration::from_secs(90);
/// A daemon binding its socket, a session re-asking, an rm finishing.
const STEP: Duration = Duration::from_secs(30);
/// How long the rm is watched while no daemon runs.
const GAP: Duration = Duration::from_secs(1);

/// One test's directory: the daemon's socket and audit log, a policy that
/// asks before `prod/keep.db` is deleted, and that file.
struct Stage {
    dir: TempDir,
    db: PathBuf,
    policy: PathBuf,
}

impl Stage {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let root = dir.path.canonicalize().unwrap();
        std::fs::create_dir_all(root.join("prod")).unwrap();
        std::fs::create_dir_all(root.join("ws")).unwrap();
        let db = root.join("prod/keep.db");
        std::fs::write(&db, b"rows").unwrap();
        let policy =
            ask_before_unlink_policy(&dir, "files.keep-db", "the production database", &[&db]);
        Self { dir, db, policy }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("guard.sock")
    }

    fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// `guard daemon` on the stage's socket, once it answers.
    fn start_daemon(&self) -> Reaped {
        let daemon = Reaped(
            guard_cli(&self.dir)
                .args(["daemon", "--audit-log"])
                .arg(self.audit_log())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting guard daemon"),
        );
        let socket = self.socket();
        wait_for(STEP, "the daemon to answer on its socket", || {
            std::os::unix::net::UnixStream::connect(&socket)
                .is_ok()
                .then_some(())
        });
        daemon
    }

    /// `guard session` under the stage's policy, handing its asks to the
    /// daemon, running `rm` of the protected file and echoing its status.
    fn start_session(&self, name: &str) -> Session {
        let script = format!("rm {}; echo status=$?", self.db.display());
        let mut command: Command = guard_cli(&self.dir);
        command
            // Root runs the agent, whoever invoked the tests with sudo.
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .current_dir(self.dir.join("ws"))
            .args(["session", "--no-prompt", "--name", name, "--policy"])
            .arg(&self.policy)
            .arg("--workspace")
            .arg(self.dir.join("ws"))
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let process = Reaped(command.spawn().expect("starting guard session"));
        let cgroup = guard::cgroup::cgroup2_mount()
            .expect("finding the cgroup2 mount")
            .join(guard::cgroup::SLICE)
            .join(format!("session-{name}"));
        Session {
            process,
            cgroup: Cgroup::open(cgroup),
        }
    }

    /// The daemon's pending hold on the unlink of the file.
    fn wait_for_unlink_hold(&self, timeout: Duration, what: &str) -> Held {
        let path = self.db.to_string_lossy().into_owned();
        let mut seen = Vec::new();
        let found = poll(timeout, || {
            seen = pending_holds(&self.dir);
            seen.iter()
                .find(|h| h["action"]["op"] == "unlink" && h["action"]["path"] == path.as_str())
                .map(Held::of)
        });
        found.unwrap_or_else(|| {
            panic!("timed out after {timeout:?} waiting for {what}; holds listed: {seen:#?}")
        })
    }

    fn guard(&self, args: &[&str]) {
        let out = guard_cli(&self.dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "guard {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The audit records about the unlink of the file.
    fn unlink_records(&self) -> Vec<AuditRecord> {
        let what = format!("unlink {}", self.db.display());
        audit::read(&self.audit_log())
            .unwrap_or_else(|e| panic!("reading the audit log: {e:#}"))
            .into_iter()
            .filter(|r| r.what == what)
            .collect()
    }
}

/// A running `guard session`. If a test fails while it runs, drop kills it
/// and then its cgroup, which a SIGKILLed `guard session` cannot remove.
struct Session {
    process: Reaped,
    cgroup: Cgroup,
}

impl std::ops::Deref for Session {
    type Target = Reaped;
    fn deref(&self) -> &Reaped {
        &self.process
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Reaped {
        &mut self.process
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
        if !self.cgroup.path().exists() {
            return;
        }
        let _ = self.cgroup.kill();
        for _ in 0..50 {
            if self.cgroup.remove().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A hold as `guard holds --json` lists it.
struct Held {
    id: u64,
    pid: u32,
    since: SystemTime,
}

impl Held {
    fn of(hold: &Value) -> Self {
        let since = hold["since"].as_str().expect("hold without since");
        Self {
            id: hold["id"].as_u64().expect("hold without an id"),
            pid: hold["pid"].as_u64().expect("hold without a pid") as u32,
            since: humantime::parse_rfc3339(since)
                .unwrap_or_else(|e| panic!("since {since:?} is not RFC 3339: {e}")),
        }
    }
}

/// Polls `check` until it returns a value, or panics after `timeout`.
fn wait_for<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll(timeout, check).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `check` until it returns a value; None once `timeout` passes.
fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state letter of a process (`T` stopped, `S` sleeping...), None once gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Asserts the rm is still held: alive, not a zombie, the file in place,
/// and the session still running.
fn assert_held(stage: &Stage, rm: u32, session: &mut Reaped, when: &str) {
    let state = process_state(rm);
    assert!(
        matches!(state, Some(s) if s != 'Z' && s != 'X'),
        "{when}: the held rm (pid {rm}) is gone: state {state:?}"
    );
    assert!(stage.db.exists(), "{when}: the file went while held");
    assert!(
        session.try_wait().unwrap().is_none(),
        "{when}: guard session exited while its rm was held"
    );
}

/// Waits for the session to exit; returns its status and stdout then stderr.
fn finish(session: &mut Reaped) -> (ExitStatus, String) {
    let status = wait_for(STEP, "guard session to exit", || {
        session.try_wait().unwrap()
    });
    let mut text = String::new();
    if let Some(mut out) = session.stdout.take() {
        out.read_to_string(&mut text).unwrap();
    }
    if let Some(mut err) = session.stderr.take() {
        err.read_to_string(&mut text).unwrap();
    }
    (status, text)
}

/// The backend that must hold the rm on this tier.
fn expected_backend() -> &'static str {
    if in_vm_tier() { "lsm" } else { "seccomp" }
}

/// Everything up to a decision: a hold on the first daemon, the daemon
/// killed, the rm still held through the gap, the hold asked again on a new
/// daemon. Returns the new daemon, the session, the new hold's id and rm's pid.
fn hold_across_a_restart(stage: &Stage, name: &str) -> (Reaped, Session, u64, u32) {
    let mut first = stage.start_daemon();
    let mut session = stage.start_session(name);
    let rm = stage
        .wait_for_unlink_hold(START, "the rm hold on the first daemon")
        .pid;
    assert_eq!(comm(rm), "rm", "the held process is not the rm");
    assert_held(stage, rm, &mut session, "held by the first daemon");
    if in_vm_tier() {
        // The LSM restart hold stops the task; seccomp sleeps it in the kernel.
        assert_eq!(process_state(rm), Some('T'), "the LSM hold stops the rm");
    }

    // The daemon dies without a word; its socket file stays behind.
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = SystemTime::now();
    let gap = Instant::now();
    while gap.elapsed() < GAP {
        assert_held(stage, rm, &mut session, "with no daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pending_holds(&stage.dir).is_empty(),
        "nothing answers on the socket, yet holds were listed"
    );

    let second = stage.start_daemon();
    let held = stage.wait_for_unlink_hold(STEP, "the rm hold on the new daemon");
    assert_eq!(held.pid, rm, "the new daemon holds another process");
    assert!(
        held.since < killed,
        "the new daemon lists the hold as younger than the restart"
    );
    assert_held(stage, rm, &mut session, "held by the new daemon");
    (second, session, held.id, rm)
}

/// The records of the hold: one "held" per daemon, then `outcome`, all on
/// the same rm, in this session, from the tier's backend.
fn assert_audited(stage: &Stage, name: &str, rm: u32, outcome: &str) {
    let records = stage.unlink_records();
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("held"), Some("held"), Some(outcome)],
        "one held record per daemon, then the decision: {records:#?}"
    );
    for record in &records {
        assert_eq!(record.session, name, "{record:#?}");
        assert_eq!(record.pid, rm, "{record:#?}");
        assert_eq!(record.rule, "files.keep-db", "{record:#?}");
        assert_eq!(record.backend, expected_backend(), "{record:#?}");
    }
    assert_eq!(
        records[2]
            .approver
            .as_deref()
            .map(|a| a.starts_with("root")),
        Some(true),
        "the decision names its approver: {records:#?}"
    );
    assert!(
        records[2].wait_ms >= GAP.as_millis() as u64,
        "wait_ms counts from the first hold, before the restart: {records:#?}"
    );
}

#[test]
fn a_held_rm_outlives_a_daemon_restart_and_is_approved_by_the_new_daemon() {
    require_root();
    let stage = Stage::new("daemon-restart-approve");
    let name = format!("restart-ok-{}", std::process::id());
    let (second, mut session, id, rm) = hold_across_a_restart(&stage, &name);

    stage.guard(&["approve", &id.to_string()]);
    let (status, text) = finish(&mut session);
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("status=0"), "rm must succeed: {text}");
    assert!(!stage.db.exists(), "an approved rm removes the file");
    assert_audited(&stage, &name, rm, "approved");
    second.terminate();
}

#[test]
fn a_held_rm_outlives_a_daemon_restart_and_is_denied_by_the_new_daemon() {
    require_root();
    let stage = Stage::new("daemon-restart-deny");
    let name = format!("restart-no-{}", std::process::id());
    let (second, mut session, id, rm) = hold_across_a_restart(&stage, &name);

    stage.guard(&["deny", &id.to_string()]);
    let (status, text) = finish(&mut session);
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("guard: denied unlink"), "{text}");
    assert!(text.contains("status=1"), "rm must fail: {text}");
    assert!(stage.db.exists(), "a denied rm leaves the file");
    assert_audited(&stage, &name, rm, "denied");
    second.terminate();
}
