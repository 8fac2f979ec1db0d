//! VM tier: what leaves the kernel. Workspace churn never does; unmatched
//! paths go to policy; name patterns catch protected files anywhere; a
//! session installed from the policy's own kernel tables holds what the
//! policy protects. Skipped where BPF LSM cannot attach.

mod kernel_harness;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use guard::{
    action::Action,
    events::{KernelEvent, KernelVerdict},
    pin::PinDir,
    policy::Policy,
    programs::Probe,
};
use guard_common::{EventKind, session_flags};
use guard_tests::{TestCgroup, require_root};
use kernel_harness::{files::*, *};

#[test]
fn workspace_churn_never_leaves_the_kernel() {
    let Some(t) = protected_tree("vm-churn") else {
        return;
    };
    let work = std::fs::canonicalize(&t.scratch.dir).unwrap().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = "i=0; while [ $i -lt 1000 ]; do echo x > f$i; rm f$i; i=$((i+1)); done";
    // The same loop outside any session, for comparison.
    let baseline_started = Instant::now();
    let baseline = std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .current_dir(&work)
        .status()
        .unwrap();
    assert!(baseline.success());
    let baseline_took = baseline_started.elapsed();
    let started = Instant::now();
    let mut child = session_command(&t.e.cg, &["/bin/sh", "-c", script])
        .current_dir(&work)
        .spawn()
        .unwrap();
    let status = wait_exit(
        &mut child,
        Duration::from_secs(300),
        "1000 creates and deletes",
    );
    let took = started.elapsed();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.e.broker.pending().is_empty(), "workspace churn was held");
    assert_eq!(
        t.e.event_count(),
        0,
        "ordinary actions must not reach userspace: {:#?}",
        t.e.events.lock().unwrap()
    );
    let stats = t.e.enforcer.stats().unwrap();
    assert_eq!(stats.held, 0, "{stats:?}");
    // Straight to fd 2: libtest hides eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "vm_enforce: 1000 creates+deletes in the workspace took {took:?} in the session \
         ({baseline_took:?} outside any session), 0 events, 0 holds"
    );
}

