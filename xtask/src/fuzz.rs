//! Bounded fuzzing (`cargo xtask test` step): each cargo-fuzz target in fuzz/
//! runs for a fixed time. Skipped, with a note, where cargo-fuzz is missing.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The fuzz targets in fuzz/Cargo.toml.
const TARGETS: &[&str] = &["policy_parser", "argv_classifier", "shell_parser"];

pub fn run(seconds: u32) -> anyhow::Result<()> {
    let available = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        println!(
            "xtask: fuzzing skipped: cargo-fuzz or the nightly toolchain is missing (cargo install cargo-fuzz)"
        );
        return Ok(());
    }
    let fuzz_dir = crate::test::workspace_root().join("fuzz");
    for target in TARGETS {
        println!("xtask: == fuzz {target} ({seconds} s)");
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "-O", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=4096")
            .current_dir(&fuzz_dir)
            .status()
            .with_context(|| format!("starting cargo fuzz run {target}"))?;
        if !status.success() {
            bail!(
                "fuzz {target} failed ({status}): the crashing input is in fuzz/artifacts/{target}/"
            );
        }
    }
    Ok(())
}
