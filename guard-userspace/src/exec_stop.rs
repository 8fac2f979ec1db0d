//! Exec stop, userspace side. The kernel stopped a watched program at
//! `sched_process_exec`, before its first instruction; here argv and cwd are
//! read from /proc (stable: the task is stopped and its old image is gone),
//! policy decides, and the task is continued (SIGCONT) or told why and
//! killed (SIGKILL, exit 137) before it runs.

use std::{
    ffi::{OsStr, OsString},
    fs,
    os::unix::ffi::OsStrExt as _,
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;

use crate::{
    action::Action,
    cgroup::Cgroup,
    holds::{COVER_TTL, Cover, HoldBroker, HoldRequest, Resolution},
    kernel_backends::{Outcome, SessionDirectory, ask, outcome_of, signal},
    kernel_maps::KernelMaps,
    notice::tell,
    policy::exec::{Classification, Target},
};

/// Reads what a stopped exec is about to run: argv and cwd from /proc.
/// `filename` is the path execve(2) was given (from the kernel event).
pub fn read_exec(pid: u32, filename: &Path) -> anyhow::Result<Action> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("reading argv of pid {pid}"))?;
    let argv = split_cmdline(&cmdline);
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    Ok(Action::Exec {
        filename: filename.to_path_buf(),
        argv: script_argv(filename, argv),
        cwd,
    })
}

fn split_cmdline(raw: &[u8]) -> Vec<OsString> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|a| OsStr::from_bytes(a).to_os_string())
        .collect()
}

/// For a `#!` script the kernel runs `interp [arg] script args...`: argv[0]
/// becomes the interpreter and the script's own argv[0] is replaced by its
/// path. Policy judges the script, so drop the interpreter part.
pub fn script_argv(filename: &Path, argv: Vec<OsString>) -> Vec<OsString> {
    let script = filename.as_os_str();
    if argv.first().is_some_and(|a| a == script) {
        return argv;
    }
    match argv.iter().take(3).skip(1).position(|a| a == script) {
        Some(i) => argv[i + 1..].to_vec(),
        None => argv,
    }
}

/// The one-letter state of a process (`T` when stopped), if it exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// One process in a parent chain (for audit records and the approval prompt).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcessLink {
    pub pid: u32,
    pub comm: String,
}

/// `pid` and its ancestors, nearest first, read from /proc (at most 64).
pub fn process_chain(pid: u32) -> Vec<ProcessLink> {
    let mut chain = Vec::new();
    let mut current = pid;
    while current > 0 && chain.len() < 64 {
        let Ok(stat) = fs::read_to_string(format!("/proc/{current}/stat")) else {
            break;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            break;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        chain.push(ProcessLink { pid: current, comm });
        current = ppid;
    }
    chain
}

/// Whether an exec-stopped task is still waiting for a decision: stopped,
/// or parked in a guard-hold cgroup.
pub fn still_held(pid: u32) -> bool {
    matches!(process_state(pid), Some('T' | 't'))
        || fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.contains("/guard-hold-"))
}

/// A stopped exec moved into a frozen child cgroup of its session while it
/// waits: a SIGCONT from the agent cannot let it run (on kernels without BPF
/// LSM nothing else stops that). It stays in the session (a sub-cgroup).
struct Parked {
    session: Cgroup,
    cell: Cgroup,
    pid: u32,
}

impl Parked {
    fn park(session: Cgroup, pid: u32) -> Option<Self> {
        let cell = Cgroup::open(session.path().join(format!("guard-hold-{pid}")));
        match fs::create_dir(cell.path()) {
            Ok(()) => {}
            // Left by a controller that died while the task waited: reuse it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                log::warn!("cannot park exec-stopped pid {pid}: {e}");
                return None;
            }
        }
        let parked = Self { session, cell, pid };
        // Frozen first, so the task is frozen the moment it moves in.
        if parked.cell.set_frozen(true).is_err() || parked.cell.add_pid(pid).is_err() {
            parked.remove_cell();
            return None;
        }
        Some(parked)
    }

    /// Back into the session cgroup (thawed there); the caller continues it.
    fn unpark(self) {
        if let Err(e) = self.session.add_pid(self.pid) {
            log::error!("moving pid {} back into its session: {e:#}", self.pid);
            let _ = self.cell.set_frozen(false);
        }
        self.remove_cell();
    }

    /// Kills the task where it is (a fatal signal reaches frozen tasks).
    fn kill(self) {
        signal(self.pid, libc::SIGKILL);
        self.remove_cell();
    }

    fn remove_cell(&self) {
        for _ in 0..100 {
            if self.cell.remove().is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        log::warn!("could not remove {}", self.cell.path().display());
    }
}

