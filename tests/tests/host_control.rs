//! Host tier, control plane: holds opened through the broker are listed and
//! resolved by the real `guard` binary over the socket; grants; the audit
//! log; refusal of approvals from inside a session; malformed API input.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use guard::{
    action::Action,
    api::{
        client::DaemonUpstream,
        server::Server,
        wire::{Op, SessionInfo},
    },
    audit::{self, AuditLog},
    controller::Controller,
    decision::{Decision, Verdict},
    holds::{GrantScope, HoldBroker, HoldRequest, Outcome, Resolution},
};
use guard_tests::{Reaped, TempDir, TestCgroup, guard_bin, require_root, wait_until};
use serde_json::Value;

const SESSION: &str = "ctl";

struct Fixture {
    dir: TempDir,
    socket: PathBuf,
    audit: PathBuf,
    controller: Arc<Controller>,
    _server: Server,
    /// A real process standing in for the one whose action is held.
    held: Child,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        require_root();
        let dir = TempDir::new(tag);
        let socket = dir.join("guard.sock");
        let audit = dir.join("audit.jsonl");
        let controller = Controller::new(
            HoldBroker::new(),
            Some(AuditLog::open(&audit).expect("opening the audit log")),
        );
        controller
            .register(session_info(SESSION, 0))
            .expect("registering the test session");
        let server = Server::start(&socket, controller.clone(), None).expect("serving the API");
        let held = Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawning sleep");
        Self {
            dir,
            socket,
            audit,
            controller,
            _server: server,
            held,
        }
    }

    fn request(&self, path: &str) -> HoldRequest {
        HoldRequest {
            session: SESSION.into(),
            pid: self.held.id(),
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

    /// Asks on another thread, as a backend would.
    fn ask(&self, path: &str) -> JoinHandle<Outcome> {
        let broker = self.controller.broker().clone();
        let request = self.request(path);
        std::thread::spawn(move || {
            broker.ask_outcome(request, Duration::from_secs(30), Decision::Deny)
        })
    }

    fn wait_for_holds(&self, n: usize) {
        wait_until(
            Duration::from_secs(5),
            &format!("{n} pending hold(s)"),
            || self.controller.broker().pending().len() == n,
        );
    }

    fn guard(&self, args: &[&str]) -> Output {
        guard_command(&self.socket)
            .args(args)
            .output()
            .expect("running guard")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.held.kill();
        let _ = self.held.wait();
    }
}

fn session_info(name: &str, uid: u32) -> SessionInfo {
    SessionInfo {
        name: name.into(),
        cgroup: "/nonexistent".into(),
        cgroup_id: 0,
        supervisor_pid: std::process::id(),
        agent_pid: 0,
        uid,
        command: vec!["test".into()],
        started: "now".into(),
        socket: None,
    }
}

fn guard_command(socket: &Path) -> Command {
    let mut command = Command::new(guard_bin());
    command
        .env("GUARD_SOCKET", socket)
        .env_remove("GUARD_AUDIT_LOG");
    command
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json_holds(f: &Fixture) -> Vec<Value> {
    let out = f.guard(&["holds", "--json"]);
    assert!(
        out.status.success(),
        "guard holds --json failed: {}",
        text(&out)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "guard holds --json is not a JSON list ({e}): {}",
            text(&out)
        )
    })
}

