//! `guard deny ID [--session NAME]`

use std::path::Path;

use super::{call, finish, socket_of_hold, target};
use crate::{api::wire::Op, cli::DenyArgs, holds::Hold};

pub fn run(args: DenyArgs, socket: Option<&Path>) -> i32 {
    finish(args.json.json, || {
        let path = socket_of_hold(&target(socket)?, args.id, args.session.as_deref())?;
        let hold = call(&path, Op::Deny { id: args.id })?;
        if args.json.json {
            println!("{}", serde_json::json!({"ok": true, "denied": hold}));
        } else {
            let hold: Hold = serde_json::from_value(hold)?;
            println!(
                "denied hold {} in session {}: {}",
                hold.id, hold.request.session, hold.request.action
            );
        }
        Ok(())
    })
}
