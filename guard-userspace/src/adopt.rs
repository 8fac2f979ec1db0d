//! `guard adopt PID`: put an agent that is already running under guard. Its
//! whole process tree moves into a new session cgroup and gets the same
//! supervision as `guard session` (exec stop everywhere; file and connect
//! calls held by BPF LSM where it is active, otherwise **bounded mode**: the
//! first call completes, then the process stops). guard cannot install a
//! seccomp filter into a running process, so without BPF LSM nothing here
//! prevents a file action; it is always reported as bounded.
//!
//! The session ends when the tree has exited. SIGINT/SIGTERM/SIGHUP to
//! `guard adopt` stop guarding: the remaining processes move back to the
//! cgroups they came from, and guard says so.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs, io,
    path::Path,
    sync::{Arc, atomic::AtomicI32},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    ancestry,
    api::peer::in_guard_slice,
    bounded::BoundedDecider,
    cgroup::{self, Cgroup},
    holds::Resolution,
    session::{self, SessionSummary},
    supervision::{Ended, Supervision, SupervisionOptions, session_info},
    users,
};

/// Options of one adoption.
#[derive(Debug, Clone, Default)]
pub struct AdoptOptions {
    pub pid: u32,
    pub name: Option<String>,
    pub common: SupervisionOptions,
}

/// Passes over the tree before giving up on a tree that keeps forking
/// outside the session faster than guard moves it.
const MAX_PASSES: usize = 50;

/// Adopts `options.pid` and its descendants, guards them until they have all
/// exited (or guard adopt is told to stop), and returns the summary.
pub fn run(options: &AdoptOptions) -> anyhow::Result<SessionSummary> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "guard adopt must run as root: it moves processes between cgroups and loads BPF \
             programs (run it with sudo)"
        );
    }
    let pid = options.pid;
    let target = check_target(pid)?;
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| format!("adopt-{pid}"));
    session::validate_name(&name)?;
    let home = users::by_uid(target.uid)
        .ok()
        .flatten()
        .map(|a| a.home)
        .unwrap_or_else(|| "/root".into());
    let policy = Arc::new(session::load_policy(
        options.common.policy.as_deref(),
        options.common.workspace.as_deref(),
        &home,
    )?);
    // Before any thread starts, so only the wait loop below sees them.
    let interrupts = Interrupts::block()?;
    let cgroup = Cgroup::create(&format!("session-{name}"))?;
    let result = guard_tree(&cgroup, &name, &target, &policy, options, &interrupts);
    // Whatever is still inside now was released or failed to move back:
    // removal fails then, and the cgroup stays for `guard sessions` to show.
    let mut removed = false;
    for _ in 0..100 {
        if cgroup.remove().is_ok() {
            removed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !removed && result.is_ok() {
        log::warn!(
            "could not remove {} (processes are still inside)",
            cgroup.path().display()
        );
    }
    result
}

/// The process to adopt, as /proc shows it.
struct Target {
    pid: u32,
    uid: u32,
    command: Vec<String>,
}

/// Refuses what must not be adopted, with what to do instead.
fn check_target(pid: u32) -> anyhow::Result<Target> {
    if pid == 1 {
        bail!(
            "refusing to adopt pid 1: it is init, and adopting it would guard the whole system (pass the agent's pid)"
        );
    }
    let me = std::process::id();
    if pid == me {
        bail!("refusing to adopt pid {pid}: it is this guard adopt itself (pass the agent's pid)");
    }
    let Some(stat) = Stat::of(pid) else {
        bail!(
            "no process with pid {pid} (it has exited, or the pid is wrong: check it with `ps -p {pid}`)"
        );
    };
    if stat.kernel_thread {
        bail!(
            "refusing to adopt pid {pid}: it is a kernel thread (pass the pid of a user process)"
        );
    }
    if stat.state == 'Z' {
        bail!("pid {pid} has exited, it is a zombie (pass the pid of a running process)");
    }
    if ancestors_of(me).contains(&pid) {
        bail!(
            "refusing to adopt pid {pid}: it is an ancestor of this guard adopt, which would end up \
             guarding itself (run guard adopt from another terminal)"
        );
    }
    let cgroup =
        ancestry::cgroup_of(pid).with_context(|| format!("reading the cgroup of pid {pid}"))?;
    if in_guard_slice(&cgroup) {
        bail!(
            "pid {pid} is already guarded: it is in the session cgroup {cgroup} (see `guard sessions`)"
        );
    }
    let uid = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        })
        .with_context(|| format!("no process with pid {pid} (it has exited)"))?;
    let command = fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    Ok(Target { pid, uid, command })
}

