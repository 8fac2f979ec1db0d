//! The audit log: one JSON line per decision, appended and fsync'd.
//!
//! Opened O_APPEND so concurrent writers never interleave inside a line and
//! nothing earlier is rewritten; a path that cannot be opened fails at start.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{
    action::Action,
    ancestry::{self, ProcessLink},
    decision::Decision,
    holds::{Hold, HoldId, HoldRequest, Outcome, Resolution},
};

/// Where the audit log goes unless `--audit-log` or GUARD_AUDIT_LOG says otherwise.
pub const DEFAULT_PATH: &str = "/var/log/guard/audit.jsonl";

/// The audit log path: the flag, else GUARD_AUDIT_LOG, else the default.
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("GUARD_AUDIT_LOG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// One decision, as written to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub session: String,
    pub pid: u32,
    pub uid: Option<u32>,
    /// The process first, then its parents.
    pub ancestry: Vec<ProcessLink>,
    pub action: Action,
    /// The action in one line for people (`rm -rf /x`, `unlink /x`).
    pub what: String,
    pub rule: String,
    pub reason: String,
    /// What the policy said (ask, deny, ...).
    pub policy_decision: Decision,
    /// What happened in the end: allow, log, deny, kill.
    pub decision: Decision,
    /// `held` when a hold opens; then how it ended (approved, denied,
    /// killed, timed_out); absent for decisions made without a hold.
    pub outcome: Option<String>,
    pub approver: Option<String>,
    pub hold: Option<HoldId>,
    /// How long the action was held, in milliseconds.
    pub wait_ms: u64,
    pub backend: String,
    /// A standing grant let it through without asking.
    pub by_grant: bool,
}

impl AuditRecord {
    fn base(request: &HoldRequest) -> Self {
        let process = ancestry::of(request.pid);
        Self {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            session: request.session.clone(),
            pid: request.pid,
            uid: process.uid,
            ancestry: process.chain,
            action: request.action.clone(),
            what: request.action.to_string(),
            rule: request.verdict.rule.clone(),
            reason: request.verdict.reason.clone(),
            policy_decision: request.verdict.decision,
            decision: request.verdict.decision,
            outcome: None,
            approver: None,
            hold: None,
            wait_ms: 0,
            backend: request.backend.to_owned(),
            by_grant: false,
        }
    }

    /// A decision applied without a hold.
    pub fn reported(request: &HoldRequest) -> Self {
        Self::base(request)
    }

    /// A hold opened: the action is stopped and waits for a person. Its end
    /// is a second record with the same `hold`.
    pub fn opened(hold: &Hold) -> Self {
        let mut record = Self::base(&hold.request);
        record.outcome = Some("held".into());
        record.hold = Some(hold.id);
        record
    }

    /// The end of an ask.
    pub fn closed(outcome: &Outcome) -> Self {
        let mut record = Self::base(&outcome.hold.request);
        let (decision, name, approver) = match &outcome.resolution {
            Resolution::Approved { approver, .. } => {
                (Decision::Allow, "approved", Some(approver.clone()))
            }
            Resolution::Denied { approver } => (Decision::Deny, "denied", Some(approver.clone())),
            Resolution::Killed { approver } => (Decision::Kill, "killed", Some(approver.clone())),
            Resolution::TimedOut { decision } => (*decision, "timed_out", None),
        };
        record.decision = decision;
        record.outcome = Some(name.to_owned());
        record.approver = approver;
        record.hold = (outcome.hold.id != 0).then_some(outcome.hold.id);
        record.wait_ms = outcome.waited.as_millis().try_into().unwrap_or(u64::MAX);
        record.by_grant = outcome.by_grant;
        record
    }
}

/// The open log file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating) the log for appending; fails now, not at the first decision.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the directory {} for the audit log {}: choose a writable \
                     path with --audit-log or GUARD_AUDIT_LOG",
                    dir.display(),
                    path.display()
                )
            })?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open the audit log {} for appending: choose a writable path with \
                     --audit-log or GUARD_AUDIT_LOG",
                    path.display()
                )
            })?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as one write, then fsyncs.
    pub fn append(&self, record: &AuditRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record).context("serialising an audit record")?;
        line.push(b'\n');
        let mut file = self.file.lock().expect("audit log poisoned");
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing the audit log {}", self.path.display()))
    }
}

/// Reads every record of a log (tests and `guard events` on a stopped daemon).
pub fn read(path: &Path) -> anyhow::Result<Vec<AuditRecord>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not an audit record", path.display(), n + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use super::*;
    use crate::{decision::Verdict, holds::GrantScope};

    fn outcome() -> Outcome {
        Outcome {
            hold: Hold {
                id: 7,
                request: HoldRequest {
                    session: "s".into(),
                    pid: std::process::id(),
                    action: Action::Unlink {
                        path: PathBuf::from("/prod/db"),
                    },
                    verdict: Verdict {
                        decision: Decision::Ask,
                        rule: "file.protected".into(),
                        reason: "protected".into(),
                    },
                    backend: "seccomp",
                },
                since: SystemTime::now(),
            },
            resolution: Resolution::Approved {
                approver: "alice".into(),
                scope: GrantScope::Once,
            },
            waited: Duration::from_millis(1500),
            by_grant: false,
        }
    }

    #[test]
    fn appends_records_that_read_back() {
        let dir = std::env::temp_dir().join(format!("guard-audit-{}", std::process::id()));
        let path = dir.join("nested/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(&AuditRecord::closed(&outcome())).unwrap();
        drop(log);
        // Reopening appends; it never truncates.
        let log = AuditLog::open(&path).unwrap();
        log.append(&AuditRecord::closed(&outcome())).unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 2);
        let r = &records[1];
        assert_eq!(r.decision, Decision::Allow);
        assert_eq!(r.outcome.as_deref(), Some("approved"));
        assert_eq!(r.approver.as_deref(), Some("alice"));
        assert_eq!(r.wait_ms, 1500);
        assert_eq!(r.hold, Some(7));
        assert_eq!(r.ancestry[0].pid, std::process::id());
        assert!(r.time.ends_with('Z'), "{}", r.time);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn unwritable_path_fails_at_open_with_advice() {
        let err = AuditLog::open(Path::new("/proc/guard-audit.jsonl"))
            .err()
            .expect("opening under /proc must fail");
        assert!(format!("{err:#}").contains("--audit-log"), "{err:#}");
    }
}
