//! Host tier: `guard adopt PID` as a real process, adopting ordinary
//! processes started outside guard. Without BPF LSM (this kernel) file calls
//! get bounded mode: the first call completes, the process stops, and the
//! hold decides whether it goes on (approve) or dies (deny). The tree moves
//! with its descendants, adopt ends with the tree, SIGTERM releases the
//! processes to the cgroup they came from (and says so), and what must not
//! be adopted is refused. The VM tier's BPF LSM case is vm_adopt.rs.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use guard_tests::{
    Reaped, TempDir, ask_before_unlink_policy, guard_cli, in_vm_tier, pending_holds, report_skip,
    require_root, take_output, wait_until,
};
use serde_json::Value;

/// Generous: under TCG (the VM tier) guard adopt takes seconds to load its programs.
const WAIT: Duration = Duration::from_secs(90);

/// A cgroup outside guard's slice for the agent to start in, so a release
/// can be seen going back to it (and not to a fallback). Killed and removed
/// on drop.
struct HomeCgroup {
    path: PathBuf,
}

impl HomeCgroup {
    fn new(tag: &str) -> Self {
        let path = guard::cgroup::cgroup2_mount()
            .expect("finding the cgroup2 mount")
            .join(format!("guard-test-home-{tag}-{}", std::process::id()));
        let _ = std::fs::create_dir(&path);
        assert!(path.is_dir(), "creating {}", path.display());
        Self { path }
    }

    /// As /proc/PID/cgroup names it.
    fn relative(&self) -> String {
        let mount = guard::cgroup::cgroup2_mount().unwrap();
        format!("/{}", self.path.strip_prefix(mount).unwrap().display())
    }

    /// `sh -c script` started in this cgroup, in `dir`.
    fn spawn(&self, dir: &TempDir, script: &str) -> Reaped {
        let procs = self.path.join("cgroup.procs");
        let mut command = Command::new("sh");
        command
            .args(["-c", script])
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only a write to a cgroup file between fork and exec.
        unsafe { command.pre_exec(move || std::fs::write(&procs, b"0")) };
        Reaped(command.spawn().expect("starting the agent stand-in"))
    }
}

impl Drop for HomeCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The session cgroup of `name`, killed and removed on drop: a failing test
/// SIGKILLs guard adopt, which then cannot remove it. Declare it before the
/// adopt process so it drops after it.
struct SessionCleanup(PathBuf);

impl SessionCleanup {
    fn new(name: &str) -> Self {
        Self(
            guard::cgroup::cgroup2_mount()
                .expect("finding the cgroup2 mount")
                .join(guard::cgroup::SLICE)
                .join(format!("session-{name}")),
        )
    }
}