fn guard_tree(
    cgroup: &Cgroup,
    name: &str,
    target: &Target,
    policy: &Arc<crate::policy::Policy>,
    options: &AdoptOptions,
    interrupts: &Interrupts,
) -> anyhow::Result<SessionSummary> {
    let mut info = session_info(cgroup, name, target.pid, target.uid, target.command.clone())?;
    let mut supervision = Supervision::start(cgroup, &mut info, policy, &options.common)?;
    if options.common.prompt {
        supervision.start_prompt(
            cgroup,
            Arc::new(AtomicI32::new(target.pid as i32)),
            format!(
                "{} (at the guard adopt terminal)",
                users::name_of(current_uid())
            ),
        )?;
    }
    // The kernel side is ready before the first process moves in, so its
    // first call after the move is seen.
    let (backend, bounded) = if supervision.lsm_active() {
        ("lsm", None)
    } else {
        let mode = supervision.enable_bounded(cgroup).context(
            "BPF LSM is not active and bounded mode could not start, so nothing would stop \
             the adopted processes' file actions; see `guard doctor`",
        )?;
        let decider = BoundedDecider::start(
            mode,
            policy.clone(),
            supervision.broker.clone(),
            name.to_owned(),
        )?;
        ("bounded", Some(decider))
    };
    supervision.register(&info)?;
    // Served before anything moves in, so a hold on the first moved
    // process can already be listed and answered.
    if let Err(e) = supervision.serve() {
        end(supervision, bounded);
        return Err(e);
    }
    let tree = match AdoptedTree::adopt(target.pid, cgroup) {
        Ok(tree) => tree,
        Err(e) => {
            end(supervision, bounded);
            return Err(e);
        }
    };
    if !options.common.json {
        eprintln!(
            "guard: adopted {} process(es) of pid {} into session {name} ({backend} backend{}); \
             waiting for them to exit, ^C or SIGTERM releases them",
            tree.moved.len(),
            target.pid,
            if backend == "bounded" {
                ": a file call completes before its process is stopped"
            } else {
                ""
            }
        );
    }

    let mut released = 0;
    loop {
        if let Some(signal) = interrupts.wait(Duration::from_millis(100)) {
            log::info!("signal {signal}: releasing the adopted processes");
            if let Some(decider) = &bounded {
                decider.release();
            }
            supervision.detach_kernel();
            supervision.unregister();
            let n = tree.release(cgroup);
            // A hold opened while the session was being taken down ends too.
            supervision.broker.resolve_session(
                name,
                Resolution::Killed {
                    approver: "guard (adopt released)".into(),
                },
            );
            eprintln!(
                "guard: stopped guarding session {name} on signal {signal}: released {n} \
                 processes; they are no longer guarded"
            );
            released = n as u64;
            break;
        }
        match cgroup.populated() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                log::warn!("{e:#}");
                break;
            }
        }
    }
    Ok(SessionSummary {
        pid: Some(target.pid),
        adopted: Some(tree.moved.len() as u64),
        released: Some(released),
        // guard is not the adopted process's parent: no status to report.
        ..end(supervision, bounded).summary(name, 0, backend)
    })
}

/// Takes the session down: no stop stays unanswered, then the kernel side
/// and the controller end.
fn end(mut supervision: Supervision, bounded: Option<BoundedDecider>) -> Ended {
    supervision.detach_kernel();
    if let Some(decider) = bounded {
        decider.stop();
    }
    supervision.finish()
}

fn announce_release(n: usize) {
    if n > 0 {
        eprintln!("guard: released {n} processes; they are no longer guarded");
    }
}

/// The processes moved into the session and the cgroups they came from.
struct AdoptedTree {
    root: u32,
    /// pid -> its cgroup v2 path before the move ("/user.slice/...").
    moved: HashMap<u32, String>,
}

