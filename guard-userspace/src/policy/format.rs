//! The YAML policy file, as written by people (docs/policy.md documents every
//! key; policies/guard-policy.schema.json is the same shape as a JSON Schema).
//! Values are validated while they are read, so every mistake is reported
//! with its file:line:column and a way to fix it. Unknown keys are errors.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de};

use super::exec::Class;
use crate::{action::ActionKind, decision::Decision};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Format version; only 1 exists.
    pub version: Version,
    /// `default`: start from the policy compiled into guard.
    #[serde(default)]
    pub extends: Option<Extends>,
    /// Rule ids of the extended policy to drop.
    #[serde(default)]
    pub disable: Vec<String>,
    #[serde(default)]
    pub workspace: WorkspaceSection,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub ask: AskSection,
    #[serde(default)]
    pub controller: ControllerSection,
    #[serde(default)]
    pub files: Vec<FileRule>,
    #[serde(default)]
    pub rates: Vec<RateRule>,
    #[serde(default)]
    pub exec: Vec<ExecRule>,
    #[serde(default)]
    pub network: Vec<NetworkRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == 1 {
            Ok(Version)
        } else {
            Err(de::Error::custom(format!(
                "unsupported policy version {v}: this guard reads `version: 1`"
            )))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extends {
    Default,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSection {
    /// Absolute or `~/` paths; the session adds its own directory.
    #[serde(default)]
    pub roots: Vec<PathText>,
    /// Directory names inside a workspace whose contents are regenerated
    /// (node_modules, target): deleting there is ordinary work.
    #[serde(default)]
    pub build_dirs: Vec<DirName>,
    /// Places outside the workspace that are scratch space (/tmp, caches).
    #[serde(default)]
    pub scratch: Vec<PathText>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub exec: Option<Decision>,
    pub unlink: Option<Decision>,
    pub rmdir: Option<Decision>,
    pub rename: Option<Decision>,
    pub truncate: Option<Decision>,
    pub open_write: Option<Decision>,
    pub connect: Option<Decision>,
}

impl Defaults {
    pub fn get(&self, kind: ActionKind) -> Option<Decision> {
        match kind {
            ActionKind::Exec => self.exec,
            ActionKind::Unlink => self.unlink,
            ActionKind::Rmdir => self.rmdir,
            ActionKind::Rename => self.rename,
            ActionKind::Truncate => self.truncate,
            ActionKind::OpenWrite => self.open_write,
            ActionKind::Connect => self.connect,
        }
    }

    /// `other`'s values win where set.
    pub fn overlay(&mut self, other: &Defaults) {
        let pairs = [
            (&mut self.exec, other.exec),
            (&mut self.unlink, other.unlink),
            (&mut self.rmdir, other.rmdir),
            (&mut self.rename, other.rename),
            (&mut self.truncate, other.truncate),
            (&mut self.open_write, other.open_write),
            (&mut self.connect, other.connect),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskSection {
    /// How long a hold waits for a person.
    pub timeout: Option<DurationText>,
    /// What an unanswered hold becomes: allow, deny or kill.
    pub on_timeout: Option<TimeoutDecision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutDecision(pub Decision);

impl<'de> Deserialize<'de> for TimeoutDecision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let decision = Decision::deserialize(d)?;
        if decision.holds() {
            return Err(de::Error::custom(format!(
                "on_timeout cannot be {decision}: an unanswered hold must end; use deny, kill or allow"
            )));
        }
        Ok(TimeoutDecision(decision))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// What the kernel does with held actions when the controller is gone.
    pub on_loss: Option<FailMode>,
}

/// Behaviour when no controller answers: refuse (closed) or let through (open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    #[default]
    FailClosed,
    FailOpen,
}

/// Where a path is relative to the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Anywhere.
    #[default]
    Any,
    /// Below a workspace root (build directories included).
    InsideWorkspace,
    /// Not below a workspace root, and not scratch space.
    OutsideWorkspace,
    /// Anywhere except build directories and scratch space.
    OutsideBuildDirs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub id: RuleId,
    /// Globs: `/abs/**`, `~/.ssh/**`, or a relative pattern matched anywhere
    /// (`.git/**`, `*.tfstate`).
    pub paths: Vec<GlobText>,
    #[serde(default)]
    pub except: Vec<GlobText>,
    /// Which file actions; all of them when absent.
    #[serde(default)]
    pub ops: Vec<FileOp>,
    #[serde(default, rename = "where")]
    pub scope: Scope,
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    pub id: RuleId,
    /// Which file actions count; unlink and rmdir when absent.
    #[serde(default)]
    pub ops: Vec<FileOp>,
    /// Which paths count: outside_build_dirs when absent.
    #[serde(default, rename = "where")]
    pub scope: Option<Scope>,
    /// Paths that never count (`.git/**`: git's own housekeeping).
    #[serde(default)]
    pub except: Vec<GlobText>,
    /// More than this many actions...
    pub count: u32,
    /// ...within this window trips the rule.
    pub window: DurationText,
    /// Files changed (created, written, renamed) less than `window` ago are
    /// not counted: deleting what was just written is not destruction.
    #[serde(default)]
    pub ignore_recent: bool,
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What an exec rule requires of a finding's targets (any of the listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetCondition {
    /// A target outside every workspace, on another machine, or in another
    /// user's home. (Paths known only at run time are judged when the
    /// program that uses them is exec'd.)
    OutsideWorkspace,
    /// A target that a file rule protects, or that contains one.
    Protected,
    /// A target inside a workspace but not in a build directory.
    WorkspaceSource,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRule {
    pub id: RuleId,
    /// Classifier classes (see `guard policy explain --classes`).
    #[serde(default)]
    pub classes: Vec<ClassName>,
    /// Program base names (globs): the rule matches any run of them.
    #[serde(default)]
    pub programs: Vec<ProgramName>,
    /// With `programs`: globs that must each match one argument
    /// (`programs: [make]`, `args: ["deploy*"]`).
    #[serde(default)]
    pub args: Vec<ArgGlob>,
    #[serde(default)]
    pub targets: Vec<TargetCondition>,
    /// Git refs (globs) the finding must name.
    #[serde(default)]
    pub refs: Vec<GlobText>,
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRule {
    pub id: RuleId,
    /// Host names (`db.prod.example.com`) or wildcards (`*.prod.example.com`).
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    #[serde(default)]
    pub cidrs: Vec<Cidr>,
    /// Ports or ranges (`5432`, `"8000-8999"`); any port when absent.
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// Unix socket paths (globs).
    #[serde(default)]
    pub unix: Vec<GlobText>,
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A file action a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Unlink,
    Rmdir,
    Rename,
    Truncate,
    OpenWrite,
}

impl FileOp {
    pub fn kind(self) -> ActionKind {
        match self {
            FileOp::Unlink => ActionKind::Unlink,
            FileOp::Rmdir => ActionKind::Rmdir,
            FileOp::Rename => ActionKind::Rename,
            FileOp::Truncate => ActionKind::Truncate,
            FileOp::OpenWrite => ActionKind::OpenWrite,
        }
    }

    pub const ALL: [FileOp; 5] = [
        FileOp::Unlink,
        FileOp::Rmdir,
        FileOp::Rename,
        FileOp::Truncate,
        FileOp::OpenWrite,
    ];
}

/// Implements Deserialize through `FromStr`, so a bad value is reported at its
/// own line and column with the parse error's advice.
macro_rules! text_value {
    ($name:ident) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = StringOrNumber::deserialize(d)?.0;
                text.parse().map_err(de::Error::custom)
            }
        }
    };
}

/// Accepts `5432` as well as `"5432"` for values that are text underneath.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A rule id: lowercase words joined by `.` `-` `_`, such as `git.force-push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleId(pub String);
text_value!(RuleId);

impl FromStr for RuleId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        if ok {
            Ok(RuleId(s.to_string()))
        } else {
            Err(format!(
                "rule id {s:?} is not valid: use 1-64 lowercase letters, digits, '.', '-' or '_' (for example files.ssh-keys)"
            ))
        }
    }
}

