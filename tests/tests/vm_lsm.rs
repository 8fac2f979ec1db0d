//! VM tier: the BPF LSM `path_unlink` program refuses an unlink inside a session
//! with DENY_UNLINK (EPERM, file kept, a denied event), and leaves everyone else
//! alone (an allowed unlink sends nothing to userspace). On a kernel without BPF LSM (the development hosts) it says it skipped;
//! inside `cargo xtask vm-test` (GUARD_TEST_TIER=vm) not attaching is a failure.

use std::{io, path::PathBuf, time::Duration};

use guard::{
    events::{FileOp, KernelEvent, KernelVerdict},
    programs::{Probe, ProgramSet},
};
use guard_common::{SessionConfig, session_flags};
use guard_tests::{TestCgroup, drain_events, expect_event, in_vm_tier, report_skip, require_root};

/// A scratch directory with two files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("guard-vm-lsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, b"keep me")
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unlink_is_refused_in_a_deny_session_and_allowed_elsewhere() {
    require_root();
    let cg = TestCgroup::new("lsm-unlink");
    let mut set = ProgramSet::load(cg.cgroup.depth().unwrap(), &[Probe::LsmUnlink])
        .expect("loading guard's eBPF object");
    if let Err(e) = set.require(Probe::LsmUnlink) {
        if in_vm_tier() {
            panic!("the VM tier boots with lsm=...,bpf, so path_unlink must attach: {e:#}");
        }
        report_skip(
            "vm_lsm",
            &format!(
                "BPF LSM cannot attach on this kernel ({e:#}); it runs in `cargo xtask vm-test`"
            ),
        );
        return;
    }
    let id = cg.cgroup.id().unwrap();
    let set_flags = |set: &mut ProgramSet, flags: u32| {
        set.sessions()
            .unwrap()
            .insert(id, SessionConfig { flags, _pad: 0 }, 0)
            .unwrap()
    };
    set_flags(&mut set, session_flags::DENY_UNLINK);
    let mut ring = set.take_events().unwrap();
    let scratch = Scratch::new();
    let me = std::process::id();

    // Inside the deny session: EPERM, and the file is still there.
    let denied = scratch.file("inside deny.txt");
    let inside = cg.enter();
    let result = std::fs::remove_file(&denied);
    drop(inside);
    let err = result.expect_err("unlink inside a DENY_UNLINK session must fail");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EPERM),
        "expected EPERM, got {err}"
    );
    assert!(denied.exists(), "the refused file must stay");
    let event = expect_event(
        &mut ring,
        Duration::from_secs(5),
        "a denied unlink from the test process",
        |e| matches!(e, KernelEvent::File { op: FileOp::Unlink, pid, cgroup_id, .. } if *pid == me && *cgroup_id == id),
    );
    assert_eq!(
        event.verdict(),
        KernelVerdict::Denied,
        "the event must say denied: {event:?}"
    );
    match &event {
        KernelEvent::File { path, .. } => {
            assert_eq!(path, &denied, "the event names the full path")
        }
        other => panic!("not a file event: {other:?}"),
    }

    // Outside every session: the same unlink goes through and is not reported.
    std::fs::remove_file(&denied)
        .unwrap_or_else(|e| panic!("unlink outside the session must succeed: {e}"));
    assert!(!denied.exists());
    let leaked = drain_events(&mut ring, Duration::from_millis(300));
    assert!(
        leaked.is_empty(),
        "an unlink outside every session was reported: {leaked:#?}"
    );

    // Inside the session without the deny flag: allowed, and nothing leaves the kernel.
    set_flags(&mut set, 0);
    let observed = scratch.file("inside allow.txt");
    let inside = cg.enter();
    let result = std::fs::remove_file(&observed);
    drop(inside);
    result.unwrap_or_else(|e: io::Error| panic!("unlink in a session without DENY_UNLINK: {e}"));
    assert!(!observed.exists());
    let rest = drain_events(&mut ring, Duration::from_millis(300));
    assert!(
        rest.is_empty(),
        "an allowed unlink must not reach userspace: {rest:#?}"
    );
}
