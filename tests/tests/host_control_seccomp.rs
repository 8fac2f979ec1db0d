//! Host tier, end to end with the seccomp backend: a real `guard session`
//! holds the unlink of a protected file (the default policy's terraform state
//! rule); the hold is decided by `guard deny` / `guard approve` run as
//! separate processes; the agent is told why on its stderr; the audit log has
//! every step. And `rm` of that file, approved once at exec, is not asked
//! about again at its unlink.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use guard::audit;
use guard_tests::{TempDir, child_output, guard_cli, pending_holds, require_root, wait_for_hold};

/// Deletes every file in a directory; not a program guard's classifiers
/// read, so only the file hooks see what it does.
const LOOPS: &str = env!("CARGO_BIN_EXE_syscall_loops");

/// A session in `ws` running `command` with `sh -c`.
fn session(dir: &TempDir, name: &str, command: &str) -> Child {
    let workspace = dir.join("ws");
    guard_cli(dir)
        .current_dir(&workspace)
        .args(["session", "--no-prompt", "--name", name, "--workspace"])
        .arg(&workspace)
        .args(["--", "sh", "-c", command])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The unlink hold. Holds that come first (the shell running the command
/// is classified at exec) are approved, so the file call is what gets decided.
fn hold_id(dir: &TempDir) -> u64 {
    wait_for_hold(dir, "the unlink hold", |h| h["action"]["op"] == "unlink")
}

#[test]
fn rm_of_protected_state_is_held_then_denied_or_approved_from_another_process() {
    require_root();
    let dir = TempDir::new("seccomp-e2e");
    std::fs::create_dir_all(dir.join("ws/infra")).unwrap();
    let state = dir.join("ws/infra/terraform.tfstate");
    std::fs::write(&state, "{}").unwrap();
    let command = format!("{LOOPS} unlink-all infra; echo status=$?");

    let child = session(&dir, &format!("sc-{}", std::process::id()), &command);
    let id = hold_id(&dir);
    std::thread::sleep(Duration::from_millis(200));
    assert!(state.exists(), "the file went while held");
    let out = guard_cli(&dir)
        .args(["deny", &id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = child_output(child);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("guard: denied unlink"), "{text}");
    assert!(text.contains("status=101"), "the deleter panics: {text}");
    assert!(state.exists(), "a denied unlink must leave the file");

    let child = session(&dir, &format!("sc2-{}", std::process::id()), &command);
    let id = hold_id(&dir);
    let out = guard_cli(&dir)
        .args(["approve", &id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = child_output(child);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("status=0"), "{text}");
    assert!(text.contains(" approved"), "{text}");
    assert!(!state.exists(), "an approved unlink removes the file");

    let records = audit::read(&dir.join("audit.jsonl")).unwrap();
    let steps: Vec<_> = records
        .iter()
        .filter(|r| r.what.ends_with("terraform.tfstate") && r.backend == "seccomp")
        .map(|r| (r.outcome.clone().unwrap_or_default(), r.backend.clone()))
        .collect();
    let seccomp = |o: &str| (o.to_owned(), "seccomp".to_owned());
    assert_eq!(
        steps,
        [
            seccomp("held"),
            seccomp("denied"),
            seccomp("held"),
            seccomp("approved")
        ],
        "{records:#?}"
    );
    assert_eq!(
        records
            .iter()
            .find(|r| r.outcome.as_deref() == Some("denied"))
            .unwrap()
            .rule,
        "files.terraform-state"
    );
}

/// `rm terraform.tfstate` is asked about once, at exec (the shell's command
/// line, then rm's own argv); its unlink of the same file is covered by that
/// approval and not held again, and the audit log says whose approval let it
/// through.
#[test]
fn an_rm_approved_at_exec_is_not_asked_again_at_its_unlink() {
    require_root();
    let dir = TempDir::new("seccomp-cover");
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    let state = dir.join("ws/terraform.tfstate");
    std::fs::write(&state, "{}").unwrap();
    let child = session(
        &dir,
        &format!("cover-{}", std::process::id()),
        "rm terraform.tfstate; echo status=$?",
    );
    let mut child = guard_tests::Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut approved = Vec::new();
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the session never finished");
        for hold in pending_holds(&dir) {
            assert_eq!(
                hold["action"]["op"], "exec",
                "only the commands may be asked about: {hold:#}"
            );
            let id = hold["id"].as_u64().unwrap().to_string();
            let out = guard_cli(&dir).args(["approve", &id]).output().unwrap();
            assert!(out.status.success(), "{out:?}");
            approved.push(hold["action"]["argv"].clone());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = child_output(child.into_inner());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("status=0"), "{text}");
    assert!(!state.exists(), "the approved rm removes the file");
    assert!(
        !approved.is_empty(),
        "rm of terraform state must be asked about"
    );
    let records = audit::read(&dir.join("audit.jsonl")).unwrap();
    let unlink: Vec<_> = records
        .iter()
        .filter(|r| r.what.starts_with("unlink ") && r.what.ends_with("terraform.tfstate"))
        .collect();
    assert_eq!(unlink.len(), 1, "{records:#?}");
    let r = unlink[0];
    assert!(r.by_grant, "{r:#?}");
    assert_eq!(r.outcome.as_deref(), Some("approved"), "{r:#?}");
    assert_eq!(r.rule, "files.terraform-state");
    assert!(
        r.approver.as_deref().is_some_and(|a| a.contains("at exec")),
        "{r:#?}"
    );
}
