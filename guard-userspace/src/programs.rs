//! The kernel program set: load guard's embedded eBPF object with this
//! kernel's struct offsets, attach each program whose kernel support is
//! present, pin maps and links, and report what could not attach.

use std::fmt;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        Lsm, RawTracePoint, TracePoint,
        links::{FdLink, PinnedLink},
    },
};
use guard_common::{KernelOffsets, SessionConfig};

use crate::{btf_offsets, kernel_maps::KernelMaps, pin::PinDir};

/// The compiled guard-ebpf object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard"));

/// A kernel program guard knows about and what it needs from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// tracepoint sched/sched_process_exec: works on every supported kernel.
    Exec,
    /// BPF LSM hooks: need `bpf` in the boot-time lsm= list.
    LsmUnlink,
    LsmRmdir,
    LsmRename,
    LsmTruncate,
    LsmFileOpen,
    LsmConnect,
    /// Refuses SIGCONT from session tasks to exec-stopped tasks, and any
    /// signal from session tasks to guard's own processes.
    LsmTaskKill,
    /// raw tracepoint sys_enter for bounded mode (guard-ebpf/src/bounded.rs).
    Bounded,
}

impl Probe {
    pub const ALL: [Probe; 9] = [
        Probe::Exec,
        Probe::LsmUnlink,
        Probe::LsmRmdir,
        Probe::LsmRename,
        Probe::LsmTruncate,
        Probe::LsmFileOpen,
        Probe::LsmConnect,
        Probe::LsmTaskKill,
        Probe::Bounded,
    ];

    /// What a controller enforcing sessions it launched loads: the exec
    /// tracepoint and the BPF LSM hooks (not bounded mode).
    pub const ENFORCE: [Probe; 8] = [
        Probe::Exec,
        Probe::LsmUnlink,
        Probe::LsmRmdir,
        Probe::LsmRename,
        Probe::LsmTruncate,
        Probe::LsmFileOpen,
        Probe::LsmConnect,
        Probe::LsmTaskKill,
    ];

    /// The BPF LSM hooks (file, connect, signals).
    pub const LSM: [Probe; 7] = [
        Probe::LsmUnlink,
        Probe::LsmRmdir,
        Probe::LsmRename,
        Probe::LsmTruncate,
        Probe::LsmFileOpen,
        Probe::LsmConnect,
        Probe::LsmTaskKill,
    ];

