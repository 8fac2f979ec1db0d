//! Runs a command under guard's seccomp backend, outside `guard session`: the
//! supervisor-death test kills this process mid-hold, and `cargo xtask bench`
//! times loops under it.
//!
//! guard-seccomp-run [--cgroup PATH] [--workspace DIR] [--protect PREFIX]...
//!                   [--report-holds] [--deny-holds] -- CMD [ARGS...]
//!
//! --cgroup        move CMD into this existing cgroup before exec
//! --workspace     the session's workspace root (the default policy's rules
//!                 depend on it)
//! --protect       hold changes below PREFIX (nobody answers: holds wait)
//! --report-holds  print `held <action>` on stdout when a hold opens
//! --deny-holds    deny every hold at once and say so on stderr (benchmarks)
//! Exits with CMD's status and prints the supervisor's counters on stderr.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::Duration,
};

use guard::{holds::HoldBroker, policy::Policy, seccomp::SessionFilter};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut cgroup: Option<PathBuf> = None;
    let mut policy = Policy::embedded_default();
    let mut report_holds = false;
    let mut deny_holds = false;
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cgroup" => cgroup = Some(args.next().expect("--cgroup PATH").into()),
            "--protect" => policy = policy.with_protected(args.next().expect("--protect PREFIX")),
            "--report-holds" => report_holds = true,
            "--deny-holds" => deny_holds = true,
            "--workspace" => policy = policy.with_workspace(args.next().expect("--workspace DIR")),
            "--" => {
                command.extend(args.by_ref());
                break;
            }
            other => panic!("unknown argument {other:?}; see the module docs"),
        }
    }
    assert!(!command.is_empty(), "no command after --");
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(cg) = &cgroup {
        let procs = cg.join("cgroup.procs");
        // SAFETY: one file write between fork and exec.
        unsafe { cmd.pre_exec(move || std::fs::write(&procs, b"0")) };
    }
    let pending = SessionFilter::prepare(&mut cmd).expect("preparing the seccomp filter");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    let broker = HoldBroker::new();
    let supervisor = pending
        .start(Arc::new(policy), broker.clone(), "seccomp-run".into())
        .expect("starting the supervisor");
    let mut reported = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the command") {
            break status;
        }
        if report_holds {
            for hold in broker.pending().iter().skip(reported) {
                println!("held {}", hold.request.action);
                reported += 1;
            }
        }
        if deny_holds {
            for hold in broker.pending() {
                eprintln!(
                    "guard-seccomp-run: denying hold {} (rule {})",
                    hold.request.action, hold.request.verdict.rule
                );
                let _ = broker.resolve(
                    hold.id,
                    guard::holds::Resolution::Denied {
                        approver: "guard-seccomp-run --deny-holds".into(),
                    },
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stats = supervisor.stop();
    eprintln!(
        "guard-seccomp-run: notifications={} allowed={} denied={} held={}",
        stats.notifications, stats.allowed, stats.denied, stats.held
    );
    std::process::exit(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    );
}
