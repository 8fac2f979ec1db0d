//! Which enforcement backend this kernel supports, found by loading and
//! attaching probe programs and by running a seccomp notification, never by
//! reading /sys/kernel/security/lsm (a listed LSM may still refuse programs,
//! and BPF programs can attach and never run).

use std::{ffi::CString, fs, path::Path};

use aya::{
    maps::MapType,
    programs::{LsmAttachType, ProgramType},
    sys::{is_map_supported, is_program_supported},
};
use guard_common::{SessionConfig, session_flags};
use serde::Serialize;

use crate::{
    action::ActionKind,
    cgroup::{self, Cgroup},
    programs::{Probe, ProgramSet},
    seccomp,
};

/// How an action kind is enforced on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// BPF LSM hooks: prevention for every process in a session, launched or adopted.
    Lsm,
    /// seccomp user notification: prevention for processes guard launches.
    Seccomp,
    /// The exec tracepoint stops a new program before its first instruction.
    ExecStop,
    /// Syscall tracepoints stop the process after its first watched call: one
    /// call gets through. Reported, never called prevention.
    Bounded,
    /// Nothing can hold this action here.
    None,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Lsm => "lsm",
            Backend::Seccomp => "seccomp",
            Backend::ExecStop => "exec-stop",
            Backend::Bounded => "bounded",
            Backend::None => "none",
        }
    }
}

/// One kernel feature and what its absence costs.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    pub name: &'static str,
    pub available: bool,
    /// Why not, when unavailable (the kernel's error), or a detail when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the user loses without it.
    pub cost_if_missing: &'static str,
}

impl Feature {
    fn new(
        name: &'static str,
        result: Result<Option<String>, String>,
        cost_if_missing: &'static str,
    ) -> Self {
        let (available, detail) = match result {
            Ok(detail) => (true, detail),
            Err(why) => (false, Some(why)),
        };
        Self {
            name,
            available,
            detail,
            cost_if_missing,
        }
    }
}

/// The backend chosen for one action kind.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub action: ActionKind,
    pub backend: Backend,
}

/// Everything `guard doctor` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub kernel: String,
    pub running_as_root: bool,
    pub features: Vec<Feature>,
    /// Backends for processes guard launches (`guard session`).
    pub launched: Vec<Choice>,
    /// Backend for file and connect actions of processes guard adopts (not launched).
    pub adopted: Backend,
    /// The boot-time LSM list, shown to help turn BPF LSM on (not used to decide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsm_list: Option<String>,
    /// How to turn BPF LSM on, when it is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_bpf_lsm: Option<String>,
}

impl Detection {
    pub fn feature(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name && f.available)
    }

    /// The backend for `kind` in launched sessions.
    pub fn backend_for(&self, kind: ActionKind) -> Backend {
        self.launched
            .iter()
            .find(|c| c.action == kind)
            .map_or(Backend::None, |c| c.backend)
    }
}

pub const BPF_LSM: &str = "bpf_lsm";
pub const SECCOMP_NOTIFY: &str = "seccomp_user_notification";
pub const BOUNDED_TRACEPOINT: &str = "bounded_tracepoint";