/// A compiled rule set: outside the workspace every unlink goes to policy
/// (here it allows, so no person is asked); inside it nothing leaves the kernel.
#[test]
fn outside_the_workspace_goes_to_policy_inside_stays_in_the_kernel() {
    require_root();
    let Some(e) = Enforced::start_lsm(
        "vm-outside",
        &Probe::LSM,
        session_flags::WATCH_FILES,
        Policy::embedded_default(),
    ) else {
        return;
    };
    let scratch = Scratch::new("vm-outside");
    let root = std::fs::canonicalize(&scratch.dir).unwrap();
    let (work, outside) = (root.join("work"), root.join("outside"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let rules = guard::kernel_maps::KernelRuleSet {
        unmatched_file_hold: guard::kernel_maps::FILE_OPS & !EventKind::OpenWrite.bit(),
        allowed_trees: vec![work.clone()],
        ..Default::default()
    };
    e.enforcer
        .tables
        .lock()
        .unwrap()
        .install(e.session, &rules)
        .expect("installing the rule set");

    let inside = work.join("a");
    std::fs::write(&inside, b"x").unwrap();
    assert_eq!(
        wait_exit(&mut rm(&e, &inside), Duration::from_secs(20), "rm").code(),
        Some(0)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.event_count(), 0, "{:#?}", e.events.lock().unwrap());

    let out = outside.join("b");
    std::fs::write(&out, b"x").unwrap();
    assert_eq!(
        wait_exit(&mut rm(&e, &out), Duration::from_secs(20), "rm").code(),
        Some(0)
    );
    assert!(!out.exists());
    let events = e.events.lock().unwrap().clone();
    assert!(
        events.iter().any(|ev| matches!(ev, KernelEvent::File { path, verdict: KernelVerdict::Stopped, .. } if path == &out)),
        "the outside unlink must have been held for policy: {events:#?}"
    );
    assert!(
        e.broker.pending().is_empty(),
        "policy allowed it: no person asked"
    );
}

/// Name patterns hold what no prefix describes: `*.tfstate` anywhere and
/// anything directly in a `.git` directory; other files never leave the kernel.
#[test]
fn name_patterns_send_matching_files_to_policy() {
    use guard::kernel_maps::{KernelRuleSet, NameMatch};
    require_root();
    let Some(e) = Enforced::start_lsm(
        "vm-names",
        &Probe::LSM,
        session_flags::WATCH_FILES,
        Policy::embedded_default(),
    ) else {
        return;
    };
    let scratch = Scratch::new("vm-names");
    let root = std::fs::canonicalize(&scratch.dir).unwrap();
    std::fs::create_dir_all(root.join("infra/.git")).unwrap();
    let rules = KernelRuleSet {
        protected_names: vec![
            (NameMatch::Suffix, ".tfstate".into()),
            (NameMatch::Exact, ".git".into()),
        ],
        ..Default::default()
    };
    e.tables.lock().unwrap().install(e.session, &rules).unwrap();
    let state = root.join("infra/prod.tfstate");
    let config = root.join("infra/.git/config");
    let plain = root.join("infra/main.tf");
    // The policy asks about state files and git metadata: approve each.
    for f in [&state, &config] {
        std::fs::write(f, b"x").unwrap();
        let mut child = rm(&e, f);
        let hold = held_unlink_of(&e, f);
        e.approve(&hold);
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(20), "rm").code(),
            Some(0)
        );
    }
    std::fs::write(&plain, b"x").unwrap();
    assert_eq!(
        wait_exit(&mut rm(&e, &plain), Duration::from_secs(20), "rm").code(),
        Some(0)
    );
    assert!(e.broker.pending().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<PathBuf> = e
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|ev| match ev {
            KernelEvent::File {
                path,
                verdict: KernelVerdict::Stopped,
                ..
            } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert!(held.contains(&state), "*.tfstate was not held: {held:?}");
    assert!(held.contains(&config), ".git/config was not held: {held:?}");
    assert!(!held.contains(&plain), "main.tf left the kernel: {held:?}");
}

/// End to end with the policy's own kernel tables (`add_policy_session`):
/// a state file and git metadata in the workspace are held for a person
/// (and stay after a denial); an ordinary file goes through.
#[test]
fn policy_compiled_session_holds_what_the_policy_protects() {
    require_root();
    let scratch = Scratch::new("vm-policy");
    let ws = std::fs::canonicalize(&scratch.dir).unwrap();
    let cg = Arc::new(TestCgroup::new("vm-policy"));
    let depth = cg.cgroup.depth().unwrap();
    let broker = guard::holds::HoldBroker::new();
    let mut enforcer = guard::enforcer::Enforcer::start(
        PinDir::ephemeral().unwrap(),
        depth,
        &Probe::ENFORCE,
        broker.clone(),
        None,
    )
    .expect("starting enforcement");
    if !lsm_attached("vm_enforce policy", enforcer.program_set(), &Probe::LSM) {
        return;
    }
    let policy = Arc::new(Policy::embedded_default().with_workspace(&ws));
    enforcer
        .add_policy_session(&cg.cgroup, "vm-policy", policy)
        .expect("adding the session with its policy's tables");
    // Each file alone in its directory, deleted by a program guard does not
    // classify, so only the file hooks decide.
    for d in ["infra", "repo/.git", "notes", "infra2"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
    }
    let state = ws.join("infra/prod.tfstate");
    let object = ws.join("repo/.git/config");
    let plain = ws.join("notes/notes.txt");
    let covered = ws.join("infra2/prod.tfstate");
    for f in [&state, &object, &plain, &covered] {
        std::fs::write(f, b"x").unwrap();
    }
    let delete_in = |path: &Path| {
        let dir = path.parent().unwrap().to_str().unwrap();
        session_command(&cg, &[LOOPS, "unlink-all", dir])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let rm_in = |path: &Path| {
        session_command(&cg, &["rm", path.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Runs the deleter in the session; approves exec holds, denies or
    // approves the unlink hold; returns its status and whether an unlink
    // hold for `path` was seen.
    let run = |mut child: std::process::Child, path: &Path, allow_unlink: bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut unlink_held = false;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, unlink_held);
            }
            assert!(
                Instant::now() < deadline,
                "rm {} never finished",
                path.display()
            );
            for hold in broker.pending() {
                let resolution = match &hold.request.action {
                    Action::Unlink { path: held } if held == path => {
                        unlink_held = true;
                        assert!(path.exists(), "the file must be intact while held");
                        if allow_unlink {
                            None
                        } else {
                            Some(guard::holds::Resolution::Denied {
                                approver: "test".into(),
                            })
                        }
                    }
                    _ => None,
                };
                let resolution = resolution.unwrap_or(guard::holds::Resolution::Approved {
                    approver: "test".into(),
                    scope: guard::holds::GrantScope::Once,
                });
                let _ = broker.resolve(hold.id, resolution);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for f in [&state, &object] {
        let (status, held) = run(delete_in(f), f, false);
        assert!(held, "the unlink of {} was not held", f.display());
        assert_ne!(status.code(), Some(0));
        assert!(f.exists(), "{} was removed after a denial", f.display());
    }
    let (status, held) = run(delete_in(&plain), &plain, true);
    assert_eq!(status.code(), Some(0));
    assert!(!held, "an ordinary file must not need a person");
    assert!(!plain.exists());
    // `rm prod.tfstate` is asked about at exec; once approved there, its
    // unlink of that file is covered (the kernel gets the grant at once).
    let (status, held) = run(rm_in(&covered), &covered, false);
    assert!(
        !held,
        "an rm approved at exec was asked again at its unlink"
    );
    assert_eq!(status.code(), Some(0));
    assert!(!covered.exists());
}

const LOOPS: &str = env!("CARGO_BIN_EXE_syscall_loops");

/// The embedded policy's `rate.mass-delete` window.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Events the controller received, by verdict.
#[derive(Default, Debug)]
struct Seen {
    observed: usize,
    decided: Vec<String>,
}

/// A session with the embedded default policy's own kernel tables on every
/// probe (files, connect, exec), counting what reaches userspace.
struct DefaultSession {
    cg: Arc<TestCgroup>,
    broker: Arc<guard::holds::HoldBroker>,
    enforcer: guard::enforcer::Enforcer,
    seen: Arc<std::sync::Mutex<Seen>>,
    ws: PathBuf,
    _scratch: Scratch,
}

impl DefaultSession {
    fn start(tag: &str) -> Option<Self> {
        require_root();
        let scratch = Scratch::new(tag);
        let ws = std::fs::canonicalize(&scratch.dir).unwrap();
        let cg = Arc::new(TestCgroup::new(tag));
        let broker = guard::holds::HoldBroker::new();
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let counter = seen.clone();
        let observer: guard::kernel_backends::EventObserver =
            Arc::new(std::sync::Mutex::new(move |e: &KernelEvent| {
                let mut seen = counter.lock().unwrap();
                match e.verdict() {
                    KernelVerdict::Observed => seen.observed += 1,
                    _ => seen.decided.push(format!("{:?}", e.action())),
                }
            }));
        let mut enforcer = guard::enforcer::Enforcer::start(
            PinDir::ephemeral().unwrap(),
            cg.cgroup.depth().unwrap(),
            &Probe::ENFORCE,
            broker.clone(),
            Some(observer),
        )
        .expect("starting enforcement");
        if !lsm_attached(tag, enforcer.program_set(), &Probe::LSM) {
            return None;
        }
        let policy = Arc::new(Policy::embedded_default().with_workspace(&ws));
        enforcer
            .add_policy_session(&cg.cgroup, tag, policy)
            .expect("adding the session with the default policy's tables");
        Some(Self {
            cg,
            broker,
            enforcer,
            seen,
            ws,
            _scratch: scratch,
        })
    }

    /// Runs `syscall_loops ARGS` in the session; returns its report line.
    fn run(&self, args: &[&str]) -> String {
        let argv: Vec<&str> = std::iter::once(LOOPS).chain(args.iter().copied()).collect();
        let mut child = session_command(&self.cg, &argv)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(120), args[0]);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        assert!(
            status.success(),
            "syscall_loops {args:?}: {status:?}; pending holds: {:#?}",
            self.broker.pending()
        );
        out.trim().to_string()
    }

    fn dir(&self, rel: &str) -> String {
        let dir = self.ws.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_str().unwrap().to_string()
    }
}

/// Issue 4's promise: the policy's kernel maps keep ordinary work in the
/// kernel. Under the embedded default policy's own tables (not a hand-made
/// rule set), a workload of deletions of old files below the mass-deletion
/// rate, 1000 creates and deletes in the workspace, deletions in build
/// directories and excepted trees, edits, truncations and local connects
/// makes zero decisions in userspace: no stop, no refusal, no hold. Its
/// execs are only reported (not stopped: syscall_loops is not a watched
/// program).
#[test]
fn ordinary_work_under_the_default_policy_never_reaches_userspace() {
    let Some(s) = DefaultSession::start("vm-ordinary") else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().to_string();
    std::fs::create_dir_all(s.ws.join("src")).unwrap();
    let main_rs = s.ws.join("src/main.rs");
    std::fs::write(&main_rs, b"fn main() {}").unwrap();
    let main_rs = main_rs.to_str().unwrap();
    // Files older than the rate rule's window, so deleting them is charged.
    let old = s.dir("src/old");
    s.run(&["create", "250", &old]);
    std::thread::sleep(RATE_WINDOW + Duration::from_secs(1));
    let started = Instant::now();
    let reports = [
        // Below the rate rule's 300 in 10 s: charged in the kernel, not sent up.
        s.run(&["unlink-all", &old]),
        // Creating and deleting 1000 files in the workspace: files just
        // written are not charged (the rule's ignore_recent).
        s.run(&["unlink", "1000", &s.dir("src/scratch")]),
        // Build directories and excepted trees are not charged at all.
        s.run(&["unlink", "1000", &s.dir("target/debug/deps")]),
        s.run(&["unlink", "1000", &s.dir("web/node_modules/left-pad")]),
        s.run(&["unlink", "500", &s.dir(".git/objects/ab")]),
        s.run(&["open-trunc", "300", main_rs]),
        s.run(&["open", "300", main_rs]),
        s.run(&["connect", "50", &local]),
    ];
    let took = started.elapsed();
    // Exec reports come off the ring on the reader's thread: wait for them,
    // then give anything unexpected 300 ms more to show up.
    guard_tests::wait_until(Duration::from_secs(10), "the exec reports", || {
        s.seen.lock().unwrap().observed > reports.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let seen = s.seen.lock().unwrap();
    assert!(
        seen.decided.is_empty(),
        "ordinary work reached userspace for a decision: {:#?}",
        seen.decided
    );
    assert_eq!(
        seen.observed,
        reports.len() + 1,
        "one reported exec per run"
    );
    let stats = s.enforcer.stats().unwrap();
    assert_eq!((stats.held, stats.denied), (0, 0), "{stats:?}");
    assert!(s.broker.pending().is_empty());
    let _ = writeln!(
        std::io::stderr(),
        "vm_enforce: ordinary work under the default policy's kernel tables in {took:?}: \
         0 decisions in userspace, {} execs reported; {}",
        seen.observed,
        reports.join("; ")
    );
}

/// Past the rate the kernel sends deletions up flagged, and the default
/// policy's rate rule freezes the session and asks a person: 400 files older
/// than the window deleted in a burst.
#[test]
fn past_the_rate_the_default_policy_freezes_and_asks() {
    let Some(s) = DefaultSession::start("vm-burst") else {
        return;
    };
    let dir = s.dir("src/burst");
    s.run(&["create", "400", &dir]);
    std::thread::sleep(RATE_WINDOW + Duration::from_secs(1));
    let argv = [LOOPS, "unlink-all", dir.as_str()];
    let mut child = session_command(&s.cg, &argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let hold = loop {
        if let Some(hold) = s.broker.pending().into_iter().next() {
            break hold;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("400 deletions finished ({status:?}) without a hold");
        }
        assert!(Instant::now() < deadline, "no hold after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(hold.request.verdict.rule, "rate.mass-delete", "{hold:?}");
    assert_eq!(
        hold.request.verdict.decision,
        guard::decision::Decision::Freeze
    );
    assert!(
        matches!(&hold.request.action, Action::Unlink { path } if path.starts_with(&dir)),
        "{hold:?}"
    );
    let seen = s.seen.lock().unwrap().decided.len();
    assert!(
        seen <= 2,
        "only deletions past the rate go up, not the first 300: {seen}"
    );
    s.broker
        .resolve(
            hold.id,
            guard::holds::Resolution::Killed {
                approver: "test".into(),
            },
        )
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30), "the killed burst");
    assert!(!status.success());
    let _ = writeln!(
        std::io::stderr(),
        "vm_enforce: a burst of deletions was held at the rate rule after {} deletions \
         reached userspace",
        seen
    );
}
