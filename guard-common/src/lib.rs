//! Types shared by guard's kernel programs and its userspace controller.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel side writes it into
//! maps and the ring buffer, userspace reads the same bytes back. The `user`
//! feature adds `aya::Pod` impls so userspace can use these types as map keys
//! and values.
#![no_std]

pub mod bounded;
pub mod event;
pub mod session;

pub use event::{EventHeader, EventKind, ExecEvent, FileEvent};
pub use session::{SessionConfig, session_flags};

/// Longest path the kernel programs copy, including the terminating NUL.
pub const PATH_MAX: usize = 4096;
