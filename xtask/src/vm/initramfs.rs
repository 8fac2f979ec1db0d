//! The VM tier's initramfs: busybox, the guard binary, the VM test binaries and
//! every shared library they load, at the same paths as on the host.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::cpio::{Archive, Entry};

const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("init.sh");

/// A test binary cargo built, by its target name (the file name in tests/tests/).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    pub name: String,
    pub path: PathBuf,
}

/// What went into an initramfs.
#[derive(Debug)]
pub struct Initramfs {
    pub path: PathBuf,
    pub bytes: u64,
    pub tests: Vec<TestBinary>,
}

/// What goes into the initramfs besides busybox.
#[derive(Debug)]
pub struct Binaries {
    pub guard: PathBuf,
    /// Test binaries to run, sorted by name.
    pub tests: Vec<TestBinary>,
    /// guard-tests' own `[[bin]]` programs: copied (tests find them through
    /// CARGO_BIN_EXE_*, an absolute host path) but not run.
    pub helpers: Vec<PathBuf>,
}

/// Builds the guard binary and guard-tests' integration tests, and picks the
/// test binaries whose name starts with one of the comma-separated `prefixes`.
pub fn build_binaries(prefixes: &str) -> anyhow::Result<Binaries> {
    let wanted: Vec<&str> = prefixes
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    println!("xtask: vm: building the guard binary and the integration tests");
    let guard = cargo_executables(&["build", "-p", "guard-userspace", "--bin", "guard"])?
        .into_iter()
        .find(|a| a.name == "guard" && a.is_bin)
        .map(|a| a.path)
        .context("cargo built no guard binary")?;
    let mut tests = Vec::new();
    let mut helpers = Vec::new();
    for artifact in cargo_executables(&["test", "-p", "guard-tests", "--tests", "--no-run"])? {
        if artifact.is_bin {
            helpers.push(artifact.path);
        } else if wanted.iter().any(|p| artifact.name.starts_with(p)) {
            tests.push(TestBinary {
                name: artifact.name,
                path: artifact.path,
            });
        }
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    if tests.is_empty() {
        bail!("no test binary in tests/tests/ starts with any of {prefixes:?}");
    }
    Ok(Binaries {
        guard,
        tests,
        helpers,
    })
}

/// An executable cargo built.
#[derive(Debug, PartialEq, Eq)]
struct Artifact {
    /// The target name: the file name in tests/tests/ or the [[bin]] name.
    name: String,
    /// A `[[bin]]` target rather than a test harness.
    is_bin: bool,
    path: PathBuf,
}

/// Runs cargo with JSON messages and returns every executable it built.
fn cargo_executables(args: &[&str]) -> anyhow::Result<Vec<Artifact>> {
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(crate::test::workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    let mut found = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        if let Some(artifact) = executable_artifact(&line?) {
            found.push(artifact);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(found)
}

/// The executable named by one cargo JSON message, if any.
fn executable_artifact(line: &str) -> Option<Artifact> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let path = PathBuf::from(message["executable"].as_str()?);
    let name = message["target"]["name"].as_str()?.to_string();
    // A test harness has profile.test set; a [[bin]] built for the tests does not.
    let is_bin = message["profile"]["test"] == false
        && message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
    Some(Artifact { name, is_bin, path })
}

/// Writes the initramfs to `<out_dir>/initramfs.cpio`.
pub fn build(
    out_dir: &Path,
    binaries: &Binaries,
    test_timeout_secs: u64,
) -> anyhow::Result<Initramfs> {
    let guard = binaries.guard.as_path();
    let tests = binaries.tests.as_slice();
    let stage = out_dir.join("stripped");
    fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    let mut archive = Archive::default();
    archive.add(
        "/init",
        Entry::Bytes {
            data: INIT.as_bytes().to_vec(),
            mode: 0o755,
        },
    )?;
    // The kernel opens /dev/console for /init's stdio before anything is mounted.
    archive.add("/dev/console", Entry::CharDevice { major: 5, minor: 1 })?;
    for dir in [
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/root",
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
    ] {
        archive.add(dir, Entry::Dir)?;
    }
    for (path, text) in [
        (
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
    ] {
        archive.add(
            path,
            Entry::Bytes {
                data: text.as_bytes().to_vec(),
                mode: 0o644,
            },
        )?;
    }
    if !is_static(Path::new(BUSYBOX))? {
        bail!("{BUSYBOX} is not statically linked: install busybox-static (scripts/setup.sh)");
    }
    archive.add(
        BUSYBOX,
        Entry::File {
            source: BUSYBOX.into(),
            mode: 0o755,
        },
    )?;

    let mut elves: Vec<&Path> = vec![guard];
    elves.extend(tests.iter().map(|t| t.path.as_path()));
    elves.extend(binaries.helpers.iter().map(PathBuf::as_path));
    let mut libraries = BTreeSet::new();
    for elf in &elves {
        archive.add(
            elf,
            Entry::File {
                source: stripped(elf, &stage)?,
                mode: 0o755,
            },
        )?;
        libraries.extend(shared_libraries(elf)?);
    }
    // Libraries go in at the path the loader asks for, as regular files.
    for library in libraries {
        let source = fs::canonicalize(&library)
            .with_context(|| format!("resolving {}", library.display()))?;
        archive.add(
            &library,
            Entry::File {
                source,
                mode: 0o755,
            },
        )?;
    }
    archive.add(
        "/usr/bin/guard",
        Entry::Symlink {
            target: guard.to_str().context("non-UTF-8 guard path")?.to_string(),
        },
    )?;
    let env = format!(
        "export GUARD_BIN='{}'\nGUARD_VM_TEST_TIMEOUT={test_timeout_secs}\n",
        guard.display()
    );
    let mut list = String::new();
    for test in tests {
        list.push_str(&format!("{} {}\n", test.name, test.path.display()));
    }
    for (path, text) in [("/etc/guard-vm/env", env), ("/etc/guard-vm/tests", list)] {
        archive.add(
            path,
            Entry::Bytes {
                data: text.into_bytes(),
                mode: 0o644,
            },
        )?;
    }

    // Uncompressed: the kernel copies it in a blink, while gunzip under TCG
    // emulation costs seconds every boot for a few MB of disk saved.
    let path = out_dir.join("initramfs.cpio");
    let mut file = std::io::BufWriter::new(
        fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    let bytes = archive.write(&mut file)?;
    file.flush()?;
    Ok(Initramfs {
        path,
        bytes,
        tests: tests.to_vec(),
    })
}

/// A copy of `elf` without debug info (tests' DWARF is most of their size),
/// refreshed only when the original is newer.
fn stripped(elf: &Path, stage: &Path) -> anyhow::Result<PathBuf> {
    let name = elf.file_name().context("binary without a file name")?;
    let out = stage.join(name);
    let fresh = match (fs::metadata(&out), fs::metadata(elf)) {
        (Ok(o), Ok(e)) => o.modified()? >= e.modified()?,
        _ => false,
    };
    if !fresh {
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(elf)
            .status()
            .context("running strip (binutils)")?;
        if !status.success() {
            bail!("strip --strip-debug {} failed", elf.display());
        }
    }
    Ok(out)
}

fn is_static(path: &Path) -> anyhow::Result<bool> {
    let output = Command::new("ldd")
        .arg(path)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    Ok(text.contains("not a dynamic executable") || text.contains("statically linked"))
}

/// Every shared library `elf` loads, and the dynamic loader, as ldd names them.
fn shared_libraries(elf: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(elf)
        .output()
        .context("running ldd")?;
    if !output.status.success() {
        bail!(
            "ldd {} failed: {}",
            elf.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_ldd(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("ldd {}", elf.display()))
}

fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
        // "linux-vdso.so.1 (0x...)" (in the kernel, nothing to copy).
        let target = match line.split_once(" => ") {
            Some((name, rest)) => {
                if rest.starts_with("not found") {
                    bail!("shared library {name} not found");
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_is_valid_shell() {
        let mut child = Command::new(BUSYBOX)
            .args(["sh", "-n"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("busybox-static is installed by scripts/setup.sh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(INIT.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "init.sh: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn ldd_output_names_libraries_and_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f01)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn cargo_messages_yield_test_executables() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"vm_lsm","kind":["test"]},"profile":{"test":true},"executable":"/t/debug/deps/vm_lsm-abc"}"#;
        assert_eq!(
            executable_artifact(line),
            Some(Artifact {
                name: "vm_lsm".into(),
                is_bin: false,
                path: PathBuf::from("/t/debug/deps/vm_lsm-abc")
            })
        );
        let helper = r#"{"reason":"compiler-artifact","target":{"name":"victim","kind":["bin"]},"profile":{"test":false},"executable":"/t/debug/victim"}"#;
        assert!(executable_artifact(helper).unwrap().is_bin);
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"guard","kind":["lib"]},"executable":null}"#;
        assert_eq!(executable_artifact(lib), None);
        assert_eq!(executable_artifact("not json"), None);
    }
}
