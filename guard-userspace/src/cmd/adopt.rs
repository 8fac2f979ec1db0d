//! `guard adopt [OPTIONS] PID`

use std::path::Path;

use crate::{
    adopt::{self, AdoptOptions},
    cli::AdoptArgs,
    session,
};

pub fn run(args: AdoptArgs, socket: Option<&Path>) -> i32 {
    let options = AdoptOptions {
        pid: args.pid,
        name: args.name,
        json: args.common.json,
        policy: args.common.policy,
        workspace: args.common.workspace,
        socket: socket.map(Path::to_path_buf),
        audit_log: args.common.audit_log,
        prompt: !args.common.no_prompt,
    };
    match adopt::run(&options) {
        Ok(summary) => {
            session::print_summary(&summary, options.json);
            summary.exit_code
        }
        Err(e) => super::fail(&e, options.json),
    }
}
