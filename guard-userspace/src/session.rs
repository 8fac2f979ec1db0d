//! `guard session -- CMD`: run a command in its own session cgroup, as the
//! invoking user, under a controller (a running daemon, or one embedded here),
//! and report what happened.

use std::{
    ffi::{CString, OsString},
    os::{unix::ffi::OsStrExt as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Command, ExitStatus},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};

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
    enforcer::Enforcer,
    events::KernelEvent,
    freeze::{FreezeOnHold, SessionFreeze},
    holds::{HoldBroker, HoldObserver, HoldRequest, Outcome},
    kernel_backends::EventObserver,
    pin::PinDir,
    policy::Policy,
    programs::Probe,
    seccomp::{RingRefusal, SessionFilter},
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
    /// What held file and connect actions: "lsm" (BPF LSM hooks; io_uring
    /// refused) or "seccomp" (user notification).
    pub backend: String,
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
    // With BPF LSM active the kernel hooks hold file and connect calls (the
    // session filter would only ask twice); io_uring, whose file ops run on
    // kernel workers a restart hold cannot stop, is refused instead.
    let backend = if kernel.lsm_active() {
        "lsm"
    } else {
        "seccomp"
    };
    let refusal = kernel.lsm_active().then(RingRefusal::new);
    enter_session_as(&mut command, cgroup, account, refusal)?;
    // The seccomp filter goes last: after the cgroup move and the user switch.
    let pending_filter = if kernel.lsm_active() {
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
    let supervisor = match pending_filter
        .map(|f| f.start(policy.clone(), broker.clone(), name.to_owned()))
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
        backend: backend.into(),
        socket: socket_shown,
        counts,
        execs,
        events: seen,
        dropped,
    })
}

/// The kernel side of a session: guard's programs (exec stop everywhere,
/// the LSM restart hold where BPF LSM is active), the session's kernel
/// tables compiled from its policy, and the backends deciding held tasks
/// through `broker`.
struct KernelEnforcement {
    enforcer: Enforcer,
    session: u64,
    events: Arc<Mutex<Vec<KernelEvent>>>,
}

impl KernelEnforcement {
    fn start(
        cgroup: &Cgroup,
        name: &str,
        policy: &Arc<Policy>,
        broker: &Arc<HoldBroker>,
    ) -> anyhow::Result<Self> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let observer: EventObserver = Arc::new(Mutex::new(move |e: &KernelEvent| {
            seen.lock().expect("event list poisoned").push(e.clone())
        }));
        // Pinned privately: the session's enforcement ends with it.
        let mut enforcer = Enforcer::start(
            PinDir::ephemeral()?,
            cgroup.depth()?,
            &Probe::ENFORCE,
            broker.clone(),
            Some(observer),
        )?;
        let session = enforcer.add_policy_session(cgroup, name, policy.clone())?;
        Ok(Self {
            enforcer,
            session,
            events,
        })
    }

    /// Whether BPF LSM holds file and connect calls (else seccomp does).
    fn lsm_active(&self) -> bool {
        self.enforcer.lsm_active()
    }

    /// Takes the session out of enforcement; returns what was seen and the drop count.
    fn stop(mut self) -> (Vec<KernelEvent>, u64) {
        let dropped = self
            .enforcer
            .drops()
            .map(|d| d.iter().map(|(_, n)| n).sum())
            .unwrap_or(0);
        self.enforcer.remove_session(self.session);
        drop(self.enforcer);
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
    eprintln!(
        "guard: session {} ended with status {} ({} controller, {} backend)",
        summary.session, summary.exit_code, summary.controller, summary.backend
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
