//! Host tier: `guard session` as a real process. Every descendant (fork,
//! exec, double-forked daemons) lands in the session cgroup and dies with it;
//! processes outside are untouched; the command runs as the sudo caller;
//! signals are relayed; the exit status comes back; the embedded controller
//! serves its socket so `guard sessions` / `guard kill` work without a daemon.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use guard_tests::{TempDir, guard_bin, require_root, wait_until};
use serde_json::Value;

fn session_command(dir: &TempDir, name: &str) -> Command {
    let mut command = Command::new(guard_bin());
    command
        .env("GUARD_SOCKET", dir.join("guard.sock"))
        .env("GUARD_AUDIT_LOG", dir.join("audit.jsonl"))
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .args(["session", "--no-prompt", "--name", name]);
    command
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; look at its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z")
        })
        .unwrap_or(false)
}

fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("waiting for guard session")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_descendant_is_in_the_session_and_outsiders_are_untouched() {
    require_root();
    let dir = TempDir::new("descendants");
    let name = format!("desc-{}", std::process::id());
    let pids = dir.join("pids");
    let go = dir.join("go");
    let mut outsider = Command::new("sleep").arg("60").spawn().unwrap();
    // A forked subshell, an exec'd child, and a double-forked daemon that
    // detaches with setsid; the script waits for `go`, then exits 5.
    let script = format!(
        r#"
        (sleep 60 & echo $! >> {pids}; wait) &
        echo $! >> {pids}
        sh -c 'exec sleep 60' &
        echo $! >> {pids}
        setsid sh -c 'sleep 60 & echo $! >> {pids}' < /dev/null > /dev/null 2>&1 &
        echo $$ >> {pids}
        while [ ! -e {go} ]; do sleep 0.05; done
        exit 5
        "#,
        pids = pids.display(),
        go = go.display()
    );
    let child = session_command(&dir, &name)
        .args(["--json", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "five pids from the session",
        || read_pids(&pids).len() >= 5,
    );
    let inside = read_pids(&pids);
    let expected = format!("/guard.slice/session-{name}");
    for pid in &inside {
        assert_eq!(cgroup_of(*pid), expected, "pid {pid} escaped the session");
    }
    assert!(
        !cgroup_of(outsider.id()).starts_with("/guard.slice"),
        "an outside process was moved into the session"
    );
    // While it runs, `guard sessions` (no daemon) finds it through its socket.
    let out = Command::new(guard_bin())
        .env("GUARD_SOCKET", dir.join("guard.sock"))
        .args(["sessions", "--json"])
        .output()
        .unwrap();
    let sessions: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sessions --json ({e}): {}", text(&out)));
    assert!(
        sessions.iter().any(|s| s["name"] == name.as_str()),
        "{sessions:?}"
    );

    std::fs::write(&go, "").unwrap();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {}", text(&out)));
    assert_eq!(summary["exit_code"], 5);
    assert_eq!(summary["controller"], "embedded");
    assert!(summary["execs"].as_u64().unwrap() >= 4, "{summary}");
    wait_until(
        Duration::from_secs(5),
        "the session's processes to die",
        || inside.iter().all(|p| !alive(*p)),
    );
    assert!(alive(outsider.id()), "the outside process was killed");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/unified{expected}")).exists()
            && !Path::new(&format!("/sys/fs/cgroup{expected}")).exists(),
        "the session cgroup was left behind"
    );
    assert!(
        !dir.join(&format!("sessions/{name}.sock")).exists(),
        "the session socket was left behind"
    );
    outsider.kill().unwrap();
    outsider.wait().unwrap();
}

#[test]
fn runs_as_the_sudo_caller_with_its_groups_and_home() {
    require_root();
    let dir = TempDir::new("sudo-user");
    let out = session_command(&dir, &format!("user-{}", std::process::id()))
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .args([
            "--",
            "sh",
            "-c",
            "id -u; id -g; id -G; echo $HOME; echo $USER",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "65534", "{}", text(&out));
    assert_eq!(lines[1], "65534");
    assert!(
        !lines[2].split_whitespace().any(|g| g == "0"),
        "root's group leaked: {}",
        lines[2]
    );
    assert_eq!(lines[3], "/nonexistent");
    assert_eq!(lines[4], "nobody");

    // --user wins over SUDO_UID; an unknown user is a clear error.
    let out = session_command(&dir, &format!("user2-{}", std::process::id()))
        .args(["--user", "no-such-user-xyz", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--user"),
        "{}",
        text(&out)
    );
}

#[test]
fn signals_are_relayed_and_the_exit_status_returned() {
    require_root();
    let dir = TempDir::new("signals");
    let ready = dir.join("ready");
    let script = format!(
        "trap 'exit 42' TERM; trap 'echo hup >> {r}.hup' HUP; touch {r}; while :; do sleep 0.05; done",
        r = ready.display()
    );
    let mut child = session_command(&dir, &format!("sig-{}", std::process::id()))
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the command to start", || {
        ready.exists()
    });
    let pid = child.id() as i32;
    // SAFETY: kill has no memory preconditions; pid is our child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let hup = PathBuf::from(format!("{}.hup", ready.display()));
    wait_until(
        Duration::from_secs(5),
        "SIGHUP to reach the command",
        || hup.exists(),
    );
    assert!(child.try_wait().unwrap().is_none(), "guard died on SIGHUP");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "guard must return the command's status"
    );

    // Death by signal comes back as 128+N.
    let out = session_command(&dir, &format!("sig2-{}", std::process::id()))
        .args(["--", "sh", "-c", "kill -9 $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
}

#[test]
fn guard_kill_ends_an_embedded_session() {
    require_root();
    let dir = TempDir::new("kill");
    let name = format!("kill-{}", std::process::id());
    let child = session_command(&dir, &name)
        .args(["--", "sleep", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.join(&format!("sessions/{name}.sock"));
    wait_until(Duration::from_secs(10), "the session socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let out = Command::new(guard_bin())
        .env("GUARD_SOCKET", dir.join("guard.sock"))
        .args(["kill", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = finish(child);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));

    let out = Command::new(guard_bin())
        .env("GUARD_SOCKET", dir.join("guard.sock"))
        .args(["kill", "no-such-session"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn bad_session_arguments_are_clear_errors() {
    require_root();
    let dir = TempDir::new("badargs");
    let bad_policy = dir.join("bad-policy.yaml");
    std::fs::write(&bad_policy, "version: 1\nfiles: [ {\n").unwrap();
    for (args, needle) in [
        (vec!["--name", "a/b", "--", "true"], "invalid session name"),
        (
            vec!["--workspace", "/no/such/dir", "--", "true"],
            "--workspace",
        ),
        (vec!["--", "/no/such/program"], "starting /no/such/program"),
        (
            vec!["--policy", "/no/such/policy.yaml", "--", "true"],
            "/no/such/policy.yaml",
        ),
        (
            vec!["--policy", bad_policy.to_str().unwrap(), "--", "true"],
            "bad-policy.yaml:",
        ),
    ] {
        let out = Command::new(guard_bin())
            .env("GUARD_SOCKET", dir.join("guard.sock"))
            .env("GUARD_AUDIT_LOG", dir.join("audit.jsonl"))
            .arg("session")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out)
        );
    }
}
