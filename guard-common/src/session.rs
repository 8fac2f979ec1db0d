//! The session map: cgroup id -> what the kernel programs do for that session.

/// Value of the `SESSIONS` map, keyed by cgroup v2 id (u64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// Bit set of [`session_flags`].
    pub flags: u32,
    pub _pad: u32,
}

pub mod session_flags {
    /// Report every exec in the session.
    pub const WATCH_EXEC: u32 = 1 << 0;
    /// Refuse every unlink in the session in the kernel (-EPERM).
    pub const DENY_UNLINK: u32 = 1 << 1;
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SessionConfig {}
