//! From the YAML file to matchers: parse, merge `extends: default`, check ids,
//! and compile globs with `~` expanded.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{
    Location, PolicyError,
    exec::Class,
    format::{Defaults, Extends, FailMode, FileOp, PolicyFile, PortRange, Scope, TargetCondition},
    scope_matches,
};
use crate::{action::ActionKind, decision::Decision};

/// Parses `source` and merges the default policy under it when it says
/// `extends: default`.
pub fn load(source: &str, file: &str) -> Result<PolicyFile, PolicyError> {
    let parsed: PolicyFile =
        serde_norway::from_str(source).map_err(|e| PolicyError::from_yaml(file, source, &e))?;
    check_ids(&parsed, source, file)?;
    if parsed.extends.is_none() {
        if let Some(id) = parsed.disable.first() {
            return Err(PolicyError::at_text(
                file,
                source,
                id,
                0,
                format!(
                    "disable: {id:?} needs `extends: default` (there is nothing to disable otherwise)"
                ),
            ));
        }
        return Ok(parsed);
    }
    let Some(Extends::Default) = parsed.extends else {
        return Ok(parsed);
    };
    let base: PolicyFile = serde_norway::from_str(super::DEFAULT_POLICY_YAML).map_err(|e| {
        PolicyError::from_yaml("policies/default.yaml", super::DEFAULT_POLICY_YAML, &e)
    })?;
    merge(base, parsed, source, file)
}

fn check_ids(policy: &PolicyFile, source: &str, file: &str) -> Result<(), PolicyError> {
    let mut seen: HashSet<&str> = HashSet::new();
    let ids = policy
        .files
        .iter()
        .map(|r| &r.id.0)
        .chain(policy.rates.iter().map(|r| &r.id.0))
        .chain(policy.exec.iter().map(|r| &r.id.0))
        .chain(policy.network.iter().map(|r| &r.id.0));
    for id in ids {
        if !seen.insert(id) {
            return Err(PolicyError::at_text(
                file,
                source,
                &format!("id: {id}"),
                1,
                format!("rule id {id:?} is used twice: give each rule its own id"),
            ));
        }
    }
    for rule in &policy.exec {
        if rule.classes.is_empty() && rule.programs.is_empty() {
            return Err(PolicyError::at_text(
                file,
                source,
                &format!("id: {}", rule.id.0),
                0,
                format!(
                    "exec rule {:?} matches nothing: give it classes: (see docs/policy.md) or programs:",
                    rule.id.0
                ),
            ));
        }
    }
    for rule in &policy.exec {
        if !rule.args.is_empty() && (rule.programs.is_empty() || !rule.classes.is_empty()) {
            return Err(PolicyError::at_text(
                file,
                source,
                &format!("id: {}", rule.id.0),
                0,
                format!(
                    "exec rule {:?}: args: applies to rules with programs: and no classes: (classes have their own readers)",
                    rule.id.0
                ),
            ));
        }
    }
    for rule in &policy.network {
        if rule.hosts.is_empty()
            && rule.cidrs.is_empty()
            && rule.ports.is_empty()
            && rule.unix.is_empty()
        {
            return Err(PolicyError::at_text(
                file,
                source,
                &format!("id: {}", rule.id.0),
                0,
                format!(
                    "network rule {:?} matches nothing: give it hosts:, cidrs:, ports: or unix:",
                    rule.id.0
                ),
            ));
        }
    }
    for rule in &policy.rates {
        if rule.count == 0 {
            return Err(PolicyError::at_text(
                file,
                source,
                "count:",
                0,
                format!("rate rule {:?}: count must be at least 1", rule.id.0),
            ));
        }
    }
    Ok(())
}

/// The child's settings win; its rules replace base rules of the same id and
/// are otherwise appended; `disable:` drops base rules.
fn merge(
    mut base: PolicyFile,
    child: PolicyFile,
    source: &str,
    file: &str,
) -> Result<PolicyFile, PolicyError> {
    let base_ids: HashSet<String> = base
        .files
        .iter()
        .map(|r| r.id.0.clone())
        .chain(base.rates.iter().map(|r| r.id.0.clone()))
        .chain(base.exec.iter().map(|r| r.id.0.clone()))
        .chain(base.network.iter().map(|r| r.id.0.clone()))
        .collect();
    for id in &child.disable {
        if !base_ids.contains(id) {
            let mut known: Vec<&String> = base_ids.iter().collect();
            known.sort();
            let close: Vec<&str> = known
                .iter()
                .filter(|k| k.split('.').next() == id.split('.').next())
                .map(|k| k.as_str())
                .collect();
            return Err(PolicyError::at_text(
                file,
                source,
                id,
                0,
                format!(
                    "disable: the default policy has no rule {id:?}{}",
                    if close.is_empty() {
                        " (run `guard policy lint --rules` to list them)".to_string()
                    } else {
                        format!("; did you mean one of {}?", close.join(", "))
                    }
                ),
            ));
        }
    }
    let keep = |id: &str, child_ids: &HashSet<&str>| {
        !child.disable.iter().any(|d| d == id) && !child_ids.contains(id)
    };
    macro_rules! merge_rules {
        ($field:ident) => {{
            let child_ids: HashSet<&str> = child.$field.iter().map(|r| r.id.0.as_str()).collect();
            base.$field.retain(|r| keep(&r.id.0, &child_ids));
            base.$field.extend(child.$field.iter().cloned());
        }};
    }
    merge_rules!(files);
    merge_rules!(rates);
    merge_rules!(exec);
    merge_rules!(network);
    base.workspace.roots.extend(child.workspace.roots);
    for dir in child.workspace.build_dirs {
        if !base.workspace.build_dirs.contains(&dir) {
            base.workspace.build_dirs.push(dir);
        }
    }
    base.workspace.scratch.extend(child.workspace.scratch);
    base.defaults.overlay(&child.defaults);
    if child.ask.timeout.is_some() {
        base.ask.timeout = child.ask.timeout;
    }
    if child.ask.on_timeout.is_some() {
        base.ask.on_timeout = child.ask.on_timeout;
    }
    if child.controller.on_loss.is_some() {
        base.controller.on_loss = child.controller.on_loss;
    }
    base.extends = None;
    base.disable.clear();
    Ok(base)
}

