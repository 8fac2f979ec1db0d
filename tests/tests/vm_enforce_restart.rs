//! VM tier: holds outlive their controller (pinned programs and maps, the
//! HELD record), and session tasks cannot release an exec stop or signal the
//! guard (task_kill). Skipped where BPF LSM cannot attach.

mod kernel_harness;

use std::{path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use guard::{
    kernel_maps::PathScope,
    pin::PinDir,
    policy::Policy,
    programs::{Probe, ProgramSet},
};
use guard_common::{EventKind, Rule, session_flags};
use guard_tests::{TestCgroup, require_root};
use kernel_harness::{files::*, *};

/// The daemon dies while a hold is pending: the pinned programs keep the
/// process stopped, and a new controller on the same pin directory picks
/// the hold up again and releases it on approval.
#[test]
fn pending_hold_survives_a_controller_restart() {
    require_root();
    let scratch = Scratch::new("vm-restart");
    let root = std::fs::canonicalize(&scratch.dir).unwrap();
    let protected = root.join("protected");
    std::fs::create_dir_all(&protected).unwrap();
    let db = protected.join("db");
    std::fs::write(&db, b"rows").unwrap();
    let pin_path = PathBuf::from(format!(
        "/sys/fs/bpf/guard-test-restart-{}",
        std::process::id()
    ));
    let cg = Arc::new(TestCgroup::new("vm-restart"));
    let policy = || Policy::embedded_default().with_protected(&protected);

    let first_pin = PinDir::persistent(&pin_path).expect("pin dir");
    let depth = cg.cgroup.depth().unwrap();
    let first_set = ProgramSet::load_pinned(first_pin, depth, &Probe::LSM).unwrap();
    if !lsm_attached("vm_enforce restart", &first_set, &Probe::LSM) {
        let _ = PinDir::persistent(&pin_path).map(|p| p.remove_all());
        return;
    }
    drop(first_set);
    let first_pin = PinDir::persistent(&pin_path).unwrap();
    let first = Enforced::with_pin(
        "vm-restart",
        cg.clone(),
        first_pin,
        &Probe::LSM,
        session_flags::WATCH_FILES,
        policy(),
    );
    first
        .tables
        .lock()
        .unwrap()
        .set_path_rule(
            first.session,
            &protected,
            PathScope::Below,
            Rule::holding(FILE_OPS),
        )
        .unwrap();
    let mut child = rm(&first, &db);
    let hold = held_unlink_of(&first, &db);
    let pid = hold.request.pid;
    assert_stopped(pid);
    drop(first); // the controller goes away; the pins stay

    std::thread::sleep(Duration::from_millis(300));
    assert_stopped(pid);
    assert!(db.exists(), "the hold must outlive its controller");

    let second = Enforced::with_pin(
        "vm-restart",
        cg.clone(),
        PinDir::persistent(&pin_path).unwrap(),
        &Probe::LSM,
        session_flags::WATCH_FILES,
        policy(),
    );
    assert!(
        second.enforcer.reports().iter().all(|r| r.reused),
        "the pinned programs must be reused: {:?}",
        second.enforcer.reports()
    );
    let held = second.backends.lsm.recover(&second.backends.exec);
    assert!(
        held.iter().any(|(_, t)| t.pid == pid),
        "the kernel's HELD map must list the stopped rm: {held:?}"
    );
    let hold = held_unlink_of(&second, &db);
    assert_eq!(hold.request.pid, pid);
    second.approve(&hold);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20), "rm").code(),
        Some(0)
    );
    assert!(!db.exists());
    drop(second);
    PinDir::persistent(&pin_path).unwrap().remove_all().unwrap();
}

/// With BPF LSM, a session task cannot release an exec-stopped program with
/// SIGCONT, nor signal the guard; the hold stays until a person decides.
#[test]
fn session_cannot_sigcont_an_exec_stop_or_signal_the_guard() {
    require_root();
    let Some(e) = Enforced::start_lsm(
        "vm-exec-sigcont",
        &[Probe::Exec, Probe::LsmTaskKill],
        session_flags::WATCH_EXEC,
        Policy::embedded_default(),
    ) else {
        return;
    };
    let scratch = Scratch::new("vm-exec-sigcont");
    scratch.script("bin/terraform", "#!/bin/sh\n: > \"$MARKER\"\n");
    let marker = scratch.path("marker");
    e.tables
        .lock()
        .unwrap()
        .watch_exec(e.session, "terraform", Rule::holding(EventKind::Exec.bit()))
        .unwrap();
    let script = format!(
        "terraform destroy & p=$!; sleep 2; kill -CONT $p; echo \"held=$?\" >&2; \
         kill -CONT {}; echo \"guard=$?\" >&2; wait $p; exit $?",
        std::process::id()
    );
    let path = guard_tests::path_with_bin(&scratch.dir);
    let mut child = session_command(&e.cg, &["/bin/sh", "-c", &script])
        .env("PATH", path)
        .env("MARKER", &marker)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hold = e.wait_hold(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    assert_stopped(hold.request.pid);
    assert!(
        !marker.exists(),
        "a SIGCONT from the session released the exec stop"
    );
    e.deny(&hold);
    let status = wait_exit(&mut child, Duration::from_secs(20), "session shell");
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(137), "stderr: {stderr}");
    assert!(
        stderr.contains("held=1"),
        "kill -CONT on the held task must fail: {stderr}"
    );
    assert!(
        stderr.contains("guard=1"),
        "signalling the guard must fail: {stderr}"
    );
    assert!(!marker.exists());
    assert!(e.enforcer.stats().unwrap().signals_refused >= 2);
}
