//! `guard kill SESSION`

use std::path::Path;

use anyhow::bail;

use super::{call, finish, target};
use crate::{
    api::{
        endpoint::{self, Target},
        wire::Op,
    },
    cli::KillArgs,
    session::validate_name,
};

pub fn run(args: KillArgs, socket: Option<&Path>) -> i32 {
    finish(args.json.json, || {
        validate_name(&args.session)?;
        let path = match target(socket)? {
            Target::Daemon(path) => path,
            Target::Sessions(sockets) => {
                let own = endpoint::session_socket(&endpoint::daemon_socket(socket), &args.session);
                if !sockets.contains(&own) {
                    bail!(
                        "no running session named {:?}; see `guard sessions`",
                        args.session
                    );
                }
                own
            }
        };
        let killed = call(
            &path,
            Op::Kill {
                session: args.session.clone(),
            },
        )?;
        if args.json.json {
            println!(
                "{}",
                serde_json::json!({"ok": true, "killed": args.session, "holds": killed})
            );
        } else {
            println!("killed session {}", args.session);
        }
        Ok(())
    })
}
