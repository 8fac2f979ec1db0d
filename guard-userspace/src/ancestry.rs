//! A process and its parents, read from /proc: who attempted an action, for
//! the audit log and the approval prompt.

use std::{fs, path::PathBuf};

use serde::{Deserialize, Serialize};

/// One link of the parent chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessLink {
    pub pid: u32,
    pub comm: String,
    /// The command line, lossy; empty for kernel threads or vanished processes.
    pub cmdline: String,
}

/// What /proc says about the process that attempted an action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub uid: Option<u32>,
    pub cwd: Option<PathBuf>,
    /// The process first, then its parent, up to (not including) pid 1.
    pub chain: Vec<ProcessLink>,
}

/// Longest chain followed; a deeper tree is cut (and the cut is visible as a
/// chain that does not end at a child of init).
const MAX_DEPTH: usize = 64;

/// Reads the process, its uid, cwd and ancestors. A process that exits midway
/// yields whatever was read before it went.
pub fn of(pid: u32) -> ProcessInfo {
    let mut info = ProcessInfo {
        uid: uid_of(pid),
        cwd: fs::read_link(format!("/proc/{pid}/cwd")).ok(),
        chain: Vec::new(),
    };
    let mut current = pid;
    while current > 1 && info.chain.len() < MAX_DEPTH {
        let Some((comm, ppid)) = stat_of(current) else {
            break;
        };
        info.chain.push(ProcessLink {
            pid: current,
            comm,
            cmdline: cmdline_of(current),
        });
        current = ppid;
    }
    info
}

fn uid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (comm, ppid) from /proc/PID/stat.
fn stat_of(pid: u32) -> Option<(String, u32)> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// comm may hold spaces and parentheses, so split at the last ')'.
fn parse_stat(stat: &[u8]) -> Option<(String, u32)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = String::from_utf8_lossy(stat.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // Fields after comm: state ppid ...
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

/// Longest command line kept per process. An argv can be megabytes, and every
/// audit record carries the whole chain; the action's own argv is kept whole
/// elsewhere (`Action::Exec`).
const MAX_CMDLINE: usize = 16 * 1024;

fn cmdline_of(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    joined_cmdline(&raw)
}

/// NUL-separated words joined by spaces, lossy, cut after `MAX_CMDLINE`
/// bytes with a note of how many more there were.
fn joined_cmdline(raw: &[u8]) -> String {
    let words: Vec<_> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    let mut line = words.join(" ");
    if line.len() > MAX_CMDLINE {
        let mut end = MAX_CMDLINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let more = line.len() - end;
        line.truncate(end);
        line += &format!("… [{more} more bytes]");
    }
    line
}

/// The cgroup v2 path of a process ("/guard.slice/session-x"), from /proc/PID/cgroup.
pub fn cgroup_of(pid: u32) -> std::io::Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    parse_cgroup_v2(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/cgroup has no cgroup v2 line"),
        )
    })
}

/// The `0::PATH` line (the unified hierarchy) of /proc/PID/cgroup.
fn parse_cgroup_v2(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_joined_and_cut_at_a_character() {
        assert_eq!(joined_cmdline(b"rm\0-rf\0/tmp/x y\0"), "rm -rf /tmp/x y");
        let mut raw = b"sh\0-c\0".to_vec();
        raw.extend("é".repeat(MAX_CMDLINE).as_bytes());
        let line = joined_cmdline(&raw);
        let (kept, note) = line.split_once('…').expect("a cut note");
        assert!(kept.len() <= MAX_CMDLINE && kept.starts_with("sh -c é"));
        assert_eq!(
            note,
            format!(" [{} more bytes]", 6 + 2 * MAX_CMDLINE - kept.len())
        );
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        assert_eq!(
            parse_stat(b"42 (my (odd) prog) S 7 42 42 0 -1"),
            Some(("my (odd) prog".into(), 7))
        );
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn own_chain_starts_with_self() {
        let me = std::process::id();
        let info = of(me);
        assert_eq!(info.chain.first().map(|l| l.pid), Some(me));
        assert!(info.uid.is_some());
        assert!(info.chain.len() >= 2, "a test runs under some parent");
    }

    #[test]
    fn hybrid_cgroup_file() {
        let text = "12:cpu:/user.slice\n0::/guard.slice/session-a\n";
        assert_eq!(
            parse_cgroup_v2(text).as_deref(),
            Some("/guard.slice/session-a")
        );
    }
}
