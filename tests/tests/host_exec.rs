//! Host tier: the exec tracepoint sees every exec inside a session cgroup and
//! nothing outside it.

use std::time::Duration;

use guard::{
    events::KernelEvent,
    programs::{Probe, ProgramSet},
};
use guard_common::{SessionConfig, session_flags};
use guard_tests::{TestCgroup, drain_events, expect_event, require_root};

#[test]
fn exec_inside_session_is_reported_and_outside_is_not() {
    require_root();
    let cg = TestCgroup::new("exec");
    let mut set =
        ProgramSet::load(cg.cgroup.depth().unwrap(), &[Probe::Exec]).expect("loading programs");
    set.require(Probe::Exec)
        .expect("exec tracepoint must attach on every kernel");
    let id = cg.cgroup.id().unwrap();
    set.sessions()
        .unwrap()
        .insert(
            id,
            SessionConfig {
                flags: session_flags::WATCH_EXEC,
                _pad: 0,
            },
            0,
        )
        .unwrap();
    let mut ring = set.take_events().unwrap();

    // Outside the session: must not be reported.
    let outside = std::process::Command::new("/bin/true").status().unwrap();
    assert!(outside.success());
    // Inside: a shell that execs another program, so the child's exec is seen too.
    let mut child = cg.spawn(&["/bin/sh", "-c", "/bin/true; exit 3"]);
    assert_eq!(child.wait().unwrap().code(), Some(3));

    let event = expect_event(
        &mut ring,
        Duration::from_secs(5),
        "exec of /bin/true in session",
        |e| matches!(e, KernelEvent::Exec { filename, cgroup_id, .. } if filename == "/bin/true" && *cgroup_id == id),
    );
    let KernelEvent::Exec { truncated, .. } = event else {
        unreachable!()
    };
    assert!(!truncated);
    let rest = drain_events(&mut ring, Duration::from_millis(300));
    assert!(
        rest.iter()
            .all(|e| matches!(e, KernelEvent::Exec { cgroup_id, .. } if *cgroup_id == id)),
        "events from outside the session leaked in: {rest:#?}"
    );
}
