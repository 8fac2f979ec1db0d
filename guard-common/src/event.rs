//! Events sent from the kernel programs to userspace over the ring buffer.
//!
//! Every event starts with an [`EventHeader`]; its `kind` says which payload follows.
//! Userspace decodes them in exactly one place (`guard::events`).

use crate::PATH_MAX;

/// What a ring buffer record carries.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A program was exec'd inside a session ([`ExecEvent`]).
    Exec = 1,
    /// An unlink inside a session ([`FileEvent`]).
    Unlink = 2,
}

impl EventKind {
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Exec),
            2 => Some(Self::Unlink),
            _ => None,
        }
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
    /// cgroup v2 id of the acting task.
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
    /// The task was stopped and waits for userspace.
    pub const STOPPED: u32 = 2;
}

/// `sched_process_exec`: the new image's path as the kernel resolved it.
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

/// A file hook fired inside a session (unlink for now). The object's path is
/// added by the enforcement programs; the header says who and what was decided.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub header: EventHeader,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for EventHeader {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExecEvent {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileEvent {}