/// Matchers built from a policy file for one home directory.
#[derive(Debug)]
pub struct Compiled {
    pub roots: Vec<PathBuf>,
    pub build_dirs: Vec<String>,
    pub scratch: Vec<PathBuf>,
    pub defaults: Defaults,
    pub ask_timeout: Duration,
    pub timeout_decision: Decision,
    pub fail_mode: FailMode,
    pub files: Vec<FileRuleC>,
    pub rates: Vec<RateRuleC>,
    pub exec: Vec<ExecRuleC>,
    pub network: Vec<NetworkRuleC>,
}

#[derive(Debug)]
pub struct FileRuleC {
    pub id: String,
    /// The patterns as written, `~` expanded (kernel tables read these).
    pub patterns: Vec<String>,
    pub paths: GlobSet,
    pub except: GlobSet,
    pub ops: Vec<ActionKind>,
    pub scope: Scope,
    pub decision: Decision,
    pub reason: String,
}

impl FileRuleC {
    pub fn matches(&self, kind: ActionKind, path: &Path, location: Location) -> bool {
        self.ops.contains(&kind)
            && scope_matches(self.scope, location)
            && self.paths.is_match(path)
            && !self.except.is_match(path)
    }
}

#[derive(Debug)]
pub struct RateRuleC {
    pub id: String,
    pub ops: Vec<ActionKind>,
    pub scope: Scope,
    pub except: GlobSet,
    /// The globs `except` was built from (for the kernel's rate budget).
    pub except_patterns: Vec<String>,
    pub ignore_recent: bool,
    pub count: u32,
    pub window: Duration,
    pub decision: Decision,
    pub reason: String,
}

#[derive(Debug)]
pub struct ExecRuleC {
    pub id: String,
    pub classes: Vec<Class>,
    pub program_names: Vec<String>,
    pub programs: GlobSet,
    /// Each must match one argument (rules with `programs` only).
    pub args: Vec<globset::GlobMatcher>,
    pub targets: Vec<TargetCondition>,
    pub refs: GlobSet,
    pub decision: Decision,
    pub reason: String,
}

#[derive(Debug)]
pub struct NetworkRuleC {
    pub id: String,
    pub hosts: Vec<String>,
    pub cidrs: Vec<ipnet::IpNet>,
    pub ports: Vec<PortRange>,
    pub unix_patterns: Vec<String>,
    pub unix: GlobSet,
    pub decision: Decision,
    pub reason: String,
}

