//! `guard session -- CMD`: run a command in its own session cgroup, as the
//! invoking user, under a controller (a running daemon, or one embedded here),
//! and report what happened.

use std::{
    ffi::{CString, OsString},
    os::{unix::ffi::OsStrExt as _, unix::process::CommandExt as _},
    path::Path,
    process::{Command, ExitStatus},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    api::wire::Counts,
    cgroup::Cgroup,
    events::KernelEvent,
    policy::Policy,
    seccomp::{RingRefusal, SessionFilter},
    signal_relay::SignalRelay,
    supervision::{Supervision, SupervisionOptions, session_info},
    users::{self, Account},
};

/// Options of one session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub name: Option<String>,
    pub command: Vec<OsString>,
    /// Run CMD as this user (name or uid) instead of the sudo caller.
    pub user: Option<String>,
    pub common: SupervisionOptions,
}

/// What a finished session saw.
#[derive(Debug, Default, serde::Serialize)]
pub struct SessionSummary {
    pub session: String,
    pub exit_code: i32,
    /// "daemon" or "embedded".
    pub controller: String,
    /// What held file and connect actions: "lsm" (BPF LSM hooks; io_uring
    /// refused) or "seccomp" (user notification).
    pub backend: String,
    /// The socket `guard holds` / `guard approve` used for this session.
    pub socket: String,
    pub counts: Counts,
    pub execs: u64,
    pub events: Vec<KernelEvent>,
    pub dropped: u64,
    /// `guard adopt`: the adopted pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `guard adopt`: processes moved into the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopted: Option<u64>,
    /// `guard adopt`: processes moved back out, no longer guarded (on SIGINT/SIGTERM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<u64>,
}

/// Session names become a cgroup and a socket file name.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        bail!(
            "invalid session name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not \
             starting with '.'"
        );
    }
    Ok(())
}

