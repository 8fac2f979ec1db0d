//! Host tier, end to end: `guard session` on a pseudo-terminal left in raw
//! mode (as a full-screen agent leaves it). A watched program is stopped at
//! exec; the prompt takes the terminal, the answers come from the keyboard
//! side of the pty, the termios is restored exactly, and denial tells the
//! program why before it is killed.

use std::{
    ffi::CStr,
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::process::CommandExt as _,
    },
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use guard_tests::{TempDir, guard_bin, require_root, stand_in_terraform};

struct Pty {
    master: File,
    slave: File,
}

fn open_pty() -> (Pty, PathBuf) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: valid out pointers; the rest may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: ptsname of a valid master.
    let name = unsafe { CStr::from_ptr(libc::ptsname(master)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: fresh fds owned here.
    let pty = unsafe {
        Pty {
            master: File::from_raw_fd(master),
            slave: File::from_raw_fd(slave),
        }
    };
    (pty, PathBuf::from(name))
}

fn termios(file: &File) -> libc::termios {
    // SAFETY: plain data filled by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(file.as_raw_fd(), &mut t) }, 0);
    t
}

fn same(a: &libc::termios, b: &libc::termios) -> bool {
    a.c_iflag == b.c_iflag
        && a.c_oflag == b.c_oflag
        && a.c_cflag == b.c_cflag
        && a.c_lflag == b.c_lflag
        && a.c_cc == b.c_cc
}

/// Reads the master until `needle` appears; returns everything read.
fn read_until(master: &mut File, seen: &mut Vec<u8>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let start = seen.len();
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
            let mut buf = [0u8; 4096];
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&seen[start..]).into_owned();
            if text.contains(needle) {
                return text;
            }
        }
    }
    panic!(
        "{needle:?} did not appear within {timeout:?}; terminal shows {:?}",
        String::from_utf8_lossy(seen)
    );
}

/// A session on a raw pty running `argv`, with a stand-in `terraform` in
/// the PATH whose first act is to create `marker`.
struct TtySession {
    /// Removed when the session is dropped.
    _dir: TempDir,
    pty: Pty,
    raw: libc::termios,
    guard: std::process::Child,
    marker: PathBuf,
    seen: Vec<u8>,
}

impl TtySession {
    fn start(tag: &str, argv: &[&str]) -> Self {
        require_root();
        let dir = TempDir::new(tag);
        let marker = stand_in_terraform(&dir);
        std::fs::write(
            dir.join("agent.sh"),
            "terraform destroy -auto-approve; echo status=$?\n",
        )
        .unwrap();

        let (pty, _) = open_pty();
        let mut raw = termios(&pty.slave);
        // SAFETY: valid termios.
        unsafe {
            libc::cfmakeraw(&mut raw);
            assert_eq!(
                libc::tcsetattr(pty.slave.as_raw_fd(), libc::TCSANOW, &raw),
                0
            );
        }
        let raw = termios(&pty.slave);

        let slave_fd = pty.slave.as_raw_fd();
        let mut command = Command::new(guard_bin());
        command
            .current_dir(&dir.path)
            .env("GUARD_SOCKET", dir.join("guard.sock"))
            .env("GUARD_AUDIT_LOG", dir.join("audit.jsonl"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .args([
                "session",
                "--name",
                &format!("{tag}-{}", std::process::id()),
                "--",
            ])
            .args(argv)
            .stdin(pty.slave.try_clone().unwrap())
            .stdout(pty.slave.try_clone().unwrap())
            .stderr(pty.slave.try_clone().unwrap());
        // SAFETY: setsid and ioctl between fork and exec; the pty slave becomes
        // the controlling terminal, as in a login shell.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let guard = command.spawn().unwrap_or_else(|e| panic!("{e}"));
        Self {
            _dir: dir,
            pty,
            raw,
            guard,
            marker,
            seen: Vec::new(),
        }
    }

    fn read_until(&mut self, needle: &str) -> String {
        read_until(
            &mut self.pty.master,
            &mut self.seen,
            needle,
            Duration::from_secs(20),
        )
    }

    fn answer(&mut self, key: &[u8]) {
        self.pty.master.write_all(key).unwrap();
    }

    /// Waits for guard to end; its status and everything the terminal showed.
    fn finish(mut self) -> (i32, String) {
        self.read_until("ended with status");
        let status = self.guard.wait().unwrap();
        assert!(
            same(&termios(&self.pty.slave), &self.raw),
            "termios not restored exactly"
        );
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&self.seen).into_owned(),
        )
    }
}

impl Drop for TtySession {
    fn drop(&mut self) {
        if let Ok(None) = self.guard.try_wait() {
            let _ = self.guard.kill();
            let _ = self.guard.wait();
        }
    }
}

/// A script the agent runs calls `terraform destroy`: stopped at exec, shown
/// at the terminal with its process chain, denied from the keyboard; the
/// program is told why and never runs.
#[test]
fn a_real_session_on_a_raw_terminal_asks_at_the_terminal() {
    let mut s = TtySession::start("session-tty", &["sh", "agent.sh"]);
    let shown = s.read_until("[k]ill");
    assert!(
        shown.contains("bin/terraform destroy -auto-approve"),
        "{shown}"
    );
    assert!(shown.contains("process chain"), "{shown}");
    assert!(!s.marker.exists(), "terraform ran while held");
    s.answer(b"d\n");
    let tail = s.read_until("status=");
    assert!(!s.marker.exists(), "denied terraform must never run");
    let (code, all) = s.finish();
    assert!(
        all.contains("guard: denied"),
        "the program must be told why: {all}"
    );
    assert!(all.contains("status=137"), "{tail}");
    assert_eq!(code, 0, "{all}");
}

/// The agent's own command line `sh -c "terraform destroy ..."` is asked
/// about once; approved, the terraform it starts with those arguments is
/// covered by that approval and runs without a second prompt.
#[test]
fn an_approved_command_line_is_not_asked_again_for_the_program_it_runs() {
    let mut s = TtySession::start(
        "session-tty-cover",
        &[
            "sh",
            "-c",
            "terraform destroy -auto-approve; echo status=$?",
        ],
    );
    let shown = s.read_until("[k]ill");
    assert!(shown.contains("terraform destroy"), "{shown}");
    assert!(!s.marker.exists());
    s.answer(b"a\n");
    s.read_until("status=");
    assert!(s.marker.exists(), "the approved terraform ran");
    let (code, all) = s.finish();
    assert!(all.contains("terraform ran"), "{all}");
    assert!(all.contains("status=0"), "{all}");
    assert_eq!(all.matches("[k]ill").count(), 1, "asked twice: {all}");
    assert_eq!(code, 0, "{all}");
}
