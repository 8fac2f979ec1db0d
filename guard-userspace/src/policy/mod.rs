//! Session policy: which actions are allowed, logged, held for a person, or refused.
//!
//! A policy is a YAML file (docs/policy.md); the default one is compiled into
//! the binary from policies/default.yaml. Backends call [`Policy::evaluate`];
//! when several rules match, the strictest decision wins (ties go to the rule
//! written first), and when none does, the default for the action's kind.

pub mod cases;
pub mod cli;
mod compile;
pub mod error;
pub mod exec;
pub mod format;
pub mod kernel;
pub mod rate;

use std::{
    collections::HashMap,
    ffi::OsString,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Serialize;

use self::{
    compile::{Compiled, ExecRuleC, FileRuleC},
    exec::{Classification, Target},
    format::{PolicyFile, TargetCondition},
    rate::{Clock, RateState, SystemClock},
};
pub use self::{
    error::PolicyError,
    format::{FailMode, Scope},
};
use crate::{
    action::{Action, ActionKind, Endpoint},
    decision::{Decision, Verdict},
};

/// policies/default.yaml, the policy used when no file is given.
pub const DEFAULT_POLICY_YAML: &str = include_str!("../../../policies/default.yaml");

/// A compiled policy for one session.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Workspace roots: the agent's own tree.
    pub workspaces: Vec<PathBuf>,
    source: Arc<PolicyFile>,
    home: PathBuf,
    /// Prefixes added with [`Policy::with_protected`].
    extra_protected: Vec<PathBuf>,
    compiled: Arc<Compiled>,
    rates: RateState,
    /// Addresses of the network rules' host names, filled by `crate::hosts`.
    resolved: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
}

/// Where a path lies relative to the session's workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// Temporary or cache space outside the workspace (/tmp, ~/.cache).
    Scratch,
    /// Inside a workspace's build directory (node_modules, target).
    BuildDir,
    /// Inside a workspace, not in a build directory.
    Workspace,
    /// Anywhere else, including a workspace root itself and its ancestors.
    Outside,
}

/// `evaluate`'s answer with the reading behind it, for `guard policy explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub action: String,
    pub verdict: Verdict,
    /// For execs: what the classifiers found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// For file actions: where the path lies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// What was decided, independent of how it was reached: for an exec the
    /// deciding rule, class and finding (`sudo rm -rf /x`, `bash -c "rm -rf
    /// /x"` and `rm -rf /x` share it), so an approval of the wrapper can cover
    /// the inner exec the kernel reports next.
    pub grant_key: String,
}

impl Policy {
    /// The policy compiled into the binary (policies/default.yaml).
    pub fn embedded_default() -> Self {
        Self::from_yaml(DEFAULT_POLICY_YAML, "policies/default.yaml")
            .unwrap_or_else(|e| panic!("the embedded default policy is invalid: {e}"))
    }