#[test]
fn cli_lists_approves_and_denies_holds_and_the_audit_log_has_them() {
    let f = Fixture::new("approve");
    let asked = f.ask("/prod/db.sqlite3");
    f.wait_for_holds(1);
    let holds = json_holds(&f);
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["session"], SESSION);
    assert_eq!(holds[0]["action"]["path"], "/prod/db.sqlite3");
    assert_eq!(holds[0]["verdict"]["rule"], "file.protected");
    let id = holds[0]["id"].as_u64().expect("hold id");

    // The human listing names the action too.
    let out = f.guard(&["holds"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unlink /prod/db.sqlite3"),
        "{}",
        text(&out)
    );

    std::thread::sleep(Duration::from_millis(50));
    let out = f.guard(&["approve", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("approved hold {id} in session ctl (once): unlink /prod/db.sqlite3")
    );
    let outcome = asked.join().expect("ask thread");
    let Resolution::Approved { approver, scope } = &outcome.resolution else {
        panic!("expected approval, got {outcome:?}");
    };
    assert_eq!(*scope, GrantScope::Once);
    assert!(approver.starts_with("root (uid 0, pid "), "{approver}");
    assert!(outcome.waited >= Duration::from_millis(50));
    assert!(f.controller.broker().pending().is_empty());

    // Approving again: the hold is gone, with a clear error and status 1.
    let out = f.guard(&["approve", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pending hold"),
        "{}",
        text(&out)
    );

    // A once approval leaves no standing grant: the same action asks again.
    let asked = f.ask("/prod/db.sqlite3");
    f.wait_for_holds(1);
    let id = json_holds(&f)[0]["id"].as_u64().unwrap();
    let out = f.guard(&["deny", &id.to_string(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("deny --json output");
    assert_eq!(reply["ok"], true);
    assert!(matches!(
        asked.join().unwrap().resolution,
        Resolution::Denied { .. }
    ));

    let all = audit::read(&f.audit).expect("reading the audit log");
    // Each hold leaves two records: when it opened, and how it ended.
    let held: Vec<_> = all
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("held"))
        .collect();
    assert_eq!(held.len(), 2, "{all:#?}");
    assert_eq!(held[0].decision, Decision::Ask);
    assert_eq!(held[0].hold, Some(id - 1));
    let records: Vec<_> = all
        .iter()
        .filter(|r| r.outcome.as_deref() != Some("held"))
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0].decision, Decision::Allow);
    assert_eq!(records[0].outcome.as_deref(), Some("approved"));
    assert!(records[0].approver.as_deref().unwrap().starts_with("root"));
    assert!(records[0].wait_ms >= 50, "{:?}", records[0]);
    assert_eq!(records[0].pid, f.held.id());
    assert_eq!(records[0].ancestry[0].comm, "sleep");
    assert_eq!(records[0].ancestry[1].pid, std::process::id());
    assert_eq!(records[0].uid, Some(0));
    assert_eq!(records[0].rule, "file.protected");
    assert_eq!(records[0].what, "unlink /prod/db.sqlite3");
    assert_eq!(records[1].decision, Decision::Deny);
    assert_eq!(records[1].outcome.as_deref(), Some("denied"));
}

#[test]
fn session_grant_lets_the_same_action_through_without_asking() {
    let f = Fixture::new("grant");
    let asked = f.ask("/prod/a");
    f.wait_for_holds(1);
    let id = json_holds(&f)[0]["id"].as_u64().unwrap();
    let out = f.guard(&["approve", &id.to_string(), "--for", "session"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!asked.join().unwrap().by_grant);

    // The repeat: answered at once by the grant, no hold listed.
    let repeat = f.ask("/prod/a").join().unwrap();
    assert!(repeat.by_grant, "{repeat:?}");
    assert!(matches!(repeat.resolution, Resolution::Approved { .. }));
    assert!(json_holds(&f).is_empty());

    // A different object still asks.
    let other = f.ask("/prod/b");
    f.wait_for_holds(1);
    let id = json_holds(&f)[0]["id"].as_u64().unwrap();
    assert!(f.guard(&["deny", &id.to_string()]).status.success());
    assert!(matches!(
        other.join().unwrap().resolution,
        Resolution::Denied { .. }
    ));

    // A timed grant from the CLI.
    let asked = f.ask("/prod/c");
    f.wait_for_holds(1);
    let id = json_holds(&f)[0]["id"].as_u64().unwrap();
    assert!(
        f.guard(&["approve", &id.to_string(), "--for", "10m"])
            .status
            .success()
    );
    asked.join().unwrap();
    assert!(f.ask("/prod/c").join().unwrap().by_grant);

    let bad = f.guard(&["approve", "1", "--for", "forever"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("such as 10m"),
        "{}",
        text(&bad)
    );

    let records = audit::read(&f.audit).unwrap();
    assert_eq!(records.iter().filter(|r| r.by_grant).count(), 2);
}

#[test]
fn approval_from_inside_a_session_is_refused_and_the_hold_stays() {
    let f = Fixture::new("self");
    let asked = f.ask("/prod/own");
    f.wait_for_holds(1);
    let id = f.controller.broker().pending()[0].id;

    let cg = TestCgroup::new("self-approve");
    for args in [
        vec!["approve".to_string(), id.to_string()],
        vec!["deny".to_string(), id.to_string()],
        vec!["kill".to_string(), SESSION.to_string()],
    ] {
        let out = cg
            .command(guard_bin())
            .args(&args)
            .env("GUARD_SOCKET", &f.socket)
            .output()
            .expect("running guard inside the session cgroup");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("refused") && stderr.contains("guard.slice"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(
        f.controller.broker().is_pending(id),
        "a refused approval must leave the hold pending"
    );

    // Reading is still allowed from inside (and shows the hold).
    let out = cg
        .command(guard_bin())
        .args(["holds", "--json"])
        .env("GUARD_SOCKET", &f.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // From outside, the same command works.
    assert!(f.guard(&["deny", &id.to_string()]).status.success());
    assert!(matches!(
        asked.join().unwrap().resolution,
        Resolution::Denied { .. }
    ));
}

#[test]
fn non_root_other_user_may_not_decide() {
    let f = Fixture::new("uid");
    let asked = f.ask("/prod/x");
    f.wait_for_holds(1);
    let id = f.controller.broker().pending()[0].id;
    // The socket is root-only (0600); let nobody in to reach the uid check.
    std::fs::set_permissions(
        &f.dir.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        &f.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = {
        use std::os::unix::process::CommandExt as _;
        guard_command(&f.socket)
            .args(["approve", &id.to_string()])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not decide"),
        "{}",
        text(&out)
    );
    assert!(f.controller.broker().is_pending(id));
    f.controller
        .broker()
        .resolve(
            id,
            Resolution::Denied {
                approver: "test".into(),
            },
        )
        .unwrap();
    asked.join().unwrap();
}

fn exchange(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    stream.write_all(line).unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("reading a reply");
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"))
}

#[test]
fn malformed_api_input_is_answered_with_errors_and_never_hangs() {
    let f = Fixture::new("malformed");
    let mut stream = UnixStream::connect(&f.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let cases: &[(&[u8], &str)] = &[
        (b"{not json\n", "bad_json"),
        (b"\xff\xfe\x00garbage\n", "bad_json"),
        (b"[1,2,3]\n", "bad_request"),
        (b"{\"op\":\"holds\"}\n", "unsupported_version"),
        (b"{\"v\":99,\"op\":\"holds\"}\n", "unsupported_version"),
        (b"{\"v\":1,\"op\":\"format_disk\"}\n", "unknown_op"),
        (
            b"{\"v\":1,\"op\":\"approve\",\"id\":\"x\"}\n",
            "bad_request",
        ),
        (b"{\"v\":1,\"op\":\"approve\",\"id\":424242}\n", "not_found"),
        (
            b"{\"v\":1,\"op\":\"approve\",\"id\":1,\"scope\":\"forever\"}\n",
            "bad_request",
        ),
    ];
    for (line, code) in cases {
        let reply = exchange(&mut stream, &mut reader, line);
        assert_eq!(reply["ok"], false, "{line:?} -> {reply}");
        assert_eq!(reply["error"]["code"], *code, "{line:?} -> {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 10),
            "{reply}"
        );
    }
    // The same connection still works after every error.
    let reply = exchange(&mut stream, &mut reader, b"{\"v\":1,\"op\":\"ping\"}\n");
    assert_eq!(reply["ok"], true, "{reply}");

    // A huge line without a newline: answered and closed, not buffered forever.
    let mut huge = UnixStream::connect(&f.socket).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = {
        let mut w = huge.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..=guard::api::wire::MAX_LINE / chunk.len() + 1 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let mut reply = String::new();
    BufReader::new(huge.try_clone().unwrap())
        .read_line(&mut reply)
        .expect("an answer to a huge line");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["error"]["code"], "line_too_long", "{reply}");
    let mut rest = Vec::new();
    let _ = huge.read_to_end(&mut rest);
    writer.join().unwrap();

    // A client that connects and sends half a line, then vanishes.
    {
        let mut gone = UnixStream::connect(&f.socket).unwrap();
        gone.write_all(b"{\"v\":1,\"op\"").unwrap();
    }
    // The server is still alive and answers.
    let out = f.guard(&["holds", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_session_handing_asks_to_a_daemon_is_decided_by_the_daemon() {
    require_root();
    let dir = TempDir::new("daemon");
    let socket = dir.join("guard.sock");
    let audit_path = dir.join("audit.jsonl");
    let daemon = Reaped(
        guard_command(&socket)
            .args(["daemon", "--audit-log"])
            .arg(&audit_path)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting guard daemon"),
    );
    wait_until(Duration::from_secs(10), "the daemon socket", || {
        UnixStream::connect(&socket).is_ok()
    });

    // What `guard session` does in daemon mode: register, then ask upstream.
    guard::api::client::call(
        &socket,
        Op::Register {
            session: session_info("remote", 0),
        },
    )
    .expect("registering with the daemon");
    let broker = HoldBroker::new();
    broker.set_upstream(Arc::new(DaemonUpstream::new(socket.clone())));
    let mut held = Command::new("sleep").arg("60").spawn().unwrap();
    let request = HoldRequest {
        session: "remote".into(),
        pid: held.id(),
        action: Action::Exec {
            filename: "/usr/bin/terraform".into(),
            argv: vec!["terraform".into(), "destroy".into()],
            cwd: "/srv".into(),
        },
        verdict: Verdict {
            decision: Decision::Ask,
            rule: "exec.watched".into(),
            reason: "terraform can change infrastructure".into(),
        },
        backend: "exec-stop",
    };
    let asking = {
        let broker = broker.clone();
        let request = request.clone();
        std::thread::spawn(move || {
            broker.ask_outcome(request, Duration::from_secs(30), Decision::Deny)
        })
    };
    let mut id = None;
    wait_until(
        Duration::from_secs(5),
        "the daemon to list the hold",
        || {
            let out = guard_command(&socket)
                .args(["holds", "--json"])
                .output()
                .unwrap();
            let holds: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            id = holds.first().and_then(|h| h["id"].as_u64());
            id.is_some()
        },
    );
    let out = guard_command(&socket)
        .args(["approve", &id.unwrap().to_string(), "--for", "session"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let outcome = asking.join().unwrap();
    assert!(
        matches!(outcome.resolution, Resolution::Approved { .. }),
        "{outcome:?}"
    );
    // The daemon holds the grant, so the repeat is answered there.
    let repeat = broker.ask_outcome(request, Duration::from_secs(5), Decision::Deny);
    assert!(repeat.by_grant, "{repeat:?}");

    let out = guard_command(&socket)
        .args(["sessions", "--json"])
        .output()
        .unwrap();
    let sessions: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sessions[0]["name"], "remote");
    assert_eq!(sessions[0]["counts"]["approved"], 2, "{sessions:?}");

    let records = audit::read(&audit_path).unwrap();
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("held"), Some("approved"), Some("approved")],
        "{records:#?}"
    );
    assert!(records[2].by_grant);
    assert_eq!(records[0].what, "terraform destroy");
    assert_eq!(records[0].backend, "exec-stop");

    // SIGTERM stops the daemon cleanly and removes its socket.
    let status = daemon.terminate();
    assert!(status.success(), "daemon exit {status:?}");
    assert!(!socket.exists());
    let _ = held.kill();
    let _ = held.wait();
}

#[test]
fn unwritable_audit_log_fails_at_start_with_advice() {
    require_root();
    let dir = TempDir::new("audit-bad");
    let out = guard_command(&dir.join("guard.sock"))
        .args(["daemon", "--audit-log", "/proc/guard/audit.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/proc/guard/audit.jsonl") && stderr.contains("--audit-log"),
        "{}",
        text(&out)
    );
}

#[test]
fn without_a_daemon_the_cli_reaches_every_session_socket() {
    require_root();
    let dir = TempDir::new("fanout");
    let daemon_socket = dir.join("guard.sock");
    let mut held = Command::new("sleep").arg("60").spawn().unwrap();
    // Two embedded controllers, as two `guard session`s without a daemon run them.
    let mut servers = Vec::new();
    let mut asks = Vec::new();
    for name in ["alpha", "beta"] {
        let controller = Controller::new(HoldBroker::new(), None);
        controller.register(session_info(name, 0)).unwrap();
        let socket = guard::api::endpoint::session_socket(&daemon_socket, name);
        servers.push(Server::start(&socket, controller.clone(), None).unwrap());
        let request = HoldRequest {
            session: name.into(),
            pid: held.id(),
            action: Action::Unlink {
                path: PathBuf::from(format!("/prod/{name}")),
            },
            verdict: Verdict {
                decision: Decision::Ask,
                rule: "file.protected".into(),
                reason: "protected".into(),
            },
            backend: "seccomp",
        };
        let broker = controller.broker().clone();
        asks.push(std::thread::spawn(move || {
            broker.ask_outcome(request, Duration::from_secs(30), Decision::Deny)
        }));
        wait_until(Duration::from_secs(5), "the hold", || {
            controller.broker().pending().len() == 1
        });
    }
    // A stale socket of a crashed session is skipped, not an error.
    std::os::unix::net::UnixListener::bind(dir.join("sessions/stale.sock"))
        .map(drop)
        .unwrap();

    let out = guard_command(&daemon_socket)
        .args(["holds", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let holds: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut sessions: Vec<&str> = holds
        .iter()
        .map(|h| h["session"].as_str().unwrap())
        .collect();
    sessions.sort();
    assert_eq!(sessions, ["alpha", "beta"]);
    // Both embedded controllers numbered their hold 1: ambiguous without --session.
    let out = guard_command(&daemon_socket)
        .args(["approve", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--session"),
        "{}",
        text(&out)
    );
    let out = guard_command(&daemon_socket)
        .args(["approve", "1", "--session", "beta"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = guard_command(&daemon_socket)
        .args(["deny", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let beta = asks.pop().unwrap().join().unwrap();
    let alpha = asks.pop().unwrap().join().unwrap();
    assert!(matches!(beta.resolution, Resolution::Approved { .. }));
    assert!(matches!(alpha.resolution, Resolution::Denied { .. }));

    // No daemon and no sessions: a clear error naming both places.
    drop(servers);
    let out = guard_command(&daemon_socket)
        .args(["holds"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("guard daemon") && stderr.contains("guard session"),
        "{}",
        text(&out)
    );
    let _ = held.kill();
    let _ = held.wait();
}

#[test]
fn a_connection_flood_is_refused_past_the_limit_and_service_resumes() {
    let f = Fixture::new("flood");
    let max = guard::api::server::MAX_CONNECTIONS;
    let mut open = Vec::new();
    for _ in 0..max {
        open.push(UnixStream::connect(&f.socket).unwrap());
    }
    // Each held connection is being served (they answer a ping).
    let mut first = open[0].try_clone().unwrap();
    let mut reader = BufReader::new(open[0].try_clone().unwrap());
    assert_eq!(
        exchange(&mut first, &mut reader, b"{\"v\":1,\"op\":\"ping\"}\n")["ok"],
        true
    );
    wait_until(Duration::from_secs(10), "a refusal past the limit", || {
        let extra = UnixStream::connect(&f.socket).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(extra).read_line(&mut line);
        line.contains("connections are open")
    });
    drop(open);
    drop(first);
    drop(reader);
    wait_until(Duration::from_secs(10), "service after the flood", || {
        f.guard(&["holds", "--json"]).status.success()
    });
}

#[test]
fn the_daemon_forgets_a_session_whose_supervisor_died() {
    require_root();
    let dir = TempDir::new("reap");
    let socket = dir.join("guard.sock");
    let daemon = start_daemon(&socket, &dir.join("audit.jsonl"));
    let mut supervisor = Command::new("sleep").arg("60").spawn().unwrap();
    let mut info = session_info("ghost", 0);
    info.supervisor_pid = supervisor.id();
    guard::api::client::call(&socket, Op::Register { session: info }).unwrap();
    let broker = HoldBroker::new();
    broker.set_upstream(Arc::new(DaemonUpstream::new(socket.clone())));
    let request = HoldRequest {
        session: "ghost".into(),
        pid: supervisor.id(),
        action: Action::Unlink {
            path: PathBuf::from("/prod/ghost"),
        },
        verdict: Verdict {
            decision: Decision::Ask,
            rule: "file.protected".into(),
            reason: "protected".into(),
        },
        backend: "lsm",
    };
    let asking = std::thread::spawn(move || {
        broker.ask_outcome(request, Duration::from_secs(60), Decision::Deny)
    });
    std::thread::sleep(Duration::from_millis(300));
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    let outcome = asking.join().unwrap();
    assert!(
        matches!(outcome.resolution, Resolution::Killed { .. }),
        "{outcome:?}"
    );
    let sessions = guard::api::client::call(&socket, Op::Sessions).unwrap();
    assert_eq!(sessions, serde_json::json!([]));
    daemon.terminate();
}

fn start_daemon(socket: &Path, audit: &Path) -> Reaped {
    let daemon = guard_command(socket)
        .args(["daemon", "--audit-log"])
        .arg(audit)
        .stderr(Stdio::null())
        .spawn()
        .expect("starting guard daemon");
    let daemon = Reaped(daemon);
    wait_until(Duration::from_secs(10), "the daemon socket", || {
        UnixStream::connect(socket).is_ok()
    });
    daemon
}

fn daemon_hold_ids(socket: &Path) -> Vec<u64> {
    let out = guard_command(socket)
        .args(["holds", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_default()
        .iter()
        .filter_map(|h| h["id"].as_u64())
        .collect()
}

#[test]
fn a_hold_survives_a_daemon_restart_and_is_approved_after_it() {
    require_root();
    let dir = TempDir::new("restart");
    let socket = dir.join("guard.sock");
    let audit_path = dir.join("audit.jsonl");
    let mut first = start_daemon(&socket, &audit_path);

    let upstream = Arc::new(DaemonUpstream::new(socket.clone()));
    upstream
        .register(session_info("phoenix", 0))
        .expect("registering");
    let broker = HoldBroker::new();
    broker.set_upstream(upstream);
    let mut held = Command::new("sleep").arg("60").spawn().unwrap();
    let request = HoldRequest {
        session: "phoenix".into(),
        pid: held.id(),
        action: Action::Unlink {
            path: PathBuf::from("/prod/phoenix"),
        },
        verdict: Verdict {
            decision: Decision::Ask,
            rule: "file.protected".into(),
            reason: "protected".into(),
        },
        backend: "seccomp",
    };
    let asking = std::thread::spawn(move || {
        broker.ask_outcome(request, Duration::from_secs(60), Decision::Deny)
    });
    wait_until(Duration::from_secs(5), "the first daemon's hold", || {
        !daemon_hold_ids(&socket).is_empty()
    });

    // The daemon dies without a word; the socket file stays behind.
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!asking.is_finished(), "the ask must outlive the daemon");

    let second = start_daemon(&socket, &audit_path);
    let mut ids = Vec::new();
    wait_until(
        Duration::from_secs(10),
        "the hold on the new daemon",
        || {
            ids = daemon_hold_ids(&socket);
            !ids.is_empty()
        },
    );
    let out = guard_command(&socket)
        .args(["approve", &ids[0].to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let outcome = asking.join().unwrap();
    assert!(
        matches!(outcome.resolution, Resolution::Approved { .. }),
        "{outcome:?}"
    );
    assert!(outcome.waited >= Duration::from_millis(500));

    let records = audit::read(&audit_path).unwrap();
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("held"), Some("held"), Some("approved")],
        "one record per daemon for the hold, then the approval: {records:#?}"
    );
    assert!(records.iter().all(|r| r.what == "unlink /prod/phoenix"));

    second.terminate();
    let _ = held.kill();
    let _ = held.wait();
}

#[test]
fn events_lists_recent_decisions_and_follow_streams_new_ones() {
    let f = Fixture::new("events");
    let asked = f.ask("/prod/e1");
    f.wait_for_holds(1);
    let id = f.controller.broker().pending()[0].id;
    assert!(f.guard(&["deny", &id.to_string()]).status.success());
    asked.join().unwrap();

    let out = f.guard(&["events", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["session_started", "hold_opened", "decision"],
        "{}",
        text(&out)
    );
    let human = f.guard(&["events"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("ctl deny unlink /prod/e1 (rule file.protected) [denied by root"),
        "{human}"
    );

    // --follow: replays, then streams what happens next.
    let mut follower = guard_command(&f.socket)
        .args(["events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        lines.next().expect("a replayed event").unwrap();
    }
    let asked = f.ask("/prod/e2");
    let next: Value = serde_json::from_str(&lines.next().expect("a new event").unwrap()).unwrap();
    assert_eq!(next["event"], "hold_opened");
    assert_eq!(next["hold"]["action"]["path"], "/prod/e2");
    let id = next["hold"]["id"].as_u64().unwrap();
    assert!(f.guard(&["approve", &id.to_string()]).status.success());
    let last: Value = serde_json::from_str(&lines.next().expect("the decision").unwrap()).unwrap();
    assert_eq!(last["event"], "decision");
    assert_eq!(last["record"]["outcome"], "approved");
    asked.join().unwrap();
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn an_ask_with_a_huge_argv_reaches_the_daemon_intact() {
    require_root();
    let dir = TempDir::new("bigargv");
    let socket = dir.join("guard.sock");
    let daemon = start_daemon(&socket, &dir.join("audit.jsonl"));
    let upstream = Arc::new(DaemonUpstream::new(socket.clone()));
    upstream.register(session_info("big", 0)).unwrap();
    let broker = HoldBroker::new();
    broker.set_upstream(upstream);
    // About ARG_MAX: 2 MiB of argv, with quotes and a newline to escape.
    let argv: Vec<std::ffi::OsString> = std::iter::once("psql".into())
        .chain((0..2048).map(|i| format!("\"arg {i}\"\n{}", "x".repeat(1000)).into()))
        .collect();
    let request = HoldRequest {
        session: "big".into(),
        pid: std::process::id(),
        action: Action::Exec {
            filename: "/usr/bin/psql".into(),
            argv: argv.clone(),
            cwd: "/".into(),
        },
        verdict: Verdict {
            decision: Decision::Ask,
            rule: "db.write".into(),
            reason: "r".into(),
        },
        backend: "exec-stop",
    };
    let asking = std::thread::spawn(move || {
        broker.ask_outcome(request, Duration::from_secs(30), Decision::Deny)
    });
    let mut ids = Vec::new();
    wait_until(Duration::from_secs(10), "the big hold", || {
        ids = daemon_hold_ids(&socket);
        !ids.is_empty()
    });
    assert!(
        guard_command(&socket)
            .args(["deny", &ids[0].to_string()])
            .status()
            .unwrap()
            .success()
    );
    let outcome = asking.join().unwrap();
    assert!(
        matches!(outcome.resolution, Resolution::Denied { .. }),
        "{outcome:?}"
    );
    let Action::Exec { argv: got, .. } = &outcome.hold.request.action else {
        panic!("not an exec");
    };
    assert_eq!(got, &argv);
    daemon.terminate();
}
