//! Bounded mode: a stop at syscall entry for processes guard watches but did
//! not launch. The kernel program stops the caller (SIGSTOP, delivered once
//! the call returns) and reports the call; the first call completes.

/// Bytes of the path argument copied into a [`BoundedStop`], with the NUL.
pub const BOUNDED_PATH_LEN: usize = 256;

/// Value of `BOUNDED_SYSCALLS` for a syscall whose path is not reported.
pub const NO_PATH_ARG: u32 = 0xff;

/// One stop, sent on the `BOUNDED_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BoundedStop {
    pub pid: u32,
    pub tid: u32,
    /// Syscall number (native ABI).
    pub nr: u32,
    /// Bytes of `path` in use, without the NUL (0 when not read).
    pub path_len: u32,
    /// The directory fd of an *at call (argument 0), AT_FDCWD otherwise.
    pub dirfd: i32,
    pub _pad: u32,
    /// Session cgroup id (an ancestor of the caller's cgroup).
    pub cgroup_id: u64,
    pub ktime_ns: u64,
    /// The path argument as the caller passed it (user memory; report only).
    pub path: [u8; BOUNDED_PATH_LEN],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for BoundedStop {}