/// After a person approved `action` (a command), its file actions on the
/// paths it names and the programs it starts are not asked about again
/// ([`crate::holds::Cover`]).
fn cover_targets(
    broker: &HoldBroker,
    classification: &Classification,
    session: String,
    pid: u32,
    action: &Action,
    approver: &str,
    verdict: &crate::decision::Verdict,
) {
    let paths: Vec<_> = classification
        .findings
        .iter()
        .flat_map(|f| &f.targets)
        .filter_map(|t| match t {
            Target::Path(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let commands: Vec<(String, Vec<String>)> = classification
        .programs
        .iter()
        .cloned()
        .zip(classification.arguments.iter().cloned())
        .skip(1)
        .collect();
    if paths.is_empty() && commands.is_empty() {
        return;
    }
    broker.cover(Cover {
        session,
        pid,
        paths,
        commands,
        approver: format!(
            "{approver} (approved `{action}` at exec, rule {})",
            verdict.rule
        ),
        until: std::time::Instant::now() + COVER_TTL,
    });
}

/// Decides stopped execs. One call per stopped task; blocks while a hold is open.
pub struct ExecStop {
    pub broker: Arc<HoldBroker>,
    pub sessions: Arc<dyn SessionDirectory>,
    /// To drop the kernel's HELD record once decided.
    pub tables: Arc<Mutex<KernelMaps>>,
}

impl ExecStop {
    /// Decides and applies the outcome for a task stopped at exec.
    pub fn decide(&self, pid: u32, cgroup_id: u64, filename: &Path) -> Outcome {
        let outcome = self.decide_and_apply(pid, cgroup_id, filename);
        self.tables
            .lock()
            .expect("kernel tables poisoned")
            .forget_held(pid);
        outcome
    }

    fn decide_and_apply(&self, pid: u32, cgroup_id: u64, filename: &Path) -> Outcome {
        let action = match read_exec(pid, filename) {
            Ok(a) => a,
            Err(e) => {
                // The task is gone (killed while stopped): nothing to continue.
                log::debug!("exec stop of pid {pid}: {e:#}");
                return Outcome::Gone;
            }
        };
        let Some((session, policy)) = self.sessions.lookup(cgroup_id) else {
            // Not ours (a session that ended): let it run as it would without guard.
            signal(pid, libc::SIGCONT);
            return Outcome::Allowed;
        };
        // One reading of the argv serves the decision and, once approved, the cover.
        let explanation = policy.explain(&action);
        let verdict = explanation.verdict;
        let parked = verdict
            .decision
            .holds()
            .then(|| self.sessions.cgroup(cgroup_id))
            .flatten()
            .and_then(|session| Parked::park(session, pid));
        let resolution = verdict.decision.holds().then(|| {
            ask(
                &self.broker,
                self.sessions.as_ref(),
                cgroup_id,
                &policy,
                HoldRequest {
                    session: session.clone(),
                    pid,
                    action: action.clone(),
                    verdict: verdict.clone(),
                    backend: "exec-stop",
                },
            )
        });
        if let (Some(Resolution::Approved { approver, .. }), Some(classification)) =
            (&resolution, &explanation.classification)
        {
            cover_targets(
                &self.broker,
                classification,
                session,
                pid,
                &action,
                approver,
                &verdict,
            );
        }
        let outcome = outcome_of(&verdict, resolution.as_ref());
        let line = match &outcome {
            Outcome::Denied { rule } => Some(format!("guard: denied {action} (rule {rule})")),
            Outcome::Killed { rule } => Some(format!("guard: killed {action} (rule {rule})")),
            _ => None,
        };
        match (&outcome, parked) {
            (Outcome::Allowed | Outcome::AllowedFor(_), parked) => {
                if let Some(p) = parked {
                    p.unpark();
                }
                signal(pid, libc::SIGCONT);
            }
            (Outcome::Gone, Some(p)) => p.kill(),
            (Outcome::Gone, None) => {}
            (_, parked) => {
                if let Some(line) = line {
                    tell(pid, &line);
                }
                match parked {
                    Some(p) => p.kill(),
                    None => signal(pid, libc::SIGKILL),
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn script_interpreter_is_dropped() {
        let f = Path::new("/w/bin/terraform");
        assert_eq!(
            script_argv(
                f,
                os(&["/bin/sh", "/w/bin/terraform", "destroy", "-auto-approve"])
            ),
            os(&["/w/bin/terraform", "destroy", "-auto-approve"])
        );
        // `#!/usr/bin/env bash` adds one interpreter argument.
        assert_eq!(
            script_argv(f, os(&["/usr/bin/env", "bash", "/w/bin/terraform", "plan"])),
            os(&["/w/bin/terraform", "plan"])
        );
        // A binary keeps its own argv[0].
        assert_eq!(
            script_argv(
                Path::new("/usr/bin/terraform"),
                os(&["terraform", "destroy"])
            ),
            os(&["terraform", "destroy"])
        );
    }

    #[test]
    fn cmdline_with_empty_and_non_utf8_args() {
        assert_eq!(
            split_cmdline(b"rm\0\0a\xffb\0"),
            vec![
                OsString::from("rm"),
                OsString::from(""),
                OsStr::from_bytes(b"a\xffb").to_os_string()
            ]
        );
        assert!(split_cmdline(b"").is_empty());
    }

    #[test]
    fn chain_starts_here_and_climbs_to_the_top() {
        let chain = process_chain(std::process::id());
        assert_eq!(chain[0].pid, std::process::id());
        assert!(chain.len() >= 2, "{chain:?}");
        assert!(chain.windows(2).all(|w| w[0].pid != w[1].pid), "{chain:?}");
        assert!(process_chain(u32::MAX).is_empty());
    }

    #[test]
    fn state_of_this_process_is_running() {
        assert!(matches!(process_state(std::process::id()), Some('R' | 'S')));
        assert_eq!(process_state(u32::MAX), None);
    }
}
