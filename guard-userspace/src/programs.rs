//! The kernel program set: load guard's embedded eBPF object, attach each
//! program whose kernel support is present, and report what could not attach.

use std::fmt;

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{Lsm, RawTracePoint, TracePoint},
};
use guard_common::SessionConfig;

/// The compiled guard-ebpf object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard"));

/// A kernel program guard knows about and what it needs from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// tracepoint sched/sched_process_exec: works on every supported kernel.
    Exec,
    /// BPF LSM path_unlink: needs `bpf` in the boot-time lsm= list.
    LsmUnlink,
    /// raw tracepoint sys_enter for bounded mode (guard-ebpf/src/bounded.rs).
    Bounded,
}

impl Probe {
    pub const ALL: [Probe; 3] = [Probe::Exec, Probe::LsmUnlink, Probe::Bounded];

    fn program_name(self) -> &'static str {
        match self {
            Probe::Exec => "sched_process_exec",
            Probe::LsmUnlink => "path_unlink",
            Probe::Bounded => "bounded_sys_enter",
        }
    }

    /// What the user loses when this probe cannot attach.
    pub fn cost_if_missing(self) -> &'static str {
        match self {
            Probe::Exec => "execs in a session are not seen or stopped",
            Probe::LsmUnlink => {
                "unlink cannot be refused in the kernel; BPF LSM needs `lsm=...,bpf` on the kernel command line"
            }
            Probe::Bounded => {
                "adopted processes are not stopped after a destructive call (no bounded mode)"
            }
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program_name())
    }
}

/// What happened when a probe was loaded and attached.
#[derive(Debug)]
pub struct AttachReport {
    pub probe: Probe,
    pub error: Option<String>,
}

/// The loaded object with whichever probes attached.
pub struct ProgramSet {
    ebpf: Ebpf,
    pub reports: Vec<AttachReport>,
}

impl ProgramSet {
    /// Loads the object and tries to attach `probes`. Programs that fail to load or
    /// attach are reported in `reports`, not fatal: the caller decides what it needs.
    pub fn load(session_depth: i32, probes: &[Probe]) -> anyhow::Result<Self> {
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .override_global("SESSION_DEPTH", &session_depth, true)
            .load(OBJECT)
            .context("loading guard's eBPF object (is this root, with CAP_BPF and CAP_PERFMON?)")?;
        let mut reports = Vec::new();
        for &probe in probes {
            let error = attach(&mut ebpf, probe).err().map(|e| format!("{e:#}"));
            reports.push(AttachReport { probe, error });
        }
        Ok(Self { ebpf, reports })
    }

    /// Whether `probe` is loaded and attached.
    pub fn attached(&self, probe: Probe) -> bool {
        self.reports
            .iter()
            .any(|r| r.probe == probe && r.error.is_none())
    }

    /// Error out unless `probe` attached, with the reason the kernel gave.
    pub fn require(&self, probe: Probe) -> anyhow::Result<()> {
        match self.reports.iter().find(|r| r.probe == probe) {
            Some(AttachReport { error: None, .. }) => Ok(()),
            Some(AttachReport { error: Some(e), .. }) => {
                anyhow::bail!("{probe} did not attach: {e} ({})", probe.cost_if_missing())
            }
            None => anyhow::bail!("{probe} was not requested"),
        }
    }

    /// The session map, to add and remove sessions.
    pub fn sessions(&mut self) -> anyhow::Result<HashMap<&mut MapData, u64, SessionConfig>> {
        let map = self
            .ebpf
            .map_mut("SESSIONS")
            .context("SESSIONS map missing")?;
        Ok(HashMap::try_from(map)?)
    }

    /// A map by name, for modules that own their own maps (bounded mode).
    pub fn map_mut(&mut self, name: &str) -> Option<&mut aya::maps::Map> {
        self.ebpf.map_mut(name)
    }

    /// Takes a map by name (once), e.g. a ring buffer to read from another thread.
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.ebpf.take_map(name)
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<aya::maps::MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("EVENTS ring buffer already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Records dropped because the ring buffer was full: (event kind, count).
    pub fn drops(&self) -> anyhow::Result<Vec<(u32, u64)>> {
        let map = self.ebpf.map("DROPS").context("DROPS map missing")?;
        let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let mut totals = Vec::new();
        for kind in 0..drops.len() {
            let total: u64 = drops.get(&kind, 0)?.iter().sum();
            if total > 0 {
                totals.push((kind, total));
            }
        }
        Ok(totals)
    }
}

fn attach(ebpf: &mut Ebpf, probe: Probe) -> anyhow::Result<()> {
    let name = probe.program_name();
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the object"))?;
    match probe {
        Probe::Exec => {
            ensure_tracefs()?;
            let tp: &mut TracePoint = program.try_into()?;
            tp.load()?;
            tp.attach("sched", "sched_process_exec")?;
        }
        Probe::LsmUnlink => {
            let btf = Btf::from_sys_fs().context("reading /sys/kernel/btf/vmlinux")?;
            let lsm: &mut Lsm = program.try_into()?;
            lsm.load("path_unlink", &btf)?;
            lsm.attach()?;
        }
        Probe::Bounded => {
            let tp: &mut RawTracePoint = program.try_into()?;
            tp.load()?;
            tp.attach("sys_enter")?;
        }
    }
    Ok(())
}

/// Tracepoints attach through tracefs; minimal hosts and containers often have
/// it unmounted. Mount it where the kernel expects it.
fn ensure_tracefs() -> anyhow::Result<()> {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    log::info!("mounting tracefs on {}", dir.display());
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: NUL-terminated constant strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        anyhow::bail!(
            "tracefs is not mounted and mounting it failed ({}); run `mount -t tracefs tracefs /sys/kernel/tracing`",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