impl Compiled {
    pub fn new(file: &PolicyFile, home: &Path, extra_protected: &[PathBuf]) -> Self {
        let expand = |p: &str| expand_home(p, home);
        let mut files: Vec<FileRuleC> = file
            .files
            .iter()
            .map(|r| {
                let patterns: Vec<String> = r
                    .paths
                    .iter()
                    .flat_map(|g| path_patterns(&g.0, home))
                    .collect();
                FileRuleC {
                    id: r.id.0.clone(),
                    paths: globset(&patterns),
                    except: globset(
                        &r.except
                            .iter()
                            .flat_map(|g| path_patterns(&g.0, home))
                            .collect::<Vec<_>>(),
                    ),
                    patterns,
                    ops: file_ops(&r.ops, &FileOp::ALL),
                    scope: r.scope,
                    decision: r.decision,
                    reason: r
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("file rule {}", r.id.0)),
                }
            })
            .collect();
        if !extra_protected.is_empty() {
            let patterns: Vec<String> = extra_protected
                .iter()
                .flat_map(|p| {
                    let text = glob_escape(&expand(&p.to_string_lossy()));
                    [text.clone(), format!("{}/**", text.trim_end_matches('/'))]
                })
                .collect();
            files.push(FileRuleC {
                id: "files.protected".into(),
                paths: globset(&patterns),
                except: GlobSet::empty(),
                patterns,
                ops: FileOp::ALL.iter().map(|o| o.kind()).collect(),
                scope: Scope::Any,
                decision: Decision::Ask,
                reason: "protected by the session".into(),
            });
        }
        Self {
            roots: file
                .workspace
                .roots
                .iter()
                .map(|r| PathBuf::from(expand(&r.0)))
                .collect(),
            build_dirs: file
                .workspace
                .build_dirs
                .iter()
                .map(|d| d.0.clone())
                .collect(),
            scratch: file
                .workspace
                .scratch
                .iter()
                .map(|s| PathBuf::from(expand(&s.0)))
                .collect(),
            defaults: file.defaults.clone(),
            ask_timeout: file.ask.timeout.map_or(Duration::from_secs(300), |d| d.0),
            timeout_decision: file.ask.on_timeout.map_or(Decision::Deny, |d| d.0),
            fail_mode: file.controller.on_loss.unwrap_or_default(),
            files,
            rates: file
                .rates
                .iter()
                .map(|r| {
                    let except_patterns: Vec<String> = r
                        .except
                        .iter()
                        .flat_map(|g| path_patterns(&g.0, home))
                        .collect();
                    (r, except_patterns)
                })
                .map(|(r, except_patterns)| RateRuleC {
                    id: r.id.0.clone(),
                    ops: file_ops(&r.ops, &[FileOp::Unlink, FileOp::Rmdir]),
                    scope: r.scope.unwrap_or(Scope::OutsideBuildDirs),
                    except: globset(&except_patterns),
                    except_patterns,
                    ignore_recent: r.ignore_recent,
                    count: r.count,
                    window: r.window.0,
                    decision: r.decision,
                    reason: r
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("rate rule {}", r.id.0)),
                })
                .collect(),
            exec: file
                .exec
                .iter()
                .map(|r| {
                    let program_names: Vec<String> =
                        r.programs.iter().map(|p| p.0.clone()).collect();
                    ExecRuleC {
                        id: r.id.0.clone(),
                        classes: r.classes.iter().map(|c| c.0).collect(),
                        programs: plain_globset(&program_names),
                        args: r
                            .args
                            .iter()
                            .filter_map(|g| GlobBuilder::new(&g.0).build().ok())
                            .map(|g| g.compile_matcher())
                            .collect(),
                        program_names,
                        targets: r.targets.clone(),
                        refs: plain_globset(
                            &r.refs.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
                        ),
                        decision: r.decision,
                        reason: r.reason.clone().unwrap_or_else(|| {
                            r.classes.first().map_or_else(
                                || format!("exec rule {}", r.id.0),
                                |c| c.0.describe().to_string(),
                            )
                        }),
                    }
                })
                .collect(),
            network: file
                .network
                .iter()
                .map(|r| {
                    let unix_patterns: Vec<String> = r
                        .unix
                        .iter()
                        .flat_map(|g| path_patterns(&g.0, home))
                        .collect();
                    NetworkRuleC {
                        id: r.id.0.clone(),
                        hosts: r.hosts.iter().map(|h| h.0.clone()).collect(),
                        cidrs: r.cidrs.iter().map(|c| c.0).collect(),
                        ports: r.ports.clone(),
                        unix: globset(&unix_patterns),
                        unix_patterns,
                        decision: r.decision,
                        reason: r
                            .reason
                            .clone()
                            .unwrap_or_else(|| format!("network rule {}", r.id.0)),
                    }
                })
                .collect(),
        }
    }
}

fn file_ops(ops: &[FileOp], default: &[FileOp]) -> Vec<ActionKind> {
    let ops = if ops.is_empty() { default } else { ops };
    ops.iter().map(|o| o.kind()).collect()
}

fn expand_home(text: &str, home: &Path) -> String {
    if text == "~" {
        return home.to_string_lossy().into_owned();
    }
    match text.strip_prefix("~/") {
        Some(rest) => format!("{}/{rest}", home.to_string_lossy().trim_end_matches('/')),
        None => text.to_string(),
    }
}

/// A rule's path pattern as absolute globs: `~` expanded, relative patterns
/// matched at any depth, and `dir/**` also matching `dir` itself.
pub(crate) fn path_patterns(pattern: &str, home: &Path) -> Vec<String> {
    let mut text = if pattern == "~" || pattern.starts_with("~/") {
        let home = glob_escape(&home.to_string_lossy());
        format!("{}{}", home.trim_end_matches('/'), &pattern[1..])
    } else if pattern.starts_with('/') {
        pattern.to_string()
    } else {
        format!("**/{pattern}")
    };
    if text.len() > 1 {
        text = text.trim_end_matches('/').to_string();
    }
    let mut out = vec![text.clone()];
    if let Some(base) = text.strip_suffix("/**")
        && !base.is_empty()
    {
        out.push(base.to_string());
    }
    out
}

fn glob_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "*?[]{}\\".contains(c) {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

fn globset(patterns: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        // Patterns were checked when read; an escape that fails here matches nothing.
        if let Ok(glob) = GlobBuilder::new(p).literal_separator(true).build() {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

/// Globs over names that have no path separators (programs, git refs).
fn plain_globset(patterns: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        if let Ok(glob) = GlobBuilder::new(p).build() {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}