/// Runs the session and returns its summary; the caller exits with `exit_code`.
pub fn run(options: &SessionOptions) -> anyhow::Result<SessionSummary> {
    let Some((program, args)) = options.command.split_first() else {
        bail!("no command given: use `guard session -- CMD [ARGS...]`");
    };
    let name = options.name.clone().unwrap_or_else(default_session_name);
    validate_name(&name)?;
    let account = users::invoking_account(options.user.as_deref())?;
    let policy = Arc::new(load_policy(
        options.common.policy.as_deref(),
        options.common.workspace.as_deref(),
        &account.home,
    )?);
    // Signals are blocked before any thread starts, so only the forwarder sees them.
    let signals = SignalRelay::block()?;
    let cgroup = Cgroup::create(&format!("session-{name}"))?;
    let result = run_in(
        &cgroup, &name, &account, &policy, program, args, options, &signals,
    );
    signals.stop();
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

/// The session's policy (`--policy`, else the built-in one) for `workspace`
/// (default: the current directory), `~` meaning `home`.
pub fn load_policy(
    policy: Option<&Path>,
    workspace: Option<&Path>,
    home: &str,
) -> anyhow::Result<Policy> {
    let policy = match policy {
        // Errors name file:line:column and the fix (see docs/policy.md).
        Some(path) => Policy::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Policy::embedded_default(),
    };
    let workspace = match workspace {
        Some(dir) => dir
            .canonicalize()
            .with_context(|| format!("--workspace {}: no such directory", dir.display()))?,
        None => std::env::current_dir().context("reading the current directory")?,
    };
    // `~` in rules means the home of the user the agent runs as, not root's.
    Ok(policy
        .with_home(home)
        .with_workspace(workspace)
        .with_fresh_counters())
}

#[allow(clippy::too_many_arguments)]
fn run_in(
    cgroup: &Cgroup,
    name: &str,
    account: &Account,
    policy: &Arc<Policy>,
    program: &OsString,
    args: &[OsString],
    options: &SessionOptions,
    signals: &SignalRelay,
) -> anyhow::Result<SessionSummary> {
    let mut info = session_info(
        cgroup,
        name,
        0,
        account.uid,
        std::iter::once(program)
            .chain(args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    )?;
    let mut supervision = Supervision::start(cgroup, &mut info, policy, &options.common)?;

    // The prompt observes the broker before the command starts, so even a
    // hold on its very first exec reaches the terminal.
    let agent_pid = Arc::new(AtomicI32::new(0));
    if options.common.prompt {
        supervision.start_prompt(
            cgroup,
            agent_pid.clone(),
            format!("{} (at the session terminal)", account.name),
        )?;
    }

    // Registered before the command starts, so its first actions count.
    supervision.register(&info)?;

    let mut command = Command::new(program);
    command.args(args);
    // With BPF LSM active the kernel hooks hold file and connect calls (the
    // session filter would only ask twice); io_uring, whose file ops run on
    // kernel workers a restart hold cannot stop, is refused instead.
    let lsm = supervision.lsm_active();
    let backend = if lsm { "lsm" } else { "seccomp" };
    let refusal = lsm.then(RingRefusal::new);
    enter_session_as(&mut command, cgroup, account, refusal)?;
    // The seccomp filter goes last: after the cgroup move and the user switch.
    let pending_filter = if lsm {
        None
    } else {
        Some(SessionFilter::prepare(&mut command)?)
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    signals.forward_to(child.id() as i32);
    agent_pid.store(child.id() as i32, Ordering::SeqCst);
    info.agent_pid = child.id();

    // Registered again with the agent's pid; a failure only loses that detail.
    if let Err(e) = supervision.register(&info) {
        log::warn!("updating the session's registration: {e:#}");
    }
    if let Err(e) = supervision.serve() {
        let _ = cgroup.kill();
        let _ = child.wait();
        return Err(e);
    }
    let supervisor = match pending_filter
        .map(|f| f.start(policy.clone(), supervision.broker.clone(), name.to_owned()))
        .transpose()
    {
        Ok(supervisor) => supervisor,
        Err(e) => {
            let _ = cgroup.kill();
            let _ = child.wait();
            return Err(e);
        }
    };

    let status: ExitStatus = child.wait().context("waiting for the command")?;
    if let Some(supervisor) = supervisor {
        supervisor.stop();
    }
    Ok(supervision
        .finish()
        .summary(name, exit_code(status), backend))
}

/// Registers the child's first steps after fork: move into the session
/// cgroup (as root), install `refusal` (as root), then become the invoking
/// user.
fn enter_session_as(
    command: &mut Command,
    cgroup: &Cgroup,
    account: &Account,
    refusal: Option<RingRefusal>,
) -> anyhow::Result<()> {
    let procs = CString::new(cgroup.path().join("cgroup.procs").as_os_str().as_bytes())
        .context("cgroup path contains a NUL byte")?;
    // SAFETY: geteuid has no preconditions.
    let switch = unsafe { libc::geteuid() } != account.uid;
    if switch {
        command
            .env("HOME", &account.home)
            .env("USER", &account.name)
            .env("LOGNAME", &account.name);
    }
    let (uid, gid, groups) = (account.uid, account.gid, account.groups.clone());
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // syscalls (open, write, close, setgroups, setgid, setuid) on data
    // prepared before fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(err);
            }
            if let Some(refusal) = &refusal {
                refusal.install()?;
            }
            if switch
                && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
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

/// Prints the summary for a person (stderr) or as one JSON object (stdout).
pub fn print_summary(summary: &SessionSummary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serialises")
        );
        return;
    }
    let c = &summary.counts;
    match (summary.pid, summary.adopted) {
        (Some(pid), Some(adopted)) => eprintln!(
            "guard: adopted session {} (pid {pid}) ended: {adopted} process(es) adopted, {} \
             released ({} controller, {} backend)",
            summary.session,
            summary.released.unwrap_or(0),
            summary.controller,
            summary.backend
        ),
        _ => eprintln!(
            "guard: session {} ended with status {} ({} controller, {} backend)",
            summary.session, summary.exit_code, summary.controller, summary.backend
        ),
    }
    eprintln!(
        "guard: {} exec(s) and {} decision(s) seen; {} held, {} approved ({} by standing \
         grant), {} denied, {} killed, {} timed out; {} event(s) dropped",
        summary.execs,
        c.seen,
        c.held,
        c.approved,
        c.by_grant,
        c.denied,
        c.killed,
        c.timed_out,
        summary.dropped
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names() {
        for good in ["a", "ci-123", "agent_1.x"] {
            validate_name(good).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
