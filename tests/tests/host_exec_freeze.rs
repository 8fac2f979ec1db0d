//! Host tier: a `freeze` verdict freezes the whole session cgroup while the
//! person decides (siblings stop too) and thaws it before the answer is
//! applied.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use guard::{
    action::Action,
    decision::{Decision, Verdict},
    holds::{GrantScope, HoldBroker, HoldRequest, Resolution},
    kernel_backends::{SessionMap, ask},
    policy::Policy,
};
use guard_tests::{TestCgroup, require_root};

fn frozen(cg: &TestCgroup) -> bool {
    std::fs::read_to_string(cg.cgroup.path().join("cgroup.events"))
        .unwrap()
        .lines()
        .any(|l| l == "frozen 1")
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn freeze_verdict_freezes_the_session_until_answered() {
    require_root();
    let cg = TestCgroup::new("freeze");
    let mut sibling = cg.spawn(&["sleep", "30"]);
    let id = cg.cgroup.id().unwrap();
    let sessions = SessionMap::new();
    let policy = Arc::new(Policy::embedded_default());
    sessions.insert(id, "freeze", policy.clone());
    sessions.insert_cgroup(id, cg.cgroup.clone());
    let broker = HoldBroker::new();

    let (b, s, p) = (broker.clone(), sessions.clone(), policy.clone());
    let asker = std::thread::spawn(move || {
        ask(
            &b,
            s.as_ref(),
            id,
            &p,
            HoldRequest {
                session: "freeze".into(),
                pid: 1,
                action: Action::Unlink {
                    path: PathBuf::from("/prod/db"),
                },
                verdict: Verdict {
                    decision: Decision::Freeze,
                    rule: "file.protected".into(),
                    reason: "test".into(),
                },
                backend: "lsm",
            },
        )
    });
    wait_for("the hold is pending", || !broker.pending().is_empty());
    wait_for("the session is frozen", || frozen(&cg));
    let hold = broker.pending().remove(0);
    broker
        .resolve(
            hold.id,
            Resolution::Approved {
                approver: "test".into(),
                scope: GrantScope::Once,
            },
        )
        .unwrap();
    let resolution = asker.join().unwrap();
    assert!(matches!(resolution, Resolution::Approved { .. }));
    wait_for("the session is thawed", || !frozen(&cg));
    assert!(
        sibling.try_wait().unwrap().is_none(),
        "the sibling must still run"
    );
    let _ = sibling.kill();
}