/// A path glob, checked for syntax when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobText(pub String);
text_value!(GlobText);

impl FromStr for GlobText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty glob: write a pattern such as `~/.ssh/**` or `*.tfstate`".into());
        }
        globset::GlobBuilder::new(s)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("bad glob {s:?}: {}", e.kind()))?;
        Ok(GlobText(s.to_string()))
    }
}

/// A program base name or glob (`terraform`, `mkfs.*`), without a slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramName(pub String);
text_value!(ProgramName);

impl FromStr for ProgramName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.contains('/') {
            return Err(format!(
                "program {s:?} must be a base name such as `terraform` (guard matches the name, not the path)"
            ));
        }
        globset::Glob::new(s).map_err(|e| format!("bad program pattern {s:?}: {}", e.kind()))?;
        Ok(ProgramName(s.to_string()))
    }
}

/// A glob over one argument (`*` matches anything, `/` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgGlob(pub String);
text_value!(ArgGlob);

impl FromStr for ArgGlob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        globset::Glob::new(s).map_err(|e| format!("bad argument pattern {s:?}: {}", e.kind()))?;
        Ok(ArgGlob(s.to_string()))
    }
}

/// A directory name (no slash), for build directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirName(pub String);
text_value!(DirName);

impl FromStr for DirName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.contains('/') || s == "." || s == ".." {
            return Err(format!(
                "build dir {s:?} must be one directory name such as `node_modules` (it matches at any depth)"
            ));
        }
        Ok(DirName(s.to_string()))
    }
}

