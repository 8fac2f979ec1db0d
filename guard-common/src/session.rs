//! The session map: cgroup id -> what the kernel programs do for that session.

/// Bytes of the session id at the start of LPM keys.
pub const SESSION_KEY_LEN: usize = 8;

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
    /// Stop every exec in the session for userspace, not only watched programs.
    pub const STOP_ALL_EXEC: u32 = 1 << 2;
    /// Apply the path rules to unlink, rmdir, rename, truncate and writable opens.
    pub const WATCH_FILES: u32 = 1 << 3;
    /// File ops on paths no rule covers need a decision (else they are allowed).
    pub const HOLD_UNMATCHED_FILES: u32 = 1 << 4;
    /// Apply the endpoint rules to connect.
    pub const WATCH_CONNECT: u32 = 1 << 5;
    /// Connects no rule covers need a decision (else they are allowed).
    pub const HOLD_UNMATCHED_CONNECT: u32 = 1 << 6;
    /// The session has ancestor-name rules (`ANCESTOR_NAME_RULES`): compare
    /// the names of the directories above the object too.
    pub const ANCESTOR_NAMES: u32 = 1 << 7;
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SessionConfig {}
