//! `cargo xtask bench`: what the seccomp backend costs, as ratios against no
//! guard in the same run, next to `strace -f` as the naive alternative.
//!
//! Loops run in `syscall_loops` (tests/src/bin), which times the calls itself;
//! `rm -rf` of a 20,000-file tree inside the workspace is timed wall-clock.
//! Figures are printed, never asserted: the machines are shared.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::test::workspace_root;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Calls per loop.
    #[arg(long, default_value_t = 20_000)]
    pub calls: u64,
    /// Files in the `rm -rf` tree.
    #[arg(long, default_value_t = 20_000)]
    pub files: u64,
    /// Runs per figure; the median is printed.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the `strace -f` column.
    #[arg(long)]
    pub no_strace: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare,
    Seccomp,
    Strace,
}

struct Tools {
    loops: PathBuf,
    run: PathBuf,
    scratch: PathBuf,
    workspace: PathBuf,
}

impl Tools {
    /// argv for `program args` under `mode`.
    fn wrap(&self, mode: Mode, argv: &[&str]) -> Command {
        let mut c = match mode {
            Mode::Bare => Command::new(argv[0]),
            Mode::Seccomp => {
                let mut c = Command::new(&self.run);
                // A protected path elsewhere: every call is still decoded and
                // evaluated by policy, then performed by the supervisor.
                // The tree lives in the workspace's build directory (target/),
                // where the default policy lets mass deletion through.
                c.arg("--workspace")
                    .arg(&self.workspace)
                    .arg("--protect")
                    .arg(self.scratch.join("protected"))
                    .arg("--deny-holds")
                    .arg("--")
                    .arg(argv[0]);
                c
            }
            Mode::Strace => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "-o", "/dev/null", argv[0]]);
                c
            }
        };
        c.args(&argv[1..]);
        c
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    println!("xtask: bench: building guard's test helpers (release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "guard-tests", "--bins"])
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the bench helpers failed");
    }
    let bin = root.join("target/release");
    let scratch = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("loop")).context("creating target/bench")?;
    let tools = Tools {
        loops: bin.join("syscall_loops"),
        run: bin.join("guard_seccomp_run"),
        scratch: scratch.clone(),
        workspace: root.clone(),
    };
    let strace = !args.no_strace && which("strace");
    if !args.no_strace && !strace {
        println!(
            "xtask: bench: strace not found; the strace column is skipped (apt-get install strace)"
        );
    }
    let modes: Vec<Mode> = if strace {
        vec![Mode::Bare, Mode::Seccomp, Mode::Strace]
    } else {
        vec![Mode::Bare, Mode::Seccomp]
    };

    let listener = listen_deep("127.0.0.1:0".parse()?).context("binding the connect target")?;
    let target = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let file = scratch.join("loop/read-me");
    std::fs::write(&file, b"bench")?;
    let n = args.calls.to_string();
    // Opens are cheap: more of them for a stable figure.
    let n_open = (args.calls * 10).to_string();
    let loop_dir = scratch.join("loop").display().to_string();
    let file_s = file.display().to_string();
    let loops = tools.loops.display().to_string();

    println!(
        "xtask: bench: {} calls per loop, {} files for rm -rf, median of {} runs; kernel {}",
        args.calls,
        args.files,
        args.runs,
        kernel()
    );
    let header = if strace {
        format!(
            "{:<28} {:>12} {:>20} {:>20}",
            "", "no guard", "guard (seccomp)", "strace -f"
        )
    } else {
        format!("{:<28} {:>12} {:>20}", "", "no guard", "guard (seccomp)")
    };
    println!("{header}");
    let cases: [(&str, Vec<&str>); 4] = [
        ("unlink (ns/call)", vec![&loops, "unlink", &n, &loop_dir]),
        (
            "open O_RDONLY (ns/call)",
            vec![&loops, "open", &n_open, &file_s],
        ),
        (
            "open O_TRUNC (ns/call)",
            vec![&loops, "open-trunc", &n, &file_s],
        ),
        ("connect (ns/call)", vec![&loops, "connect", &n, &target]),
    ];
    // The modes take turns within each run, so a burst of load on this
    // shared machine lands on all of them rather than skewing one column.
    for (name, argv) in &cases {
        let figures = interleaved(&modes, args.runs, |mode| loop_ns(&tools, mode, argv))?;
        print_row(name, &figures, "ns");
    }
    let tree = scratch.join("tree");
    let figures = interleaved(&modes, args.runs, |mode| {
        make_tree(&tree, args.files)?;
        let tree_s = tree.display().to_string();
        let mut c = tools.wrap(mode, &["/bin/rm", "-rf", &tree_s]);
        c.stderr(Stdio::null());
        let t = Instant::now();
        let status = c.status().context("running rm -rf")?;
        let elapsed = t.elapsed();
        if !status.success() || tree.exists() {
            bail!("rm -rf under {} failed ({status})", mode_name(mode));
        }
        Ok(elapsed.as_secs_f64() * 1e3)
    })?;
    print_row(&format!("rm -rf {} files (ms)", args.files), &figures, "ms");
    println!(
        "xtask: bench: ratios are against `no guard` in this run; O_RDONLY opens never leave the \
         kernel under guard (the filter tests O_TRUNC in BPF)"
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn loop_ns(tools: &Tools, mode: Mode, argv: &[&str]) -> anyhow::Result<f64> {
    let out = tools
        .wrap(mode, argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {argv:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{argv:?} under {} failed: {text}{}",
            mode_name(mode),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "<what> <n> calls <ns> ns/call"
    text.split_whitespace()
        .rev()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected loop output {text:?}"))
}

/// A listener with a deep accept queue: std's backlog of 128 overflows in a
/// tight connect loop, and each dropped SYN costs the client a 1 s retransmit.
fn listen_deep(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    use std::os::fd::FromRawFd as _;
    let std::net::SocketAddr::V4(v4) = addr else {
        bail!("IPv4 only");
    };
    // SAFETY: plain socket calls; the fd is owned by the returned listener.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&raw const sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
            || libc::listen(fd, 4096) != 0
        {
            bail!("bind/listen: {}", std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

fn print_row(name: &str, figures: &[f64], unit: &str) {
    let base = figures[0];
    let mut row = format!("{name:<28} {:>9.0} {unit}", base);
    for f in &figures[1..] {
        let cell = format!("{f:.0} {unit} ({:.2}x)", f / base);
        row.push_str(&format!(" {cell:>20}"));
    }
    println!("{row}");
}

/// `runs` samples of `measure` per mode, the modes taking turns; the
/// median per mode, in the order of `modes`.
fn interleaved(
    modes: &[Mode],
    runs: usize,
    mut measure: impl FnMut(Mode) -> anyhow::Result<f64>,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = vec![Vec::with_capacity(runs); modes.len()];
    for _ in 0..runs {
        for (i, &mode) in modes.iter().enumerate() {
            samples[i].push(measure(mode)?);
        }
    }
    Ok(samples.into_iter().map(median).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `files` empty files in directories of 1,000.
fn make_tree(tree: &Path, files: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(tree);
    for i in 0..files {
        let dir = tree.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(dir.join(format!("f{i}")), b"")?;
    }
    // Let writeback settle so the timed rm does not race the flusher.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Bare => "no guard",
        Mode::Seccomp => "guard (seccomp)",
        Mode::Strace => "strace -f",
    }
}

fn which(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