    /// Parses and compiles a policy; `file` names it in errors.
    pub fn from_yaml(source: &str, file: &str) -> Result<Self, PolicyError> {
        let parsed = compile::load(source, file)?;
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let compiled = Arc::new(Compiled::new(&parsed, &home, &[]));
        Ok(Self {
            workspaces: Vec::new(),
            source: Arc::new(parsed),
            home,
            extra_protected: Vec::new(),
            compiled,
            rates: RateState::new(Arc::new(SystemClock)),
            resolved: Arc::new(RwLock::new(HashMap::new())),
        })
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            PolicyError::new(&name, 0, 0, format!("cannot read the policy file: {e}"))
        })?;
        let source = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.into_bytes()[..offset]).into_owned();
            let line = text.matches('\n').count() + 1;
            let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            PolicyError::new(
                &name,
                line,
                column,
                "the file is not UTF-8: save it as UTF-8 text",
            )
        })?;
        Self::from_yaml(&source, &name)
    }

    /// Adds a workspace root (from `--workspace` or the session's cwd).
    pub fn with_workspace(mut self, root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = if root.is_relative() {
            std::env::current_dir().unwrap_or_default().join(root)
        } else {
            root
        };
        let root = exec::normalize(&root);
        if !self.workspaces.contains(&root) {
            self.workspaces.push(root);
        }
        self
    }

    /// Adds a protected path prefix: changing it or anything below it asks.
    pub fn with_protected(mut self, prefix: impl Into<PathBuf>) -> Self {
        self.extra_protected.push(prefix.into());
        self.recompile();
        self
    }

    /// Sets the home directory `~` means (default: $HOME).
    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = home.into();
        self.recompile();
        self
    }

    /// Uses `clock` for rate rules (tests inject a [`rate::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.rates = RateState::new(clock);
        self
    }

    /// A copy with its own rate counters. Clones share counters (a policy
    /// cloned into several backends of one session counts once); give each
    /// session its own with this.
    pub fn with_fresh_counters(mut self) -> Self {
        self.rates = self.rates.fresh();
        self
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// How long an ask may wait for a person.
    pub fn ask_timeout(&self) -> Duration {
        self.compiled.ask_timeout
    }

    /// What an unanswered ask becomes (deny by default).
    pub fn timeout_decision(&self) -> Decision {
        self.compiled.timeout_decision
    }

    /// What held actions become when the controller is gone.
    pub fn fail_mode(&self) -> FailMode {
        self.compiled.fail_mode
    }

    /// The default decision for an action kind when no rule matches.
    pub fn default_decision(&self, kind: ActionKind) -> Decision {
        self.compiled.defaults.get(kind).unwrap_or(Decision::Allow)
    }

    /// Host names the network rules name (wildcards excluded): each session
    /// resolves these and calls [`Policy::set_resolved`] (crate::hosts).
    pub fn hosts_to_resolve(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .compiled
            .network
            .iter()
            .flat_map(|r| r.hosts.iter())
            .filter(|h| !h.starts_with("*."))
            .cloned()
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Records the addresses a host name resolved to (replacing older ones).
    pub fn set_resolved(&self, host: &str, addrs: Vec<IpAddr>) {
        let mut resolved = self.resolved.write().unwrap_or_else(|e| e.into_inner());
        resolved.insert(host.to_ascii_lowercase(), addrs);
    }

    /// Decides one action.
    pub fn evaluate(&self, action: &Action) -> Verdict {
        self.explain(action).verdict
    }

    /// Decides an action the kernel sent up from a session that runs this
    /// policy's kernel tables. The kernel counts the rate rule
    /// [`Policy::kernel_rate_rule`] itself (ops below the rate never reach
    /// userspace), so that rule trips when the kernel says this op spent the
    /// budget, not by counting here; other rate rules count here as usual.
    pub fn evaluate_from_kernel(&self, action: &Action, rate_exceeded: bool) -> Verdict {
        self.explain_in(action, Some(rate_exceeded)).verdict
    }

    /// Decides one action and says what it was read as.
    pub fn explain(&self, action: &Action) -> Explanation {
        self.explain_in(action, None)
    }

    /// `kernel_rate`: `Some(spent)` when the kernel counted the kernel rate rule.
    fn explain_in(&self, action: &Action, kernel_rate: Option<bool>) -> Explanation {
        let mut location = None;
        let mut classification = None;
        let mut grant_key = None;
        let verdict = match action {
            Action::Exec {
                filename,
                argv,
                cwd,
            } => {
                let c = exec::classify(argv, filename, cwd, &self.home);
                let (v, key) = self.exec_verdict(&c);
                classification = Some(c);
                grant_key = key;
                v
            }
            Action::Unlink { path }
            | Action::Rmdir { path }
            | Action::Truncate { path }
            | Action::OpenWrite { path } => {
                location = Some(self.locate(path));
                self.file_verdict(action.kind(), path, kernel_rate)
            }
            Action::Rename { from, to } => {
                location = Some(self.locate(from));
                let a = self.file_verdict(ActionKind::Rename, from, kernel_rate);
                let b = self.file_verdict(ActionKind::Rename, to, kernel_rate);
                if b.decision > a.decision { b } else { a }
            }
            Action::Connect { endpoint } => self.connect_verdict(endpoint, None),
        };
        let grant_key = grant_key.unwrap_or_else(|| format!("{}|{action}", verdict.rule));
        Explanation {
            action: action.to_string(),
            verdict,
            classification,
            location,
            grant_key,
        }
    }

    /// Decides a connect to a host given by name (`guard policy explain
    /// --connect db.prod:5432`): name patterns match directly.
    pub fn evaluate_connect_name(&self, host: &str, port: u16) -> Verdict {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let endpoint = Endpoint::Inet {
                addr: std::net::SocketAddr::new(ip, port),
            };
            return self.connect_verdict(&endpoint, None);
        }
        let endpoint = Endpoint::Inet {
            addr: std::net::SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
        };
        self.connect_verdict(&endpoint, Some(&host.to_ascii_lowercase()))
    }

    /// Where `path` lies relative to the workspaces.
    pub fn locate(&self, path: &Path) -> Location {
        // Deleting a workspace root (or a directory holding one) is not
        // workspace work, even when the workspace lives in /tmp.
        if self.roots().any(|root| root.starts_with(path)) {
            return Location::Outside;
        }
        for root in self.roots() {
            if let Ok(rel) = path.strip_prefix(root) {
                let build = rel.components().any(|c| {
                    self.compiled
                        .build_dirs
                        .iter()
                        .any(|b| c.as_os_str() == b.as_str())
                });
                return if build {
                    Location::BuildDir
                } else {
                    Location::Workspace
                };
            }
        }
        if self.compiled.scratch.iter().any(|s| path.starts_with(s)) {
            return Location::Scratch;
        }
        Location::Outside
    }

    /// Session workspaces and the policy file's own roots.
    pub fn roots(&self) -> impl Iterator<Item = &PathBuf> {
        self.workspaces.iter().chain(self.compiled.roots.iter())
    }

    fn file_verdict(&self, kind: ActionKind, path: &Path, kernel_rate: Option<bool>) -> Verdict {
        let counted_in_kernel = kernel_rate.and(self.kernel_rate_rule());
        let location = self.locate(path);
        let mut best = Best::default();
        for (order, rule) in self.compiled.files.iter().enumerate() {
            if rule.matches(kind, path, location) {
                let reason = format!("{}: {}", rule.reason, path.display());
                best.offer(rule.decision, order, &rule.id, reason);
            }
        }
        for (order, rule) in self.compiled.rates.iter().enumerate() {
            if !rule.ops.contains(&kind)
                || !scope_matches(rule.scope, location)
                || rule.except.is_match(path)
            {
                continue;
            }
            let tripped = if counted_in_kernel == Some(order) {
                kernel_rate == Some(true)
            } else if rule.ignore_recent && changed_within(path, rule.window) {
                false
            } else {
                let seen = self
                    .rates
                    .record(&rule.id, rule.window, rule.count as usize);
                seen > rule.count as usize
            };
            if tripped {
                let reason = format!(
                    "{}: more than {} {} in {:?} ({})",
                    rule.reason,
                    rule.count,
                    kind_name(kind),
                    rule.window,
                    path.display()
                );
                best.offer(rule.decision, 10_000 + order, &rule.id, reason);
            }
        }
        best.verdict().unwrap_or_else(|| self.default_verdict(kind))
    }

    fn exec_verdict(&self, c: &Classification) -> (Verdict, Option<String>) {
        let mut best = Best::default();
        for (order, rule) in self.compiled.exec.iter().enumerate() {
            if rule.classes.is_empty() {
                let hit = c.programs.iter().zip(&c.arguments).find(|(p, args)| {
                    rule.programs.is_match(p.as_str())
                        && rule
                            .args
                            .iter()
                            .all(|glob| args.iter().any(|a| glob.is_match(a.as_str())))
                });
                if let Some((program, args)) = hit {
                    let reason = format!("{}: runs {program} {}", rule.reason, args.join(" "));
                    let reason = reason.trim_end().to_string();
                    best.offer(rule.decision, order, &rule.id, reason);
                }
                continue;
            }
            for finding in &c.findings {
                if !rule.classes.contains(&finding.class)
                    || (!rule.programs.is_empty()
                        && !rule.programs.is_match(finding.program.as_str()))
                    || !self.targets_match(rule, &finding.targets)
                    || (!rule.refs.is_empty()
                        && !finding.refs.iter().any(|r| rule.refs.is_match(r.as_str())))
                {
                    continue;
                }
                let via = if finding.via.is_empty() {
                    String::new()
                } else {
                    format!(" (via {})", finding.via.join(" → "))
                };
                let reason = format!("{}: {}{via}", rule.reason, finding.detail);
                let key = format!("{}|{}|{}", rule.id, finding.class, finding.detail);
                best.offer_keyed(rule.decision, order, &rule.id, reason, Some(key));
            }
        }
        let key = best.key.clone();
        let verdict = best
            .verdict()
            .unwrap_or_else(|| self.default_verdict(ActionKind::Exec));
        (verdict, key)
    }

    fn targets_match(&self, rule: &ExecRuleC, targets: &[Target]) -> bool {
        if rule.targets.is_empty() {
            return true;
        }
        targets.iter().any(|target| {
            rule.targets
                .iter()
                .any(|condition| match (condition, target) {
                    (TargetCondition::OutsideWorkspace, Target::Unknown(_)) => true,
                    (TargetCondition::OutsideWorkspace, Target::Path(p)) => {
                        self.locate(p) == Location::Outside
                    }
                    (TargetCondition::WorkspaceSource, Target::Path(p)) => {
                        self.locate(p) == Location::Workspace
                    }
                    (TargetCondition::Protected, Target::Path(p)) => self.protects(p),
                    _ => false,
                })
        })
    }

    /// True if a file rule would hold or refuse deleting `path` or anything in it.
    fn protects(&self, path: &Path) -> bool {
        let child = path.join("\u{0}guard-any-child");
        self.compiled.files.iter().any(|rule: &FileRuleC| {
            rule.decision >= Decision::Ask
                && rule.ops.contains(&ActionKind::Unlink)
                && (rule.matches(ActionKind::Unlink, path, Location::Workspace)
                    || rule.matches(ActionKind::Unlink, path, Location::Outside)
                    || rule.matches(ActionKind::Unlink, &child, Location::Workspace)
                    || rule.matches(ActionKind::Unlink, &child, Location::Outside))
        })
    }

    fn connect_verdict(&self, endpoint: &Endpoint, name: Option<&str>) -> Verdict {
        let resolved = self.resolved.read().unwrap_or_else(|e| e.into_inner());
        let mut best = Best::default();
        for (order, rule) in self.compiled.network.iter().enumerate() {
            let matched = match endpoint {
                Endpoint::Unix { path } => rule.unix.is_match(path),
                Endpoint::Inet { addr } => {
                    let addressed = !rule.hosts.is_empty() || !rule.cidrs.is_empty();
                    if !addressed && !rule.unix.is_empty() {
                        false
                    } else {
                        let ip = addr.ip();
                        let host_hit = match name {
                            Some(name) => rule.hosts.iter().any(|h| host_matches(h, name)),
                            None => {
                                rule.cidrs.iter().any(|c| c.contains(&ip))
                                    || rule
                                        .hosts
                                        .iter()
                                        .any(|h| resolved.get(h).is_some_and(|a| a.contains(&ip)))
                            }
                        };
                        (!addressed || host_hit)
                            && (rule.ports.is_empty()
                                || rule.ports.iter().any(|p| p.contains(addr.port())))
                    }
                }
            };
            if matched {
                let reason = format!(
                    "{}: connect to {}",
                    rule.reason,
                    describe_endpoint(endpoint, name)
                );
                best.offer(rule.decision, order, &rule.id, reason);
            }
        }
        best.verdict()
            .unwrap_or_else(|| self.default_verdict(ActionKind::Connect))
    }

    fn default_verdict(&self, kind: ActionKind) -> Verdict {
        let decision = self.default_decision(kind);
        Verdict {
            decision,
            rule: format!("default.{}", kind_name(kind)),
            reason: format!(
                "no rule matched; the default for {} is {decision}",
                kind_name(kind)
            ),
        }
    }

    fn recompile(&mut self) {
        self.compiled = Arc::new(Compiled::new(
            &self.source,
            &self.home,
            &self.extra_protected,
        ));
    }

    pub(crate) fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Rule ids in evaluation order, for `guard policy lint`.
    pub fn rule_ids(&self) -> Vec<String> {
        let c = &self.compiled;
        c.files
            .iter()
            .map(|r| r.id.clone())
            .chain(c.rates.iter().map(|r| r.id.clone()))
            .chain(c.exec.iter().map(|r| r.id.clone()))
            .chain(c.network.iter().map(|r| r.id.clone()))
            .collect()
    }

    /// An exec action for `argv` run in `cwd` (explain, tests, the corpus).
    pub fn exec_action(argv: &[OsString], cwd: &Path) -> Action {
        Action::Exec {
            filename: argv.first().map(PathBuf::from).unwrap_or_default(),
            argv: argv.to_vec(),
            cwd: cwd.to_path_buf(),
        }
    }
}

