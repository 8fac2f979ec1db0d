//! VM tier (and host tier): a network rule naming a host by name holds in a
//! real `guard session`. The session resolves the policy's names before its
//! agent starts (so the kernel's endpoint table, or the seccomp supervisor's
//! policy, knows their addresses) and again every GUARD_RESOLVE_INTERVAL. A
//! rule denying `localhost` on one port refuses that connect while another
//! port connects; in the VM, a name that only starts resolving (a line added
//! to the guest's /etc/hosts) is refused after the next refresh.

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use guard_tests::{TempDir, guard_cli, in_vm_tier, report_skip, require_root, wait_until};

const LOOPS: &str = env!("CARGO_BIN_EXE_syscall_loops");

/// A policy denying connects to `host` on `port`.
fn deny_host_policy(dir: &TempDir, host: &str, port: u16) -> std::path::PathBuf {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\n\
             network:\n\
             \x20 - id: net.named-prod\n\
             \x20   hosts: [{host}]\n\
             \x20   ports: [{port}]\n\
             \x20   decision: deny\n\
             \x20   reason: the production database, by name\n"
        ),
    )
    .unwrap();
    policy
}

fn listen(ip: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("listening on {ip}: {e}"));
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// `guard session --policy P -- sh -c SCRIPT`, names re-resolved every second.
fn session_command(dir: &TempDir, policy: &Path, script: &str) -> Command {
    let mut command = guard_cli(dir);
    command
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .env("GUARD_RESOLVE_INTERVAL", "1s")
        .current_dir(&dir.path)
        .args(["session", "--no-prompt", "--policy"])
        .arg(policy)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null());
    command
}

/// Runs it; returns (status, stdout, stderr).
fn run(mut command: Command) -> (i32, String, String) {
    let out = command.output().expect("starting guard session");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_rule_naming_a_host_holds_for_its_resolved_addresses() {
    require_root();
    let dir = TempDir::new("hosts");
    let (_prod, prod) = listen("127.0.0.1");
    let (_dev, dev) = listen("127.0.0.1");
    let policy = deny_host_policy(&dir, "localhost", prod);
    let (code, out, err) = run(session_command(
        &dir,
        &policy,
        &format!("{LOOPS} connect-each 127.0.0.1:{prod} 127.0.0.1:{dev}"),
    ));
    assert_eq!(code, 1, "the denied connect fails the loop: {out}{err}");
    assert!(
        out.lines().any(|l| l.starts_with(&format!("err 127.0.0.1:{prod}"))
            && l.contains("not permitted")),
        "{out}{err}"
    );
    assert!(
        out.lines().any(|l| l == format!("ok 127.0.0.1:{dev}")),
        "{out}{err}"
    );
    assert!(err.contains("rule net.named-prod"), "{err}");
}

#[test]
fn a_name_that_starts_resolving_is_held_after_the_next_refresh() {
    require_root();
    if !in_vm_tier() {
        report_skip(
            "hosts refresh",
            "edits /etc/hosts, so it runs only in the VM tier (cargo xtask vm-test)",
        );
        return;
    }
    let dir = TempDir::new("hosts-refresh");
    let (_prod, prod) = listen("127.0.0.3");
    let policy = deny_host_policy(&dir, "db.guard.test", prod);
    let go = dir.join("go");
    let first = dir.join("first");
    let script = format!(
        "{LOOPS} connect-each 127.0.0.3:{prod} > {first}; \
         while [ ! -e {go} ]; do sleep 0.05; done; \
         {LOOPS} connect-each 127.0.0.3:{prod}",
        first = first.display(),
        go = go.display()
    );
    let command = session_command(&dir, &policy, &script);
    let runner = std::thread::spawn(move || run(command));
    wait_until(Duration::from_secs(90), "the first connect", || {
        std::fs::read_to_string(&first).is_ok_and(|s| s.contains('\n'))
    });
    let before = std::fs::read_to_string(&first).unwrap();
    assert!(
        before.starts_with(&format!("ok 127.0.0.3:{prod}")),
        "an unresolved name matches nothing yet: {before}"
    );
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    std::fs::write("/etc/hosts", format!("{hosts}127.0.0.3 db.guard.test\n")).unwrap();
    // Two refresh periods (1 s each), with room for a slow guest.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&go, b"").unwrap();
    let (code, out, err) = runner.join().unwrap();
    std::fs::write("/etc/hosts", hosts).unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines().any(|l| l.starts_with(&format!("err 127.0.0.3:{prod}"))
            && l.contains("not permitted")),
        "after the refresh the name's address is refused: {out}{err}"
    );
}
