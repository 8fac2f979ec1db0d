//! Session policy: which actions are allowed, logged, held for a person, or refused.
//!
//! This is the interface the enforcement backends call. The rule language, the
//! argv classifiers and the default catalog grow behind it (issue: policy
//! language); callers use only `Policy` and its methods.

mod endpoints;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    action::{Action, ActionKind},
    decision::{Decision, Verdict},
};

/// A compiled policy for one session.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Workspace roots: the agent's own tree.
    pub workspaces: Vec<PathBuf>,
    /// Paths (and everything below them) whose change needs a person.
    protected: Vec<PathBuf>,
    /// Program base names whose exec needs a person.
    watched_programs: Vec<String>,
    /// Network endpoints whose connect needs a person.
    protected_endpoints: endpoints::ProtectedEndpoints,
    ask_timeout: Duration,
    timeout_decision: Decision,
}

impl Policy {
    /// The policy compiled into the binary.
    pub fn embedded_default() -> Self {
        Self {
            workspaces: Vec::new(),
            protected: Vec::new(),
            watched_programs: ["terraform", "pulumi", "dropdb"].map(String::from).to_vec(),
            protected_endpoints: Default::default(),
            ask_timeout: Duration::from_secs(300),
            timeout_decision: Decision::Deny,
        }
    }

    /// Adds a workspace root (from `--workspace` or the session's cwd).
    pub fn with_workspace(mut self, root: impl Into<PathBuf>) -> Self {
        self.workspaces.push(root.into());
        self
    }

    /// Adds a protected path prefix.
    pub fn with_protected(mut self, prefix: impl Into<PathBuf>) -> Self {
        self.protected.push(prefix.into());
        self
    }

    /// Adds a protected endpoint (a production database, say).
    pub fn with_protected_endpoint(mut self, addr: SocketAddr) -> Self {
        self.protected_endpoints.add(addr);
        self
    }

    /// How long an ask may wait for a person.
    pub fn ask_timeout(&self) -> Duration {
        self.ask_timeout
    }

    /// What an unanswered ask becomes (deny by default).
    pub fn timeout_decision(&self) -> Decision {
        self.timeout_decision
    }

    /// Decides one action.
    pub fn evaluate(&self, action: &Action) -> Verdict {
        match action {
            Action::Exec { filename, argv, .. } => {
                let name = argv
                    .first()
                    .map(|a| Path::new(a).to_path_buf())
                    .unwrap_or_else(|| filename.clone());
                let base = name
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if self.watched_programs.contains(&base) {
                    return ask("exec.watched", format!("{base} can change infrastructure"));
                }
                allow(action.kind())
            }
            Action::Unlink { path }
            | Action::Rmdir { path }
            | Action::Truncate { path }
            | Action::OpenWrite { path } => self.file_verdict(action.kind(), path),
            Action::Rename { from, to } => {
                let v = self.file_verdict(ActionKind::Rename, from);
                if v.decision.holds() {
                    v
                } else {
                    self.file_verdict(ActionKind::Rename, to)
                }
            }
            Action::Connect { endpoint } => self
                .protected_endpoints
                .verdict(endpoint)
                .unwrap_or_else(|| allow(ActionKind::Connect)),
        }
    }

    fn file_verdict(&self, kind: ActionKind, path: &Path) -> Verdict {
        match self.protected.iter().find(|p| path.starts_with(p)) {
            Some(prefix) => ask(
                "file.protected",
                format!("{} is under protected {}", path.display(), prefix.display()),
            ),
            None => allow(kind),
        }
    }
}

fn allow(kind: ActionKind) -> Verdict {
    let kind = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Verdict {
        decision: Decision::Allow,
        rule: format!("default.{kind}"),
        reason: "no rule matched".into(),
    }
}

fn ask(rule: &str, reason: String) -> Verdict {
    Verdict {
        decision: Decision::Ask,
        rule: rule.into(),
        reason,
    }
}
