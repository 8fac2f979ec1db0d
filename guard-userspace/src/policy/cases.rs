//! Test cases for a policy (`guard policy test FILE CASES.yaml`, and the
//! corpus in tests/corpus/): each case states an action and the expected
//! decision, optionally the rule id.
//!
//! ```yaml
//! workspace: /home/agent/project   # default cwd and workspace root
//! home: /home/agent                # what ~ means
//! cases:
//!   - cmd: terraform destroy -auto-approve   # shell words, or
//!     # exec: [terraform, destroy]           # an argv list
//!     expect: ask
//!     rule: infra.destroy
//!   - unlink: ~/.ssh/id_ed25519
//!     expect: ask
//!   - connect: 10.0.0.5:5432                  # or unix:/run/x.sock
//!     expect: allow
//! ```

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::{Policy, PolicyError, exec::shell, format::DurationText, rate::ManualClock};
use crate::{
    action::{Action, Endpoint},
    decision::Decision,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    #[serde(default)]
    pub home: Option<PathBuf>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    /// A command line in shell words (one simple command).
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub unlink: Option<String>,
    #[serde(default)]
    pub rmdir: Option<String>,
    #[serde(default)]
    pub truncate: Option<String>,
    #[serde(default)]
    pub open_write: Option<String>,
    #[serde(default)]
    pub rename: Option<RenameCase>,
    /// `HOST:PORT` (names match host rules directly) or `unix:/path`.
    #[serde(default)]
    pub connect: Option<String>,
    /// Evaluate the action this many times (rate rules); the last verdict counts.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Move the test clock forward before this case.
    #[serde(default)]
    pub advance: Option<DurationText>,
    pub expect: Decision,
    #[serde(default)]
    pub rule: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameCase {
    pub from: String,
    pub to: String,
}

/// One case's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub index: usize,
    pub name: String,
    pub passed: bool,
    pub expected: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_rule: Option<String>,
    pub decision: Decision,
    pub rule: String,
    pub reason: String,
}

impl CaseFile {
    pub fn parse(source: &str, file: &str) -> Result<Self, PolicyError> {
        serde_norway::from_str(source).map_err(|e| PolicyError::from_yaml(file, source, &e))
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| {
            PolicyError::new(&name, 0, 0, format!("cannot read the cases file: {e}"))
        })?;
        Self::parse(&source, &name)
    }

    /// Runs every case against `policy` (with this file's workspace and home,
    /// and a manual clock for rate rules). A malformed case fails with a message.
    pub fn run(&self, policy: &Policy) -> Vec<CaseResult> {
        let clock = Arc::new(ManualClock::default());
        let mut policy = policy.clone().with_clock(clock.clone());
        if let Some(home) = &self.home {
            policy = policy.with_home(home.clone());
        }
        if let Some(ws) = &self.workspace {
            policy = policy.with_workspace(ws.clone());
        }
        let cwd = self
            .workspace
            .clone()
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")));
        self.cases
            .iter()
            .enumerate()
            .map(|(index, case)| {
                if let Some(d) = case.advance {
                    clock.advance(d.0);
                }
                run_case(&policy, case, index + 1, &cwd)
            })
            .collect()
    }
}

fn run_case(policy: &Policy, case: &Case, index: usize, workspace: &Path) -> CaseResult {
    let cwd = case.cwd.clone().unwrap_or_else(|| workspace.to_path_buf());
    let (name, outcome) = match build(policy, case, &cwd) {
        Ok((name, target)) => {
            let mut verdict = None;
            for _ in 0..case.repeat.unwrap_or(1).max(1) {
                verdict = Some(match &target {
                    Target::Action(action) => policy.evaluate(action),
                    Target::HostName(host, port) => policy.evaluate_connect_name(host, *port),
                });
            }
            (
                name,
                verdict
                    .map(Ok)
                    .unwrap_or_else(|| Err("no verdict".to_string())),
            )
        }
        Err(message) => (case.name.clone().unwrap_or_default(), Err(message)),
    };
    let name = case.name.clone().unwrap_or(name);
    match outcome {
        Ok(v) => CaseResult {
            index,
            passed: v.decision == case.expect && case.rule.as_ref().is_none_or(|r| *r == v.rule),
            name,
            expected: case.expect,
            expected_rule: case.rule.clone(),
            decision: v.decision,
            rule: v.rule,
            reason: v.reason,
        },
        Err(message) => CaseResult {
            index,
            passed: false,
            name,
            expected: case.expect,
            expected_rule: case.rule.clone(),
            decision: Decision::Allow,
            rule: "invalid-case".into(),
            reason: message,
        },
    }
}

