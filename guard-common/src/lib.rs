//! Types shared by guard's kernel programs and its userspace controller.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel side writes it into
//! maps and the ring buffer, userspace reads the same bytes back. The `user`
//! feature adds `aya::Pod` impls so userspace can use these types as map keys
//! and values.
#![no_std]

pub mod bounded;
pub mod event;
pub mod offsets;
pub mod rules;
pub mod session;

pub use event::{ConnectEvent, EventHeader, EventKind, ExecEvent, FileEvent};
pub use offsets::KernelOffsets;
pub use rules::{
    EndpointPrefix, Grant, GrantKey, HeldTask, NamePrefix, PathPrefix, RateBudget, Rule,
    WatchedExec,
};
pub use session::{SessionConfig, session_flags};

/// Longest path the kernel programs copy, including the terminating NUL.
pub const PATH_MAX: usize = 4096;

/// Longest path component (d_name), including the NUL.
pub const NAME_MAX: usize = 256;

/// Directories above an object whose names ancestor-name rules compare.
pub const ANCESTOR_NAMES_MAX: usize = 32;

/// Path components the dentry walk follows before it flags the path truncated.
pub const PATH_DEPTH_MAX: usize = 64;
