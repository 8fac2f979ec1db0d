//! Every map the kernel programs share with userspace.
//!
//! Maps holding state that must outlive the daemon (sessions, rules, grants,
//! held tasks, the event ring) are pinned by name under the pin directory
//! userspace chooses, so a restarted daemon reopens them and held tasks stay held.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use guard_common::{
    ConnectEvent, EndpointPrefix, ExecEvent, FileEvent, Grant, GrantKey, HeldTask, NAME_MAX,
    NamePrefix, PATH_DEPTH_MAX, PATH_MAX, PathPrefix, RateBudget, Rule, SessionConfig, WatchedExec,
    event::EVENT_KINDS, session::SESSION_KEY_LEN,
};

/// cgroup v2 id of a session's cgroup -> its configuration. Filled by userspace.
#[map]
pub static SESSIONS: HashMap<u64, SessionConfig> = HashMap::pinned(4096, 0);

/// Events for userspace. 4 MiB holds about 500 file events or 1000 execs.
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(4 * 1024 * 1024, 0);

/// Records lost because the ring buffer was full, indexed by event kind; per
/// CPU so counting needs no atomics. Userspace sums the CPUs.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(EVENT_KINDS, 0);

/// Path prefix rules per session (longest prefix wins).
#[map]
pub static PATH_RULES: LpmTrie<PathPrefix, Rule> = LpmTrie::pinned(16384, 0);

/// Endpoint (CIDR and port) rules per session.
#[map]
pub static ENDPOINT_RULES: LpmTrie<EndpointPrefix, Rule> = LpmTrie::pinned(4096, 0);

/// Exact and prefix patterns on the object's name or its parent's name.
#[map]
pub static NAME_PREFIX_RULES: LpmTrie<NamePrefix, Rule> = LpmTrie::pinned(4096, 0);

/// Exact names (ending with their NUL) of a directory anywhere above the
/// object (`.git` anywhere up the tree), up to `ANCESTOR_NAMES_MAX` levels.
#[map]
pub static ANCESTOR_NAME_RULES: LpmTrie<NamePrefix, Rule> = LpmTrie::pinned(4096, 0);

/// Suffix patterns (stored reversed) on the object's or its parent's name.
#[map]
pub static NAME_SUFFIX_RULES: LpmTrie<NamePrefix, Rule> = LpmTrie::pinned(4096, 0);

/// Each session's rate budget (one kernel-counted rate rule), by cgroup id.
/// 512 sessions of 4 KiB.
#[map]
pub static RATES: HashMap<u64, RateBudget> = HashMap::pinned(512, 0);

/// Program base names whose exec stops the task, per session.
#[map]
pub static WATCHED_EXEC: HashMap<WatchedExec, Rule> = HashMap::pinned(4096, 0);

/// Decisions userspace wrote for held actions; read by the restarted syscall.
#[map]
pub static GRANTS: HashMap<GrantKey, Grant> = HashMap::pinned(8192, 0);

/// Tasks the kernel stopped, by thread id, until a grant is used or
/// userspace removes them.
#[map]
pub static HELD: HashMap<u32, HeldTask> = HashMap::pinned(8192, 0);

/// Thread group ids of guard's own processes (the daemon, the session
/// supervisor): session tasks may not signal them.
#[map]
pub static GUARD_PIDS: HashMap<u32, u32> = HashMap::pinned(256, 0);

/// Per-kind counters of what the programs did (see [`stat`]).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stat::COUNT, 0);

pub mod stat {
    /// Tasks stopped for userspace.
    pub const HELD: u32 = 0;
    /// Grants used by a restarted syscall.
    pub const GRANT_USED: u32 = 1;
    /// Actions refused in the kernel by a rule.
    pub const DENIED: u32 = 2;
    /// Stops that could not be made (bpf_send_signal failed): refused instead.
    pub const STOP_FAILED: u32 = 3;
    /// Signals from session tasks refused (SIGCONT to a held task, any to guard).
    pub const SIGNAL_REFUSED: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Scratch space for building a path: the LPM key header directly followed
/// by the path, so the trie can be searched in place. Too big for the stack.
#[repr(C)]
pub struct PathScratch {
    pub prefix_len: u32,
    pub session: [u8; SESSION_KEY_LEN],
    /// Room for a full path plus one component written at the last offset.
    pub path: [u8; PATH_MAX + NAME_MAX],
    /// dentry name pointers, leaf first.
    pub names: [u64; PATH_DEPTH_MAX],
    pub depth: u32,
    pub len: u32,
    /// One component's name and its length, for the name patterns.
    pub name: [u8; NAME_MAX + 32],
    pub name_len: u32,
    /// LPM keys for the name patterns (prefix_len, session, name).
    pub name_key: NameKey,
}

/// A name-pattern LPM key laid out as the trie reads it.
#[repr(C, packed)]
pub struct NameKey {
    pub prefix_len: u32,
    pub session: [u8; SESSION_KEY_LEN],
    pub name: [u8; guard_common::rules::NAME_KEY_LEN],
}

#[map]
pub static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static CONNECT_SCRATCH: PerCpuArray<ConnectEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; nothing else writes it while this program runs.
        unsafe { *c += 1 };
    }
}