impl AdoptedTree {
    /// Moves `root` and its descendants, parents first, into `cgroup`,
    /// repeating until a pass finds none outside (a child forked after its
    /// parent moved is born inside). On failure everything moved goes back.
    fn adopt(root: u32, cgroup: &Cgroup) -> anyhow::Result<Self> {
        let session = relative(cgroup)?;
        let mut tree = Self {
            root,
            moved: HashMap::new(),
        };
        for _ in 0..MAX_PASSES {
            let members = descendants(root, &process_table());
            if members.is_empty() {
                // Exited after it moved: what it left is inside already.
                if tree.moved.contains_key(&root) {
                    return Ok(tree);
                }
                let n = tree.release(cgroup);
                announce_release(n);
                bail!("pid {root} exited before it could be adopted (nothing left to guard)");
            }
            let mut outside = 0;
            for pid in members {
                let Ok(current) = ancestry::cgroup_of(pid) else {
                    continue; // gone
                };
                if is_within(&current, &session) || in_guard_slice(&current) {
                    // Inside already, or in another guard session: left alone.
                    continue;
                }
                outside += 1;
                match write_procs(cgroup.path(), pid) {
                    Ok(()) => {
                        tree.moved.entry(pid).or_insert(current);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        let n = tree.release(cgroup);
                        announce_release(n);
                        bail!(
                            "moving pid {pid} (of pid {root}'s tree) into {}: {e} (is it in a \
                             cgroup guard may not move it out of, such as a threaded one?)",
                            cgroup.path().display()
                        );
                    }
                }
            }
            if outside == 0 {
                return Ok(tree);
            }
        }
        let n = tree.release(cgroup);
        announce_release(n);
        bail!(
            "the process tree of pid {root} kept starting processes outside the session for \
             {MAX_PASSES} passes (a fork storm?); nothing was adopted, try again"
        )
    }

    /// Moves every process still in the session back where it (or, for one
    /// born inside, its nearest moved ancestor) came from; if that cgroup is
    /// gone, to the parent of guard's slice. Returns how many moved.
    fn release(&self, cgroup: &Cgroup) -> usize {
        let Ok(mount) = cgroup::cgroup2_mount() else {
            return 0;
        };
        let mut released = HashSet::new();
        // Repeated: a process may fork while its parent moves out.
        for _ in 0..MAX_PASSES {
            let pids = cgroup.pids().unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            let table = process_table();
            for pid in pids {
                let home = self
                    .origin_of(pid, &table)
                    .map(|from| mount.join(from.trim_start_matches('/')))
                    .filter(|dir| dir.join("cgroup.procs").exists());
                let moved = home
                    .as_deref()
                    .is_some_and(|dir| write_procs(dir, pid).is_ok())
                    || write_procs(&mount, pid).is_ok();
                if moved {
                    released.insert(pid);
                } else {
                    log::warn!(
                        "could not move pid {pid} out of {}",
                        cgroup.path().display()
                    );
                }
            }
        }
        released.len()
    }

    /// The original cgroup of `pid` or of its nearest moved ancestor.
    fn origin_of(&self, pid: u32, table: &HashMap<u32, Stat>) -> Option<&str> {
        let mut current = pid;
        for _ in 0..64 {
            if let Some(from) = self.moved.get(&current) {
                return Some(from);
            }
            current = table.get(&current)?.ppid;
        }
        self.moved.get(&self.root).map(String::as_str)
    }
}

/// `cgroup`'s path as /proc/PID/cgroup shows it ("/guard.slice/session-x").
fn relative(cgroup: &Cgroup) -> anyhow::Result<String> {
    let mount = cgroup::cgroup2_mount()?;
    let rel = cgroup.path().strip_prefix(&mount).with_context(|| {
        format!(
            "{} is not below {}",
            cgroup.path().display(),
            mount.display()
        )
    })?;
    Ok(format!("/{}", rel.display()))
}

