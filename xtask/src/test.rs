//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.

use std::process::Command;

use anyhow::{Context as _, bail};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip the VM tier (BPF LSM under QEMU).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip the bounded fuzz runs (fuzz/, 20 s per target).
    #[arg(long)]
    pub no_fuzz: bool,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    step("cargo fmt --check", cargo(&["fmt", "--all", "--check"]))?;
    step(
        "clippy (workspace)",
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "guard-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step("clippy (guard-ebpf, BPF target)", clippy_ebpf())?;
    step(
        "unit tests",
        cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "guard-ebpf",
            "--lib",
            "--bins",
        ]),
    )?;
    let mut host = cargo(&[
        "test",
        "-p",
        "guard-tests",
        "--tests",
        "--",
        "--test-threads=1",
    ]);
    // A failing test's message (with what the test saw) then ends the log,
    // where CI's excerpt shows it, instead of a backtrace; the message names
    // the file and line either way.
    host.env("RUST_BACKTRACE", "0");
    step("host-kernel integration tests", host)?;
    if args.no_fuzz {
        println!("xtask: fuzzing skipped (--no-fuzz)");
    } else {
        crate::fuzz::run(20)?;
    }
    if args.no_vm {
        println!("xtask: VM tier skipped (--no-vm)");
        return Ok(());
    }
    println!("xtask: == VM tier (BPF LSM under QEMU, kernels 6.1 and 6.12)");
    crate::vm::run(&crate::vm::VmTestArgs::default())
}

fn step(name: &str, mut command: Command) -> anyhow::Result<()> {
    println!("xtask: == {name}");
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args);
    command
}

/// The eBPF crate only builds for bpfel-unknown-none with nightly and build-std.
fn clippy_ebpf() -> Command {
    let mut command = Command::new("cargo");
    command
        .args([
            "+nightly",
            "clippy",
            "-p",
            "guard-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .args(["--", "-D", "warnings"])
        .current_dir(workspace_root().join("guard-ebpf"));
    command
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}