/// An absolute or `~/` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathText(pub String);
text_value!(PathText);

impl FromStr for PathText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with('/') || s == "~" || s.starts_with("~/") {
            Ok(PathText(s.trim_end_matches("/**").to_string()))
        } else {
            Err(format!(
                "path {s:?} must be absolute or start with ~/ (the session adds its own directory as a workspace root)"
            ))
        }
    }
}

/// `300`, `30s`, `5m`, `1h`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);
text_value!(DurationText);

impl FromStr for DurationText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = || {
            format!("bad duration {s:?}: write a number with a unit, such as 250ms, 30s, 5m or 1h")
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number.parse().map_err(|_| hint())?;
        let d = match unit.trim() {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(hint()),
        };
        if d.is_zero() {
            return Err(format!("duration {s:?} is zero: use at least 1s"));
        }
        Ok(DurationText(d))
    }
}

/// A classifier class id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassName(pub Class);
text_value!(ClassName);

impl FromStr for ClassName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Class::parse(s).map(ClassName).ok_or_else(|| {
            let known: Vec<&str> = Class::ALL.iter().map(|c| c.as_str()).collect();
            let close: Vec<&str> = known
                .iter()
                .copied()
                .filter(|k| k.split('.').next() == s.split('.').next())
                .collect();
            let list = if close.is_empty() { known } else { close };
            format!("unknown class {s:?}: use one of {}", list.join(", "))
        })
    }
}

/// A host name or `*.` wildcard, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(pub String);
text_value!(HostPattern);

impl FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let name = s.strip_prefix("*.").unwrap_or(s);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok || s.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "host {s:?} is not a host name: write db.example.com or *.example.com (addresses go under cidrs:)"
            ));
        }
        Ok(HostPattern(s.to_ascii_lowercase()))
    }
}

/// An IP network; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);
text_value!(Cidr);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Cidr(ipnet::IpNet::from(addr)));
        }
        Err(format!(
            "bad CIDR {s:?}: write an address or network such as 10.0.0.0/8, 192.0.2.7 or fd00::/8"
        ))
    }
}

/// A port or inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);
text_value!(PortRange);

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = || {
            format!("bad port {s:?}: write a port such as 5432 or a range such as \"8000-8999\"")
        };
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a.trim().parse().map_err(|_| hint())?;
        let b: u16 = b.trim().parse().map_err(|_| hint())?;
        if a == 0 || a > b {
            return Err(hint());
        }
        Ok(PortRange(a, b))
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.0 <= port && port <= self.1
    }
}
