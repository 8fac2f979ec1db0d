//! VM tier: the LSM restart hold on real files. A protected unlink stops
//! the process with the file intact until a person answers through the
//! HoldBroker; approve lets the same syscall finish, deny makes it fail with
//! EPERM; a stray SIGCONT does not release it; renames over and truncations
//! of protected files are held too; holds name the resolved path, byte-exact.
//! Skipped (with the reason printed) where BPF LSM cannot attach; a failure
//! in the VM. (Split over several vm_enforce_* binaries: each must finish
//! within the VM tier's per-binary limit.)

mod kernel_harness;

use std::{path::PathBuf, process::Stdio, time::Duration};

use guard::{action::Action, events::KernelEvent};
use kernel_harness::{files::*, *};

#[test]
fn protected_rm_is_held_and_finishes_after_approval() {
    let Some(t) = protected_tree("vm-rm-approve") else {
        return;
    };
    let db = t.protected.join("prod db.sqlite3");
    std::fs::write(&db, b"rows").unwrap();
    let mut child = rm(&t.e, &db);

    let hold = held_unlink_of(&t.e, &db);
    assert_stopped(hold.request.pid);
    std::thread::sleep(Duration::from_millis(200));
    assert!(db.exists(), "the file must be intact while held");

    t.e.approve(&hold);
    let status = wait_exit(&mut child, Duration::from_secs(20), "approved rm");
    assert_eq!(status.code(), Some(0), "rm: {}", stderr_of(&mut child));
    assert!(!db.exists(), "approved rm must remove the file");
    let stats = t.e.enforcer.stats().unwrap();
    assert!(stats.held >= 1 && stats.grants_used >= 1, "{stats:?}");
    drop(t.scratch);
}

#[test]
fn protected_rm_fails_with_eperm_after_denial() {
    let Some(t) = protected_tree("vm-rm-deny") else {
        return;
    };
    let db = t.protected.join("db.sqlite3");
    std::fs::write(&db, b"rows").unwrap();
    let mut child = rm(&t.e, &db);
    let hold = held_unlink_of(&t.e, &db);
    let rule = hold.request.verdict.rule.clone();
    assert_stopped(hold.request.pid);
    t.e.deny(&hold);
    let status = wait_exit(&mut child, Duration::from_secs(20), "denied rm");
    let stderr = stderr_of(&mut child);
    assert_ne!(status.code(), Some(0), "denied rm must fail");
    assert!(
        stderr.contains("Operation not permitted"),
        "rm must report EPERM: {stderr:?}"
    );
    assert!(
        stderr.contains("guard: denied unlink") && stderr.contains(&format!("(rule {rule})")),
        "the agent must be told why: {stderr:?}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"rows",
        "the file must be intact"
    );
}

#[test]
fn stray_sigcont_does_not_release_a_hold() {
    let Some(t) = protected_tree("vm-rm-sigcont") else {
        return;
    };
    let db = t.protected.join("keep");
    std::fs::write(&db, b"x").unwrap();
    let mut child = rm(&t.e, &db);
    let hold = held_unlink_of(&t.e, &db);
    let pid = hold.request.pid;
    assert_stopped(pid);
    for _ in 0..3 {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        std::thread::sleep(Duration::from_millis(300));
        assert_stopped(pid);
        assert!(db.exists(), "a stray SIGCONT released the unlink");
    }
    assert_eq!(
        t.e.broker.pending().len(),
        1,
        "the restarted syscall must not open a second hold"
    );
    assert!(
        t.e.enforcer.stats().unwrap().held >= 4,
        "each SIGCONT re-stops the task"
    );
    t.e.approve(&hold);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20), "rm").code(),
        Some(0)
    );
    assert!(!db.exists());
}

