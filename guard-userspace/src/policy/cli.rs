//! `guard policy lint|test|explain|classes|tables`.
//!
//! Exit codes (for scripts): lint 0 valid, 1 invalid; test 0 all cases pass,
//! 1 a case failed, 2 the policy or cases file is invalid; explain 0 allow or
//! log, 3 ask or freeze, 4 deny or kill, 1 the policy is invalid, 2 bad usage.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use std::io::Write;

use clap::{Args, Subcommand};

use super::{Policy, PolicyError, cases::CaseFile, exec::Class};
use crate::{action::Action, decision::Decision};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file; errors name file:line:column and the fix.
    #[command(after_help = "Exit status: 0 valid, 1 invalid.")]
    Lint {
        file: PathBuf,
        /// Also list the rule ids in evaluation order.
        #[arg(long)]
        rules: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run a cases file (each case: an action and the expected decision).
    #[command(
        after_help = "Exit status: 0 every case passed, 1 a case failed, 2 invalid policy or cases file."
    )]
    Test {
        file: PathBuf,
        cases: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Say which decision, rule and reason a policy gives one action.
    #[command(
        after_help = "Exit status: 0 allow or log, 3 ask or freeze, 4 deny or kill, 1 invalid policy, 2 bad usage."
    )]
    Explain(ExplainArgs),
    /// List the exec classifier classes rules can name.
    Classes {
        #[arg(long)]
        json: bool,
    },
    /// Print the kernel tables the policy compiles to (JSON).
    Tables {
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        workspace: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy file (default: the one compiled into guard).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Workspace root (default: the current directory).
    #[arg(long)]
    pub workspace: Vec<PathBuf>,
    /// Directory the command runs in (default: the first workspace).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// What `~` means (default: $HOME).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Explain deleting this file (as the file hooks report it).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["rmdir", "truncate", "connect", "argv"])]
    pub unlink: Option<PathBuf>,
    /// Explain removing this directory.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["truncate", "connect", "argv"])]
    pub rmdir: Option<PathBuf>,
    /// Explain truncating this file.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["connect", "argv"])]
    pub truncate: Option<PathBuf>,
    /// Explain a connect: HOST:PORT, [V6]:PORT or unix:/path.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "argv")]
    pub connect: Option<String>,
    /// Print one JSON object (verdict, classification, grant key).
    #[arg(long)]
    pub json: bool,
    /// The command, after `--`.
    #[arg(last = true, value_name = "ARGV")]
    pub argv: Vec<OsString>,
}

/// Runs a policy subcommand on the process's stdout/stderr; returns the exit code.
pub fn run(command: PolicyCommand) -> i32 {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    run_with(command, &mut out, &mut err)
}

/// Runs a policy subcommand writing to `out` and `err` (tests capture these).
pub fn run_with(command: PolicyCommand, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match command {
        PolicyCommand::Lint { file, rules, json } => lint(&file, rules, json, out, err),
        PolicyCommand::Test { file, cases, json } => test(&file, &cases, json, out, err),
        PolicyCommand::Explain(args) => explain(&args, out, err),
        PolicyCommand::Classes { json } => {
            if json {
                let list: Vec<_> = Class::ALL
                    .iter()
                    .map(|c| serde_json::json!({"class": c.as_str(), "meaning": c.describe()}))
                    .collect();
                let _ = writeln!(out, "{}", serde_json::Value::Array(list));
            } else {
                for c in Class::ALL {
                    let _ = writeln!(out, "{:<26} {}", c.as_str(), c.describe());
                }
            }
            0
        }
        PolicyCommand::Tables { policy, workspace } => {
            let mut p = match load(policy.as_ref()) {
                Ok(p) => p,
                Err(e) => return report_error(&e, true, 1, out, err),
            };
            for w in workspace {
                p = p.with_workspace(w);
            }
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&p.kernel_tables()).unwrap_or_default()
            );
            0
        }
    }
}

fn load(file: Option<&PathBuf>) -> Result<Policy, PolicyError> {
    match file {
        Some(f) => Policy::load(f),
        None => Ok(Policy::embedded_default()),
    }
}

fn report_error(
    e: &PolicyError,
    json: bool,
    code: i32,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"ok": false, "error": e, "text": e.to_string()})
        );
    } else {
        let _ = writeln!(err, "{e}");
    }
    code
}

