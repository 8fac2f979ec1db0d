//! VM tier: on a kernel booted with `lsm=...,bpf`, detection must find BPF LSM
//! by attaching and running path_unlink, and choose the LSM backend.

use guard::{
    action::ActionKind,
    backend::{self, BPF_LSM, Backend},
};
use guard_tests::{in_vm_tier, require_root};

#[test]
fn doctor_picks_lsm_when_bpf_lsm_is_active() {
    if !in_vm_tier() {
        eprintln!("skipped: needs BPF LSM (runs in `cargo xtask vm-test`)");
        return;
    }
    require_root();
    let d = backend::detect();
    assert!(
        d.feature(BPF_LSM),
        "BPF LSM must work inside the VM tier: {d:#?}"
    );
    for kind in [
        ActionKind::Unlink,
        ActionKind::Rmdir,
        ActionKind::Rename,
        ActionKind::Truncate,
        ActionKind::Connect,
    ] {
        assert_eq!(d.backend_for(kind), Backend::Lsm, "{kind:?}: {d:#?}");
    }
    assert_eq!(d.adopted, Backend::Lsm);
    assert!(d.enable_bpf_lsm.is_none());
    let text = guard::doctor::render(&d);
    eprintln!("{text}");
    assert!(text.contains("unlink      lsm"), "{text}");
    assert_eq!(guard::doctor::exit_code(&d), 0);
}
