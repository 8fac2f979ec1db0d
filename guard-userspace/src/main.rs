use clap::Parser as _;
use guard::{
    cli::{Cli, Command},
    policy, session,
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Session {
            name,
            json,
            command,
        } => {
            let options = session::SessionOptions {
                name,
                command,
                json,
            };
            match session::run(&options) {
                Ok(summary) => {
                    session::print_summary(&summary, options.json);
                    summary.exit_code
                }
                Err(e) => {
                    eprintln!("guard: {e:#}");
                    1
                }
            }
        }
        Command::Policy { command } => policy::cli::run(command),
    };
    std::process::exit(code);
}
