//! `guard session -- CMD`: run a command in its own session cgroup, as the
//! invoking user, under a controller (a running daemon, or one embedded here),
//! and report what happened.

use std::{
    ffi::{CString, OsString},
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Command, ExitStatus},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use guard_common::{SessionConfig, session_flags};

use crate::{
    api::{
        client::{self, DaemonDecider, DaemonUpstream},
        endpoint,
        server::Server,
        wire::{Counts, Op, SessionInfo},
    },
    audit::{self, AuditLog},
    cgroup::Cgroup,
    controller::{self, Controller},
    events::{self, KernelEvent},
    freeze::{FreezeOnHold, SessionFreeze},
    holds::{HoldBroker, HoldObserver, HoldRequest, Outcome},
    policy::Policy,
    programs::{Probe, ProgramSet},
    seccomp::SessionFilter,
    signal_relay::SignalRelay,
    terminal::{Decider, LocalDecider, Terminal, TerminalApprover},
    users::{self, Account},
};

/// Options of one session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub name: Option<String>,
    pub command: Vec<OsString>,
    pub json: bool,
    pub policy: Option<PathBuf>,
    pub workspace: Option<PathBuf>,
    /// Run CMD as this user (name or uid) instead of the sudo caller.
    pub user: Option<String>,
    /// The daemon socket to look for (default GUARD_SOCKET or /run/guard/guard.sock).
    pub socket: Option<PathBuf>,
    /// Audit log of the embedded controller (ignored when a daemon decides).
    pub audit_log: Option<PathBuf>,
    /// Ask on the terminal when one is attached (default on).
    pub prompt: bool,
}