/// Probes the running kernel. Needs root for the BPF probes; without it they
/// report the permission error.
pub fn detect() -> Detection {
    let mut features = Vec::new();
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    features.push(Feature::new(
        "btf",
        if btf {
            Ok(Some("/sys/kernel/btf/vmlinux".into()))
        } else {
            Err(
                "/sys/kernel/btf/vmlinux is missing (kernel built without CONFIG_DEBUG_INFO_BTF)"
                    .into(),
            )
        },
        "LSM programs cannot load: no BPF LSM backend",
    ));
    features.push(Feature::new(
        "cgroup2",
        cgroup::cgroup2_mount()
            .map(|p| Some(p.display().to_string()))
            .map_err(|e| format!("{e:#}")),
        "sessions cannot be scoped: guard cannot run",
    ));
    for (name, ty, cost) in [
        (
            "tracepoint",
            ProgramType::TracePoint,
            "execs are not seen or stopped",
        ),
        (
            "raw_tracepoint",
            ProgramType::RawTracePoint,
            "no bounded mode for adopted processes",
        ),
        (
            "lsm_program",
            ProgramType::Lsm(LsmAttachType::Mac),
            "no BPF LSM backend",
        ),
        (
            "cgroup_sock_addr",
            ProgramType::CgroupSockAddr,
            "connects cannot be refused inside the kernel (cgroup connect4/6); seccomp or LSM still hold them",
        ),
    ] {
        let result = match is_program_supported(ty) {
            Ok(true) => Ok(None),
            Ok(false) => Err("the kernel refused a minimal program of this type".to_string()),
            Err(e) => Err(format!("{e}")),
        };
        features.push(Feature::new(name, result, cost));
    }
    features.push(Feature::new(
        "ring_buffer",
        match is_map_supported(MapType::RingBuf) {
            Ok(true) => Ok(None),
            Ok(false) => Err("BPF_MAP_TYPE_RINGBUF refused (kernel before 5.8?)".into()),
            Err(e) => Err(format!("{e}")),
        },
        "events cannot reach guard: guard cannot run",
    ));
    let (exec, lsm, bounded) = probe_programs();
    features.push(Feature::new(
        "exec_tracepoint",
        exec.map(|()| Some("sched/sched_process_exec attached".into())),
        "execs are not seen or stopped",
    ));
    features.push(Feature::new(
        BOUNDED_TRACEPOINT,
        bounded.map(|()| Some("raw_syscalls/sys_enter attached".into())),
        "adopted processes are not stopped after a destructive call (no bounded mode)",
    ));
    features.push(Feature::new(
        BPF_LSM,
        lsm.map(|()| Some("path_unlink attached and refused an unlink in a probe cgroup".into())),
        "file and connect actions are held through seccomp instead: only processes guard \
         launches are covered, adopted processes get bounded mode (one call completes before \
         the stop), and every watched syscall costs a round trip to guard (`cargo xtask bench`)",
    ));
    features.push(Feature::new(
        SECCOMP_NOTIFY,
        seccomp::probe::seccomp_notify_works().map(|()| {
            Some("a forked child's unlinkat reached guard and got guard's answer".into())
        }),
        "without BPF LSM as well, file and connect actions cannot be prevented, only reported",
    ));

    let has = |name: &str| features.iter().any(|f| f.name == name && f.available);
    let file_backend = if has(BPF_LSM) {
        Backend::Lsm
    } else if has(SECCOMP_NOTIFY) {
        Backend::Seccomp
    } else if has(BOUNDED_TRACEPOINT) {
        Backend::Bounded
    } else {
        Backend::None
    };
    let exec_backend = if has("exec_tracepoint") {
        Backend::ExecStop
    } else {
        Backend::None
    };
    let launched = [
        ActionKind::Exec,
        ActionKind::Unlink,
        ActionKind::Rmdir,
        ActionKind::Rename,
        ActionKind::Truncate,
        ActionKind::OpenWrite,
        ActionKind::Connect,
    ]
    .into_iter()
    .map(|action| Choice {
        action,
        backend: if action == ActionKind::Exec {
            exec_backend
        } else {
            file_backend
        },
    })
    .collect();
    let adopted = if has(BPF_LSM) {
        Backend::Lsm
    } else if has(BOUNDED_TRACEPOINT) {
        Backend::Bounded
    } else {
        Backend::None
    };
    let lsm_list = fs::read_to_string("/sys/kernel/security/lsm")
        .ok()
        .map(|s| s.trim().to_owned());
    let enable_bpf_lsm = (!has(BPF_LSM)).then(|| enable_hint(lsm_list.as_deref()));
    Detection {
        kernel: kernel_release(),
        // SAFETY: geteuid has no preconditions.
        running_as_root: unsafe { libc::geteuid() } == 0,
        features,
        launched,
        adopted,
        lsm_list,
        enable_bpf_lsm,
    }
}