impl Drop for SessionCleanup {
    fn drop(&mut self) {
        if !self.0.exists() {
            return;
        }
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `guard adopt --no-prompt --json [extra] PID`, output piped.
fn adopt(dir: &TempDir, pid: u32, extra: &[&str]) -> Reaped {
    let mut command = guard_cli(dir);
    command
        .args(["adopt", "--no-prompt", "--json"])
        .args(extra)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Reaped(command.spawn().expect("starting guard adopt"))
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned()
}

/// The process state letter from /proc/PID/stat ('T' stopped, 'Z' zombie).
fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ")?.1.chars().next())
        .unwrap_or('?')
}

/// Waits for `check`, failing at once with guard adopt's output if it exits first.
fn while_adopting(adopt: &mut Reaped, what: &str, mut check: impl FnMut() -> bool) {
    wait_until(WAIT, what, || {
        if check() {
            return true;
        }
        if let Ok(Some(_)) = adopt.try_wait() {
            let out = take_output(adopt);
            panic!("guard adopt exited while waiting for {what}: {out}");
        }
        false
    });
}

/// A fifo the agent blocks on (`read x < go`) until the test writes to it.
fn go_fifo(dir: &TempDir) -> PathBuf {
    let go = dir.join("go");
    let path = std::ffi::CString::new(go.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    go
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits (bounded) for guard adopt to exit and returns its output.
fn finish(adopt: Reaped, what: &str) -> Output {
    let mut child: Child = adopt.into_inner();
    let mut done = false;
    wait_until(WAIT, what, || {
        done = matches!(child.try_wait(), Ok(Some(_)));
        done
    });
    child
        .wait_with_output()
        .expect("collecting guard adopt's output")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the summary is not one JSON object ({e}): {}", text(out)))
}

fn session_cgroup(name: &str) -> String {
    format!("/guard.slice/session-{name}")
}

fn guard_ok(dir: &TempDir, args: &[&str]) {
    let out = guard_cli(dir).args(args).output().unwrap();
    assert!(out.status.success(), "guard {args:?}: {}", text(&out));
}

#[test]
fn bounded_mode_lets_the_first_unlink_complete_then_approve_continues_and_deny_kills() {
    require_root();
    if in_vm_tier() {
        report_skip(
            "adopt bounded mode",
            "BPF LSM is active here; vm_adopt.rs checks the LSM hold",
        );
        return;
    }
    let dir = TempDir::new("adopt-bounded");
    let root = dir.path.canonicalize().unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    for f in [&a, &b] {
        std::fs::write(f, "x").unwrap();
    }
    let policy = ask_before_unlink_policy(
        &dir,
        "files.adopt-test",
        "a file the test protects",
        &[&a, &b],
    );
    let home = HomeCgroup::new("bounded");
    let go = go_fifo(&dir);
    let mut agent = home.spawn(&dir, "read x < go; rm -f a b; echo rm=$? > out");
    let pid = agent.id();
    let name = format!("bounded-{pid}");
    let _cleanup = SessionCleanup::new(&name);
    let mut adopt = adopt(
        &dir,
        pid,
        &["--name", &name, "--policy", policy.to_str().unwrap()],
    );
    while_adopting(&mut adopt, "the agent to move into the session", || {
        cgroup_of(pid) == session_cgroup(&name)
    });
    // `guard sessions` lists it (embedded controller, no daemon).
    let mut listed = String::new();
    wait_until(WAIT, "guard sessions to list the adopted session", || {
        let out = guard_cli(&dir)
            .args(["sessions", "--json"])
            .output()
            .unwrap();
        listed = text(&out);
        let sessions: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        sessions
            .iter()
            .any(|s| s["name"] == name.as_str() && s["agent_pid"] == pid)
    });
    assert!(listed.contains(&name), "{listed}");
    std::fs::write(&go, "go\n").unwrap();
    let hold_on = |path: &Path| {
        let mut found = None;
        wait_until(WAIT, &format!("a hold on {}", path.display()), || {
            found = pending_holds(&dir).into_iter().find(|h| {
                h["action"]["op"] == "unlink" && h["action"]["path"] == path.to_str().unwrap()
            });
            found.is_some()
        });
        found.unwrap()
    };
    let first = hold_on(&a);
    assert_eq!(first["backend"], "bounded", "{first}");
    assert!(
        first["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("already completed"),
        "{first}"
    );
    let rm = first["pid"].as_u64().unwrap() as u32;
    // Bounded: the first unlink completed, the second waits; rm is stopped.
    assert!(!a.exists(), "bounded mode lets the first call complete");
    assert!(b.exists(), "rm must stop before its next call");
    wait_until(WAIT, "rm to be stopped", || state(rm) == 'T');

    guard_ok(&dir, &["approve", &first["id"].to_string()]);
    let second = hold_on(&b);
    assert_eq!(second["pid"].as_u64(), Some(rm as u64), "{second}");
    guard_ok(&dir, &["deny", &second["id"].to_string()]);
    wait_until(WAIT, "the denied rm to be killed", || {
        std::fs::read_to_string(dir.join("out")).is_ok_and(|o| o.trim() == "rm=137")
    });
    agent.wait().unwrap();

    let out = finish(adopt, "guard adopt to end with the tree");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = summary(&out);
    assert_eq!(summary["backend"], "bounded", "{summary}");
    assert_eq!(summary["controller"], "embedded", "{summary}");
    assert_eq!(summary["session"], name.as_str());
    assert_eq!(summary["pid"], pid);
    assert!(summary["adopted"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["released"], 0, "{summary}");
    assert_eq!(summary["counts"]["held"], 2, "{summary}");
    assert_eq!(summary["counts"]["approved"], 1, "{summary}");
    assert_eq!(summary["counts"]["denied"], 1, "{summary}");
}

#[test]
fn descendants_move_too_and_adopt_ends_when_the_tree_exits() {
    require_root();
    let dir = TempDir::new("adopt-tree");
    let home = HomeCgroup::new("tree");
    let go = go_fifo(&dir);
    let mut agent = home.spawn(
        &dir,
        "sleep 300 & echo $! > child; read x < go; kill $!; wait",
    );
    let pid = agent.id();
    let child_file = dir.join("child");
    wait_until(WAIT, "the agent's child", || {
        read_pid(&child_file).is_some()
    });
    let child = read_pid(&child_file).unwrap();
    let name = format!("tree-{pid}");
    let _cleanup = SessionCleanup::new(&name);
    let mut adopt = adopt(&dir, pid, &["--name", &name]);
    while_adopting(&mut adopt, "the agent and its child to move", || {
        cgroup_of(pid) == session_cgroup(&name) && cgroup_of(child) == session_cgroup(&name)
    });
    std::fs::write(&go, "go\n").unwrap();
    agent.wait().unwrap();
    let out = finish(adopt, "guard adopt to end with the tree");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = summary(&out);
    assert!(summary["adopted"].as_u64().unwrap() >= 2, "{summary}");
    assert_eq!(summary["released"], 0, "{summary}");
    let cgroup = guard::cgroup::cgroup2_mount()
        .unwrap()
        .join(format!("guard.slice/session-{name}"));
    assert!(!cgroup.exists(), "the session cgroup was left behind");
}

#[test]
fn sigterm_releases_the_tree_to_its_own_cgroup_and_says_so() {
    require_root();
    let dir = TempDir::new("adopt-release");
    let home = HomeCgroup::new("release");
    let go = go_fifo(&dir);
    let agent = home.spawn(&dir, "read x < go");
    let pid = agent.id();
    assert_eq!(cgroup_of(pid), home.relative());
    let name = format!("release-{pid}");
    let _cleanup = SessionCleanup::new(&name);
    let mut adopt = adopt(&dir, pid, &["--name", &name]);
    while_adopting(&mut adopt, "the agent to move into the session", || {
        cgroup_of(pid) == session_cgroup(&name)
    });

    // A second adopt of a guarded process is refused.
    let out = guard_cli(&dir)
        .args(["adopt", "--no-prompt", &pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already guarded"),
        "{}",
        text(&out)
    );

    let out = finish(
        {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(adopt.id() as i32, libc::SIGTERM) };
            adopt
        },
        "guard adopt to release and exit after SIGTERM",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("released") && stderr.contains("no longer guarded"),
        "{}",
        text(&out)
    );
    let summary = summary(&out);
    assert!(summary["released"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(
        cgroup_of(pid),
        home.relative(),
        "released to the cgroup it came from"
    );
    assert_ne!(state(pid), 'T', "a released process is not left stopped");
    std::fs::write(&go, "go\n").unwrap();
    let mut agent = agent;
    assert!(agent.wait().unwrap().success(), "the released agent ran on");
}

#[test]
fn refuses_init_missing_pids_its_own_parent_and_garbage() {
    require_root();
    let dir = TempDir::new("adopt-refuse");
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    let missing = (pid_max + 1).to_string();
    // guard adopt's parent is this test process.
    let parent = std::process::id().to_string();
    for (pid, expect) in [
        ("1", "pid 1"),
        (missing.as_str(), "no process with pid"),
        (parent.as_str(), "ancestor"),
    ] {
        let out = guard_cli(&dir)
            .args(["adopt", "--no-prompt", pid])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "adopt {pid}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("guard: ") && stderr.contains(expect),
            "adopt {pid}: {}",
            text(&out)
        );
        // --json: the error object on stdout too.
        let out = guard_cli(&dir)
            .args(["adopt", "--no-prompt", "--json", pid])
            .output()
            .unwrap();
        let error: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("adopt --json {pid} ({e}): {}", text(&out)));
        assert_eq!(error["ok"], false, "{error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(expect),
            "{error}"
        );
    }
    for garbage in ["abc", "0", "-5"] {
        let out = guard_cli(&dir)
            .args(["adopt", "--no-prompt", garbage])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "adopt {garbage}: {}",
            text(&out)
        );
    }
}
