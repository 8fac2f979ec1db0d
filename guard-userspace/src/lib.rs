//! guard's userspace controller: sessions, kernel program loading, event decoding.
//!
//! The `guard` binary (`main.rs`) is a clap dispatch over these modules; the
//! integration tests in `tests/` drive the same modules against a real kernel.

pub mod action;
pub mod adopt;
pub mod ancestry;
pub mod api;
pub mod audit;
pub mod backend;
pub mod bounded;
pub mod btf_offsets;
pub mod cgroup;
pub mod cli;
pub mod cmd;
pub mod controller;
pub mod decision;
pub mod doctor;
pub mod enforcer;
pub mod events;
pub mod exec_stop;
pub mod freeze;
pub mod grants;
pub mod holds;
pub mod hosts;
pub mod kernel_backends;
pub mod kernel_maps;
pub mod kernel_policy;
pub mod lsm_backend;
pub mod notice;
pub mod pidfd;
pub mod pin;
pub mod policy;
pub mod programs;
pub mod seccomp;
pub mod session;
pub mod signal_relay;
pub mod supervision;
pub mod terminal;
pub mod users;
