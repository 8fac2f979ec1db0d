//! Command-line definitions. `main.rs` dispatches on these.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "guard",
    version,
    about = "Hold an AI coding agent still before an irreversible action until a person approves",
    long_about = "guard watches an agent's whole process tree with kernel probes and applies a \
                  per-session policy. See docs/cli.md in the source tree."
)]
pub struct Cli {
    /// The daemon's API socket (default: $GUARD_SOCKET, else /run/guard/guard.sock).
    /// Sessions without a daemon serve <its directory>/sessions/NAME.sock.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command (an agent, a shell) inside a guarded session.
    Session(SessionArgs),
    /// Guard an agent that is already running: move its process tree into a session.
    #[command(
        long_about = "Guard an agent that is already running: move PID and all its \
        descendants into a new session cgroup and watch them like `guard session` does, until \
        they have all exited. Execs are stopped before they run on every kernel. File and \
        connect calls are held before they happen where BPF LSM is active; without BPF LSM \
        guard cannot install its seccomp filter into a running process, so it uses bounded \
        mode: the first destructive call completes and the process is stopped before its next \
        one, then approved (it goes on) or denied (it is killed). SIGINT or SIGTERM to guard \
        adopt releases the processes back to their own cgroups, unguarded. See docs/cli.md."
    )]
    Adopt(AdoptArgs),
    /// Check, test and explain policies (see docs/policy.md).
    Policy {
        #[command(subcommand)]
        command: crate::policy::cli::PolicyCommand,
    },
    /// Run the host controller: holds, grants, audit log and the API socket.
    Daemon(DaemonArgs),
    /// List pending holds.
    Holds(JsonFlag),
    /// Approve a pending hold.
    Approve(ApproveArgs),
    /// Deny a pending hold (the action fails with EPERM, or the program is killed before it runs).
    Deny(DenyArgs),
    /// Kill every process of a session.
    Kill(KillArgs),
    /// List running sessions.
    Sessions(JsonFlag),
    /// Show recent decisions and holds; --follow keeps streaming.
    Events(EventsArgs),
    /// Report kernel support and the backend chosen for each action kind.
    Doctor(JsonFlag),
}

/// What `guard session` and `guard adopt` both take.
#[derive(Debug, Args)]
pub struct SupervisionArgs {
    /// Policy file (default: the policy built into guard).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The agent's workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Audit log when no daemon runs (default: $GUARD_AUDIT_LOG, else /var/log/guard/audit.jsonl).
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Never prompt on this terminal; holds wait for `guard approve` or time out.
    #[arg(long)]
    pub no_prompt: bool,
    /// Print the end-of-session summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Session name (default: pid and a random suffix): letters, digits, '-', '_', '.'.
    #[arg(long)]
    pub name: Option<String>,
    /// Run CMD as this user (name or uid); default: the sudo caller, else yourself.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    #[command(flatten)]
    pub common: SupervisionArgs,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// Session name (default: adopt-PID): letters, digits, '-', '_', '.'.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub common: SupervisionArgs,
    /// The process to adopt, with all its descendants.
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: u32,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Audit log (default: $GUARD_AUDIT_LOG, else /var/log/guard/audit.jsonl).
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The hold id shown by `guard holds`.
    pub id: u64,
    /// How long the approval lasts: `once` (default), `session`, or a duration such as 10m.
    #[arg(long = "for", value_name = "session|DURATION")]
    pub scope: Option<String>,
    /// The session the hold belongs to, when several sessions (no daemon) share an id.
    #[arg(long)]
    pub session: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    /// The hold id shown by `guard holds`.
    pub id: u64,
    /// The session the hold belongs to, when several sessions (no daemon) share an id.
    #[arg(long)]
    pub session: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The session name shown by `guard sessions`.
    pub session: String,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing new events until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}