/// Whether `path` exists and its ctime is less than `window` old (a rate
/// rule's `ignore_recent`). A path that cannot be read counts as old.
fn changed_within(path: &Path, window: Duration) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ctime = Duration::new(
        u64::try_from(meta.ctime()).unwrap_or(0),
        u32::try_from(meta.ctime_nsec()).unwrap_or(0),
    );
    ctime + window > now
}

pub(crate) fn scope_matches(scope: Scope, location: Location) -> bool {
    match scope {
        Scope::Any => true,
        Scope::InsideWorkspace => matches!(location, Location::Workspace | Location::BuildDir),
        Scope::OutsideWorkspace => location == Location::Outside,
        Scope::OutsideBuildDirs => matches!(location, Location::Workspace | Location::Outside),
    }
}

fn host_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len()
                && name.ends_with(suffix)
                && name[..name.len() - suffix.len()].ends_with('.')
        }
        None => pattern == name,
    }
}

fn describe_endpoint(endpoint: &Endpoint, name: Option<&str>) -> String {
    match (endpoint, name) {
        (Endpoint::Inet { addr }, Some(name)) => format!("{name}:{}", addr.port()),
        (Endpoint::Inet { addr }, None) => addr.to_string(),
        (Endpoint::Unix { path }, _) => format!("unix:{}", path.display()),
    }
}

