//! VM tier: `guard adopt` under BPF LSM. The adopted process's unlink of a
//! protected file is held *before* it happens (the file is intact while
//! held); approve lets it through, deny makes it fail with EPERM, and the
//! summary names the lsm backend. On the host (no BPF LSM) host_adopt.rs
//! covers bounded mode instead, and this test only says it skipped.

use std::{
    ffi::CString,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use guard_tests::{
    Reaped, TempDir, ask_before_unlink_policy, guard_cli, in_vm_tier, pending_holds, report_skip,
    require_root, wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ")?.1.chars().next())
        .unwrap_or('?')
}

#[test]
fn an_adopted_unlink_is_held_before_it_happens_under_bpf_lsm() {
    require_root();
    if !in_vm_tier() {
        report_skip(
            "adopt under BPF LSM",
            "runs in the VM tier (cargo xtask vm-test); host_adopt.rs covers bounded mode",
        );
        return;
    }
    let dir = TempDir::new("vm-adopt");
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
    // The agent blocks on a fifo until the test lets it go: no polling.
    let go = dir.join("go");
    let fifo = CString::new(go.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut agent = Reaped(
        Command::new("sh")
            .args([
                "-c",
                "read x < go; rm a; echo a=$? > out; rm b; echo b=$? >> out",
            ])
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = agent.id();
    let name = format!("vm-adopt-{pid}");
    let adopt = Reaped(
        guard_cli(&dir)
            .args([
                "adopt",
                "--no-prompt",
                "--json",
                "--name",
                &name,
                "--policy",
            ])
            .arg(&policy)
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(WAIT, "the agent to move into the session", || {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.contains(&format!("/guard.slice/session-{name}")))
    });
    std::fs::write(&go, "go\n").unwrap();

    let hold_on = |path: &Path| {
        let mut found = None;
        wait_until(WAIT, &format!("a hold on {}", path.display()), || {
            found = pending_holds(&dir).into_iter().find(|h: &Value| {
                h["action"]["op"] == "unlink" && h["action"]["path"] == path.to_str().unwrap()
            });
            found.is_some()
        });
        found.unwrap()
    };
    let first = hold_on(&a);
    assert_eq!(first["backend"], "lsm", "{first}");
    let rm = first["pid"].as_u64().unwrap() as u32;
    wait_until(WAIT, "rm to be stopped", || state(rm) == 'T');
    assert!(a.exists(), "under BPF LSM the held unlink has not happened");
    let ok = |args: &[&str]| {
        let out = guard_cli(&dir).args(args).output().unwrap();
        assert!(out.status.success(), "guard {args:?}: {out:?}");
    };
    ok(&["approve", &first["id"].to_string()]);
    let second = hold_on(&b);
    assert!(!a.exists(), "approved: the unlink went through");
    assert!(b.exists(), "the second unlink is held before it happens");
    ok(&["deny", &second["id"].to_string()]);
    wait_until(WAIT, "the agent to finish", || {
        matches!(agent.try_wait(), Ok(Some(_)))
    });
    assert!(b.exists(), "denied: the file stays");
    let out = std::fs::read_to_string(root.join("out")).unwrap();
    assert_eq!(out, "a=0\nb=1\n", "deny makes rm fail (EPERM)");

    let mut adopt = adopt.into_inner();
    wait_until(WAIT, "guard adopt to end with the tree", || {
        matches!(adopt.try_wait(), Ok(Some(_)))
    });
    let out = adopt.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("summary ({e}): {out:?}"));
    assert_eq!(summary["backend"], "lsm", "{summary}");
    assert_eq!(summary["counts"]["approved"], 1, "{summary}");
    assert_eq!(summary["counts"]["denied"], 1, "{summary}");
}
