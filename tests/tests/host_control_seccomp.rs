//! Host tier, end to end with the seccomp backend: a real `guard session`
//! holds `rm` of a protected file (the default policy's terraform state
//! rule); the hold is decided by `guard deny` / `guard approve` run as
//! separate processes; the agent is told why on its stderr; the audit log has
//! every step.

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use guard::audit;
use guard_tests::{TempDir, guard_bin, require_root, wait_until};
use serde_json::Value;

fn guard(dir: &TempDir) -> Command {
    let mut command = Command::new(guard_bin());
    command
        .env("GUARD_SOCKET", dir.join("guard.sock"))
        .env("GUARD_AUDIT_LOG", dir.join("audit.jsonl"));
    command
}

/// A session whose agent removes `terraform.tfstate` in its workspace.
fn session(dir: &TempDir, name: &str) -> Child {
    let workspace = dir.join("ws");
    guard(dir)
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

fn hold_id(dir: &TempDir) -> u64 {
    let mut id = 0;
    wait_until(Duration::from_secs(20), "the rm hold", || {
        let out = guard(dir).args(["holds", "--json"]).output().unwrap();
        let holds: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        match holds.iter().find(|h| h["action"]["op"] == "unlink") {
            Some(h) => {
                id = h["id"].as_u64().unwrap();
                true
            }
            None => false,
        }
    });
    id
}

fn output(mut child: Child) -> (i32, String) {
    let status = child.wait().unwrap();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status.code().unwrap_or(-1), text)
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
    let out = guard(&dir)
        .args(["deny", &id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = output(child);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("guard: denied unlink"), "{text}");
    assert!(text.contains("status=1"), "{text}");
    assert!(state.exists(), "a denied rm must leave the file");

    let child = session(&dir, &format!("sc2-{}", std::process::id()));
    let id = hold_id(&dir);
    let out = guard(&dir)
        .args(["approve", &id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = output(child);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("status=0"), "{text}");
    assert!(text.contains("1 held, 1 approved"), "{text}");
    assert!(!state.exists(), "an approved rm removes the file");

    let records = audit::read(&dir.join("audit.jsonl")).unwrap();
    let steps: Vec<_> = records
        .iter()
        .filter(|r| r.what.ends_with("terraform.tfstate"))
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
