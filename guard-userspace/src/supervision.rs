//! What every guarded session runs besides its own processes, whether guard
//! launched them (`guard session`) or adopted them (`guard adopt`): who
//! decides (a daemon, or a controller embedded here serving the same API),
//! the kernel enforcement of the session cgroup, the terminal prompt, and
//! the tally the summary prints.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, atomic::AtomicI32},
};

use crate::{
    api::{
        client::{self, DaemonDecider, DaemonUpstream},
        endpoint,
        server::Server,
        wire::{Counts, Op, SessionInfo},
    },
    audit::{self, AuditLog},
    bounded::BoundedMode,
    cgroup::Cgroup,
    controller::{self, Controller},
    enforcer::Enforcer,
    events::KernelEvent,
    freeze::{FreezeOnHold, SessionFreeze},
    holds::{HoldBroker, HoldObserver, HoldRequest, Outcome},
    hosts,
    kernel_backends::EventObserver,
    kernel_policy,
    pin::PinDir,
    policy::Policy,
    programs::Probe,
    session::SessionSummary,
    terminal::{Decider, LocalDecider, Terminal, TerminalApprover},
};

/// What a supervised session is told, whether launched or adopted.
#[derive(Debug, Clone, Default)]
pub struct SupervisionOptions {
    /// Print the summary (and errors) as JSON on stdout.
    pub json: bool,
    pub policy: Option<PathBuf>,
    pub workspace: Option<PathBuf>,
    /// The daemon socket to look for (default GUARD_SOCKET or /run/guard/guard.sock).
    pub socket: Option<PathBuf>,
    /// Audit log of the embedded controller (ignored when a daemon decides).
    pub audit_log: Option<PathBuf>,
    /// Ask on guard's terminal when it has one (default on).
    pub prompt: bool,
}

