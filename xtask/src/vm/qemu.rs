//! Booting a kernel with the initramfs under QEMU (TCG), streaming its console
//! and reading the one result line /init prints.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::kernel::Kernel;

/// The LSM list the VM boots with: bpf explicitly active (Debian's default list
/// also ends in bpf, but must not be relied on).
pub const DEFAULT_LSM: &str = "lockdown,capability,landlock,bpf";

/// The kernel command line. panic=-1 with -no-reboot turns a panic into QEMU
/// exiting instead of a hang.
pub fn kernel_command_line(lsm: &str) -> String {
    format!("console=ttyS0 lsm={lsm} panic=-1 quiet")
}

/// How one boot ended.
#[derive(Debug)]
pub struct BootOutcome {
    pub result: Option<VmResult>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// The `GUARD-VM-RESULT status=... kernel=... key=value...` line /init prints last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmResult {
    pub passed: bool,
    pub line: String,
}

pub fn parse_result(line: &str) -> Option<VmResult> {
    let rest = line.trim().strip_prefix("GUARD-VM-RESULT ")?;
    let status = rest
        .split_whitespace()
        .find_map(|field| field.strip_prefix("status="))?;
    Some(VmResult {
        passed: status == "pass",
        line: rest.to_string(),
    })
}

/// Boots `kernel` with `initrd`, prefixing console lines with `[vm <series>]`
/// and copying them to `log`. QEMU is killed after `timeout`.
pub fn boot(
    kernel: &Kernel,
    initrd: &Path,
    lsm: &str,
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<BootOutcome> {
    let mut child = Command::new("qemu-system-x86_64")
        // KVM could not boot guests on the development machines; TCG always can.
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "1"])
        // No NIC: the tests use loopback and namespaces, and iPXE's ROM slows boot.
        .args([
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(kernel_command_line(lsm))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (install qemu-system-x86: scripts/setup.sh)")?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx_err = tx.clone();
    let readers = [
        std::thread::spawn(move || forward_lines(stdout, &tx)),
        std::thread::spawn(move || forward_lines(stderr, &tx_err)),
    ];

    let mut log_file =
        fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let prefix = format!("[vm {}]", kernel.series.label());
    let mut result = None;
    let mut timed_out = false;
    let deadline = start + timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                println!("{prefix} {line}");
                writeln!(log_file, "{line}")?;
                if let Some(parsed) = parse_result(&line) {
                    result = Some(parsed);
                }
            }
            // Both pipes closed: QEMU has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            timed_out = true;
            println!(
                "{prefix} xtask: TIMEOUT after {}s: killing QEMU",
                timeout.as_secs()
            );
            writeln!(log_file, "xtask: TIMEOUT after {}s", timeout.as_secs())?;
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    for reader in readers {
        let _ = reader.join();
    }
    // Lines that arrived between the kill and the pipes closing.
    for line in rx.try_iter() {
        println!("{prefix} {line}");
        writeln!(log_file, "{line}")?;
        if result.is_none() {
            result = parse_result(&line);
        }
    }
    if !timed_out && !status.success() {
        bail!("QEMU failed ({status}); console log in {}", log.display());
    }
    Ok(BootOutcome {
        result,
        elapsed: start.elapsed(),
        timed_out,
    })
}

/// Sends each console line, cleaned of terminal escapes, until the pipe closes.
fn forward_lines(pipe: impl std::io::Read, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut buf) {
        if n == 0 {
            break;
        }
        let line = clean(&buf);
        buf.clear();
        if !line.is_empty() && tx.send(line).is_err() {
            break;
        }
    }
}

/// Drops ANSI escape sequences (SeaBIOS clears the screen) and control bytes.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(@..~); other escapes: ESC + one char.
            if chars.next_if_eq(&'[').is_some() {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_is_parsed_and_anything_else_is_not() {
        let pass = parse_result(
            "GUARD-VM-RESULT status=pass kernel=6.1.0-56-cloud-amd64 passed=2 failed=0\r",
        )
        .unwrap();
        assert!(pass.passed);
        let fail = parse_result(
            "GUARD-VM-RESULT status=fail kernel=6.12.117 passed=1 failed=1 failed_tests=vm_lsm",
        )
        .unwrap();
        assert!(!fail.passed);
        assert!(fail.line.contains("failed_tests=vm_lsm"));
        assert_eq!(parse_result("test result: ok. 1 passed"), None);
        assert_eq!(parse_result("echo GUARD-VM-RESULT status=pass"), None);
        assert!(!parse_result("GUARD-VM-RESULT kernel=x").is_some_and(|r| r.passed));
    }

    #[test]
    fn console_escapes_are_removed() {
        assert_eq!(
            clean(b"Booting from ROM..\x1bc\x1b[?7l\x1b[2JLSM: bpf\r\n"),
            "Booting from ROM..LSM: bpf"
        );
    }
}
