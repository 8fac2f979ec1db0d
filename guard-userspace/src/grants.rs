//! Grants: approvals that outlive the hold they answered.
//!
//! A grant is keyed by what was approved (session, action kind, object), never
//! by pid, so `--for session` lets the same action through later while a
//! different path or argv still asks. Every grant has an expiry: a one-shot
//! grant lives a few seconds and is consumed by its first use, a session grant
//! ends with the session, a timed grant at its deadline.

use std::{
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    action::{Action, ActionKind, Endpoint},
    holds::GrantScope,
};

/// How long an unused one-shot grant stays valid (the LSM restart path uses it
/// within milliseconds of the approval).
pub const ONCE_TTL: Duration = Duration::from_secs(30);

/// What an approval covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantKey {
    pub session: String,
    pub kind: ActionKind,
    /// The object: a path, `from -> to`, an endpoint, or the exact argv
    /// (NUL-separated, so `rm a b` and `rm "a b"` differ).
    pub object: String,
}

impl GrantKey {
    pub fn of(session: &str, action: &Action) -> Self {
        let object = match action {
            Action::Exec { argv, filename, .. } => {
                let mut words = vec![filename.to_string_lossy().into_owned()];
                words.extend(argv.iter().map(|a| a.to_string_lossy().into_owned()));
                words.join("\0")
            }
            Action::Unlink { path }
            | Action::Rmdir { path }
            | Action::Truncate { path }
            | Action::OpenWrite { path } => path.to_string_lossy().into_owned(),
            Action::Rename { from, to } => {
                format!("{}\0{}", from.to_string_lossy(), to.to_string_lossy())
            }
            Action::Connect {
                endpoint: Endpoint::Inet { addr },
            } => addr.to_string(),
            Action::Connect {
                endpoint: Endpoint::Unix { path },
            } => format!("unix:{}", path.to_string_lossy()),
        };
        Self {
            session: session.to_owned(),
            kind: action.kind(),
            object,
        }
    }
}

/// One standing approval, as listed by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub key: GrantKey,
    pub scope: GrantScope,
    pub approver: String,
    pub granted_at: SystemTime,
    /// None: until the session ends.
    pub expires_at: Option<SystemTime>,
}

struct Entry {
    grant: Grant,
    deadline: Option<Instant>,
}

/// The grants of one controller.
#[derive(Default)]
pub struct GrantTable {
    entries: Mutex<Vec<Entry>>,
}

impl GrantTable {
    /// Records an approval for later repeats of the same action.
    pub fn add(&self, key: GrantKey, scope: GrantScope, approver: &str) {
        let ttl = match scope {
            GrantScope::Once => Some(ONCE_TTL),
            GrantScope::Session => None,
            GrantScope::For(d) => Some(d),
        };
        let now = SystemTime::now();
        let entry = Entry {
            grant: Grant {
                key,
                scope,
                approver: approver.to_owned(),
                granted_at: now,
                expires_at: ttl.map(|d| now + d),
            },
            deadline: ttl.map(|d| Instant::now() + d),
        };
        let mut entries = self.entries.lock().expect("grant table poisoned");
        entries.retain(|e| e.grant.key != entry.grant.key || e.grant.scope == GrantScope::Once);
        entries.push(entry);
    }

    /// The live grant covering `key`, if any; a one-shot grant is consumed.
    pub fn take(&self, key: &GrantKey) -> Option<Grant> {
        let mut entries = self.entries.lock().expect("grant table poisoned");
        let now = Instant::now();
        entries.retain(|e| e.deadline.is_none_or(|d| d > now));
        let index = entries.iter().position(|e| &e.grant.key == key)?;
        if entries[index].grant.scope == GrantScope::Once {
            return Some(entries.remove(index).grant);
        }
        Some(entries[index].grant.clone())
    }

    /// Drops every grant of a session that ended.
    pub fn end_session(&self, session: &str) {
        self.entries
            .lock()
            .expect("grant table poisoned")
            .retain(|e| e.grant.key.session != session);
    }

    /// Live grants, oldest first.
    pub fn list(&self) -> Vec<Grant> {
        let now = Instant::now();
        self.entries
            .lock()
            .expect("grant table poisoned")
            .iter()
            .filter(|e| e.deadline.is_none_or(|d| d > now))
            .map(|e| e.grant.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{ffi::OsString, path::PathBuf};

    use super::*;

    fn rm(path: &str) -> Action {
        Action::Unlink {
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn session_grant_covers_the_same_object_only() {
        let table = GrantTable::default();
        table.add(GrantKey::of("s", &rm("/a")), GrantScope::Session, "alice");
        assert!(table.take(&GrantKey::of("s", &rm("/a"))).is_some());
        assert!(
            table.take(&GrantKey::of("s", &rm("/a"))).is_some(),
            "a session grant is not consumed"
        );
        assert!(table.take(&GrantKey::of("s", &rm("/b"))).is_none());
        assert!(table.take(&GrantKey::of("other", &rm("/a"))).is_none());
        let rmdir = Action::Rmdir {
            path: PathBuf::from("/a"),
        };
        assert!(table.take(&GrantKey::of("s", &rmdir)).is_none());
        table.end_session("s");
        assert!(table.take(&GrantKey::of("s", &rm("/a"))).is_none());
    }

    #[test]
    fn once_grant_is_consumed_and_timed_grant_expires() {
        let table = GrantTable::default();
        table.add(GrantKey::of("s", &rm("/a")), GrantScope::Once, "alice");
        assert!(table.take(&GrantKey::of("s", &rm("/a"))).is_some());
        assert!(table.take(&GrantKey::of("s", &rm("/a"))).is_none());
        table.add(
            GrantKey::of("s", &rm("/b")),
            GrantScope::For(Duration::from_millis(30)),
            "alice",
        );
        assert!(table.take(&GrantKey::of("s", &rm("/b"))).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(table.take(&GrantKey::of("s", &rm("/b"))).is_none());
        assert!(table.list().is_empty());
    }

    #[test]
    fn argv_boundaries_matter() {
        let exec = |argv: &[&str]| Action::Exec {
            filename: PathBuf::from("/bin/rm"),
            argv: argv.iter().map(OsString::from).collect(),
            cwd: PathBuf::from("/"),
        };
        assert_ne!(
            GrantKey::of("s", &exec(&["rm", "a b"])),
            GrantKey::of("s", &exec(&["rm", "a", "b"]))
        );
    }
}