/// How a session registers itself: `cgroup` named `name`, started now by
/// this process for `uid`, running `command` (`agent_pid` 0 until known).
pub fn session_info(
    cgroup: &Cgroup,
    name: &str,
    agent_pid: u32,
    uid: u32,
    command: Vec<String>,
) -> anyhow::Result<SessionInfo> {
    Ok(SessionInfo {
        name: name.to_owned(),
        cgroup: cgroup.path().to_string_lossy().into_owned(),
        cgroup_id: cgroup.id()?,
        supervisor_pid: std::process::id(),
        agent_pid,
        uid,
        command,
        started: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        socket: None,
    })
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

/// What a session's supervision saw, for the summary.
pub struct Ended {
    /// "daemon" or "embedded".
    pub controller: &'static str,
    pub counts: Counts,
    pub execs: u64,
    pub events: Vec<KernelEvent>,
    pub dropped: u64,
    /// The socket `guard holds` / `guard approve` used for this session.
    pub socket: String,
}

impl Ended {
    /// The summary of session `name` (what `guard session` and `guard adopt`
    /// print), `backend` having held its file and connect calls.
    pub fn summary(self, name: &str, exit_code: i32, backend: &str) -> SessionSummary {
        SessionSummary {
            session: name.to_owned(),
            exit_code,
            controller: self.controller.into(),
            backend: backend.into(),
            socket: self.socket,
            counts: self.counts,
            execs: self.execs,
            events: self.events,
            dropped: self.dropped,
            ..Default::default()
        }
    }
}

/// A session's controller and kernel enforcement, from start to summary.
pub struct Supervision {
    name: String,
    pub broker: Arc<HoldBroker>,
    tally: Arc<SessionTally>,
    control: Control,
    kernel: KernelEnforcement,
    freeze: Arc<SessionFreeze>,
    daemon_socket: PathBuf,
    /// Set once the session is unregistered (kind, counts).
    unregistered: Option<(&'static str, Counts)>,
    /// Resolves the policy's host names again on a timer (None without any).
    hosts: Option<hosts::Refresher>,
}

impl Supervision {
    /// Picks the controller (the daemon if one answers on `options.socket`'s
    /// socket, else one embedded here, which sets `info.socket`) and starts
    /// the kernel enforcement of `cgroup` under `policy`.
    pub fn start(
        cgroup: &Cgroup,
        info: &mut SessionInfo,
        policy: &Arc<Policy>,
        options: &SupervisionOptions,
    ) -> anyhow::Result<Self> {
        let name = info.name.clone();
        let broker = HoldBroker::new();
        let tally = Arc::new(SessionTally {
            session: name.clone(),
            ..Default::default()
        });
        broker.observe(tally.clone());

        let daemon_socket = endpoint::daemon_socket(options.socket.as_deref());
        let control = if endpoint::answers(&daemon_socket) {
            let upstream = Arc::new(DaemonUpstream::new(daemon_socket.clone()));
            broker.set_upstream(upstream.clone());
            Control::Daemon {
                socket: daemon_socket.clone(),
                upstream,
            }
        } else {
            let audit = AuditLog::open(&audit::resolve_path(options.audit_log.clone()))?;
            let socket = endpoint::session_socket(&daemon_socket, &name);
            info.socket = Some(socket.to_string_lossy().into_owned());
            Control::Embedded {
                controller: Controller::new(broker.clone(), Some(audit)),
                socket,
                server: None,
            }
        };
        // Host names resolve before the kernel tables are compiled, so a
        // rule naming a production host holds from the agent's first connect.
        let every = hosts::interval()?;
        let names = hosts::resolve_now(&name, policy, every);
        let kernel = KernelEnforcement::start(cgroup, &name, policy, &broker)?;
        let hosts = match names {
            None => None,
            Some(names) => {
                let (maps, session, session_name) =
                    (kernel.enforcer.tables.clone(), kernel.session, name.clone());
                Some(hosts::Refresher::start(
                    &name,
                    policy,
                    every,
                    names,
                    move |policy| {
                        let tables = policy.kernel_tables();
                        let mut maps = maps.lock().expect("kernel tables poisoned");
                        if let Err(e) =
                            kernel_policy::install_addresses(&mut maps, session, &tables)
                        {
                            log::error!(
                                "session {session_name}: new addresses of the policy's hosts are not \
                             in the kernel ({e:#}); connects to them are not held"
                            );
                        }
                    },
                )?)
            }
        };
        let freeze = SessionFreeze::new(cgroup.clone());
        broker.observe(FreezeOnHold::new(name.clone(), freeze.clone()));
        Ok(Self {
            name,
            broker,
            tally,
            control,
            kernel,
            freeze,
            daemon_socket,
            unregistered: None,
            hosts,
        })
    }

    /// Whether BPF LSM holds file and connect calls.
    pub fn lsm_active(&self) -> bool {
        self.kernel.enforcer.lsm_active()
    }

    /// Puts the session cgroup under bounded mode (see `bounded.rs`).
    pub fn enable_bounded(&mut self, cgroup: &Cgroup) -> anyhow::Result<BoundedMode> {
        self.kernel.enforcer.enable_bounded(cgroup.id()?)
    }

    /// Asks on this process's terminal, if it has one. `redraw` is the
    /// agent's pid (SIGWINCH after the prompt), 0 until known.
    pub fn start_prompt(
        &self,
        cgroup: &Cgroup,
        redraw: Arc<AtomicI32>,
        approver: String,
    ) -> anyhow::Result<()> {
        let Some(terminal) = Terminal::open() else {
            return Ok(());
        };
        let decider: Arc<dyn Decider> = match &self.control {
            Control::Daemon { socket, .. } => Arc::new(DaemonDecider {
                socket: socket.clone(),
            }),
            Control::Embedded { .. } => Arc::new(LocalDecider {
                broker: self.broker.clone(),
                cgroup: cgroup.clone(),
            }),
        };
        let approver = TerminalApprover::start(
            terminal,
            self.name.clone(),
            self.freeze.clone(),
            redraw,
            decider,
            approver,
        )?;
        self.broker.observe(approver);
        Ok(())
    }

    /// Registers (or updates) the session with whoever decides for it.
    pub fn register(&self, info: &SessionInfo) -> anyhow::Result<()> {
        match &self.control {
            Control::Daemon { socket, upstream } => upstream.register(info.clone()).map_err(|e| {
                anyhow::anyhow!("registering with the daemon at {}: {e}", socket.display())
            }),
            Control::Embedded { controller, .. } => controller
                .register(info.clone())
                .map_err(|e| anyhow::anyhow!("{e}")),
        }
    }

    /// Serves the embedded controller's socket (nothing to do with a daemon).
    pub fn serve(&mut self) -> anyhow::Result<()> {
        if let Control::Embedded {
            controller,
            socket,
            server,
        } = &mut self.control
        {
            // Root-only, like the daemon's: the agent runs as the session's user
            // and could reach a user-owned socket from outside the cgroup
            // (systemd-run --user), then approve its own holds.
            let started = Server::start(socket, controller.clone(), None).map_err(|e| {
                e.context(format!(
                    "no daemon answers on {} and the session's own socket could not be served",
                    self.daemon_socket.display()
                ))
            })?;
            *server = Some(started);
        }
        Ok(())
    }

    /// Takes the session out of the kernel: nothing in its cgroup is stopped
    /// or held from now on (tasks already held stay stopped until decided).
    pub fn detach_kernel(&mut self) {
        self.hosts = None;
        self.kernel.detach();
    }

    /// Unregisters the session: its pending holds end as killed.
    pub fn unregister(&mut self) {
        if self.unregistered.is_some() {
            return;
        }
        self.unregistered = Some(match &mut self.control {
            Control::Daemon { socket, .. } => {
                if let Err(e) = client::call(
                    socket,
                    Op::Unregister {
                        session: self.name.clone(),
                    },
                ) {
                    log::warn!("unregistering from the daemon: {e}");
                }
                ("daemon", *self.tally.counts.lock().expect("tally poisoned"))
            }
            Control::Embedded {
                controller, server, ..
            } => {
                let counts = controller
                    .unregister(&self.name)
                    .map(|e| e.counts)
                    .unwrap_or_default();
                drop(server.take());
                ("embedded", counts)
            }
        });
    }

    /// Stops kernel enforcement, then unregisters (if not done yet).
    pub fn finish(mut self) -> Ended {
        let (events, dropped) = self.kernel.stop();
        self.unregister();
        let (controller, counts) = self.unregistered.unwrap_or(("embedded", Counts::default()));
        let socket = match &self.control {
            Control::Daemon { socket, .. } | Control::Embedded { socket, .. } => {
                socket.display().to_string()
            }
        };
        Ended {
            controller,
            counts,
            execs: events
                .iter()
                .filter(|e| matches!(e, KernelEvent::Exec { .. }))
                .count() as u64,
            events,
            dropped,
            socket,
        }
    }
}

/// The kernel side of a session: guard's programs (exec stop everywhere,
/// the LSM restart hold where BPF LSM is active, bounded mode when asked),
/// the session's kernel tables compiled from its policy, and the backends
/// deciding held tasks through the broker.
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

    fn detach(&mut self) {
        self.enforcer.remove_session(self.session);
    }

    /// Takes the session out of enforcement; returns what was seen and the drop count.
    fn stop(&mut self) -> (Vec<KernelEvent>, u64) {
        let dropped = self
            .enforcer
            .drops()
            .map(|d| d.iter().map(|(_, n)| n).sum())
            .unwrap_or(0);
        self.detach();
        let seen = std::mem::take(&mut *self.events.lock().expect("event list poisoned"));
        (seen, dropped)
    }
}
