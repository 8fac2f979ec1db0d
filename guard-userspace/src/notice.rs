//! Telling the agent why: one line on the offending process's stderr.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::OpenOptionsExt as _,
    },
};

use crate::{action::Action, decision::Verdict, pidfd::dup_process_fd};

/// The line an agent sees when guard refuses an action.
pub fn denial_line(action: &Action, rule: &str) -> String {
    // One line, whatever the path holds.
    let what = action.to_string().replace(['\n', '\r'], "?");
    format!("guard: denied {what} (rule {rule})\n")
}

/// Writes `guard: denied <what> (rule <id>)` to `pid`'s stderr. Backends call
/// this when they refuse or kill.
pub fn tell_denied(pid: u32, action: &Action, verdict: &Verdict) {
    tell(pid, &denial_line(action, &verdict.rule));
}

/// Writes one line to `pid`'s stderr without ever blocking guard. A regular
/// file is written through the process's own open file (pidfd_getfd), so its
/// offset moves and the agent's next write cannot overwrite the line; a pipe or
/// terminal is reopened non-blocking and the line dropped if the pipe is full.
/// A socket, closed fd or vanished process gets nothing: the decision stands
/// either way.
pub fn tell(pid: u32, line: &str) {
    // One line, whatever the path in it holds.
    let mut line = line.trim_end_matches('\n').replace(['\n', '\r'], "?");
    line.push('\n');
    let target = match dup_process_fd(pid, 2) {
        Ok(fd) if is_regular_file(&fd) => fd,
        _ => match OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(format!("/proc/{pid}/fd/2"))
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                log::debug!("cannot write to pid {pid}'s stderr: {e}");
                return;
            }
        },
    };
    let _ = File::from(target).write_all(line.as_bytes());
}

fn is_regular_file(fd: &OwnedFd) -> bool {
    // SAFETY: fstat into a zeroed struct on a live fd.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_raw_fd(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, path::PathBuf, process::Stdio};

    use super::*;
    use crate::decision::Decision;

    #[test]
    fn a_file_stderr_keeps_the_line_when_the_process_writes_next() {
        let dir = std::env::temp_dir().join(format!("guard-notice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("agent.log");
        let file = std::fs::File::create(&log).unwrap();
        // The process waits for its stdin to close, then writes after the notice.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read _; echo after >&2"])
            .stdin(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap();
        tell(child.id(), "guard: denied x (rule r)");
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "guard: denied x (rule r)\nafter\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reaches_a_real_process_stderr() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let action = Action::Unlink {
            path: PathBuf::from("/prod/db\nx"),
        };
        let verdict = Verdict {
            decision: Decision::Deny,
            rule: "file.protected".into(),
            reason: "r".into(),
        };
        tell_denied(child.id(), &action, &verdict);
        child.kill().unwrap();
        child.wait().unwrap();
        let mut text = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(
            text,
            "guard: denied unlink /prod/db?x (rule file.protected)\n"
        );
    }
}
