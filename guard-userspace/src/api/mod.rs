//! The local API: a Unix socket speaking newline-delimited JSON, served by
//! every controller (daemon or embedded) and used by the CLI.

pub mod client;
pub mod endpoint;
pub mod peer;
pub mod server;
pub mod wire;
