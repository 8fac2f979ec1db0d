//! Host tier: the terminal approval prompt, driven through a real
//! pseudo-terminal left in raw mode (as a full-screen agent TUI leaves it).
//! The session cgroup is frozen while the prompt is up, the terminal is
//! cooked for the prompt and restored exactly afterwards, the agent gets
//! SIGWINCH, and the answer resolves the hold through the broker.

use std::{io::Write as _, path::PathBuf, sync::Arc, time::Duration};

use guard::{
    action::Action,
    decision::{Decision, Verdict},
    freeze::SessionFreeze,
    holds::{GrantScope, HoldBroker, HoldRequest, Outcome, Resolution},
    terminal::{LocalDecider, Terminal, TerminalApprover},
};
use guard_tests::{
    TempDir, TestCgroup, capture_guard_logs,
    pty::{Pty, same_termios},
    require_root, wait_until,
};

fn request(pid: u32, path: &str) -> HoldRequest {
    HoldRequest {
        session: "tty".into(),
        pid,
        action: Action::Unlink {
            path: PathBuf::from(path),
        },
        verdict: Verdict {
            decision: Decision::Ask,
            rule: "file.protected".into(),
            reason: format!("{path} is protected"),
        },
        backend: "seccomp",
    }
}

fn ask(broker: &Arc<HoldBroker>, req: HoldRequest) -> std::thread::JoinHandle<Outcome> {
    let broker = broker.clone();
    std::thread::spawn(move || broker.ask_outcome(req, Duration::from_secs(20), Decision::Deny))
}

/// A broker whose holds of session "tty" are asked about on `pty`, deciding
/// locally; the session is `cg`, the agent to redraw `agent`.
fn prompt_on(pty: &Pty, cg: &TestCgroup, agent: u32) -> Arc<HoldBroker> {
    let broker = HoldBroker::new();
    let terminal = Terminal::open_path(&pty.slave_path).expect("opening the pty slave");
    let approver = TerminalApprover::start(
        terminal,
        "tty".into(),
        SessionFreeze::new(cg.cgroup.clone()),
        Arc::new(std::sync::atomic::AtomicI32::new(agent as i32)),
        Arc::new(LocalDecider {
            broker: broker.clone(),
            cgroup: cg.cgroup.clone(),
        }),
        "tester (at the session terminal)".into(),
    )
    .unwrap();
    broker.observe(approver);
    broker
}

fn frozen(cg: &TestCgroup) -> bool {
    std::fs::read_to_string(cg.cgroup.path().join("cgroup.events"))
        .unwrap()
        .lines()
        .any(|l| l == "frozen 1")
}

