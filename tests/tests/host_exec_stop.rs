//! Host tier: exec stop. A watched program is stopped at exec, before its
//! first instruction; approval lets it run, denial kills it (exit 137) with
//! a reason on its stderr. Descendants are in the session; others are not.

mod kernel_harness;

use std::{process::Stdio, time::Duration};

use guard::{action::Action, policy::Policy, programs::Probe};
use guard_common::{EventKind, Rule, session_flags};
use guard_tests::require_root;
use kernel_harness::*;

const TERRAFORM: &str = "#!/bin/sh\n: > \"$MARKER\"\necho \"terraform ran: $*\"\n";

fn watched_session(tag: &str) -> Enforced {
    let e = Enforced::start(
        tag,
        &[Probe::Exec],
        session_flags::WATCH_EXEC,
        Policy::embedded_default(),
    );
    e.tables
        .lock()
        .unwrap()
        .watch_exec(e.session, "terraform", Rule::holding(EventKind::Exec.bit()))
        .expect("watching terraform");
    e
}

fn run_terraform(e: &Enforced, scratch: &Scratch, marker: &std::path::Path) -> std::process::Child {
    let path = guard_tests::path_with_bin(&scratch.dir);
    // `; exit $?` keeps sh as the parent, so the status of a killed terraform reads 137.
    session_command(
        &e.cg,
        &["/bin/sh", "-c", "terraform destroy -auto-approve; exit $?"],
    )
    .env("PATH", path)
    .env("MARKER", marker)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting sh")
}

#[test]
fn watched_program_is_stopped_before_it_runs_and_runs_after_approval() {
    require_root();
    let scratch = Scratch::new("exec-approve");
    let tf = scratch.script("bin/terraform", TERRAFORM);
    let marker = scratch.path("marker");
    let e = watched_session("exec-approve");
    let mut child = run_terraform(&e, &scratch, &marker);

    let hold = e.wait_hold(Duration::from_secs(10));
    assert_eq!(hold.request.backend, "exec-stop");
    match &hold.request.action {
        Action::Exec { filename, argv, .. } => {
            assert_eq!(filename, &tf);
            let argv: Vec<_> = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(argv, [tf.to_str().unwrap(), "destroy", "-auto-approve"]);
        }
        other => panic!("expected an exec hold, got {other:?}"),
    }
    assert!(
        hold.request.verdict.decision.holds(),
        "policy must ask about terraform destroy: {:?}",
        hold.request.verdict
    );
    assert_stopped(hold.request.pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !marker.exists(),
        "terraform ran its first command while held"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the session must still be waiting"
    );

    e.approve(&hold);
    let status = wait_exit(&mut child, Duration::from_secs(10), "approved terraform");
    assert_eq!(status.code(), Some(0), "stderr: {}", stderr_of(&mut child));
    assert!(marker.exists(), "approved terraform must run");
}

#[test]
fn denied_program_is_killed_before_it_runs_and_told_why() {
    require_root();
    let scratch = Scratch::new("exec-deny");
    scratch.script("bin/terraform", TERRAFORM);
    let marker = scratch.path("marker");
    let e = watched_session("exec-deny");
    let mut child = run_terraform(&e, &scratch, &marker);

    let hold = e.wait_hold(Duration::from_secs(10));
    let rule = hold.request.verdict.rule.clone();
    assert_stopped(hold.request.pid);
    assert!(!marker.exists());
    e.deny(&hold);
    let status = wait_exit(&mut child, Duration::from_secs(10), "denied terraform");
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(137), "stderr: {stderr}");
    assert!(
        stderr.contains("guard: denied")
            && stderr.contains(&format!("destroy -auto-approve (rule {rule})")),
        "the agent must be told why: {stderr:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "denied terraform must never run");
}

#[test]
fn unwatched_programs_run_without_a_hold() {
    require_root();
    let e = watched_session("exec-free");
    let mut child = session_command(
        &e.cg,
        &["/bin/sh", "-c", "/bin/true && /bin/echo hi >/dev/null"],
    )
    .spawn()
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10), "unwatched commands");
    assert!(status.success());
    assert!(
        e.broker.pending().is_empty(),
        "nothing watched ran, nothing may be held"
    );
}

