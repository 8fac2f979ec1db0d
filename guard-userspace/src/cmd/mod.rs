//! One file per subcommand. Each returns the process exit status: 0 on
//! success, 1 on any error (printed to stderr, and as JSON on stdout with --json).

pub mod adopt;
pub mod approve;
pub mod daemon;
pub mod deny;
pub mod events;
pub mod holds;
pub mod kill;
pub mod session;
pub mod sessions;

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde_json::{Value, json};

use crate::{
    api::{
        client::{self, CallError},
        endpoint::{self, Target},
        wire::Op,
    },
    cli::SupervisionArgs,
    holds::Hold,
    session::SessionSummary,
    supervision::SupervisionOptions,
};

/// Prints an error the way every subcommand does and returns the exit status.
/// The options `guard session` and `guard adopt` share, from their flags.
fn supervision_options(args: SupervisionArgs, socket: Option<&Path>) -> SupervisionOptions {
    SupervisionOptions {
        json: args.json,
        policy: args.policy,
        workspace: args.workspace,
        socket: socket.map(Path::to_path_buf),
        audit_log: args.audit_log,
        prompt: !args.no_prompt,
    }
}

/// Prints a supervised session's summary and returns the exit status
/// (the agent's for `guard session`), or reports why it could not run.
fn summarise(result: anyhow::Result<SessionSummary>, json: bool) -> i32 {
    match result {
        Ok(summary) => {
            crate::session::print_summary(&summary, json);
            summary.exit_code
        }
        Err(e) => fail(&e, json),
    }
}

pub fn fail(error: &anyhow::Error, json: bool) -> i32 {
    if json {
        let code = error
            .downcast_ref::<CallError>()
            .and_then(|e| match e {
                CallError::Api(api) => serde_json::to_value(api.code).ok(),
                CallError::Transport(_) => None,
            })
            .unwrap_or(Value::String("error".into()));
        println!(
            "{}",
            json!({"ok": false, "error": {"code": code, "message": format!("{error:#}")}})
        );
    }
    eprintln!("guard: {error:#}");
    1
}

/// Runs `body`, turning an error into the printed message and status 1.
pub fn finish(json: bool, body: impl FnOnce() -> anyhow::Result<()>) -> i32 {
    match body() {
        Ok(()) => 0,
        Err(e) => fail(&e, json),
    }
}

pub fn target(socket: Option<&Path>) -> anyhow::Result<Target> {
    endpoint::discover(&endpoint::daemon_socket(socket))
}

/// Calls `op` on one socket, keeping the API error for `--json`.
pub fn call(path: &Path, op: Op) -> anyhow::Result<Value> {
    client::call(path, op).map_err(anyhow::Error::new)
}

/// Pending holds of every controller the CLI can reach, with the socket of each.
pub fn all_holds(target: &Target) -> anyhow::Result<Vec<(PathBuf, Hold)>> {
    let mut out = Vec::new();
    for socket in target.sockets() {
        let value = match call(&socket, Op::Holds) {
            Ok(v) => v,
            // A session that ended between discovery and now has no holds.
            Err(_) if matches!(target, Target::Sessions(_)) => continue,
            Err(e) => return Err(e),
        };
        let holds: Vec<Hold> = serde_json::from_value(value)?;
        out.extend(holds.into_iter().map(|h| (socket.clone(), h)));
    }
    Ok(out)
}

/// The socket serving pending hold `id` (of `session`, if given).
pub fn socket_of_hold(target: &Target, id: u64, session: Option<&str>) -> anyhow::Result<PathBuf> {
    if let (Target::Daemon(path), None) = (target, session) {
        return Ok(path.clone());
    }
    let matches: Vec<(PathBuf, Hold)> = all_holds(target)?
        .into_iter()
        .filter(|(_, h)| h.id == id && session.is_none_or(|s| h.request.session == s))
        .collect();
    match matches.as_slice() {
        [] => bail!(
            "no pending hold {id}{} (already decided, timed out, or never existed); see `guard holds`",
            session
                .map(|s| format!(" in session {s:?}"))
                .unwrap_or_default()
        ),
        [(socket, _)] => Ok(socket.clone()),
        many => bail!(
            "hold {id} exists in several sessions ({}); add --session NAME",
            many.iter()
                .map(|(_, h)| h.request.session.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// "3s", "2m10s": how long something has waited.
pub fn age(since: std::time::SystemTime) -> String {
    let secs = since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}