#[test]
fn rename_over_and_truncate_of_protected_files_are_held_too() {
    let Some(t) = protected_tree("vm-rename-trunc") else {
        return;
    };
    let target = t.protected.join("state.tfstate");
    std::fs::write(&target, b"state").unwrap();
    let decoy = t.scratch.path("decoy");
    std::fs::write(&decoy, b"empty").unwrap();

    let mut mv = session_command(
        &t.e.cg,
        &["mv", decoy.to_str().unwrap(), target.to_str().unwrap()],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let hold = t.e.wait_hold(Duration::from_secs(20));
    match &hold.request.action {
        Action::Rename { to, .. } => assert_eq!(to, &target),
        other => panic!("expected a rename hold, got {other:?}"),
    }
    t.e.deny(&hold);
    assert_ne!(
        wait_exit(&mut mv, Duration::from_secs(20), "mv").code(),
        Some(0)
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"state");

    let script = format!(": > '{}'", target.display());
    let mut truncate = session_command(&t.e.cg, &["/bin/sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hold = t.e.wait_hold(Duration::from_secs(20));
    assert_eq!(
        hold.request.action,
        Action::Truncate {
            path: target.clone()
        }
    );
    t.e.deny(&hold);
    assert_ne!(
        wait_exit(&mut truncate, Duration::from_secs(20), "truncate").code(),
        Some(0)
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"state",
        "truncation was refused"
    );
}

/// The hold names the object's real path however it was reached: through a
/// symlinked directory, `..`, or /proc/self/root.
#[test]
fn holds_name_the_resolved_path_not_the_spelling() {
    let Some(t) = protected_tree("vm-spelling") else {
        return;
    };
    let link = t.protected.with_file_name("innocent-link");
    std::os::unix::fs::symlink(&t.protected, &link).unwrap();
    let spellings = [
        link.join("a"),
        t.protected.join("../protected/b"),
        PathBuf::from(format!(
            "/proc/self/root{}",
            t.protected.join("c").display()
        )),
    ];
    for (name, spelled) in ["a", "b", "c"].iter().zip(&spellings) {
        let real = t.protected.join(name);
        std::fs::write(&real, b"x").unwrap();
        let mut child = rm(&t.e, spelled);
        let hold = held_unlink_of(&t.e, &real);
        t.e.deny(&hold);
        assert_ne!(
            wait_exit(&mut child, Duration::from_secs(20), "rm").code(),
            Some(0)
        );
        assert!(
            real.exists(),
            "{} reached the protected file",
            spelled.display()
        );
    }
}

/// Names with spaces, newlines and non-UTF-8 bytes arrive byte-exact.
#[test]
fn odd_file_names_arrive_byte_exact() {
    let Some(t) = protected_tree("vm-odd-names") else {
        return;
    };
    use std::os::unix::ffi::OsStrExt as _;
    let name = std::ffi::OsStr::from_bytes(b"we ird\nna\xffme");
    let real = t.protected.join(name);
    std::fs::write(&real, b"x").unwrap();
    let mut child = session_command(&t.e.cg, &["rm"])
        .arg(&real)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hold = held_unlink_of(&t.e, &real);
    t.e.approve(&hold);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20), "rm").code(),
        Some(0)
    );
    assert!(!real.exists());
}

/// A path too deep to resolve in full is held even where nothing is
/// protected, and policy is not allowed to pass it unseen.
#[test]
fn too_deep_path_is_held_for_a_person() {
    let Some(t) = protected_tree("vm-deep") else {
        return;
    };
    let mut deep = std::fs::canonicalize(&t.scratch.dir).unwrap().join("work");
    for _ in 0..70 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let file = deep.join("f");
    std::fs::write(&file, b"x").unwrap();
    let mut child = rm(&t.e, &file);
    let hold = t.e.wait_hold(Duration::from_secs(20));
    assert!(
        hold.request.verdict.reason.contains("too long to resolve"),
        "{:?}",
        hold.request.verdict
    );
    let event_truncated = t.e.events.lock().unwrap().iter().any(|e| {
        matches!(
            e,
            KernelEvent::File {
                truncated: true,
                ..
            }
        )
    });
    assert!(
        event_truncated,
        "the kernel must flag the path as truncated"
    );
    t.e.approve(&hold);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20), "rm").code(),
        Some(0)
    );
}
