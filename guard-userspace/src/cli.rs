//! Command-line definitions. `main.rs` dispatches on these.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "guard",
    version,
    about = "Hold an AI coding agent still before an irreversible action until a person approves",
    long_about = "guard watches an agent's whole process tree with kernel probes and applies a \
                  per-session policy. See docs/ in the source tree."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command (an agent, a shell) inside a guarded session.
    Session {
        /// Session name (default: pid and a random suffix).
        #[arg(long)]
        name: Option<String>,
        /// Print the end-of-session summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// The command to run, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Check, test and explain policies (see docs/policy.md).
    Policy {
        #[command(subcommand)]
        command: crate::policy::cli::PolicyCommand,
    },
}
