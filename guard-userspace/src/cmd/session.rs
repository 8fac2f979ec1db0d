//! `guard session [OPTIONS] -- CMD...`

use std::path::Path;

use crate::{
    cli::SessionArgs,
    session::{self, SessionOptions},
};

pub fn run(args: SessionArgs, socket: Option<&Path>) -> i32 {
    let json = args.common.json;
    let options = SessionOptions {
        name: args.name,
        command: args.command,
        user: args.user,
        common: super::supervision_options(args.common, socket),
    };
    super::summarise(session::run(&options), json)
}