/// Forked, exec'd and double-forked (daemonised) descendants are all in the
/// session: their execs are seen and a watched one is stopped; the same
/// program outside the session runs untouched.
#[test]
fn every_descendant_is_in_the_session_and_outsiders_are_not() {
    require_root();
    let scratch = Scratch::new("exec-tree");
    scratch.script("bin/child-direct", "#!/bin/sh\nexit 0\n");
    scratch.script("bin/child-daemon", "#!/bin/sh\nexec sleep 30\n");
    scratch.script("bin/terraform", TERRAFORM);
    let outside_marker = scratch.path("outside-marker");
    let inside_marker = scratch.path("inside-marker");
    let e = watched_session("exec-tree");
    let bin = scratch.path("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // Outside: runs at once, no hold.
    let status = std::process::Command::new(bin.join("terraform"))
        .arg("destroy")
        .env("MARKER", &outside_marker)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        outside_marker.exists(),
        "a process outside the session was held"
    );

    // Inside: a fork+exec child, a double-forked daemon (setsid), and a
    // double-forked terraform.
    let script = "child-direct; \
                  ( setsid child-daemon </dev/null >/dev/null 2>&1 & ); \
                  ( ( terraform destroy </dev/null >/dev/null 2>&1 & ) & ); \
                  exit 0";
    let mut child = session_command(&e.cg, &["/bin/sh", "-c", script])
        .env("PATH", &path)
        .env("MARKER", &inside_marker)
        .spawn()
        .unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(10), "session shell").success());

    let hold = e.wait_hold(Duration::from_secs(10));
    let held_pid = hold.request.pid;
    assert_stopped(held_pid);
    let session_path = e.cg.cgroup.path().to_string_lossy().into_owned();
    let held_in = cgroup_of(held_pid);
    let (parent, _) = held_in.rsplit_once("/guard-hold-").unwrap_or_else(|| {
        panic!("the held task must be parked in a frozen sub-cgroup, is in {held_in}")
    });
    assert!(
        session_path.ends_with(parent),
        "the double-forked terraform must be in the session cgroup ({session_path}), is in {held_in}"
    );
    assert!(!inside_marker.exists());
    e.approve(&hold);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !inside_marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "approved daemon never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let names: Vec<String> = e
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|ev| match ev {
            guard::events::KernelEvent::Exec {
                filename,
                cgroup_id,
                ..
            } => {
                assert_eq!(
                    *cgroup_id, e.session,
                    "an event from outside the session: {ev:?}"
                );
                Some(filename.rsplit('/').next().unwrap_or_default().to_owned())
            }
            _ => None,
        })
        .collect();
    for expected in ["child-direct", "child-daemon", "terraform"] {
        assert!(
            names.iter().any(|n| n == expected),
            "no exec event for {expected}; saw {names:?}"
        );
    }
}

/// A SIGCONT from inside the session does not let an exec-stopped program
/// run: it waits frozen in a sub-cgroup of the session (kernels without BPF
/// LSM, where `task_kill` cannot refuse the signal).
#[test]
fn sigcont_from_the_session_does_not_release_an_exec_stop() {
    require_root();
    let scratch = Scratch::new("exec-sigcont");
    scratch.script("bin/terraform", TERRAFORM);
    let marker = scratch.path("marker");
    let e = watched_session("exec-sigcont");
    let path = guard_tests::path_with_bin(&scratch.dir);
    let script =
        "terraform destroy & p=$!; sleep 1; kill -CONT $p; echo \"sent=$?\" >&2; wait $p; exit $?";
    let mut child = session_command(&e.cg, &["/bin/sh", "-c", script])
        .env("PATH", path)
        .env("MARKER", &marker)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hold = e.wait_hold(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !marker.exists(),
        "a SIGCONT from the session released the exec stop"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the shell must still wait"
    );
    e.deny(&hold);
    let status = wait_exit(&mut child, Duration::from_secs(10), "session shell");
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(137), "stderr: {stderr}");
    assert!(!marker.exists(), "denied terraform must never run");
}

/// A hold's frozen guard-hold cell still inside a session when it ends
/// (the hold ended as the session did) does not keep the session's cgroup
/// from being removed.
#[test]
fn a_session_cgroup_goes_with_a_leftover_guard_hold_cell() {
    require_root();
    let cg = guard_tests::TestCgroup::new("hold-cell");
    let cell = guard::cgroup::Cgroup::open(cg.cgroup.path().join("guard-hold-1"));
    std::fs::create_dir(cell.path()).unwrap();
    cell.set_frozen(true).unwrap();
    let session = cg.cgroup.path().to_path_buf();
    cg.cgroup
        .remove()
        .expect("removing the session and its cell");
    assert!(!session.exists());
    drop(cg);
}