/// What a finished session saw.
#[derive(Debug, Default, serde::Serialize)]
pub struct SessionSummary {
    pub session: String,
    pub exit_code: i32,
    /// "daemon" or "embedded".
    pub controller: String,
    /// The socket `guard holds` / `guard approve` used for this session.
    pub socket: String,
    pub counts: Counts,
    pub execs: u64,
    pub events: Vec<KernelEvent>,
    pub dropped: u64,
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

/// Counts this session's decisions for the summary, whoever decides them.
#[derive(Default)]
struct SessionTally {
    session: String,
    counts: Mutex<Counts>,
}

impl HoldObserver for SessionTally {
    fn closed(&self, outcome: &Outcome) {
        if outcome.hold.request.session == self.session {
            let mut c = self.counts.lock().expect("tally poisoned");
            if !outcome.by_grant && outcome.hold.id != 0 {
                c.held += 1;
            }
            controller::tally(&mut c, outcome);
        }
    }
    fn reported(&self, request: &HoldRequest) {
        if request.session == self.session {
            let mut c = self.counts.lock().expect("tally poisoned");
            c.seen += 1;
            match request.verdict.decision {
                crate::decision::Decision::Deny => c.denied += 1,
                crate::decision::Decision::Kill => c.killed += 1,
                _ => {}
            }
        }
    }
}

/// Who decides this session's holds.
enum Control {
    Daemon {
        socket: PathBuf,
        upstream: Arc<DaemonUpstream>,
    },
    Embedded {
        controller: Arc<Controller>,
        socket: PathBuf,
        /// Started once the session is registered, so whoever finds the
        /// socket also finds the session.
        server: Option<Server>,
    },
}

/// Runs the session and returns its summary; the caller exits with `exit_code`.
pub fn run(options: &SessionOptions) -> anyhow::Result<SessionSummary> {
    let Some((program, args)) = options.command.split_first() else {
        bail!("no command given: use `guard session -- CMD [ARGS...]`");
    };
    let name = options.name.clone().unwrap_or_else(default_session_name);
    validate_name(&name)?;
    let account = users::invoking_account(options.user.as_deref())?;
    let policy = Arc::new(load_policy(options, &account)?);
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

fn load_policy(options: &SessionOptions, account: &Account) -> anyhow::Result<Policy> {
    let policy = match &options.policy {
        // Errors name file:line:column and the fix (see docs/policy.md).
        Some(path) => Policy::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Policy::embedded_default(),
    };
    let workspace = match &options.workspace {
        Some(dir) => dir
            .canonicalize()
            .with_context(|| format!("--workspace {}: no such directory", dir.display()))?,
        None => std::env::current_dir().context("reading the current directory")?,
    };
    // `~` in rules means the home of the user the agent runs as, not root's.
    Ok(policy
        .with_home(&account.home)
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
    let broker = HoldBroker::new();
    let tally = Arc::new(SessionTally {
        session: name.to_owned(),
        ..Default::default()
    });
    broker.observe(tally.clone());

    let daemon_socket = endpoint::daemon_socket(options.socket.as_deref());
    let mut info = SessionInfo {
        name: name.to_owned(),
        cgroup: cgroup.path().to_string_lossy().into_owned(),
        cgroup_id: cgroup.id()?,
        supervisor_pid: std::process::id(),
        agent_pid: 0,
        uid: account.uid,
        command: std::iter::once(program)
            .chain(args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        started: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        socket: None,
    };
    let mut control = if endpoint::answers(&daemon_socket) {
        let upstream = Arc::new(DaemonUpstream::new(daemon_socket.clone()));
        broker.set_upstream(upstream.clone());
        Control::Daemon {
            socket: daemon_socket,
            upstream,
        }
    } else {
        let audit = AuditLog::open(&audit::resolve_path(options.audit_log.clone()))?;
        let socket = endpoint::session_socket(&daemon_socket, name);
        info.socket = Some(socket.to_string_lossy().into_owned());
        Control::Embedded {
            controller: Controller::new(broker.clone(), Some(audit)),
            socket,
            server: None,
        }
    };
    let socket_shown = match &control {
        Control::Daemon { socket, .. } | Control::Embedded { socket, .. } => {
            socket.display().to_string()
        }
    };

    let kernel = KernelEnforcement::start(cgroup, name, policy, &broker)?;

    // The prompt observes the broker before the command starts, so even a
    // hold on its very first exec reaches the terminal.
    let agent_pid = Arc::new(AtomicI32::new(0));
    let freeze = SessionFreeze::new(cgroup.clone());
    broker.observe(FreezeOnHold::new(name.to_owned(), freeze.clone()));
    if options.prompt
        && let Some(terminal) = Terminal::open()
    {
        let decider: Arc<dyn Decider> = match &control {
            Control::Daemon { socket, .. } => Arc::new(DaemonDecider {
                socket: socket.clone(),
            }),
            Control::Embedded { .. } => Arc::new(LocalDecider {
                broker: broker.clone(),
                cgroup: cgroup.clone(),
            }),
        };
        let approver = TerminalApprover::start(
            terminal,
            name.to_owned(),
            freeze.clone(),
            agent_pid.clone(),
            decider,
            format!("{} (at the session terminal)", account.name),
        )?;
        broker.observe(approver);
    }

    // Registered before the command starts, so its first actions count.
    register(&control, &info)?;

    let mut command = Command::new(program);
    command.args(args);
    enter_session_as(&mut command, cgroup, account)?;
    // The seccomp filter goes last: after the cgroup move and the user switch.
    let pending_filter = SessionFilter::prepare(&mut command)?;
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    signals.forward_to(child.id() as i32);
    agent_pid.store(child.id() as i32, Ordering::SeqCst);
    info.agent_pid = child.id();

    // Registered again with the agent's pid; a failure only loses that detail.
    if let Err(e) = register(&control, &info) {
        log::warn!("updating the session's registration: {e:#}");
    }
    if let Control::Embedded {
        controller,
        socket,
        server,
    } = &mut control
    {
        // Root-only, like the daemon's: the agent runs as the session's user
        // and could reach a user-owned socket from outside the cgroup
        // (systemd-run --user), then approve its own holds.
        match Server::start(socket, controller.clone(), None) {
            Ok(started) => *server = Some(started),
            Err(e) => {
                let _ = cgroup.kill();
                let _ = child.wait();
                return Err(e.context(format!(
                    "no daemon answers on {} and the session's own socket could not be served",
                    endpoint::daemon_socket(options.socket.as_deref()).display()
                )));
            }
        }
    }
    let supervisor = match pending_filter.start(policy.clone(), broker.clone(), name.to_owned()) {
        Ok(supervisor) => supervisor,
        Err(e) => {
            let _ = cgroup.kill();
            let _ = child.wait();
            return Err(e);
        }
    };

    let status: ExitStatus = child.wait().context("waiting for the command")?;
    supervisor.stop();
    let (seen, dropped) = kernel.stop();
    let (controller_kind, counts) = match control {
        Control::Daemon { socket, .. } => {
            if let Err(e) = client::call(
                &socket,
                Op::Unregister {
                    session: name.to_owned(),
                },
            ) {
                log::warn!("unregistering from the daemon: {e}");
            }
            ("daemon", *tally.counts.lock().expect("tally poisoned"))
        }
        Control::Embedded {
            controller, server, ..
        } => {
            let counts = controller
                .unregister(name)
                .map(|e| e.counts)
                .unwrap_or_default();
            drop(server);
            ("embedded", counts)
        }
    };
    let execs = seen
        .iter()
        .filter(|e| matches!(e, KernelEvent::Exec { .. }))
        .count() as u64;
    Ok(SessionSummary {
        session: name.to_owned(),
        exit_code: exit_code(status),
        controller: controller_kind.into(),
        socket: socket_shown,
        counts,
        execs,
        events: seen,
        dropped,
    })
}

/// The kernel side of a session: guard's programs, the session's entry in
/// their map, and the thread reading their events.
struct KernelEnforcement {
    set: ProgramSet,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    events: Arc<Mutex<Vec<KernelEvent>>>,
}

impl KernelEnforcement {
    /// Loads and attaches the programs and starts reading their events.
    /// Hook: the kernel backends (exec stop, LSM restart hold) start here,
    /// deciding held tasks with `policy` and asking `broker`.
    fn start(
        cgroup: &Cgroup,
        _name: &str,
        _policy: &Arc<Policy>,
        _broker: &Arc<HoldBroker>,
    ) -> anyhow::Result<Self> {
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
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (events.clone(), stop.clone());
        let reader = std::thread::Builder::new()
            .name("guard-events".into())
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    poll_readable(ring.as_raw_fd(), 50);
                    while let Some(record) = ring.next() {
                        match events::decode(&record) {
                            Ok(event) => seen.lock().expect("event list poisoned").push(event),
                            Err(e) => log::warn!("undecodable kernel event: {e}"),
                        }
                    }
                }
            })
            .context("starting the kernel event reader")?;
        Ok(Self {
            set,
            stop,
            reader: Some(reader),
            events,
        })
    }

    /// Stops reading events; returns what was seen and the drop count.
    fn stop(mut self) -> (Vec<KernelEvent>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let dropped = self
            .set
            .drops()
            .map(|d| d.iter().map(|(_, n)| n).sum())
            .unwrap_or(0);
        let seen = std::mem::take(&mut *self.events.lock().expect("event list poisoned"));
        (seen, dropped)
    }
}

/// Registers (or updates) the session with whoever decides for it.
fn register(control: &Control, info: &SessionInfo) -> anyhow::Result<()> {
    match control {
        Control::Daemon { socket, upstream } => upstream.register(info.clone()).map_err(|e| {
            anyhow::anyhow!("registering with the daemon at {}: {e}", socket.display())
        }),
        Control::Embedded { controller, .. } => controller
            .register(info.clone())
            .map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// Registers the child's first steps after fork: move into the session
/// cgroup (as root), then become the invoking user.
fn enter_session_as(
    command: &mut Command,
    cgroup: &Cgroup,
    account: &Account,
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
    eprintln!(
        "guard: session {} ended with status {} ({} controller)",
        summary.session, summary.exit_code, summary.controller
    );
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