fn enable_hint(lsm_list: Option<&str>) -> String {
    let list = match lsm_list {
        Some(l) if !l.is_empty() => format!("{l},bpf"),
        _ => "lockdown,capability,landlock,yama,apparmor,bpf".into(),
    };
    format!(
        "boot with `lsm={list}` on the kernel command line (Debian/Ubuntu: add it to \
         GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot); the kernel needs \
         CONFIG_BPF_LSM=y"
    )
}

fn kernel_release() -> String {
    // SAFETY: uname fills the struct we pass.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

type Probed = Result<(), String>;

/// Loads the exec tracepoint, the bounded-mode raw tracepoint and the LSM
/// probe; for the LSM, also checks that an attached program really runs: a
/// child in a probe cgroup whose session says "deny unlink" must get EPERM.
fn probe_programs() -> (Probed, Probed, Probed) {
    let name = format!("doctor-{}", std::process::id());
    let cg = match Cgroup::create(&name) {
        Ok(cg) => cg,
        Err(e) => {
            let e = format!("creating a probe cgroup: {e:#}");
            return (Err(e.clone()), Err(e.clone()), Err(e));
        }
    };
    let result = probe_in(&cg);
    let _ = cg.remove();
    result
}

fn probe_in(cg: &Cgroup) -> (Probed, Probed, Probed) {
    let all = |e: String| (Err(e.clone()), Err(e.clone()), Err(e));
    let depth = match cg.depth() {
        Ok(d) => d,
        Err(e) => return all(format!("{e:#}")),
    };
    let probes = [Probe::Exec, Probe::LsmUnlink, Probe::Bounded];
    let mut set = match ProgramSet::load(depth, &probes) {
        Ok(set) => set,
        Err(e) => return all(format!("{e:#}")),
    };
    let exec = set.require(Probe::Exec).map_err(|e| format!("{e:#}"));
    let bounded = set.require(Probe::Bounded).map_err(|e| format!("{e:#}"));
    let lsm = match set.require(Probe::LsmUnlink) {
        Err(e) => Err(format!("{e:#}")),
        Ok(()) => lsm_enforces(&mut set, cg),
    };
    (exec, lsm, bounded)
}

fn lsm_enforces(set: &mut ProgramSet, cg: &Cgroup) -> Result<(), String> {
    let id = cg.id().map_err(|e| format!("{e:#}"))?;
    set.sessions()
        .and_then(|mut m| {
            m.insert(
                id,
                SessionConfig {
                    flags: session_flags::DENY_UNLINK,
                    _pad: 0,
                },
                0,
            )
            .map_err(Into::into)
        })
        .map_err(|e| format!("adding the probe session: {e:#}"))?;
    let victim = std::env::temp_dir().join(format!("guard-doctor-probe-{}", std::process::id()));
    fs::write(&victim, b"probe").map_err(|e| format!("creating {}: {e}", victim.display()))?;
    let errno = unlink_in_cgroup(cg, &victim);
    let _ = fs::remove_file(&victim);
    match errno {
        Ok(libc::EPERM) => Ok(()),
        Ok(0) => Err(
            "path_unlink attached but did not run: BPF LSM is not active (the boot-time lsm= list lacks bpf)"
                .into(),
        ),
        Ok(e) => Err(format!("the probe unlink failed with errno {e}")),
        Err(e) => Err(e),
    }
}

/// Forks a child that joins `cg` and unlinks `path`; returns its errno (0 on success).
fn unlink_in_cgroup(cg: &Cgroup, path: &Path) -> Result<i32, String> {
    use std::os::unix::ffi::OsStrExt as _;
    let procs = CString::new(cg.path().join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| "cgroup path has a NUL byte")?;
    let victim = CString::new(path.as_os_str().as_bytes()).map_err(|_| "path has a NUL byte")?;
    // SAFETY: the child makes only raw syscalls on prepared buffers, then _exit.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(200);
            }
            libc::close(fd);
            let code = if libc::unlink(victim.as_ptr()) == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(code);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(200) => Err("the probe child could not join the probe cgroup".into()),
            Some(code) => Ok(code),
            None => Err("the probe child was killed".into()),
        }
    }
}
