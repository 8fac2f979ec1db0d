//! `guard session -- CMD`: run a command in its own session cgroup and report
//! what the kernel saw it do.

use std::{
    ffi::OsString,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{Context as _, bail};
use guard_common::{SessionConfig, session_flags};

use crate::{
    cgroup::Cgroup,
    events::{self, KernelEvent},
    programs::{Probe, ProgramSet},
};

/// Options of one session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub name: Option<String>,
    pub command: Vec<OsString>,
    pub json: bool,
}

/// What a finished session saw.
#[derive(Debug, Default, serde::Serialize)]
pub struct SessionSummary {
    pub session: String,
    pub exit_code: i32,
    pub events: Vec<KernelEvent>,
    pub dropped: u64,
}

/// Runs the session and returns its summary; the caller exits with `exit_code`.
pub fn run(options: &SessionOptions) -> anyhow::Result<SessionSummary> {
    let Some((program, args)) = options.command.split_first() else {
        bail!("no command given: use `guard session -- CMD [ARGS...]`");
    };
    let name = options.name.clone().unwrap_or_else(default_session_name);
    let cgroup = Cgroup::create(&format!("session-{name}"))?;
    let result = run_in(&cgroup, &name, program, args);
    // Nothing of the session may outlive it: kill stragglers, then remove the cgroup.
    let _ = cgroup.kill();
    for _ in 0..50 {
        if cgroup.remove().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    result
}

fn run_in(
    cgroup: &Cgroup,
    name: &str,
    program: &OsString,
    args: &[OsString],
) -> anyhow::Result<SessionSummary> {
    let mut set = ProgramSet::load(cgroup.depth()?, &[Probe::Exec])?;
    set.require(Probe::Exec)?;
    set.sessions()?.insert(
        cgroup.id()?,
        SessionConfig {
            flags: session_flags::WATCH_EXEC,
            _pad: 0,
        },
        0,
    )?;
    let mut ring = set.take_events()?;

    let procs = cgroup.path().join("cgroup.procs");
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: the closure only calls async-signal-safe functions (open/write/close
    // through std::fs with a preallocated path) between fork and exec.
    unsafe {
        command.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;

    let mut seen = Vec::new();
    let status: ExitStatus = loop {
        poll_readable(ring.as_raw_fd(), 100);
        while let Some(record) = ring.next() {
            match events::decode(&record) {
                Ok(event) => seen.push(event),
                Err(e) => log::warn!("undecodable kernel event: {e}"),
            }
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
    };
    while let Some(record) = ring.next() {
        if let Ok(event) = events::decode(&record) {
            seen.push(event);
        }
    }
    let dropped = set.drops()?.iter().map(|(_, n)| n).sum();
    Ok(SessionSummary {
        session: name.to_owned(),
        exit_code: exit_code(status),
        events: seen,
        dropped,
    })
}

fn poll_readable(fd: i32, timeout_ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}

/// Shell convention: 128+N for a signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn default_session_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{:x}", std::process::id(), nanos)
}

/// Prints the summary for a person (or as one JSON object).
pub fn print_summary(summary: &SessionSummary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serialises")
        );
        return;
    }
    let execs: Vec<_> = summary
        .events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::Exec {
                pid,
                filename,
                truncated,
                ..
            } => Some(format!(
                "  exec pid {pid} {filename}{}",
                if *truncated { " (path truncated)" } else { "" }
            )),
            _ => None,
        })
        .collect();
    eprintln!(
        "guard: session {} ended with status {}",
        summary.session, summary.exit_code
    );
    eprintln!(
        "guard: {} exec(s) seen, {} event(s) dropped",
        execs.len(),
        summary.dropped
    );
    for line in execs {
        eprintln!("{line}");
    }
}
