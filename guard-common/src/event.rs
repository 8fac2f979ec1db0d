//! Events sent from the kernel programs to userspace over the ring buffer.
//!
//! Every event starts with an [`EventHeader`]; its `kind` says which payload follows.
//! Userspace decodes them in exactly one place (`guard::events`).

use crate::PATH_MAX;

/// What a ring buffer record carries. The value is also the op code of grants
/// and the bit index in rule masks ([`EventKind::bit`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A program was exec'd inside a session ([`ExecEvent`]).
    Exec = 1,
    /// unlink(2) family ([`FileEvent`]).
    Unlink = 2,
    /// rmdir(2) ([`FileEvent`]).
    Rmdir = 3,
    /// rename(2) family; `target` holds the new name ([`FileEvent`]).
    Rename = 4,
    /// truncate(2), or open with O_TRUNC ([`FileEvent`]).
    Truncate = 5,
    /// open for writing without O_TRUNC ([`FileEvent`]).
    OpenWrite = 6,
    /// connect(2) on an IPv4, IPv6 or unix socket ([`ConnectEvent`]).
    Connect = 7,
}

/// One more than the largest kind: the size of per-kind counter arrays.
pub const EVENT_KINDS: u32 = 8;

impl EventKind {
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Exec),
            2 => Some(Self::Unlink),
            3 => Some(Self::Rmdir),
            4 => Some(Self::Rename),
            5 => Some(Self::Truncate),
            6 => Some(Self::OpenWrite),
            7 => Some(Self::Connect),
            _ => None,
        }
    }

    /// This kind's bit in a [`crate::rules::Rule`] mask.
    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Common prefix of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    /// Thread group id (the userspace pid) of the acting process.
    pub pid: u32,
    /// Thread id of the acting thread.
    pub tid: u32,
    /// What the kernel program decided (see [`verdict`]).
    pub verdict: u32,
    /// cgroup v2 id of the session (the ancestor at the session depth).
    pub cgroup_id: u64,
    /// bpf_ktime_get_ns() when the event was made.
    pub ktime_ns: u64,
}

/// What the kernel program already did with the action.
pub mod verdict {
    /// Reported only.
    pub const OBSERVED: u32 = 0;
    /// Refused in the kernel (-EPERM).
    pub const DENIED: u32 = 1;
    /// The task was sent SIGSTOP and waits for userspace (the syscall restarts
    /// on SIGCONT and looks for a grant).
    pub const STOPPED: u32 = 2;
}

/// Flags of a path in an event.
pub mod path_flags {
    /// `path` could not be resolved in full (too deep, too long, unreadable):
    /// never treat it as allowed.
    pub const PATH_TRUNCATED: u32 = 1 << 0;
    /// Same for `target`.
    pub const TARGET_TRUNCATED: u32 = 1 << 1;
    /// For connect: the unix socket path is relative (resolve against the cwd).
    pub const RELATIVE: u32 = 1 << 2;
    /// The op spent the session's rate budget: more than the rate rule's
    /// count of such ops fell within its window (counted in the kernel).
    pub const RATE_EXCEEDED: u32 = 1 << 3;
    /// The op was charged to the session's rate budget (with or without
    /// spending it): userspace leaves that rate rule to the kernel.
    pub const RATE_CHARGED: u32 = 1 << 4;
}

/// `sched_process_exec`: the new image's path as execve(2) was given it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Bytes of `filename` in use, without the NUL.
    pub filename_len: u32,
    /// Non-zero when the path did not fit and was cut.
    pub truncated: u32,
    pub filename: [u8; PATH_MAX],
}

/// A file hook inside a session that needs a decision (or was denied in the
/// kernel). Paths are absolute, built from the dentry chain up to the root
/// mount, so symlinks, `..` and relative names cannot hide the object.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub header: EventHeader,
    /// What a grant for this action is keyed by (device and inode of the
    /// object; for rename also the new name). Copied into the grant as is.
    pub object_id: u64,
    /// Bit set of [`path_flags`].
    pub flags: u32,
    /// Bytes of `path` in use, without the NUL.
    pub path_len: u32,
    /// Bytes of `target` in use (rename only), without the NUL.
    pub target_len: u32,
    pub _pad: u32,
    pub path: [u8; PATH_MAX],
    /// The new name of a rename.
    pub target: [u8; PATH_MAX],
}

/// Length of `sun_path` in `struct sockaddr_un`.
pub const UNIX_PATH_MAX: usize = 108;

/// `socket_connect` inside a session that needs a decision.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    pub header: EventHeader,
    pub object_id: u64,
    /// AF_INET (2), AF_INET6 (10) or AF_UNIX (1).
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    /// Bit set of [`path_flags`] (unix sockets).
    pub flags: u32,
    /// IPv6 address, or an IPv4 one mapped as ::ffff:a.b.c.d.
    pub addr: [u8; 16],
    /// Bytes of `unix_path` in use. A leading NUL means an abstract socket.
    pub unix_path_len: u32,
    pub unix_path: [u8; UNIX_PATH_MAX],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for EventHeader {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExecEvent {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileEvent {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ConnectEvent {}