pub(crate) fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Exec => "exec",
        ActionKind::Unlink => "unlink",
        ActionKind::Rmdir => "rmdir",
        ActionKind::Rename => "rename",
        ActionKind::Truncate => "truncate",
        ActionKind::OpenWrite => "open_write",
        ActionKind::Connect => "connect",
    }
}

/// The strictest offer so far; ties keep the earliest rule.
#[derive(Default)]
struct Best {
    best: Option<(Decision, usize, String, String)>,
    /// What the deciding rule matched, for grants (see [`Explanation::grant_key`]).
    key: Option<String>,
}

impl Best {
    fn offer(&mut self, decision: Decision, order: usize, rule: &str, reason: String) {
        self.offer_keyed(decision, order, rule, reason, None);
    }

    fn offer_keyed(
        &mut self,
        decision: Decision,
        order: usize,
        rule: &str,
        reason: String,
        key: Option<String>,
    ) {
        let better = match &self.best {
            None => true,
            Some((d, o, _, _)) => decision > *d || (decision == *d && order < *o),
        };
        if better {
            self.best = Some((decision, order, rule.to_string(), reason));
            self.key = key;
        }
    }

    fn verdict(self) -> Option<Verdict> {
        self.best.map(|(decision, _, rule, reason)| Verdict {
            decision,
            rule,
            reason,
        })
    }
}

#[cfg(test)]
mod tests;
