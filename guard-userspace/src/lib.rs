//! guard's userspace controller: sessions, kernel program loading, event decoding.
//!
//! The `guard` binary (`main.rs`) is a clap dispatch over these modules; the
//! integration tests in `tests/` drive the same modules against a real kernel.

pub mod action;
pub mod backend;
pub mod bounded;
pub mod cgroup;
pub mod cli;
pub mod decision;
pub mod doctor;
pub mod events;
pub mod holds;
pub mod policy;
pub mod programs;
pub mod seccomp;
pub mod session;
