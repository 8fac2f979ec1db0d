//! `guard holds [--json]`

use std::path::Path;

use super::{age, all_holds, finish, target};
use crate::cli::JsonFlag;

pub fn run(args: JsonFlag, socket: Option<&Path>) -> i32 {
    finish(args.json, || {
        let holds = all_holds(&target(socket)?)?;
        if args.json {
            let list: Vec<_> = holds.iter().map(|(_, h)| h).collect();
            println!("{}", serde_json::to_string(&list)?);
            return Ok(());
        }
        if holds.is_empty() {
            println!("no pending holds");
            return Ok(());
        }
        println!(
            "{:>5}  {:<20} {:>7}  {:<8} {:<20} ACTION",
            "ID", "SESSION", "PID", "WAITING", "RULE"
        );
        for (_, h) in holds {
            let r = &h.request;
            println!(
                "{:>5}  {:<20} {:>7}  {:<8} {:<20} {}",
                h.id,
                r.session,
                r.pid,
                age(h.since),
                r.verdict.rule,
                r.action
            );
        }
        Ok(())
    })
}
