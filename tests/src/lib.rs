//! Shared harness for guard's integration tests.
//!
//! Tiers: `host` tests run on the development kernel as root; `vm` tests need
//! BPF LSM and run inside `cargo xtask vm-test`, whose /init sets
//! `GUARD_TEST_TIER=vm`.

pub mod pty;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use guard::{
    cgroup::Cgroup,
    events::{self, KernelEvent},
};

/// True inside the VM tier, where BPF LSM must work and skipping is a failure.
pub fn in_vm_tier() -> bool {
    std::env::var_os("GUARD_TEST_TIER").is_some_and(|v| v == "vm")
}

/// Panics unless running as root: the kernel tiers load BPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "kernel-tier tests must run as root (they load BPF programs)"
    );
}

/// A throw-away cgroup at the session depth, removed (after a kill) on drop.
pub struct TestCgroup {
    pub cgroup: Cgroup,
}

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        let name = format!("test-{tag}-{}", std::process::id());
        let cgroup =
            Cgroup::create(&name).unwrap_or_else(|e| panic!("creating test cgroup {name}: {e:#}"));
        Self { cgroup }
    }

    /// A command whose child moves into this cgroup before it execs.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let procs: PathBuf = self.cgroup.path().join("cgroup.procs");
        let mut command = Command::new(program);
        // SAFETY: only a write to a cgroup file between fork and exec.
        unsafe { command.pre_exec(move || std::fs::write(&procs, b"0")) };
        command
    }

    /// Spawns `argv` with the child moved into this cgroup before it execs.
    pub fn spawn(&self, argv: &[&str]) -> Child {
        use std::os::unix::process::CommandExt as _;
        let procs: PathBuf = self.cgroup.path().join("cgroup.procs");
        let mut command = Command::new(argv[0]);
        command.args(&argv[1..]);
        // SAFETY: only a write to a cgroup file between fork and exec.
        unsafe { command.pre_exec(move || std::fs::write(&procs, b"0")) };
        command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {argv:?}: {e}"))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cgroup.kill();
        for _ in 0..50 {
            if self.cgroup.remove().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads ring buffer records until `predicate` matches one or `timeout` passes.
pub fn expect_event(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    timeout: Duration,
    what: &str,
    predicate: impl Fn(&KernelEvent) -> bool,
) -> KernelEvent {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        while let Some(record) = ring.next() {
            let event = events::decode(&record).expect("kernel sent an undecodable event");
            if predicate(&event) {
                return event;
            }
            seen.push(event);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no event matching {what} within {timeout:?}; saw {seen:#?}");
}

/// Collects every event that arrives within `window`.
pub fn drain_events(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    window: Duration,
) -> Vec<KernelEvent> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        while let Some(record) = ring.next() {
            seen.push(events::decode(&record).expect("kernel sent an undecodable event"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

/// The `guard` binary under test: $GUARD_BIN (the VM tier sets it), else
/// built once per test process with the same cargo that runs the tests.
/// (CARGO_BIN_EXE_guard only exists inside guard-userspace's own package.)
pub fn guard_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("GUARD_BIN") {
            return PathBuf::from(bin);
        }
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "guard-userspace",
                "--bin",
                "guard",
            ])
            .current_dir(&workspace)
            .output()
            .expect("running cargo build for the guard binary");
        assert!(
            out.status.success(),
            "building the guard binary failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("current_exe");
        let bin = exe
            .parent()
            .and_then(|deps| deps.parent())
            .map(|profile| profile.join("guard"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| workspace.join("target/debug/guard"));
        assert!(bin.exists(), "no guard binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A directory removed on drop, named after the test and pid.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("guard-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process killed and reaped on drop, so a failing test does not
/// leave a daemon behind holding the test runner's pipes open.
pub struct Reaped(pub Child);

impl Reaped {
    /// Asks the child to stop with SIGTERM and waits for it.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().expect("waiting for a child")
    }

    /// The child, no longer killed on drop (to collect its output).
    pub fn into_inner(self) -> Child {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped or used again, so the child is
        // moved out exactly once.
        unsafe { std::ptr::read(&this.0) }
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// $PATH with `dir`/bin in front (where [`stand_in_terraform`] writes).
pub fn path_with_bin(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Writes `DIR/bin/terraform`, a stand-in whose first act is to create
/// `DIR/marker` (so a test sees whether it ran at all); returns the marker.
pub fn stand_in_terraform(dir: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let marker = dir.join("marker");
    let terraform = dir.join("bin/terraform");
    std::fs::write(
        &terraform,
        format!("#!/bin/sh\n: > {}\necho terraform ran\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&terraform, std::fs::Permissions::from_mode(0o755)).unwrap();
    marker
}

/// Sends guard's own log lines (warnings and worse) to the test's captured
/// output, so a failing test shows what guard complained about.
pub fn capture_guard_logs() {
    let _ = env_logger::builder()
        .is_test(true)
        .filter_level(log::LevelFilter::Warn)
        .try_init();
}

/// Polls `check` until it holds or `timeout` passes, then panics with `what`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The test process's stay inside a [`TestCgroup`]; moves it back on drop.
pub struct InsideCgroup {
    home: PathBuf,
}

impl TestCgroup {
    /// Moves this test process into the cgroup, so the kernel programs see its own
    /// syscalls (and exact errnos) as the session's. Drop the guard to leave;
    /// declare it after the TestCgroup so it drops first.
    pub fn enter(&self) -> InsideCgroup {
        let home = current_cgroup();
        std::fs::write(self.cgroup.path().join("cgroup.procs"), b"0").unwrap_or_else(|e| {
            panic!("moving the test into {}: {e}", self.cgroup.path().display())
        });
        InsideCgroup { home }
    }
}

impl Drop for InsideCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.home.join("cgroup.procs"), b"0") {
            // Panicking in drop would abort; the cgroup's kill would then take us down.
            eprintln!(
                "could not move the test back to {}: {e}",
                self.home.display()
            );
        }
    }
}

/// The cgroup v2 directory this process is in, from /proc/self/cgroup.
pub fn current_cgroup() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("reading /proc/self/cgroup");
    let relative = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in /proc/self/cgroup: {text:?}"));
    guard::cgroup::cgroup2_mount()
        .expect("finding the cgroup2 mount")
        .join(relative.trim_start_matches('/'))
}

/// Says on the terminal that a test skipped its kernel part, and why. Written to
/// fd 2 directly: libtest captures `eprintln!` of passing tests, which would hide it.
pub fn report_skip(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// `guard` run as a separate process against the sockets and audit log of
/// one test directory, so tests never touch /run/guard.
pub fn guard_cli(dir: &TempDir) -> Command {
    let mut command = Command::new(guard_bin());
    command
        .env("GUARD_SOCKET", dir.join("guard.sock"))
        .env("GUARD_AUDIT_LOG", dir.join("audit.jsonl"));
    command
}

/// Pending holds as `guard holds --json` lists them (empty when none answer).
pub fn pending_holds(dir: &TempDir) -> Vec<serde_json::Value> {
    let out = guard_cli(dir).args(["holds", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Waits for the hold `wanted` picks and returns its id, approving with
/// `guard approve` every other hold that comes first (an agent's script may be
/// asked about before the action under test).
pub fn wait_for_hold(
    dir: &TempDir,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> u64 {
    let mut id = 0;
    wait_until(Duration::from_secs(20), what, || {
        for hold in pending_holds(dir) {
            let hold_id = hold["id"].as_u64().expect("hold without an id");
            if wanted(&hold) {
                id = hold_id;
                return true;
            }
            let out = guard_cli(dir)
                .args(["approve", &hold_id.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "approving hold {hold_id}: {out:?}");
        }
        false
    });
    id
}

/// Waits for a piped child and returns its exit code and stdout then stderr.
pub fn child_output(mut child: Child) -> (i32, String) {
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), take_output(&mut child))
}

/// What an exited piped child wrote: its stdout, then its stderr.
pub fn take_output(child: &mut Child) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// A policy file in `dir` whose one rule (`id`, saying `reason`) asks a
/// person before any of `paths` is deleted; held asks time out after 5 m.
pub fn ask_before_unlink_policy(dir: &TempDir, id: &str, reason: &str, paths: &[&Path]) -> PathBuf {
    let list: Vec<String> = paths
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\n\
             ask:\n  timeout: 5m\n  on_timeout: deny\n\
             files:\n\
             \x20 - id: {id}\n\
             \x20   paths: [{}]\n\
             \x20   ops: [unlink]\n\
             \x20   where: any\n\
             \x20   decision: ask\n\
             \x20   reason: {reason}\n",
            list.join(", ")
        ),
    )
    .unwrap();
    policy
}
