//! Host tier, end to end with the seccomp backend: a real `guard session`
//! holds `rm` of a protected file (the default policy's terraform state
//! rule); the hold is decided by `guard deny` / `guard approve` run as
//! separate processes; the agent is told why on its stderr; the audit log has
//! every step.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use guard::audit;
use guard_tests::{TempDir, child_output, guard_cli, require_root, wait_for_hold};

/// A session whose agent removes `terraform.tfstate` in its workspace.
fn session(dir: &TempDir, name: &str) -> Child {
    let workspace = dir.join("ws");
    guard_cli(dir)
        .current_dir(&workspace)
        .args(["session", "--no-prompt", "--name", name, "--workspace"])
        .arg(&workspace)
        .args(["--", "sh", "-c", "rm terraform.tfstate; echo status=$?"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The unlink hold. Holds that come first (exec stop may also ask about
/// `rm terraform.tfstate` as a program) are approved, so the file call is
/// what gets decided.
fn hold_id(dir: &TempDir) -> u64 {
    wait_for_hold(dir, "the rm hold", |h| h["action"]["op"] == "unlink")
}

#[test]
fn rm_of_protected_state_is_held_then_denied_or_approved_from_another_process() {
    require_root();
    let dir = TempDir::new("seccomp-e2e");
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    let state = dir.join("ws/terraform.tfstate");
    std::fs::write(&state, "{}").unwrap();

    let child = session(&dir, &format!("sc-{}", std::process::id()));
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
    assert!(text.contains("status=1"), "{text}");
    assert!(state.exists(), "a denied rm must leave the file");

    let child = session(&dir, &format!("sc2-{}", std::process::id()));
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
    assert!(!state.exists(), "an approved rm removes the file");

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