#[test]
fn prompt_over_a_raw_mode_tui_freezes_asks_restores_and_redraws() {
    require_root();
    capture_guard_logs();
    let dir = TempDir::new("tty");
    let winch = dir.join("winch");
    let cg = TestCgroup::new("tty");
    // The agent's command line is far longer than a pty holds unread
    // (~18 KB): the prompt must show it cut, or its write would block while
    // the person's answer waits (CI's harness has such ancestors).
    let mut agent = cg
        .command("sh")
        .arg("-c")
        .arg(format!(
            "trap 'echo w >> {}' WINCH; touch {}; while :; do sleep 0.05; done",
            winch.display(),
            dir.join("ready").display()
        ))
        .arg("agent")
        .arg("p".repeat(100_000))
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), "the agent's WINCH trap", || {
        dir.join("ready").exists()
    });
    let mut pty = Pty::open();
    // The agent's TUI has put the terminal in raw mode.
    let raw = pty.make_raw();

    let broker = prompt_on(&pty, &cg, agent.id());

    // 1. Approve for the session.
    let asked = ask(&broker, request(agent.id(), "/prod/db"));
    let shown = pty.read_until("[k]ill", Duration::from_secs(5));
    assert!(shown.contains("unlink /prod/db"), "{shown}");
    assert!(shown.contains("file.protected"), "{shown}");
    assert!(shown.contains("/prod/db is protected"), "{shown}");
    assert!(shown.contains("process chain"), "{shown}");
    assert!(shown.contains(&agent.id().to_string()), "{shown}");
    assert!(shown.contains("more characters]"), "{shown}");
    assert!(
        shown.len() < 4096,
        "the prompt printed {} bytes for one hold",
        shown.len()
    );
    wait_until(Duration::from_secs(2), "the session to freeze", || {
        frozen(&cg)
    });
    let cooked = pty.termios();
    assert!(
        cooked.c_lflag & libc::ICANON != 0,
        "prompt must cook the terminal"
    );
    pty.master.write_all(b"s\n").unwrap();
    let outcome = asked.join().unwrap();
    assert_eq!(
        outcome.resolution,
        Resolution::Approved {
            approver: "tester (at the session terminal)".into(),
            scope: GrantScope::Session
        }
    );
    wait_until(Duration::from_secs(2), "the session to thaw", || {
        !frozen(&cg)
    });
    assert!(
        same_termios(&pty.termios(), &raw),
        "termios not restored exactly"
    );
    wait_until(
        Duration::from_secs(3),
        "SIGWINCH to reach the agent",
        || winch.exists(),
    );

    // 2. The same action again passes on the session grant, without a prompt.
    let again = ask(&broker, request(agent.id(), "/prod/db"))
        .join()
        .unwrap();
    assert!(again.by_grant);

    // 3. A different action: a wrong key is asked again, then deny.
    let asked = ask(&broker, request(agent.id(), "/prod/other"));
    pty.read_until("/prod/other", Duration::from_secs(5));
    pty.master.write_all(b"x\n").unwrap();
    pty.read_until("answer a, s, d or k", Duration::from_secs(5));
    pty.master.write_all(b"d\n").unwrap();
    let outcome = asked.join().unwrap();
    assert!(
        matches!(outcome.resolution, Resolution::Denied { .. }),
        "{outcome:?}"
    );
    assert!(same_termios(&pty.termios(), &raw));

    // 4. Decided elsewhere while the prompt is up: the prompt steps aside.
    let asked = ask(&broker, request(agent.id(), "/prod/third"));
    pty.read_until("/prod/third", Duration::from_secs(5));
    // The prompt can be up before the broker lists the hold (it is listed
    // once every observer has recorded it).
    wait_until(Duration::from_secs(2), "the hold to be listed", || {
        !broker.pending().is_empty()
    });
    let id = broker.pending()[0].id;
    broker
        .resolve(
            id,
            Resolution::Denied {
                approver: "elsewhere".into(),
            },
        )
        .unwrap();
    asked.join().unwrap();
    pty.read_until("decided elsewhere", Duration::from_secs(5));
    wait_until(Duration::from_secs(2), "thaw after stepping aside", || {
        !frozen(&cg)
    });

    // 5. Kill: the whole session dies.
    let asked = ask(&broker, request(agent.id(), "/prod/fourth"));
    pty.read_until("/prod/fourth", Duration::from_secs(5));
    pty.master.write_all(b"k\n").unwrap();
    let outcome = asked.join().unwrap();
    assert!(
        matches!(outcome.resolution, Resolution::Killed { .. }),
        "{outcome:?}; the terminal showed {:?}",
        pty.drain()
    );
    let mut status = None;
    wait_until(Duration::from_secs(5), "the killed agent to exit", || {
        status = agent.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(same_termios(&pty.termios(), &raw));
}

/// A terminal whose screen nobody reads (a stopped emulator, a pty whose
/// master is not drained) fills up. The prompt must still notice that its
/// hold was decided elsewhere, let go of the session and of the terminal, and
/// ask about the next hold once the screen is read again.
#[test]
fn a_terminal_nobody_reads_does_not_wedge_the_prompt() {
    require_root();
    capture_guard_logs();
    let cg = TestCgroup::new("tty-full");
    let mut agent = cg.spawn(&["sleep", "60"]);
    let mut pty = Pty::open();
    pty.make_raw();
    let filled = pty.fill_screen();
    assert!(filled > 0, "the pty took no output at all");

    let broker = prompt_on(&pty, &cg, agent.id());

    let unread = ask(&broker, request(agent.id(), "/prod/unread"));
    wait_until(
        Duration::from_secs(5),
        "the prompt to freeze the session",
        || frozen(&cg),
    );
    let id = broker.pending()[0].id;
    broker
        .resolve(
            id,
            Resolution::Denied {
                approver: "elsewhere".into(),
            },
        )
        .unwrap();
    unread.join().unwrap();
    // Nobody has read the screen yet: the prompt steps aside anyway.
    wait_until(
        Duration::from_secs(5),
        "the session to thaw while the terminal is still full",
        || !frozen(&cg),
    );

    // Once the screen is read, the next hold is asked about as usual.
    let next = ask(&broker, request(agent.id(), "/prod/next"));
    let shown = pty.read_until("[k]ill", Duration::from_secs(10));
    assert!(shown.contains("unlink /prod/next"), "{shown}");
    pty.master.write_all(b"d\n").unwrap();
    let outcome = next.join().unwrap();
    assert_eq!(
        outcome.resolution,
        Resolution::Denied {
            approver: "tester (at the session terminal)".into()
        },
        "the terminal showed {:?}",
        pty.drain()
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[test]
fn a_freeze_decision_keeps_the_whole_session_frozen_until_decided() {
    require_root();
    let cg = TestCgroup::new("freeze");
    let mut sibling = cg.spawn(&["sleep", "30"]);
    let broker = HoldBroker::new();
    let freeze = SessionFreeze::new(cg.cgroup.clone());
    broker.observe(guard::freeze::FreezeOnHold::new(
        "tty".into(),
        freeze.clone(),
    ));
    let mut req = request(sibling.id(), "/prod/frozen");
    req.verdict.decision = Decision::Freeze;
    let asked = ask(&broker, req);
    wait_until(Duration::from_secs(2), "the session to freeze", || {
        frozen(&cg)
    });
    // The prompt comes and goes (it holds the freeze too): still frozen.
    freeze.hold();
    freeze.release();
    std::thread::sleep(Duration::from_millis(100));
    assert!(frozen(&cg), "the prompt must not thaw a freeze hold");
    // An ordinary ask does not freeze anything.
    let plain = ask(&broker, request(sibling.id(), "/prod/plain"));
    wait_until(Duration::from_secs(2), "two holds", || {
        broker.pending().len() == 2
    });
    for hold in broker.pending() {
        if hold.request.verdict.decision == Decision::Freeze {
            broker
                .resolve(
                    hold.id,
                    Resolution::Approved {
                        approver: "t".into(),
                        scope: GrantScope::Once,
                    },
                )
                .unwrap();
        }
    }
    asked.join().unwrap();
    wait_until(Duration::from_secs(2), "the session to thaw", || {
        !frozen(&cg)
    });
    let id = broker.pending()[0].id;
    broker
        .resolve(
            id,
            Resolution::Denied {
                approver: "t".into(),
            },
        )
        .unwrap();
    plain.join().unwrap();
    assert!(!frozen(&cg));
    sibling.kill().unwrap();
    sibling.wait().unwrap();
}

#[test]
fn with_a_daemon_the_prompt_decides_through_the_daemon() {
    require_root();
    capture_guard_logs();
    use std::os::unix::net::UnixStream;
    let dir = TempDir::new("tty-daemon");
    let socket = dir.join("guard.sock");
    let audit_path = dir.join("audit.jsonl");
    let mut daemon = std::process::Command::new(guard_tests::guard_bin())
        .env("GUARD_SOCKET", &socket)
        .args(["daemon", "--audit-log"])
        .arg(&audit_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the daemon", || {
        UnixStream::connect(&socket).is_ok()
    });
    let cg = TestCgroup::new("tty-daemon");
    let mut agent = cg.spawn(&["sleep", "30"]);
    let upstream = Arc::new(guard::api::client::DaemonUpstream::new(socket.clone()));
    upstream
        .register(guard::api::wire::SessionInfo {
            name: "tty".into(),
            cgroup: cg.cgroup.path().to_string_lossy().into_owned(),
            cgroup_id: cg.cgroup.id().unwrap(),
            supervisor_pid: std::process::id(),
            agent_pid: agent.id(),
            uid: 0,
            command: vec!["sleep".into()],
            started: "now".into(),
            socket: None,
        })
        .unwrap();
    let broker = HoldBroker::new();
    broker.set_upstream(upstream);
    let mut pty = Pty::open();
    let approver = TerminalApprover::start(
        Terminal::open_path(&pty.slave_path).unwrap(),
        "tty".into(),
        SessionFreeze::new(cg.cgroup.clone()),
        Arc::new(std::sync::atomic::AtomicI32::new(agent.id() as i32)),
        Arc::new(guard::api::client::DaemonDecider {
            socket: socket.clone(),
        }),
        "tester".into(),
    )
    .unwrap();
    broker.observe(approver);

    let asked = ask(&broker, request(agent.id(), "/prod/via-daemon"));
    pty.read_until("[k]ill", Duration::from_secs(10));
    pty.master.write_all(b"s\n").unwrap();
    let outcome = asked.join().unwrap();
    assert!(
        matches!(
            outcome.resolution,
            Resolution::Approved {
                scope: GrantScope::Session,
                ..
            }
        ),
        "{outcome:?}"
    );
    // The daemon holds the grant now.
    assert!(
        ask(&broker, request(agent.id(), "/prod/via-daemon"))
            .join()
            .unwrap()
            .by_grant
    );
    let records = guard::audit::read(&audit_path).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.outcome.as_deref() == Some("approved") && !r.by_grant),
        "{records:#?}"
    );
    // SAFETY: our child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
}
