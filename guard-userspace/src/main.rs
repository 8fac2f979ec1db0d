use clap::Parser as _;
use guard::{
    cli::{Cli, Command},
    cmd, doctor, policy,
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let socket = cli.socket.as_deref();
    let code = match cli.command {
        Command::Session(args) => cmd::session::run(args, socket),
        Command::Adopt(args) => cmd::adopt::run(args, socket),
        Command::Daemon(args) => cmd::daemon::run(args, socket),
        Command::Holds(args) => cmd::holds::run(args, socket),
        Command::Approve(args) => cmd::approve::run(args, socket),
        Command::Deny(args) => cmd::deny::run(args, socket),
        Command::Kill(args) => cmd::kill::run(args, socket),
        Command::Sessions(args) => cmd::sessions::run(args, socket),
        Command::Events(args) => cmd::events::run(args, socket),
        Command::Policy { command } => policy::cli::run(command),
        Command::Doctor(args) => doctor::run(args.json),
    };
    std::process::exit(code);
}
