//! `cargo xtask vm-test`: boot Debian's 6.1 and 6.12 kernels under QEMU with BPF
//! LSM active and run guard's VM-tier integration tests (tests/tests/vm_*.rs).

mod cpio;
mod initramfs;
mod kernel;
mod qemu;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub use kernel::Series;

#[derive(Debug, clap::Args)]
pub struct VmTestArgs {
    /// Which kernel to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelChoice,
    /// Seconds one boot may take, tests included, before QEMU is killed.
    #[arg(long, value_name = "SECS", default_value_t = 1500)]
    pub timeout: u64,
    /// Seconds one test binary may run inside the VM before it is killed
    /// (SIGKILL) and counted as failed; the binaries after it still run.
    #[arg(long, value_name = "SECS", default_value_t = 450)]
    pub test_timeout: u64,
    /// Run only the test binaries whose name starts with one of these
    /// comma-separated prefixes (tests/tests/<name>.rs). The default runs
    /// every vm_* binary and the host exec tests, which must pass on both tiers.
    #[arg(long, value_name = "PREFIX,..", default_value = DEFAULT_TESTS)]
    pub tests: String,
    /// The kernel's lsm= list. Leave out bpf to see the tier refuse to run.
    #[arg(long, value_name = "LIST", default_value = qemu::DEFAULT_LSM, value_parser = parse_lsm_list)]
    pub lsm: String,
}

/// What the VM tier runs by default: the VM-only tests and the host tests
/// the issues require on both tiers (exec stop of a watched program).
const DEFAULT_TESTS: &str = "vm_,host_exec";

impl Default for VmTestArgs {
    fn default() -> Self {
        Self {
            kernel: KernelChoice::All,
            timeout: 1500,
            test_timeout: 450,
            tests: DEFAULT_TESTS.into(),
            lsm: qemu::DEFAULT_LSM.into(),
        }
    }
}

/// An lsm= list goes on the kernel command line: names and commas only.
fn parse_lsm_list(list: &str) -> Result<String, String> {
    let valid = !list.is_empty()
        && list.split(',').all(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if valid {
        Ok(list.to_string())
    } else {
        Err("expected comma-separated LSM names such as lockdown,capability,landlock,bpf".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelChoice {
    fn series(self) -> Vec<Series> {
        match self {
            KernelChoice::V6_1 => vec![Series::V6_1],
            KernelChoice::V6_12 => vec![Series::V6_12],
            KernelChoice::All => Series::ALL.to_vec(),
        }
    }
}

pub fn run(args: &VmTestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let cache = kernel::cache_dir();
    let mut kernels = Vec::new();
    for series in args.kernel.series() {
        kernels.push(
            kernel::fetch(series, &cache)
                .with_context(|| format!("getting the {} kernel", series.label()))?,
        );
    }

    let binaries = initramfs::build_binaries(&args.tests)?;
    // <target>/debug/guard -> <target>/vm, wherever CARGO_TARGET_DIR points.
    let out_dir = binaries
        .guard
        .ancestors()
        .nth(2)
        .context("guard binary outside a target directory")?
        .join("vm");
    let step = Instant::now();
    let initrd = initramfs::build(&out_dir, &binaries, args.test_timeout)?;
    println!(
        "xtask: vm: initramfs {} ({:.1} MB, {} test binaries: {}) in {:.1}s",
        initrd.path.display(),
        initrd.bytes as f64 / 1e6,
        initrd.tests.len(),
        initrd
            .tests
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        step.elapsed().as_secs_f64()
    );

    // Each guest has one vCPU; booting the kernels side by side halves the
    // tier's wall time on a two-core machine.
    let outcomes: Vec<anyhow::Result<qemu::BootOutcome>> = std::thread::scope(|scope| {
        let boots: Vec<_> = kernels
            .iter()
            .map(|kernel| {
                let log = out_dir.join(format!("console-{}.log", kernel.series.label()));
                println!(
                    "xtask: vm: booting {} under QEMU (TCG; timeout {}s; console log {})",
                    kernel.release,
                    args.timeout,
                    log.display()
                );
                let initrd = &initrd.path;
                scope.spawn(move || {
                    qemu::boot(
                        kernel,
                        initrd,
                        &args.lsm,
                        Duration::from_secs(args.timeout),
                        &log,
                    )
                })
            })
            .collect();
        boots
            .into_iter()
            .map(|boot| boot.join().expect("QEMU runner thread panicked"))
            .collect()
    });

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for (kernel, outcome) in kernels.iter().zip(outcomes) {
        let log = out_dir.join(format!("console-{}.log", kernel.series.label()));
        let outcome = outcome?;
        let verdict = match (&outcome.result, outcome.timed_out) {
            (_, true) => {
                failures.push(format!("{}: timed out", kernel.release));
                "TIMEOUT".to_string()
            }
            (None, false) => {
                failures.push(format!(
                    "{}: the VM stopped without a GUARD-VM-RESULT line (kernel panic or /init died; see {})",
                    kernel.release,
                    log.display()
                ));
                "NO RESULT".to_string()
            }
            (Some(result), false) => {
                if !result.passed {
                    failures.push(format!("{}: {}", kernel.release, result.line));
                }
                result.line.clone()
            }
        };
        summary.push(format!(
            "xtask: vm: {} {:.0}s: {verdict}",
            kernel.series.label(),
            outcome.elapsed.as_secs_f64()
        ));
    }
    for line in &summary {
        println!("{line}");
    }
    println!("xtask: vm: done in {:.0}s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!("VM tier failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_list_cannot_smuggle_kernel_arguments() {
        assert!(parse_lsm_list("lockdown,capability,landlock,bpf").is_ok());
        assert!(parse_lsm_list("bpf init=/bin/sh").is_err());
        assert!(parse_lsm_list("bpf,,yama").is_err());
        assert!(parse_lsm_list("").is_err());
    }
}