fn is_within(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn write_procs(dir: &Path, pid: u32) -> io::Result<()> {
    fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// What guard needs from /proc/PID/stat.
#[derive(Debug, Clone, Copy)]
struct Stat {
    ppid: u32,
    state: char,
    kernel_thread: bool,
}

impl Stat {
    fn of(pid: u32) -> Option<Self> {
        Self::parse(&fs::read(format!("/proc/{pid}/stat")).ok()?)
    }

    /// comm may hold spaces and parentheses, so fields start after the last ')'.
    fn parse(stat: &[u8]) -> Option<Self> {
        const PF_KTHREAD: u64 = 0x0020_0000;
        let close = stat.iter().rposition(|&b| b == b')')?;
        let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp session tty_nr tpgid flags ...
        Some(Self {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            kernel_thread: fields.get(6)?.parse::<u64>().ok()? & PF_KTHREAD != 0,
        })
    }
}

/// Every process on the host by pid (threads are not listed at the top of /proc).
fn process_table() -> HashMap<u32, Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, Stat::of(pid)?)))
        .collect()
}

/// `root` and its living descendants, parents before children.
fn descendants(root: u32, table: &HashMap<u32, Stat>) -> Vec<u32> {
    if table.get(&root).is_none_or(|s| s.state == 'Z') {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, stat) in table {
        if stat.state != 'Z' && !stat.kernel_thread {
            children.entry(stat.ppid).or_default().push(pid);
        }
    }
    let mut order = Vec::new();
    let mut queue = VecDeque::from([root]);
    let mut seen = HashSet::from([root]);
    while let Some(pid) = queue.pop_front() {
        order.push(pid);
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                queue.push_back(child);
            }
        }
    }
    order
}

/// This process's parents, up to pid 1.
fn ancestors_of(pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut current = pid;
    while let Some(stat) = Stat::of(current) {
        if stat.ppid == 0 || chain.len() > 4096 {
            break;
        }
        chain.push(stat.ppid);
        current = stat.ppid;
    }
    chain
}

fn current_uid() -> u32 {
    let sudo = std::env::var("SUDO_UID").ok().and_then(|v| v.parse().ok());
    // SAFETY: getuid has no preconditions.
    sudo.unwrap_or_else(|| unsafe { libc::getuid() })
}

/// SIGINT, SIGTERM and SIGHUP, blocked in every thread and taken by the
/// wait loop, so guard adopt always releases what it adopted.
struct Interrupts {
    set: libc::sigset_t,
}

impl Interrupts {
    fn block() -> anyhow::Result<Self> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset; the
        // mask change affects this thread and threads it starts later.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                bail!("blocking signals: {}", io::Error::from_raw_os_error(rc));
            }
            Ok(Self { set })
        }
    }

    /// The signal received within `timeout`, if any.
    fn wait(&self, timeout: Duration) -> Option<i32> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: valid set and timeout; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &timeout) };
        (sig > 0).then_some(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let s = Stat::parse(b"42 (my (odd) prog) S 7 42 42 0 -1 4194560 1 2").unwrap();
        assert_eq!((s.state, s.ppid, s.kernel_thread), ('S', 7, false));
        let k = Stat::parse(b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0").unwrap();
        assert!(k.kernel_thread);
        assert!(Stat::parse(b"garbage").is_none());
    }

    #[test]
    fn within_a_cgroup() {
        assert!(is_within(
            "/guard.slice/session-a",
            "/guard.slice/session-a"
        ));
        assert!(is_within(
            "/guard.slice/session-a/x",
            "/guard.slice/session-a"
        ));
        assert!(!is_within(
            "/guard.slice/session-ab",
            "/guard.slice/session-a"
        ));
    }

    #[test]
    fn descendants_come_parents_first() {
        let stat = |ppid, state| Stat {
            ppid,
            state,
            kernel_thread: false,
        };
        let table = HashMap::from([
            (10, stat(1, 'S')),
            (11, stat(10, 'S')),
            (12, stat(11, 'S')),
            (13, stat(10, 'Z')),
            (20, stat(1, 'S')),
        ]);
        assert_eq!(descendants(10, &table), vec![10, 11, 12]);
        assert!(descendants(13, &table).is_empty());
        assert!(descendants(99, &table).is_empty());
    }

    #[test]
    fn refuses_init_self_and_ancestors() {
        let text = |pid| format!("{:#}", check_target(pid).err().expect("refused"));
        assert!(text(1).contains("pid 1"));
        assert!(text(std::process::id()).contains("itself"));
        let parent = std::os::unix::process::parent_id();
        if parent > 1 {
            assert!(text(parent).contains("ancestor"), "{}", text(parent));
        }
    }
}
