//! `guard session [OPTIONS] -- CMD...`

use std::path::Path;

use crate::{
    cli::SessionArgs,
    session::{self, SessionOptions},
};

pub fn run(args: SessionArgs, socket: Option<&Path>) -> i32 {
    let options = SessionOptions {
        name: args.name,
        command: args.command,
        json: args.common.json,
        policy: args.common.policy,
        workspace: args.common.workspace,
        user: args.user,
        socket: socket.map(Path::to_path_buf),
        audit_log: args.common.audit_log,
        prompt: !args.common.no_prompt,
    };
    match session::run(&options) {
        Ok(summary) => {
            session::print_summary(&summary, options.json);
            summary.exit_code
        }
        Err(e) => super::fail(&e, options.json),
    }
}
