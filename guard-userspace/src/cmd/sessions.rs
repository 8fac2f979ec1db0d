//! `guard sessions [--json]`

use std::path::Path;

use super::{call, finish, target};
use crate::{
    api::{endpoint::Target, wire::Op},
    cli::JsonFlag,
    controller::SessionEntry,
};

pub fn run(args: JsonFlag, socket: Option<&Path>) -> i32 {
    finish(args.json, || {
        let target = target(socket)?;
        let mut sessions: Vec<SessionEntry> = Vec::new();
        for path in target.sockets() {
            match call(&path, Op::Sessions) {
                Ok(v) => sessions.extend(serde_json::from_value::<Vec<SessionEntry>>(v)?),
                Err(_) if matches!(target, Target::Sessions(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        if args.json {
            println!("{}", serde_json::to_string(&sessions)?);
            return Ok(());
        }
        if sessions.is_empty() {
            println!("no sessions");
            return Ok(());
        }
        println!(
            "{:<24} {:>7} {:>6} {:>5} {:>5} {:>5} {:>5}  COMMAND",
            "SESSION", "PID", "UID", "SEEN", "HELD", "OK", "NO"
        );
        for s in sessions {
            let c = s.counts;
            println!(
                "{:<24} {:>7} {:>6} {:>5} {:>5} {:>5} {:>5}  {}",
                s.info.name,
                s.info.agent_pid,
                s.info.uid,
                c.seen,
                c.held,
                c.approved,
                c.denied + c.killed,
                s.info.command.join(" ")
            );
        }
        Ok(())
    })
}
