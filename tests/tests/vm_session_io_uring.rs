//! VM tier (and host tier): io_uring is refused inside a real `guard session`
//! on either backend. Its file ops run on kernel worker threads, where an LSM
//! restart hold cannot stop the caller, so under BPF LSM the session gets a
//! one-line seccomp filter refusing the ring (ENOSYS), installed as root before
//! the user switch (no no_new_privs: setuid programs keep working). On the host
//! the seccomp backend's own filter refuses it. Outside a session the same
//! program gets a ring, so the refusal is guard's and not the kernel's.

use std::{collections::BTreeMap, process::Stdio};

use guard_tests::{TempDir, guard_cli, in_vm_tier, report_skip, require_root};

const LOOPS: &str = env!("CARGO_BIN_EXE_syscall_loops");

/// `name=value` lines of `syscall_loops escapes`.
fn escapes(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_session_refuses_io_uring_on_either_backend() {
    require_root();
    let out = std::process::Command::new(LOOPS)
        .arg("escapes")
        .stdin(Stdio::null())
        .output()
        .expect("running syscall_loops");
    let outside = escapes(&String::from_utf8_lossy(&out.stdout));
    if outside["io_uring_setup"] != "OK" {
        assert!(
            !in_vm_tier(),
            "the VM kernels offer io_uring, got {outside:?}"
        );
        report_skip(
            "io_uring",
            &format!(
                "this kernel refuses io_uring_setup to everyone ({}); nothing to refuse",
                outside["io_uring_setup"]
            ),
        );
        return;
    }

    let dir = TempDir::new("io-uring");
    // A user switch, so the filter's no_new_privs is observable: root keeps
    // CAP_SYS_ADMIN and never needs it.
    let out = guard_cli(&dir)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .args(["session", "--no-prompt", "--json", "--user", "65534", "--"])
        .args([LOOPS, "escapes"])
        .stdin(Stdio::null())
        .output()
        .expect("starting guard session");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "guard session: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("the session's JSON summary"))
            .expect("the last line is the session's JSON summary");
    let inside = escapes(&stdout);
    assert_eq!(inside["io_uring_setup"], "ENOSYS", "{stdout}");
    assert_eq!(inside["seccomp"], "2", "{stdout}");
    let backend = if in_vm_tier() { "lsm" } else { "seccomp" };
    assert_eq!(summary["backend"], backend, "{summary}");
    if backend == "lsm" {
        // Only the ring is refused: the seccomp backend's other refusals
        // (openat2 among them) are not installed twice, and the filter
        // went in before the user switch.
        assert_eq!(inside["openat2"], outside["openat2"], "{stdout}");
        assert_ne!(inside["openat2"], "ENOSYS", "{stdout}");
        assert_eq!(inside["no_new_privs"], "0", "{stdout}");
    } else {
        assert_eq!(inside["openat2"], "ENOSYS", "{stdout}");
    }
}
