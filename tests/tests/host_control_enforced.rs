//! Host tier, end to end with the exec-stop backend: a real `guard session`
//! stops a watched program before it runs; the hold is listed and decided by
//! `guard holds` / `guard approve` / `guard deny` run as separate processes,
//! with no daemon (the session's own socket) and with a running daemon.

use std::{
    os::unix::net::UnixStream,
    process::{Child, Stdio},
    time::Duration,
};

use guard::audit;
use guard_tests::{
    TempDir, child_output, guard_cli, path_with_bin, require_root, stand_in_terraform,
    wait_for_hold, wait_until,
};

/// `guard session` running a script that runs `terraform destroy`.
fn session(dir: &TempDir, name: &str) -> Child {
    let script = dir.join("agent.sh");
    std::fs::write(&script, "terraform destroy -auto-approve\necho status=$?\n").unwrap();
    guard_cli(dir)
        .env("PATH", path_with_bin(&dir.path))
        .args(["session", "--no-prompt", "--name", name, "--"])
        .arg("sh")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Approves the holds that come first (the policy also reads the agent's
/// script, which runs terraform destroy) and returns terraform's own hold.
fn wait_for_terraform_hold(dir: &TempDir) -> u64 {
    wait_for_hold(dir, "the terraform hold", |h| {
        h["action"]["filename"]
            .as_str()
            .is_some_and(|f| f.ends_with("bin/terraform"))
    })
}

#[test]
fn without_a_daemon_the_cli_approves_and_denies_a_real_exec_hold() {
    require_root();
    let dir = TempDir::new("enforced-embedded");
    let marker = stand_in_terraform(&dir);

    let child = session(&dir, &format!("emb-{}", std::process::id()));
    let id = wait_for_terraform_hold(&dir);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "terraform ran while held");
    let out = guard_cli(&dir)
        .args(["deny", &id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = child_output(child);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("status=137"), "{text}");
    assert!(text.contains("guard: denied"), "{text}");
    assert!(!marker.exists());

    let child = session(&dir, &format!("emb2-{}", std::process::id()));
    let id = wait_for_terraform_hold(&dir);
    let out = guard_cli(&dir)
        .args(["approve", &id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = child_output(child);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("terraform ran") && text.contains("status=0"),
        "{text}"
    );
    assert!(marker.exists());

    let records = audit::read(&dir.join("audit.jsonl")).unwrap();
    let ends: Vec<_> = records
        .iter()
        .filter(|r| r.what.contains("terraform destroy") && r.backend == "exec-stop")
        .filter_map(|r| r.outcome.clone())
        .collect();
    assert_eq!(ends, ["held", "denied", "held", "approved"], "{records:#?}");
}

#[test]
fn with_a_daemon_the_daemon_decides_a_real_exec_hold() {
    require_root();
    let dir = TempDir::new("enforced-daemon");
    let marker = stand_in_terraform(&dir);
    let audit_path = dir.join("daemon-audit.jsonl");
    let mut daemon = guard_cli(&dir)
        .args(["daemon", "--audit-log"])
        .arg(&audit_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.join("guard.sock");
    wait_until(Duration::from_secs(10), "the daemon", || {
        UnixStream::connect(&socket).is_ok()
    });

    let name = format!("dmn-{}", std::process::id());
    let child = session(&dir, &name);
    let id = wait_for_terraform_hold(&dir);
    assert!(!marker.exists());
    assert!(
        !dir.join(&format!("sessions/{name}.sock")).exists(),
        "with a daemon the session must not serve its own socket"
    );
    let out = guard_cli(&dir)
        .args(["approve", &id.to_string(), "--for", "session"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = child_output(child);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("daemon controller"), "{text}");
    assert!(marker.exists());
    let records = audit::read(&audit_path).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.outcome.as_deref() == Some("approved") && r.what.contains("terraform")),
        "{records:#?}"
    );
    // SAFETY: our child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
}