fn lint(file: &Path, rules: bool, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match Policy::load(file) {
        Ok(policy) => {
            let ids = policy.rule_ids();
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"ok": true, "file": file.display().to_string(), "rules": ids})
                );
            } else {
                let _ = writeln!(out, "{}: ok ({} rules)", file.display(), ids.len());
                if rules {
                    for id in ids {
                        let _ = writeln!(out, "  {id}");
                    }
                }
            }
            0
        }
        Err(e) => report_error(&e, json, 1, out, err),
    }
}

fn test(file: &Path, cases: &Path, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let policy = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => return report_error(&e, json, 2, out, err),
    };
    let case_file = match CaseFile::load(cases) {
        Ok(c) => c,
        Err(e) => return report_error(&e, json, 2, out, err),
    };
    let results = case_file.run(&policy);
    let failed = results.iter().filter(|r| !r.passed).count();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"passed": results.len() - failed, "failed": failed, "cases": results})
        );
    } else {
        for r in results.iter().filter(|r| !r.passed) {
            let expected_rule = r
                .expected_rule
                .as_ref()
                .map(|rule| format!(" by {rule}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "FAIL case {} ({}): expected {}{expected_rule}, got {} by {}: {}",
                r.index, r.name, r.expected, r.decision, r.rule, r.reason
            );
        }
        let _ = writeln!(out, "{} passed, {} failed", results.len() - failed, failed);
    }
    i32::from(failed > 0)
}

fn explain(args: &ExplainArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut policy = match load(args.policy.as_ref()) {
        Ok(p) => p,
        Err(e) => return report_error(&e, args.json, 1, out, err),
    };
    if let Some(home) = &args.home {
        policy = policy.with_home(home.clone());
    }
    let current = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let workspaces = if args.workspace.is_empty() {
        vec![current.clone()]
    } else {
        args.workspace.clone()
    };
    for w in &workspaces {
        policy = policy.with_workspace(w.clone());
    }
    let cwd = args
        .cwd
        .clone()
        .or_else(|| policy.workspaces.first().cloned())
        .unwrap_or(current.clone());
    let absolute = |p: &PathBuf| super::exec::normalize(&current.join(p));
    let explanation = if let Some(p) = &args.unlink {
        policy.explain(&Action::Unlink { path: absolute(p) })
    } else if let Some(p) = &args.rmdir {
        policy.explain(&Action::Rmdir { path: absolute(p) })
    } else if let Some(p) = &args.truncate {
        policy.explain(&Action::Truncate { path: absolute(p) })
    } else if let Some(c) = &args.connect {
        match super::cases::connect_target(&policy, c) {
            Ok(e) => e,
            Err(message) => {
                let _ = writeln!(err, "guard policy explain: {message}");
                return 2;
            }
        }
    } else if !args.argv.is_empty() {
        policy.explain(&Policy::exec_action(&args.argv, &cwd))
    } else {
        let _ = writeln!(
            err,
            "guard policy explain: name an action: -- ARGV..., --unlink PATH, --rmdir PATH, --truncate PATH or --connect HOST:PORT"
        );
        return 2;
    };
    if args.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&explanation).unwrap_or_default()
        );
    } else {
        let v = &explanation.verdict;
        let _ = writeln!(out, "action:   {}", explanation.action);
        let _ = writeln!(out, "decision: {}", v.decision);
        let _ = writeln!(out, "rule:     {}", v.rule);
        let _ = writeln!(out, "why:      {}", v.reason);
        if let Some(location) = explanation.location {
            let _ = writeln!(
                out,
                "where:    {}",
                serde_json::to_value(location)
                    .ok()
                    .and_then(|l| l.as_str().map(String::from))
                    .unwrap_or_default()
            );
        }
        if let Some(c) = &explanation.classification {
            for f in &c.findings {
                let via = if f.via.is_empty() {
                    String::new()
                } else {
                    format!(" (via {})", f.via.join(" → "))
                };
                let _ = writeln!(out, "found:    {:<24} {}{via}", f.class.as_str(), f.detail);
            }
        }
    }
    exit_code(explanation.verdict.decision)
}

/// 0 allow/log, 3 ask/freeze, 4 deny/kill.
pub fn exit_code(decision: Decision) -> i32 {
    match decision {
        Decision::Allow | Decision::Log => 0,
        Decision::Ask | Decision::Freeze => 3,
        Decision::Deny | Decision::Kill => 4,
    }
}
