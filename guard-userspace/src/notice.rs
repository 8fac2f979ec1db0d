//! Telling the agent why: one line on the offending process's stderr.

use std::{fs::OpenOptions, io::Write as _, os::unix::fs::OpenOptionsExt as _};

use crate::{action::Action, decision::Verdict};

/// The line an agent sees when guard refuses an action.
pub fn denial_line(action: &Action, rule: &str) -> String {
    // One line, whatever the path holds.
    let what = action.to_string().replace(['\n', '\r'], "?");
    format!("guard: denied {what} (rule {rule})\n")
}

/// Writes `guard: denied <what> (rule <id>)` to `pid`'s stderr. Backends call
/// this when they refuse or kill; a stderr that cannot be opened (a socket,
/// a closed fd, a vanished process) is skipped, because the denial stands
/// either way.
pub fn tell_denied(pid: u32, action: &Action, verdict: &Verdict) {
    let line = denial_line(action, &verdict.rule);
    let stderr = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/2"));
    match stderr {
        Ok(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        Err(e) => log::debug!("cannot write the denial to pid {pid}'s stderr: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, path::PathBuf, process::Stdio};

    use super::*;
    use crate::decision::Decision;

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
