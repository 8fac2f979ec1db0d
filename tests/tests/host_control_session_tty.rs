//! Host tier, end to end: `guard session` on a pseudo-terminal left in raw
//! mode (as a full-screen agent leaves it). A watched program is stopped at
//! exec; the prompt takes the terminal, the answers come from the keyboard
//! side of the pty, the termios is restored exactly, and denial tells the
//! program why before it is killed.

use std::{
    io::Write as _,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    time::Duration,
};

use guard_tests::{
    TempDir, guard_cli, path_with_bin,
    pty::{Pty, same_termios},
    require_root, stand_in_terraform,
};

/// A session on a raw pty running `argv`, with a stand-in `terraform` in
/// the PATH whose first act is to create `marker`.
struct TtySession {
    /// Removed when the session is dropped.
    _dir: TempDir,
    pty: Pty,
    raw: libc::termios,
    guard: std::process::Child,
    marker: PathBuf,
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

        let pty = Pty::open();
        let raw = pty.make_raw();

        let slave_fd = pty.slave.as_raw_fd();
        let mut command = guard_cli(&dir);
        command
            .current_dir(&dir.path)
            .env("PATH", path_with_bin(&dir.path))
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
        }
    }

    fn read_until(&mut self, needle: &str) -> String {
        self.pty.read_until(needle, Duration::from_secs(20))
    }

    fn answer(&mut self, key: &[u8]) {
        self.pty.master.write_all(key).unwrap();
    }

    /// Waits for guard to end; its status and everything the terminal showed.
    fn finish(mut self) -> (i32, String) {
        self.read_until("ended with status");
        let status = self.guard.wait().unwrap();
        assert!(
            same_termios(&self.pty.termios(), &self.raw),
            "termios not restored exactly"
        );
        (status.code().unwrap_or(-1), self.pty.transcript())
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
