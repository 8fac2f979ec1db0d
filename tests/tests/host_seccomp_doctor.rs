//! Host tier: backend detection agrees with what the kernel really does, and
//! `guard doctor` reports it. On the development kernel BPF LSM programs are
//! refused, so file actions must go to the seccomp backend.

use std::path::PathBuf;

use guard::{
    action::ActionKind,
    backend::{self, BPF_LSM, Backend, SECCOMP_NOTIFY},
    programs::{Probe, ProgramSet},
};
use guard_tests::{TestCgroup, in_vm_tier, require_root};

#[test]
fn detection_matches_an_independent_lsm_attach_and_picks_seccomp_without_it() {
    require_root();
    if in_vm_tier() {
        eprintln!("skipped: the VM tier checks the LSM side in vm_doctor");
        return;
    }
    let d = backend::detect();
    // Independent check: can path_unlink attach at all here?
    let cg = TestCgroup::new("doctor");
    let set = ProgramSet::load(cg.cgroup.depth().unwrap(), &[Probe::LsmUnlink])
        .expect("loading the object");
    let lsm_attaches = set.attached(Probe::LsmUnlink);
    drop(set);
    if !lsm_attaches {
        assert!(
            !d.feature(BPF_LSM),
            "doctor claims BPF LSM although path_unlink cannot attach: {d:#?}"
        );
    }
    assert!(
        d.feature(SECCOMP_NOTIFY),
        "seccomp user notification works on every supported kernel: {d:#?}"
    );
    assert!(d.feature("cgroup2") && d.feature("ring_buffer") && d.feature("exec_tracepoint"));
    assert!(d.feature(backend::BOUNDED_TRACEPOINT), "{d:#?}");
    assert_eq!(d.backend_for(ActionKind::Exec), Backend::ExecStop);
    let expected = if d.feature(BPF_LSM) {
        Backend::Lsm
    } else {
        Backend::Seccomp
    };
    for kind in [
        ActionKind::Unlink,
        ActionKind::Rmdir,
        ActionKind::Rename,
        ActionKind::Truncate,
        ActionKind::Connect,
    ] {
        assert_eq!(d.backend_for(kind), expected, "{kind:?}");
    }
    if !d.feature(BPF_LSM) {
        assert_eq!(d.adopted, Backend::Bounded);
        let hint = d
            .enable_bpf_lsm
            .as_deref()
            .expect("a hint to turn BPF LSM on");
        assert!(hint.contains("lsm=") && hint.contains(",bpf"), "{hint}");
    }
}

/// `guard doctor --json` from the real binary, when it has been built
/// (`cargo xtask test` builds it before the integration tests).
#[test]
fn guard_doctor_binary_reports_the_backend() {
    require_root();
    let Some(guard) = guard_binary() else {
        eprintln!("skipped: target/debug/guard not built; run `cargo build -p guard-userspace`");
        return;
    };
    let out = std::process::Command::new(&guard)
        .args(["doctor", "--json"])
        .output()
        .expect("running guard doctor");
    assert!(out.status.success(), "guard doctor failed: {out:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    let lsm = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == BPF_LSM && f["available"] == true);
    let unlink = v["launched"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "unlink")
        .expect("an unlink choice")["backend"]
        .clone();
    assert_eq!(unlink, if lsm { "lsm" } else { "seccomp" }, "{v:#}");
    let text = std::process::Command::new(&guard)
        .arg("doctor")
        .output()
        .expect("running guard doctor");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("kernel: ") && text.contains("unlink"),
        "{text}"
    );
    if !lsm {
        assert!(text.contains("To turn it on: boot with `lsm="), "{text}");
    }
}

fn guard_binary() -> Option<PathBuf> {
    // target/debug/deps/host_seccomp_doctor-xxxx -> target/debug/guard
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("guard");
    candidate.exists().then_some(candidate)
}
