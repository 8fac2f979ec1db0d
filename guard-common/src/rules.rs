//! What userspace compiles a policy into for the kernel programs: rule tables
//! (LPM tries, hash sets), one-shot grants, and the record of held tasks.
//! The kernel only looks these up; every decision beyond them is made in
//! userspace.

use crate::session::SESSION_KEY_LEN;

/// What the kernel does with an action a table entry covers. Each field is a
/// mask of [`crate::EventKind::bit`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Ops that stop the task and ask userspace (restart hold / exec stop).
    pub hold: u32,
    /// Ops refused in the kernel (-EPERM) without asking; reported.
    pub deny: u32,
    /// Ops charged to the session's rate budget (`RATES`): they stay in the
    /// kernel until the budget is spent, then they are held.
    pub counted: u32,
    /// Ops exempt from the rate budget here (a rate rule's `except`).
    /// Wins over `counted` when rules are merged.
    pub uncounted: u32,
}

impl Rule {
    /// Ordinary actions: nothing leaves the kernel.
    pub const ALLOW: Rule = Rule {
        hold: 0,
        deny: 0,
        counted: 0,
        uncounted: 0,
    };

    /// Held ops only.
    pub const fn holding(hold: u32) -> Rule {
        Rule {
            hold,
            ..Rule::ALLOW
        }
    }

    /// The union of two rules covering the same action.
    pub const fn merge(self, other: Rule) -> Rule {
        Rule {
            hold: self.hold | other.hold,
            deny: self.deny | other.deny,
            counted: self.counted | other.counted,
            uncounted: self.uncounted | other.uncounted,
        }
    }
}

/// Ring slots of a rate budget: the most a kernel-counted rate rule's
/// `count` can be is one less.
pub const RATE_SLOTS: usize = 512;

/// Value of `RATES` (keyed by session cgroup id): a sliding-window counter
/// for one rate rule, kept in the kernel so ordinary deletions never leave
/// it. The last `limit + 1` charged ops' times sit in a ring; an op is over
/// budget when the op `limit` places before it is less than `window_ns` old,
/// that is, when more than `limit` ops fell within the window.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RateBudget {
    /// The rule's `count` (at most `RATE_SLOTS - 1`).
    pub limit: u32,
    /// Non-zero: objects whose ctime is less than `window_ns` old are not
    /// charged (the rule's `ignore_recent`: deleting what was just written).
    pub ignore_recent: u32,
    pub window_ns: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC when the budget was set, to
    /// compare ctimes (realtime seconds) with bpf_ktime_get_ns.
    pub realtime_offset_ns: u64,
    /// Ops charged so far; each takes slot `seq % (limit + 1)`.
    pub seq: u64,
    /// bpf_ktime_get_ns of each charged op; 0 when unused.
    pub slots: [u64; RATE_SLOTS],
}

/// Bytes of a path an LPM rule can match on. With the session id this is the
/// kernel's 256-byte limit for LPM trie keys.
pub const PATH_PREFIX_MAX: usize = 256 - SESSION_KEY_LEN;

/// Data of a `PATH_RULES` LPM key: the session's cgroup id (big-endian, so the
/// trie compares it first) and the path bytes. A rule for a directory is
/// stored as `/dir/` (everything below it); a rule for one file as `/file\0`
/// (the NUL makes it exact).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PathPrefix {
    pub session: [u8; SESSION_KEY_LEN],
    pub path: [u8; PATH_PREFIX_MAX],
}

/// Data of an `ENDPOINT_RULES` LPM key: session, port (big-endian; 0 is any
/// port, looked up second) and the IPv6 address (IPv4 as ::ffff:a.b.c.d).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointPrefix {
    pub session: [u8; SESSION_KEY_LEN],
    pub port: [u8; 2],
    pub addr: [u8; 16],
}

/// Longest program base name the exec watch set can hold, without the NUL.
pub const EXEC_NAME_MAX: usize = 31;

/// Key of `WATCHED_EXEC`: a session and a program base name (NUL-padded).
/// The base name comes from the path execve(2) was given (for a script, the
/// script, not its interpreter).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedExec {
    pub session: u64,
    pub name: [u8; EXEC_NAME_MAX + 1],
}

/// Longest name a name pattern can have.
pub const NAME_PATTERN_MAX: usize = 30;

/// Bytes of a component name in a name-pattern key (pattern, NUL, padding).
pub const NAME_KEY_LEN: usize = 32;

/// Data of a `NAME_PREFIX_RULES` / `NAME_SUFFIX_RULES` LPM key: the session,
/// then a component name. In the prefix trie the name is stored as is (an
/// exact pattern ends with its NUL); in the suffix trie it is stored
/// reversed, so the longest-prefix match finds the longest matching suffix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamePrefix {
    pub session: [u8; SESSION_KEY_LEN],
    pub name: [u8; NAME_KEY_LEN],
}

/// Key of `GRANTS`: what a person (or policy) decided, so the restarted
/// syscall finds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantKey {
    pub session: u64,
    /// The event's `object_id`.
    pub object_id: u64,
    /// An [`crate::EventKind`] as u32.
    pub op: u32,
    pub _pad: u32,
}

/// Value of `GRANTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) after which the grant is ignored and removed.
    pub expires_ns: u64,
    /// [`grant_verdict`].
    pub verdict: u32,
    /// Non-zero: removed by the first syscall that uses it.
    pub once: u32,
}

pub mod grant_verdict {
    pub const ALLOW: u32 = 1;
    pub const DENY: u32 = 2;
}

/// Value of `HELD` (keyed by thread id): a task the kernel stopped and that
/// waits for userspace. A restarted daemon lists these to pick holds up again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldTask {
    /// An [`crate::EventKind`] as u32.
    pub kind: u32,
    pub pid: u32,
    pub session: u64,
    pub object_id: u64,
    pub ktime_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for Rule {}
    unsafe impl aya::Pod for PathPrefix {}
    unsafe impl aya::Pod for EndpointPrefix {}
    unsafe impl aya::Pod for WatchedExec {}
    unsafe impl aya::Pod for GrantKey {}
    unsafe impl aya::Pod for Grant {}
    unsafe impl aya::Pod for HeldTask {}
    unsafe impl aya::Pod for NamePrefix {}
    unsafe impl aya::Pod for RateBudget {}
}
