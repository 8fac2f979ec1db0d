//! Developer tasks: `cargo xtask test`, `cargo xtask vm-test`, `cargo xtask bench`.

mod bench;
mod fuzz;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "guard's build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// fmt check, clippy (workspace and the BPF crate), unit tests, host-kernel
    /// integration tests, then the VM tier.
    Test(test::TestArgs),
    /// Boot Debian's 6.1 and 6.12 kernels under QEMU with BPF LSM and run the
    /// VM-tier tests (tests/tests/vm_*.rs). See docs/testing.md.
    VmTest(vm::VmTestArgs),
    /// Per-call overhead of the seccomp backend (and of strace -f), as ratios.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Test(args) => test::run(&args),
        Task::VmTest(args) => vm::run(&args),
        Task::Bench(args) => bench::run(&args),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