    /// The program's name in the object; for LSM programs also the hook name.
    pub fn program_name(self) -> &'static str {
        match self {
            Probe::Exec => "sched_process_exec",
            Probe::LsmUnlink => "path_unlink",
            Probe::LsmRmdir => "path_rmdir",
            Probe::LsmRename => "path_rename",
            Probe::LsmTruncate => "path_truncate",
            Probe::LsmFileOpen => "file_open",
            Probe::LsmConnect => "socket_connect",
            Probe::LsmTaskKill => "task_kill",
            Probe::Bounded => "bounded_sys_enter",
        }
    }

    /// What the user loses when this probe cannot attach.
    pub fn cost_if_missing(self) -> &'static str {
        match self {
            Probe::Exec => "execs in a session are not seen or stopped",
            Probe::LsmTaskKill => {
                "a session task can SIGCONT an exec-stopped program (releasing it without a \
                 decision) and signal guard itself; BPF LSM needs `lsm=...,bpf`"
            }
            Probe::Bounded => {
                "adopted processes are not stopped after a destructive call (no bounded mode)"
            }
            _ => {
                "file and connect actions cannot be held in the kernel; BPF LSM needs `lsm=...,bpf` \
                 on the kernel command line (the seccomp backend is the fallback)"
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
    /// The program was already attached through a pinned link (a daemon
    /// restart) and was left as it is.
    pub reused: bool,
}

/// The loaded object with whichever probes attached.
pub struct ProgramSet {
    ebpf: Ebpf,
    pub reports: Vec<AttachReport>,
    // Dropped after `ebpf`: an ephemeral pin dir detaches the links on drop.
    pin: PinDir,
}

impl ProgramSet {
    /// Loads the object with a private pin directory that is removed (and the
    /// programs detached) when the set is dropped. Programs that fail to load
    /// or attach are reported in `reports`, not fatal: the caller decides
    /// what it needs.
    pub fn load(session_depth: i32, probes: &[Probe]) -> anyhow::Result<Self> {
        Self::load_pinned(PinDir::ephemeral()?, session_depth, probes)
    }

    /// Loads the object with maps and links pinned in `pin`. Maps already
    /// pinned there are reopened (sessions, rules, grants and held tasks
    /// survive), and programs whose link is pinned are left attached.
    pub fn load_pinned(pin: PinDir, session_depth: i32, probes: &[Probe]) -> anyhow::Result<Self> {
        raise_memlock_limit();
        let offsets = match btf_offsets::Btf::from_sys_fs()
            .and_then(|btf| btf_offsets::kernel_offsets(&btf))
        {
            Ok(o) => o,
            Err(e) => {
                // Exec stop needs no offsets; the path walk does and will not attach.
                log::warn!("kernel struct offsets unavailable: {e:#}");
                KernelOffsets::default()
            }
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("SESSION_DEPTH", &session_depth, true)
            .override_global("OFFSETS", &offsets, true)
            .default_map_pin_directory(pin.path())
            .load(OBJECT)
            .context("loading guard's eBPF object (is this root, with CAP_BPF and CAP_PERFMON?)")?;
        let mut reports = Vec::new();
        for &probe in probes {
            let link = pin.link_path(probe.program_name());
            if link.exists() && PinnedLink::from_pin(&link).is_ok() {
                reports.push(AttachReport {
                    probe,
                    error: None,
                    reused: true,
                });
                continue;
            }
            let needs_offsets = !matches!(probe, Probe::Exec | Probe::Bounded);
            let error = if needs_offsets && offsets == KernelOffsets::default() {
                Some("kernel struct offsets could not be read from BTF".to_owned())
            } else {
                attach(&mut ebpf, probe, &link)
                    .err()
                    .map(|e| format!("{e:#}"))
            };
            reports.push(AttachReport {
                probe,
                error,
                reused: false,
            });
        }
        Ok(Self { ebpf, reports, pin })
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

    /// Attaches one more probe after loading (bounded mode, which only
    /// adopted sessions on kernels without BPF LSM need), or says why not.
    pub fn attach_probe(&mut self, probe: Probe) -> anyhow::Result<()> {
        if self.attached(probe) {
            return Ok(());
        }
        let link = self.pin.link_path(probe.program_name());
        let error = attach(&mut self.ebpf, probe, &link)
            .err()
            .map(|e| format!("{e:#}"));
        self.reports.retain(|r| r.probe != probe);
        self.reports.push(AttachReport {
            probe,
            error,
            reused: false,
        });
        self.require(probe)
    }

    pub fn pin_dir(&self) -> &PinDir {
        &self.pin
    }

    /// The rule, grant and held-task tables (opened from the pins, so they
    /// can move to other threads).
    pub fn maps(&self) -> anyhow::Result<KernelMaps> {
        KernelMaps::open(self.pin.path())
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
        self.per_cpu_totals("DROPS")
    }

    /// Kernel-side counters: (index, count), see `KernelStat`.
    pub fn stats(&self) -> anyhow::Result<KernelStats> {
        let totals = self.per_cpu_totals("STATS")?;
        let get = |i: u32| {
            totals
                .iter()
                .find(|(k, _)| *k == i)
                .map(|(_, n)| *n)
                .unwrap_or(0)
        };
        Ok(KernelStats {
            held: get(0),
            grants_used: get(1),
            denied: get(2),
            stop_failed: get(3),
            signals_refused: get(4),
        })
    }

    fn per_cpu_totals(&self, name: &str) -> anyhow::Result<Vec<(u32, u64)>> {
        let map = self
            .ebpf
            .map(name)
            .with_context(|| format!("{name} map missing"))?;
        let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let mut totals = Vec::new();
        for index in 0..counts.len() {
            let total: u64 = counts.get(&index, 0)?.iter().sum();
            if total > 0 {
                totals.push((index, total));
            }
        }
        Ok(totals)
    }
}

/// What the kernel programs did, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    /// Tasks stopped for a decision.
    pub held: u64,
    /// Grants used by restarted syscalls.
    pub grants_used: u64,
    /// Actions refused in the kernel by a rule.
    pub denied: u64,
    /// Stops that could not be made and were refused instead.
    pub stop_failed: u64,
    /// Signals from session tasks refused (SIGCONT to an exec stop, any to guard).
    pub signals_refused: u64,
}

fn attach(ebpf: &mut Ebpf, probe: Probe, link_path: &std::path::Path) -> anyhow::Result<()> {
    let name = probe.program_name();
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the object"))?;
    let link: Option<FdLink> = match probe {
        Probe::Exec => {
            ensure_tracefs()?;
            let tp: &mut TracePoint = program.try_into()?;
            tp.load()?;
            let id = tp.attach("sched", "sched_process_exec")?;
            // Old kernels attach through perf events, which cannot be pinned.
            FdLink::try_from(tp.take_link(id)?).ok()
        }
        Probe::Bounded => {
            let tp: &mut RawTracePoint = program.try_into()?;
            tp.load()?;
            let id = tp.attach("sys_enter")?;
            Some(FdLink::from(tp.take_link(id)?))
        }
        _ => {
            let btf = aya::Btf::from_sys_fs().context("reading /sys/kernel/btf/vmlinux")?;
            let lsm: &mut Lsm = program.try_into()?;
            lsm.load(name, &btf)?;
            let id = lsm.attach()?;
            Some(FdLink::from(lsm.take_link(id)?))
        }
    };
    if let Some(link) = link {
        link.pin(link_path)
            .with_context(|| format!("pinning link {}", link_path.display()))?;
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
