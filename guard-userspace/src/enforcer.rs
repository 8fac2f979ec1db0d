//! Kernel enforcement as a controller runs it: the program set, the tables,
//! the backends that decide held tasks, and the thread reading the ring
//! buffer. `guard session` (embedded controller) and `guard daemon` start one
//! and add and remove sessions on it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::Context as _;
use guard_common::{SessionConfig, session_flags};

use crate::{
    bounded::BoundedMode,
    cgroup::Cgroup,
    events::KernelEvent,
    exec_stop::ExecStop,
    holds::HoldBroker,
    kernel_backends::{Backends, EventObserver, SessionMap},
    kernel_maps::{KernelMaps, KernelRuleSet, NameMatch},
    kernel_policy,
    lsm_backend::LsmBackend,
    pin::PinDir,
    policy::Policy,
    programs::{AttachReport, KernelStats, Probe, ProgramSet},
};

/// Running kernel enforcement.
pub struct Enforcer {
    set: ProgramSet,
    pub tables: Arc<Mutex<KernelMaps>>,
    pub broker: Arc<HoldBroker>,
    pub sessions: Arc<SessionMap>,
    pub backends: Arc<Backends>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Enforcer {
    /// Loads `probes` (pinned in `pin`), requires the exec tracepoint if it
    /// was asked for, starts reading events, and picks up tasks a previous
    /// controller left held. LSM probes that cannot attach are reported in
    /// [`Enforcer::reports`], not fatal: use the seccomp backend then.
    pub fn start(
        pin: PinDir,
        session_depth: i32,
        probes: &[Probe],
        broker: Arc<HoldBroker>,
        observer: Option<EventObserver>,
    ) -> anyhow::Result<Self> {
        let mut set = ProgramSet::load_pinned(pin, session_depth, probes)?;
        if probes.contains(&Probe::Exec) {
            set.require(Probe::Exec)?;
        }
        let tables = Arc::new(Mutex::new(set.maps()?));
        // The controller itself may not be signalled from inside a session.
        tables
            .lock()
            .expect("kernel tables poisoned")
            .protect_pid(std::process::id())?;
        let sessions = SessionMap::new();
        let lsm = LsmBackend::new(tables.clone(), broker.clone(), sessions.clone());
        let exec = Arc::new(ExecStop {
            broker: broker.clone(),
            sessions: sessions.clone(),
            tables: tables.clone(),
        });
        let backends = Arc::new(Backends { lsm, exec });
        let observer =
            observer.unwrap_or_else(|| Arc::new(Mutex::new(|_: &KernelEvent| {})) as EventObserver);
        let stop = Arc::new(AtomicBool::new(false));
        let ring = set.take_events()?;
        let reader = backends.clone().spawn_reader(ring, stop.clone(), observer);
        Ok(Self {
            set,
            tables,
            broker,
            sessions,
            backends,
            stop,
            reader: Some(reader),
        })
    }

    /// Whether every file and connect hook attached (BPF LSM is active).
    pub fn lsm_active(&self) -> bool {
        Probe::LSM.iter().all(|&p| self.set.attached(p))
    }

    pub fn reports(&self) -> &[AttachReport] {
        &self.set.reports
    }

    pub fn program_set(&self) -> &ProgramSet {
        &self.set
    }

    /// Puts a session under enforcement: its kernel rules, its policy for
    /// the backends, and its entry in the session map (added last, so the
    /// kernel never sees the session without its rules).
    pub fn add_session(
        &mut self,
        cgroup: &Cgroup,
        name: &str,
        policy: Arc<Policy>,
        flags: u32,
        rules: &KernelRuleSet,
    ) -> anyhow::Result<u64> {
        let id = cgroup.id()?;
        self.tables
            .lock()
            .expect("kernel tables poisoned")
            .install(id, rules)
            .with_context(|| format!("installing kernel rules of session {name}"))?;
        self.sessions.insert(id, name, policy);
        self.sessions.insert_cgroup(id, cgroup.clone());
        let mut flags = flags;
        if !rules.watched_programs.is_empty() {
            flags |= session_flags::WATCH_EXEC;
        }
        if rules
            .protected_names
            .iter()
            .any(|(how, _)| *how == NameMatch::Ancestor)
        {
            flags |= session_flags::ANCESTOR_NAMES;
        }
        self.set
            .sessions()?
            .insert(id, SessionConfig { flags, _pad: 0 }, 0)
            .with_context(|| format!("adding session {name} to the kernel"))?;
        Ok(id)
    }

    /// Puts a session under enforcement with the kernel tables its policy
    /// compiles to (`Policy::kernel_tables()`), so that only what the policy
    /// may hold or refuse leaves the kernel.
    pub fn add_policy_session(
        &mut self,
        cgroup: &Cgroup,
        name: &str,
        policy: Arc<Policy>,
    ) -> anyhow::Result<u64> {
        let id = cgroup.id()?;
        let flags = kernel_policy::install(
            &mut self.tables.lock().expect("kernel tables poisoned"),
            id,
            &policy.kernel_tables(),
        )
        .with_context(|| format!("installing the kernel tables of session {name}"))?;
        self.sessions.insert(id, name, policy);
        self.sessions.insert_cgroup(id, cgroup.clone());
        self.set
            .sessions()?
            .insert(id, SessionConfig { flags, _pad: 0 }, 0)
            .with_context(|| format!("adding session {name} to the kernel"))?;
        Ok(id)
    }

    /// Puts a session (already added) under bounded mode too: attaches the
    /// bounded raw tracepoint and returns the reader of its stops. For
    /// adopted sessions on kernels without BPF LSM.
    pub fn enable_bounded(&mut self, cgroup_id: u64) -> anyhow::Result<BoundedMode> {
        self.set.attach_probe(Probe::Bounded)?;
        let mode = BoundedMode::enable(&mut self.set)?;
        BoundedMode::add_session(&mut self.set, cgroup_id)?;
        Ok(mode)
    }

    /// Takes a session out of enforcement and drops its rules and grants.
    pub fn remove_session(&mut self, cgroup_id: u64) {
        if let Ok(mut sessions) = self.set.sessions() {
            let _ = sessions.remove(&cgroup_id);
        }
        if self.set.attached(Probe::Bounded) {
            BoundedMode::remove_session(&mut self.set, cgroup_id);
        }
        self.tables
            .lock()
            .expect("kernel tables poisoned")
            .clear_session(cgroup_id);
        self.sessions.remove(cgroup_id);
    }

    /// After a restart: re-raise the holds the kernel still has (see
    /// [`LsmBackend::recover`]). Returns how many tasks were held.
    pub fn recover_holds(&self) -> usize {
        self.backends.lsm.recover(&self.backends.exec).len()
    }

    pub fn stats(&self) -> anyhow::Result<KernelStats> {
        self.set.stats()
    }

    /// Ring buffer records lost, per event kind.
    pub fn drops(&self) -> anyhow::Result<Vec<(u32, u64)>> {
        self.set.drops()
    }
}

impl Drop for Enforcer {
    fn drop(&mut self) {
        if let Ok(mut tables) = self.tables.lock() {
            tables.unprotect_pid(std::process::id());
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