enum Target {
    Action(Action),
    HostName(String, u16),
}

fn build(policy: &Policy, case: &Case, cwd: &Path) -> Result<(String, Target), String> {
    let path = |p: &str| -> PathBuf {
        let expanded = if p == "~" || p.starts_with("~/") {
            format!("{}{}", policy.home().display(), &p[1..])
        } else {
            p.to_string()
        };
        super::exec::normalize(&cwd.join(expanded))
    };
    let mut built: Vec<(String, Target)> = Vec::new();
    if let Some(cmd) = &case.cmd {
        let commands = shell::split(cmd).map_err(|e| format!("cmd: {e}"))?;
        let [command] = commands.as_slice() else {
            return Err("cmd: write one command; wrap pipelines in bash -c '...'".into());
        };
        let argv: Vec<OsString> = command.words.iter().map(OsString::from).collect();
        built.push((cmd.clone(), Target::Action(Policy::exec_action(&argv, cwd))));
    }
    if let Some(argv) = &case.exec {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let name = argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        built.push((name, Target::Action(Policy::exec_action(&argv, cwd))));
    }
    for (op, value) in [
        ("unlink", &case.unlink),
        ("rmdir", &case.rmdir),
        ("truncate", &case.truncate),
        ("open_write", &case.open_write),
    ] {
        if let Some(p) = value {
            let path = path(p);
            let action = match op {
                "unlink" => Action::Unlink { path },
                "rmdir" => Action::Rmdir { path },
                "truncate" => Action::Truncate { path },
                _ => Action::OpenWrite { path },
            };
            built.push((action.to_string(), Target::Action(action)));
        }
    }
    if let Some(r) = &case.rename {
        let action = Action::Rename {
            from: path(&r.from),
            to: path(&r.to),
        };
        built.push((action.to_string(), Target::Action(action)));
    }
    if let Some(c) = &case.connect {
        built.push((format!("connect {c}"), parse_connect(c)?));
    }
    match built.len() {
        1 => Ok(built.pop().expect("one element")),
        0 => Err("the case names no action: give cmd, exec, unlink, rmdir, truncate, open_write, rename or connect".into()),
        _ => Err("the case names more than one action: split it into several cases".into()),
    }
}

/// `HOST:PORT`, `[v6]:PORT` or `unix:/path`.
fn parse_connect(text: &str) -> Result<Target, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return Ok(Target::Action(Action::Connect {
            endpoint: Endpoint::Unix { path: path.into() },
        }));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Target::Action(Action::Connect {
            endpoint: Endpoint::Inet { addr },
        }));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("connect {text:?}: write HOST:PORT or unix:/path"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("connect {text:?}: the port must be a number from 1 to 65535"))?;
    Ok(Target::HostName(host.to_string(), port))
}

/// Parses `HOST:PORT` / `unix:PATH` for the CLI.
pub fn connect_target(policy: &Policy, text: &str) -> Result<super::Explanation, String> {
    match parse_connect(text)? {
        Target::Action(action) => Ok(policy.explain(&action)),
        Target::HostName(host, port) => {
            let verdict = policy.evaluate_connect_name(&host, port);
            Ok(super::Explanation {
                action: format!("connect {host}:{port}"),
                grant_key: format!("{}|connect {host}:{port}", verdict.rule),
                verdict,
                classification: None,
                location: None,
            })
        }
    }
}
