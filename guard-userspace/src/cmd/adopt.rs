//! `guard adopt [OPTIONS] PID`

use std::path::Path;

use crate::{
    adopt::{self, AdoptOptions},
    cli::AdoptArgs,
};

pub fn run(args: AdoptArgs, socket: Option<&Path>) -> i32 {
    let json = args.common.json;
    let options = AdoptOptions {
        pid: args.pid,
        name: args.name,
        common: super::supervision_options(args.common, socket),
    };
    super::summarise(adopt::run(&options), json)
}
