//! Host tier: bounded mode. A process in a bounded session is stopped after
//! its first watched call (the call completes), a person's approval lets it
//! make exactly one more, and a denial kills it; processes outside the
//! session are never stopped.

use std::{fs, path::Path, time::Duration};

use guard::{
    action::Action,
    bounded::{self, BoundedMode},
    holds::{GrantScope, HoldBroker, Resolution},
    policy::Policy,
    programs::{Probe, ProgramSet},
};
use guard_tests::{TestCgroup, require_root};

fn state(pid: u32) -> char {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .unwrap_or('?')
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn rm_rf_loses_one_file_per_stop_and_deny_kills_it() {
    require_root();
    let cg = TestCgroup::new("bounded");
    let mut set =
        ProgramSet::load(cg.cgroup.depth().unwrap(), &[Probe::Bounded]).expect("loading programs");
    set.require(Probe::Bounded)
        .expect("raw tracepoint sys_enter must attach on the host");
    let mut mode = BoundedMode::enable(&mut set).expect("enabling bounded mode");
    BoundedMode::add_session(&mut set, cg.cgroup.id().unwrap()).unwrap();

    let root = std::env::temp_dir().join(format!("guard-bounded-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let tree = root.join("prod");
    fs::create_dir_all(&tree).unwrap();
    for i in 0..5 {
        fs::write(tree.join(format!("f{i}")), b"x").unwrap();
    }
    // Outside the session: never stopped.
    fs::write(root.join("outside"), b"x").unwrap();
    fs::remove_file(root.join("outside")).unwrap();

    let policy = Policy::embedded_default().with_protected(&tree);
    let broker = HoldBroker::new();
    let mut child = cg.spawn(&["/bin/rm", "-rf", tree.to_str().unwrap()]);
    let pid = child.id();

    let stop = mode.wait(Duration::from_secs(10)).expect("a bounded stop");
    assert_eq!(stop.pid, pid);
    assert!(["unlink", "unlinkat"].contains(&stop.syscall), "{stop:?}");
    let path = stop.path.clone().expect("the path argument");
    assert!(
        path.starts_with(&tree),
        "{path:?} should be resolved below {tree:?}"
    );
    // The first call completed: exactly one file is gone, and rm is stopped.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(state(pid), 'T', "rm must be stopped");
    assert_eq!(
        count(&tree),
        4,
        "bounded: the first unlink completes, the rest wait"
    );

    // Approve from another thread: rm makes one more call and stops again.
    let b = broker.clone();
    let approver = std::thread::spawn(move || {
        loop {
            if let Some(hold) = b.pending().first() {
                assert_eq!(hold.request.backend, "bounded");
                assert!(hold.request.verdict.reason.contains("already completed"));
                b.resolve(
                    hold.id,
                    Resolution::Approved {
                        approver: "tester".into(),
                        scope: GrantScope::Once,
                    },
                )
                .unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(bounded::decide(&stop, &policy, &broker, "bounded-test"));
    approver.join().unwrap();
    let second = mode.wait(Duration::from_secs(10)).expect("a second stop");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(state(pid), 'T');
    assert_eq!(count(&tree), 3);
    assert!(matches!(second.action(), Some(Action::Unlink { .. })));

    // Deny: rm is killed, the remaining files stay.
    let b = broker.clone();
    let denier = std::thread::spawn(move || {
        loop {
            if let Some(hold) = b.pending().first() {
                b.resolve(
                    hold.id,
                    Resolution::Denied {
                        approver: "tester".into(),
                    },
                )
                .unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(!bounded::decide(&second, &policy, &broker, "bounded-test"));
    denier.join().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(count(&tree), 3);
    let _ = fs::remove_dir_all(&root);
}
