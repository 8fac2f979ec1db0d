//! The policy compiled down to plain tables for the kernel programs, so an
//! action leaves the kernel only when a rule could match it:
//! - paths: one LPM trie of path prefixes with [`path_flags`] (workspace
//!   roots, their top-level build directories, scratch space, protected
//!   prefixes); flags are cumulative (a longer prefix carries the flags of
//!   every shorter prefix above it), so the longest match alone decides;
//! - protected names: relative patterns (`*.tfstate`, `.git/HEAD`, `.git/**`)
//!   as checks on the final path component or on its ancestors' names;
//! - per-location op masks: which file ops must go to userspace where;
//! - CIDRs: LPM tries for IPv4 and IPv6, ports, unix socket prefixes;
//! - watched programs: a hash set of base names whose exec stops for userspace.
//!
//! Everything here over-approximates: when a pattern cannot be expressed, the
//! table says "send it up" (`all_*` flags), never "let it through".

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use ipnet::IpNet;
use serde::Serialize;

use super::{
    Location, Policy, exec,
    format::{FailMode, PortRange, Scope},
    scope_matches,
};
use crate::{action::ActionKind, decision::Decision};

/// Longest path prefix a kernel LPM key holds.
pub const PATH_PREFIX_MAX: usize = 256;
/// Bytes of a program base name in the watch-set key (zero-padded).
pub const PROGRAM_KEY_LEN: usize = 32;

/// Flags on a path prefix.
pub mod path_flags {
    /// Below a workspace root.
    pub const WORKSPACE: u32 = 1 << 0;
    /// Below a build directory of a workspace.
    pub const BUILD_DIR: u32 = 1 << 1;
    /// Scratch space (/tmp, caches).
    pub const SCRATCH: u32 = 1 << 2;
    /// A file rule protects it: ops in `protected_ops` go to userspace.
    pub const PROTECTED: u32 = 1 << 3;
    /// The kernel-counted rate rule's `except` covers it: not charged.
    pub const RATE_EXEMPT: u32 = 1 << 4;
}

/// The rate rule the kernel counts itself (`guard-ebpf/src/rate.rs`), so
/// deletions below the rate never leave the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelRate {
    /// The rule's id.
    pub rule: String,
    /// More than this many charged ops...
    pub limit: u32,
    /// ...within this window spend the budget.
    pub window: Duration,
    /// Objects changed within the window are not charged.
    pub ignore_recent: bool,
    /// Ops charged, by location (the rule's ops where its scope applies).
    pub counted: OpMasks,
    /// Directory names whose trees (and the directories themselves) are
    /// exempt: the rule's `**/NAME/**` excepts.
    pub exempt_names: Vec<String>,
}

/// What one `except` glob of a rate rule is to the kernel.
enum Exemption {
    /// `/dir/**`: paths below `/dir/` (a prefix entry).
    Prefix(String),
    /// `**/NAME/**`: a directory named NAME anywhere above the object.
    Name(String),
    /// A companion the kernel covers with the forms above or leaves counted
    /// (`**/NAME`, `/dir`: the directory itself, one op at most).
    Covered,
}

fn exemption(pattern: &str) -> Option<Exemption> {
    // `**/**/x` (a relative `**/x` made absolute) is `**/x`.
    let mut pattern = pattern;
    while let Some(rest) = pattern.strip_prefix("**/**/") {
        pattern = &pattern[pattern.len() - rest.len() - 3..];
    }
    let meta = |s: &str| s.contains(['*', '?', '[', ']', '{', '}', '\\']);
    if let Some(name) = pattern
        .strip_prefix("**/")
        .and_then(|r| r.strip_suffix("/**"))
    {
        return (!meta(name) && !name.contains('/') && !name.is_empty())
            .then(|| Exemption::Name(name.to_string()));
    }
    if let Some(name) = pattern.strip_prefix("**/") {
        return (!meta(name) && !name.contains('/')).then_some(Exemption::Covered);
    }
    if let Some(dir) = pattern.strip_suffix("/**") {
        return (dir.starts_with('/') && !meta(dir) && dir.len() > 1)
            .then(|| Exemption::Prefix(format!("{dir}/")));
    }
    (pattern.starts_with('/') && !meta(pattern)).then_some(Exemption::Covered)
}

/// Bit of a file op in the op masks.
pub fn op_bit(kind: ActionKind) -> u32 {
    match kind {
        ActionKind::Unlink => 1 << 0,
        ActionKind::Rmdir => 1 << 1,
        ActionKind::Rename => 1 << 2,
        ActionKind::Truncate => 1 << 3,
        ActionKind::OpenWrite => 1 << 4,
        ActionKind::Exec => 1 << 5,
        ActionKind::Connect => 1 << 6,
    }
}

const FILE_KINDS: [ActionKind; 5] = [
    ActionKind::Unlink,
    ActionKind::Rmdir,
    ActionKind::Rename,
    ActionKind::Truncate,
    ActionKind::OpenWrite,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathEntry {
    /// Absolute prefix ending in `/` (so `/ws/` does not cover `/ws2`).
    pub prefix: String,
    pub flags: u32,
}

impl PathEntry {
    /// The LPM trie key: prefix length in bits and the zero-padded bytes.
    pub fn lpm_key(&self) -> (u32, [u8; PATH_PREFIX_MAX]) {
        let mut data = [0u8; PATH_PREFIX_MAX];
        let bytes = self.prefix.as_bytes();
        let n = bytes.len().min(PATH_PREFIX_MAX);
        data[..n].copy_from_slice(&bytes[..n]);
        ((n * 8) as u32, data)
    }
}

/// A name check on a path's final component (`Exact`, `Prefix`, `Suffix`),
/// or on its ancestors (`InDirectoryNamed`: some directory above it has this
/// name; the kernel walks at most [`MAX_ANCESTORS`] parents and sends the
/// op up when the path is deeper).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "match", content = "text", rename_all = "snake_case")]
pub enum NamePattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    InDirectoryNamed(String),
}

/// How many parent directories the kernel compares with `InDirectoryNamed`.
pub const MAX_ANCESTORS: usize = 32;

/// Which file ops go to userspace for a path in each location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpMasks {
    pub outside: u32,
    pub workspace: u32,
    pub build_dir: u32,
    pub scratch: u32,
}

impl OpMasks {
    /// Adds `ops` in every location `scope` covers.
    fn add_scoped(&mut self, ops: &[ActionKind], scope: Scope) {
        for kind in ops {
            let bit = op_bit(*kind);
            for (location, mask) in [
                (Location::Outside, &mut self.outside),
                (Location::Workspace, &mut self.workspace),
                (Location::BuildDir, &mut self.build_dir),
                (Location::Scratch, &mut self.scratch),
            ] {
                if scope_matches(scope, location) {
                    *mask |= bit;
                }
            }
        }
    }

    /// The mask for a path entry's location flags.
    pub fn for_flags(&self, flags: u32) -> u32 {
        if flags & path_flags::BUILD_DIR != 0 {
            self.build_dir
        } else if flags & path_flags::WORKSPACE != 0 {
            self.workspace
        } else if flags & path_flags::SCRATCH != 0 {
            self.scratch
        } else {
            self.outside
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetEntry {
    pub net: IpNet,
    /// Index of the network rule (order in the policy), for counters.
    pub rule: u32,
}

impl NetEntry {
    /// IPv4 LPM key: prefix length and address bytes (network order).
    pub fn ipv4_key(&self) -> Option<(u32, [u8; 4])> {
        match self.net {
            IpNet::V4(n) => Some((u32::from(n.prefix_len()), n.network().octets())),
            IpNet::V6(_) => None,
        }
    }

    /// IPv6 LPM key.
    pub fn ipv6_key(&self) -> Option<(u32, [u8; 16])> {
        match self.net {
            IpNet::V6(n) => Some((u32::from(n.prefix_len()), n.network().octets())),
            IpNet::V4(_) => None,
        }
    }
}

/// What the kernel programs load. See the module docs for how each is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelTables {
    pub paths: Vec<PathEntry>,
    pub protected_names: Vec<NamePattern>,
    /// Ops that go up for a PROTECTED prefix or a protected name.
    pub protected_ops: u32,
    /// Ops that go up by location (defaults that are not allow, rate rules
    /// the kernel does not count).
    pub ops_by_location: OpMasks,
    /// The rate rule counted in the kernel, when one can be.
    pub rate: Option<KernelRate>,
    /// A file rule could not be compiled to prefixes or names: send every
    /// file op in `protected_ops` up.
    pub all_file_ops: bool,
    pub ipv4: Vec<NetEntry>,
    pub ipv6: Vec<NetEntry>,
    /// Ports that go up for any address (rules with ports but no addresses).
    pub ports: Vec<(u16, u16)>,
    /// Host-name rules exist: the daemon resolves them and adds their
    /// addresses with [`KernelTables::add_resolved`].
    pub resolved_hosts: Vec<String>,
    pub unix_prefixes: Vec<String>,
    /// The default connect decision is not allow: every connect goes up.
    pub all_connects: bool,
    /// Base names whose exec stops for userspace. Look up the base name, then
    /// the base name without a version suffix (`python3.12` -> `python`).
    pub watched_programs: BTreeSet<String>,
    /// A rule needs every exec (a program glob, or exec default not allow).
    pub all_execs: bool,
    pub fail_mode: FailMode,
}

impl KernelTables {
    /// Adds resolved addresses of a host-name rule.
    pub fn add_resolved(&mut self, rule: u32, addrs: &[IpAddr]) {
        for addr in addrs {
            let entry = NetEntry {
                net: IpNet::from(*addr),
                rule,
            };
            match addr {
                IpAddr::V4(_) => self.ipv4.push(entry),
                IpAddr::V6(_) => self.ipv6.push(entry),
            }
        }
    }

    /// The watch-set key for a program base name.
    pub fn program_key(name: &str) -> [u8; PROGRAM_KEY_LEN] {
        let mut key = [0u8; PROGRAM_KEY_LEN];
        let bytes = name.as_bytes();
        let n = bytes.len().min(PROGRAM_KEY_LEN);
        key[..n].copy_from_slice(&bytes[..n]);
        key
    }

    /// What the kernel would do with a file op on `path`: true if it must go
    /// to userspace. The same logic the kernel programs implement, in Rust, so
    /// it is tested against [`Policy::evaluate`].
    pub fn file_op_goes_up(&self, kind: ActionKind, path: &Path) -> bool {
        let bit = op_bit(kind);
        // The kernel looks up the path as the hook sees it, without a trailing
        // slash: a workspace root itself ("/ws") does not match "/ws/" and so
        // counts as outside, as it does in evaluate().
        let text = path.to_string_lossy();
        let flags = self.flags_of(&text);
        if self.all_file_ops && self.protected_ops & bit != 0 {
            return true;
        }
        if flags & path_flags::PROTECTED != 0 && self.protected_ops & bit != 0 {
            return true;
        }
        let mut components = text.rsplit('/').filter(|c| !c.is_empty());
        let last = components.next().unwrap_or("");
        let ancestors: Vec<&str> = components.collect();
        let named = self.protected_names.iter().any(|p| match p {
            NamePattern::Exact(x) => last == x,
            NamePattern::Prefix(x) => last.starts_with(x.as_str()),
            NamePattern::Suffix(x) => last.ends_with(x.as_str()),
            NamePattern::InDirectoryNamed(x) => {
                ancestors.len() > MAX_ANCESTORS
                    || ancestors.iter().take(MAX_ANCESTORS).any(|a| a == x)
            }
        });
        if named && self.protected_ops & bit != 0 {
            return true;
        }
        let mask = self.ops_by_location.for_flags(flags);
        mask & bit != 0
    }

    /// The flags of the longest path entry covering `text` (the kernel's
    /// LPM lookup).
    fn flags_of(&self, text: &str) -> u32 {
        self.paths
            .iter()
            .filter(|e| text.starts_with(&e.prefix))
            .max_by_key(|e| e.prefix.len())
            .map_or(0, |e| e.flags)
    }

    /// Whether the kernel charges a file op on `path` to the session's rate
    /// budget (the same logic as the kernel programs; see
    /// `guard-ebpf/src/rate.rs`).
    pub fn file_op_charged(&self, kind: ActionKind, path: &Path) -> bool {
        let Some(rate) = &self.rate else {
            return false;
        };
        let text = path.to_string_lossy();
        let flags = self.flags_of(&text);
        if rate.counted.for_flags(flags) & op_bit(kind) == 0 || flags & path_flags::RATE_EXEMPT != 0
        {
            return false;
        }
        // Exempt names: the object's own name, its parent's, or any ancestor's.
        let names: Vec<&str> = text.split('/').filter(|c| !c.is_empty()).collect();
        !names
            .iter()
            .rev()
            .take(MAX_ANCESTORS + 1)
            .any(|n| rate.exempt_names.iter().any(|x| x == n))
    }

    /// Whether a connect must go to userspace (the same filter the kernel's
    /// connect hooks apply).
    pub fn connect_goes_up(&self, endpoint: &crate::action::Endpoint) -> bool {
        use crate::action::Endpoint;
        if self.all_connects {
            return true;
        }
        match endpoint {
            Endpoint::Unix { path } => {
                let text = path.to_string_lossy();
                self.unix_prefixes
                    .iter()
                    .any(|p| text.starts_with(p.as_str()))
            }
            Endpoint::Inet { addr } => {
                let ip = addr.ip();
                let port = addr.port();
                self.ipv4
                    .iter()
                    .chain(self.ipv6.iter())
                    .any(|e| e.net.contains(&ip))
                    || self.ports.iter().any(|(a, b)| (*a..=*b).contains(&port))
            }
        }
    }

    /// Whether an exec of `filename` stops for userspace.
    pub fn exec_goes_up(&self, filename: &Path) -> bool {
        if self.all_execs {
            return true;
        }
        let base = exec::program_name(&filename.to_string_lossy());
        self.watched_programs.contains(&base)
            || self.watched_programs.contains(&exec::strip_version(&base))
    }
}

impl Policy {
    /// Index of the rate rule the kernel counts for sessions running this
    /// policy's tables: the first that counts only unlink and rmdir, whose
    /// count fits a kernel budget and whose `except` globs all have a kernel
    /// form. Other rate rules send their ops
    /// to userspace, which counts them.
    pub fn kernel_rate_rule(&self) -> Option<usize> {
        self.compiled().rates.iter().position(|rule| {
            (rule.count as usize) < guard_common::rules::RATE_SLOTS
                && rule
                    .ops
                    .iter()
                    .all(|k| matches!(k, ActionKind::Unlink | ActionKind::Rmdir))
                && rule.except_patterns.iter().all(|p| exemption(p).is_some())
        })
    }

    /// Compiles this policy (with its workspaces and home) into kernel tables.
    pub fn kernel_tables(&self) -> KernelTables {
        let c = self.compiled();
        let mut paths: Vec<PathEntry> = Vec::new();
        let add = |prefix: &str, flags: u32, paths: &mut Vec<PathEntry>| {
            // Directories end in `/` so `/ws/` does not cover `/ws2`; a protected
            // literal path (`~/.ssh`, from `~/.ssh/**`) is entered as written,
            // covering the path itself (and, harmlessly, `~/.sshx`).
            let prefix = if flags & path_flags::PROTECTED != 0 {
                prefix.to_string()
            } else {
                format!("{}/", prefix.trim_end_matches('/'))
            };
            if prefix.len() > PATH_PREFIX_MAX && flags & path_flags::PROTECTED == 0 {
                // A truncated workspace prefix would cover its siblings: leave it out
                // (its paths then count as outside and go up).
                return;
            }
            match paths.iter_mut().find(|e| e.prefix == prefix) {
                Some(e) => e.flags |= flags,
                None => paths.push(PathEntry { prefix, flags }),
            }
        };
        for root in self.roots() {
            let root = root.to_string_lossy();
            add(&root, path_flags::WORKSPACE, &mut paths);
            for dir in &c.build_dirs {
                add(
                    &format!("{}/{dir}", root.trim_end_matches('/')),
                    path_flags::WORKSPACE | path_flags::BUILD_DIR,
                    &mut paths,
                );
            }
        }
        for scratch in &c.scratch {
            add(&scratch.to_string_lossy(), path_flags::SCRATCH, &mut paths);
        }
        let mut protected_ops = 0;
        let mut protected_names = BTreeSet::new();
        let mut all_file_ops = false;
        for rule in &c.files {
            if rule.decision == Decision::Allow {
                continue;
            }
            for kind in &rule.ops {
                protected_ops |= op_bit(*kind);
            }
            for pattern in &rule.patterns {
                match compile_pattern(pattern) {
                    Compiled::Prefix(prefix) => add(&prefix, path_flags::PROTECTED, &mut paths),
                    Compiled::Name(name) => {
                        protected_names.insert(name);
                    }
                    Compiled::Everything => all_file_ops = true,
                }
            }
        }
        let mut masks = OpMasks::default();
        for kind in FILE_KINDS {
            if self.default_decision(kind) != Decision::Allow {
                masks.outside |= op_bit(kind);
                masks.workspace |= op_bit(kind);
                masks.build_dir |= op_bit(kind);
                masks.scratch |= op_bit(kind);
            }
        }
        let kernel_rate = self.kernel_rate_rule();
        let mut rate = None;
        for (index, rule) in c.rates.iter().enumerate() {
            if kernel_rate == Some(index) {
                let mut counted = OpMasks::default();
                counted.add_scoped(&rule.ops, rule.scope);
                let mut exempt_names = Vec::new();
                for pattern in &rule.except_patterns {
                    match exemption(pattern) {
                        Some(Exemption::Prefix(prefix)) => {
                            add(&prefix, path_flags::RATE_EXEMPT, &mut paths);
                        }
                        Some(Exemption::Name(name)) => exempt_names.push(name),
                        _ => {}
                    }
                }
                rate = Some(KernelRate {
                    rule: rule.id.clone(),
                    limit: rule.count,
                    window: rule.window,
                    ignore_recent: rule.ignore_recent,
                    counted,
                    exempt_names,
                });
                continue;
            }
            masks.add_scoped(&rule.ops, rule.scope);
        }
        // Cumulative flags: a prefix inherits from every shorter prefix above it.
        let snapshot = paths.clone();
        for entry in &mut paths {
            for other in &snapshot {
                if entry.prefix.starts_with(&other.prefix) {
                    entry.flags |= other.flags;
                }
            }
        }
        paths.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        let mut ipv4 = Vec::new();
        let mut ipv6 = Vec::new();
        let mut ports = Vec::new();
        let mut unix_prefixes = BTreeSet::new();
        let mut resolved_hosts = Vec::new();
        for (index, rule) in c.network.iter().enumerate() {
            if rule.decision == Decision::Allow {
                continue;
            }
            let index = index as u32;
            for net in &rule.cidrs {
                let entry = NetEntry {
                    net: *net,
                    rule: index,
                };
                match net {
                    IpNet::V4(_) => ipv4.push(entry),
                    IpNet::V6(_) => ipv6.push(entry),
                }
            }
            resolved_hosts.extend(rule.hosts.iter().cloned());
            if rule.hosts.is_empty() && rule.cidrs.is_empty() {
                ports.extend(rule.ports.iter().map(|PortRange(a, b)| (*a, *b)));
            }
            for pattern in &rule.unix_patterns {
                unix_prefixes.insert(literal_prefix(pattern));
            }
        }
        let mut tables = KernelTables {
            paths,
            protected_names: protected_names.into_iter().collect(),
            protected_ops,
            ops_by_location: masks,
            rate,
            all_file_ops,
            ipv4,
            ipv6,
            ports,
            resolved_hosts,
            unix_prefixes: unix_prefixes.into_iter().collect(),
            all_connects: self.default_decision(ActionKind::Connect) != Decision::Allow,
            watched_programs: exec::watched_programs()
                .into_iter()
                .map(String::from)
                .collect(),
            all_execs: self.default_decision(ActionKind::Exec) != Decision::Allow,
            fail_mode: self.fail_mode(),
        };
        let resolved = self.resolved.read().unwrap_or_else(|e| e.into_inner());
        for (index, rule) in c.network.iter().enumerate() {
            if rule.decision == Decision::Allow {
                continue;
            }
            for host in &rule.hosts {
                if let Some(addrs) = resolved.get(host) {
                    tables.add_resolved(index as u32, addrs);
                }
            }
        }
        for rule in &c.exec {
            if rule.decision == Decision::Allow {
                continue;
            }
            for name in &rule.program_names {
                if name.contains(['*', '?', '[', '{']) {
                    tables.all_execs = true;
                } else {
                    tables.watched_programs.insert(name.clone());
                }
            }
        }
        tables
    }
}

enum Compiled {
    Prefix(String),
    Name(NamePattern),
    Everything,
}

/// An absolute glob becomes its literal directory prefix; `**/name`,
/// `**/*.ext`, `**/prefix.*` and `**/dir/name` become name patterns.
fn compile_pattern(pattern: &str) -> Compiled {
    if let Some(relative) = pattern.strip_prefix("**/") {
        let parts: Vec<&str> = relative.split('/').collect();
        let meta = |s: &str| s.contains(['*', '?', '[', '{']);
        let last = parts[parts.len() - 1];
        // The final component decides when it is literal or a simple
        // prefix/suffix glob (`.git/HEAD` -> any file named HEAD: more goes
        // up than matches, never less).
        let name = if !meta(last) {
            Some(NamePattern::Exact(last.to_string()))
        } else if last.starts_with('*') && !meta(&last[1..]) && !last[1..].is_empty() {
            Some(NamePattern::Suffix(last[1..].to_string()))
        } else if last.ends_with('*') && !meta(&last[..last.len() - 1]) && last.len() > 1 {
            Some(NamePattern::Prefix(last[..last.len() - 1].to_string()))
        } else if parts.len() > 1 && !meta(parts[0]) {
            // `.git/**`: anything below a directory with that name.
            Some(NamePattern::InDirectoryNamed(parts[0].to_string()))
        } else {
            None
        };
        return name.map_or(Compiled::Everything, Compiled::Name);
    }
    let prefix = literal_prefix(pattern);
    if prefix == "/" {
        return Compiled::Everything;
    }
    Compiled::Prefix(prefix)
}

/// The directory part of a glob before its first wildcard (`/a/b*/c` -> `/a/`),
/// or the whole pattern when it has no wildcard (`/a/b`).
fn literal_prefix(pattern: &str) -> String {
    let cut = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let literal = &pattern[..cut];
    if cut == pattern.len() {
        return literal.to_string();
    }
    match literal.rfind('/') {
        Some(i) => literal[..=i].to_string(),
        None => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::action::Action;

    fn policy() -> Policy {
        Policy::embedded_default()
            .with_home("/home/u")
            .with_workspace("/home/u/ws")
    }

    #[test]
    fn the_default_rate_rule_is_counted_in_the_kernel() {
        let t = policy().kernel_tables();
        let rate = t
            .rate
            .as_ref()
            .expect("the default rate rule fits the kernel");
        assert_eq!(rate.rule, "rate.mass-delete");
        assert_eq!((rate.limit, rate.window), (300, Duration::from_secs(10)));
        let deletes = op_bit(ActionKind::Unlink) | op_bit(ActionKind::Rmdir);
        assert_eq!(rate.counted.workspace, deletes);
        assert_eq!(rate.counted.outside, deletes);
        assert_eq!(rate.counted.build_dir, 0);
        assert_eq!(rate.counted.scratch, 0);
        for name in [".git", "node_modules", "site-packages"] {
            assert!(rate.exempt_names.iter().any(|n| n == name), "{name}");
        }
        let flags = |p: &str| t.paths.iter().find(|e| e.prefix == p).map(|e| e.flags);
        assert_eq!(flags("/usr/"), Some(path_flags::RATE_EXEMPT));
        assert_eq!(
            flags("/home/u/.cargo/"),
            Some(path_flags::RATE_EXEMPT),
            "~ expanded"
        );
        // The rule no longer sends every workspace deletion up: the kernel
        // charges them to the budget, except where the rule excepts them.
        assert_eq!(t.ops_by_location.workspace & deletes, 0);
        assert!(!t.file_op_goes_up(ActionKind::Unlink, Path::new("/home/u/ws/src/a.rs")));
        for (path, charged) in [
            ("/home/u/ws/src/a.rs", true),
            ("/home/u/ws/.git", false),
            ("/home/u/ws/.git/objects/ab/cdef", false),
            ("/home/u/ws/web/node_modules/x/y.js", false),
            ("/home/u/ws/target/debug/x", false),
            ("/usr/lib/x", false),
            ("/home/u/.cargo/registry/x", false),
            ("/srv/data/x", true),
            ("/tmp/x", false),
        ] {
            assert_eq!(
                t.file_op_charged(ActionKind::Unlink, Path::new(path)),
                charged,
                "{path}"
            );
        }
    }

    #[test]
    fn a_rate_rule_the_kernel_cannot_express_is_counted_in_userspace() {
        let p = Policy::from_yaml(
            "version: 1\nrates:\n  - id: r\n    except: [\"**/*.log\"]\n    count: 5\n    window: 1s\n    decision: ask\n",
            "t.yaml",
        )
        .unwrap()
        .with_workspace("/ws");
        let t = p.kernel_tables();
        assert_eq!(t.rate, None);
        assert_ne!(t.ops_by_location.workspace & op_bit(ActionKind::Unlink), 0);
        // Too many to count in a kernel budget: the same.
        let p = Policy::from_yaml(
            "version: 1\nrates:\n  - id: r\n    count: 5000\n    window: 1s\n    decision: ask\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(p.kernel_rate_rule(), None);
    }

    #[test]
    fn ignore_recent_does_not_count_files_just_written() {
        let p = Policy::from_yaml(
            "version: 1\nrates:\n  - id: r\n    where: any\n    count: 3\n    window: 10s\n    ignore_recent: true\n    decision: ask\n",
            "t.yaml",
        )
        .unwrap();
        assert!(p.kernel_tables().rate.unwrap().ignore_recent);
        let dir = std::env::temp_dir().join(format!("guard-recent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fresh = dir.join("fresh");
        std::fs::write(&fresh, b"x").unwrap();
        let unlink = |path: &Path| Action::Unlink {
            path: path.to_path_buf(),
        };
        for _ in 0..10 {
            assert_eq!(p.evaluate(&unlink(&fresh)).decision, Decision::Allow);
        }
        // A path that cannot be read counts.
        let gone = dir.join("gone");
        let decisions: Vec<_> = (0..4)
            .map(|_| p.evaluate(&unlink(&gone)).decision)
            .collect();
        assert_eq!(decisions[3], Decision::Ask, "{decisions:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_kernel_says_when_the_counted_rate_rule_trips() {
        let p = policy();
        let unlink = |path: &str| Action::Unlink {
            path: PathBuf::from(path),
        };
        let v = p.evaluate_from_kernel(&unlink("/home/u/ws/src/a.rs"), true);
        assert_eq!(
            (v.decision, v.rule.as_str()),
            (Decision::Freeze, "rate.mass-delete")
        );
        // Within budget: however many came before, nothing is counted here.
        for _ in 0..400 {
            let v = p.evaluate_from_kernel(&unlink("/home/u/ws/src/a.rs"), false);
            assert_eq!(v.decision, Decision::Allow);
        }
        // Spent, but for a path the rule excepts: the rule does not apply.
        let v = p.evaluate_from_kernel(&unlink("/home/u/ws/.git/objects/ab/cd"), true);
        assert_eq!(v.decision, Decision::Allow, "{v:?}");
    }

    #[test]
    fn paths_carry_cumulative_flags() {
        let t = policy().kernel_tables();
        let find = |p: &str| t.paths.iter().find(|e| e.prefix == p).map(|e| e.flags);
        assert_eq!(find("/home/u/ws/"), Some(path_flags::WORKSPACE));
        assert_eq!(
            find("/home/u/ws/node_modules/"),
            Some(path_flags::WORKSPACE | path_flags::BUILD_DIR)
        );
        assert_eq!(find("/tmp/"), Some(path_flags::SCRATCH));
        assert_eq!(find("/home/u/.ssh/"), Some(path_flags::PROTECTED));
        assert!(
            t.protected_names
                .contains(&NamePattern::Suffix(".tfstate".into()))
        );
        assert!(
            t.protected_names
                .contains(&NamePattern::Exact(".git".into()))
        );
        assert!(
            t.protected_names
                .contains(&NamePattern::Exact("HEAD".into()))
        );
        assert!(
            t.protected_names
                .contains(&NamePattern::Prefix(".env.".into()))
        );
        let (bits, key) = t.paths[0].lpm_key();
        assert_eq!(bits as usize, t.paths[0].prefix.len() * 8);
        assert_eq!(
            &key[..t.paths[0].prefix.len()],
            t.paths[0].prefix.as_bytes()
        );
    }

    #[test]
    fn ordinary_work_stays_in_the_kernel_and_rule_matches_go_up() {
        let p = policy();
        let t = p.kernel_tables();
        for (kind, path) in [
            (ActionKind::Unlink, "/home/u/ws/node_modules/x/index.js"),
            (ActionKind::Rmdir, "/home/u/ws/target/debug"),
            (ActionKind::Unlink, "/tmp/cargo-install123/x.o"),
            (ActionKind::Truncate, "/home/u/ws/src/main.rs"),
            (ActionKind::Rename, "/home/u/ws/src/.main.rs.swp"),
            (ActionKind::OpenWrite, "/home/u/ws/Cargo.lock"),
            (ActionKind::Unlink, "/home/u/.cache/pip/x"),
            (ActionKind::Unlink, "/home/u/ws/src/lib.rs"),
        ] {
            assert!(
                !t.file_op_goes_up(kind, Path::new(path)),
                "{kind:?} {path} should stay in the kernel"
            );
            let verdict = p.evaluate(&file_action(kind, path));
            assert_eq!(verdict.decision, Decision::Allow, "{path}: {verdict:?}");
        }
        // Anything a rule decides must go up.
        for (kind, path) in [
            (ActionKind::Unlink, "/home/u/.ssh/id_ed25519"),
            (ActionKind::Unlink, "/home/u/ws/terraform.tfstate"),
            (ActionKind::Rmdir, "/home/u/ws/.git"),
            (ActionKind::Unlink, "/home/u/ws/.git/HEAD"),
            (ActionKind::Unlink, "/home/u/ws/.env.production"),
        ] {
            assert!(
                t.file_op_goes_up(kind, Path::new(path)),
                "{kind:?} {path} must reach userspace"
            );
        }
    }

    /// The filter is sound: whatever stays in the kernel is allowed by
    /// `evaluate`, for every path of a grid and several policies.
    #[test]
    fn nothing_a_rule_decides_stays_in_the_kernel() {
        let custom = Policy::from_yaml(
            "version: 1\nextends: default\nfiles:\n  - id: a\n    paths: [\".git/**\", \"/srv/*/data/**\", \"deploy/keys/*.pem\"]\n    ops: [unlink, rename, truncate, open_write]\n    where: inside_workspace\n    decision: ask\n  - id: b\n    paths: [\"**/secrets\"]\n    decision: deny\ndefaults:\n  truncate: log\n",
            "custom.yaml",
        )
        .unwrap();
        let production = Policy::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/production.yaml"
        )))
        .unwrap();
        let dirs = [
            "/home/u/ws",
            "/home/u/ws/src",
            "/home/u/ws/node_modules/x",
            "/home/u/ws/pkg/target",
            "/home/u/ws/.git",
            "/home/u/ws/.git/refs/heads",
            "/home/u/ws/deploy/keys",
            "/home/u",
            "/home/u/.ssh",
            "/home/u/.aws",
            "/home/u/.cache/x",
            "/tmp",
            "/tmp/ws2",
            "/srv/app/data",
            "/srv/app/data/deep/er",
            "/etc/myapp",
            "/",
            "/home/u/ws/a/b/c/d/e/f/g/h/i/j",
        ];
        let names = [
            "x.rs",
            "HEAD",
            "config",
            ".git",
            ".env",
            ".env.local",
            ".env.example",
            "app.sqlite3",
            "terraform.tfstate",
            "id_rsa",
            "known_hosts",
            "credentials",
            "k.pem",
            "secrets",
            "main",
        ];
        let kinds = [
            ActionKind::Unlink,
            ActionKind::Rmdir,
            ActionKind::Rename,
            ActionKind::Truncate,
            ActionKind::OpenWrite,
        ];
        for (label, policy) in [
            ("default", Policy::embedded_default()),
            ("custom", custom),
            ("production", production),
        ] {
            let p = policy
                .with_home("/home/u")
                .with_workspace("/home/u/ws")
                .with_workspace("/tmp/ws2");
            let t = p.kernel_tables();
            for dir in dirs {
                // The directory itself (a workspace root too), then entries in it.
                let paths = std::iter::once(dir.to_string()).chain(
                    names
                        .iter()
                        .map(|name| format!("{}/{name}", dir.trim_end_matches('/'))),
                );
                for path in paths {
                    for kind in kinds {
                        if t.file_op_goes_up(kind, Path::new(&path)) {
                            continue;
                        }
                        let verdict = p.evaluate(&file_action(kind, &path));
                        assert_eq!(
                            verdict.decision,
                            Decision::Allow,
                            "{label}: {kind:?} {path} stays in the kernel but {verdict:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn connects_a_rule_decides_go_up() {
        use crate::action::{Action, Endpoint};
        let production = Policy::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/production.yaml"
        )))
        .unwrap();
        production.set_resolved("db.prod.example.com", vec!["192.0.2.7".parse().unwrap()]);
        for (label, p) in [
            ("default", Policy::embedded_default()),
            ("production", production),
        ] {
            let t = p.kernel_tables();
            let inet = [
                "10.20.1.1:5432",
                "10.20.1.1:80",
                "192.0.2.7:3306",
                "192.0.2.8:3306",
                "169.254.169.254:80",
                "127.0.0.1:6379",
                "[fd00::1]:5432",
            ];
            let unix = [
                "/run/postgresql/.s.PGSQL.5432",
                "/var/run/docker.sock",
                "/tmp/x.sock",
            ];
            let endpoints = inet
                .iter()
                .map(|a| Endpoint::Inet {
                    addr: a.parse().unwrap(),
                })
                .chain(unix.iter().map(|p| Endpoint::Unix { path: p.into() }));
            for endpoint in endpoints {
                if t.connect_goes_up(&endpoint) {
                    continue;
                }
                let v = p.evaluate(&Action::Connect {
                    endpoint: endpoint.clone(),
                });
                assert_eq!(
                    v.decision,
                    Decision::Allow,
                    "{label}: {endpoint:?} stays in the kernel but {v:?}"
                );
            }
            assert!(t.connect_goes_up(&Endpoint::Inet {
                addr: "169.254.169.254:80".parse().unwrap()
            }));
        }
    }

    #[test]
    fn watched_programs_cover_every_classifier_and_wrapper() {
        let t = policy().kernel_tables();
        for program in [
            "/usr/bin/rm",
            "/usr/bin/terraform",
            "/bin/bash",
            "/usr/bin/python3.12",
            "/usr/bin/env",
            "/usr/bin/psql",
            "/sbin/mkfs.ext4",
            "/usr/bin/sudo",
        ] {
            assert!(t.exec_goes_up(Path::new(program)), "{program} not watched");
        }
        for program in [
            "/usr/bin/cc",
            "/usr/bin/ld",
            "/usr/bin/cargo",
            "/usr/bin/ls",
            "/usr/bin/rustc",
        ] {
            assert!(
                !t.exec_goes_up(Path::new(program)),
                "{program} should not be watched"
            );
        }
        assert_eq!(KernelTables::program_key("rm")[..3], [b'r', b'm', 0]);
    }

    #[test]
    fn network_rules_become_lpm_entries() {
        let p = Policy::from_yaml(
            "version: 1\nnetwork:\n  - id: net.prod\n    hosts: [db.prod.example.com]\n    cidrs: [10.20.0.0/16, \"fd00::/8\"]\n    ports: [5432]\n    decision: ask\n  - id: net.ports\n    ports: [\"6379-6380\"]\n    decision: log\n  - id: net.sock\n    unix: [\"/run/postgresql/*.sock\"]\n    decision: ask\n",
            "t.yaml",
        )
        .unwrap();
        p.set_resolved("db.prod.example.com", vec!["192.0.2.7".parse().unwrap()]);
        let t = p.kernel_tables();
        assert_eq!(t.ipv4.len(), 2);
        assert_eq!(t.ipv4[0].ipv4_key(), Some((16, [10, 20, 0, 0])));
        assert_eq!(t.ipv4[1].ipv4_key(), Some((32, [192, 0, 2, 7])));
        assert_eq!(t.ipv6[0].ipv6_key().unwrap().0, 8);
        assert_eq!(t.ports, vec![(6379, 6380)]);
        assert_eq!(t.unix_prefixes, vec!["/run/postgresql/".to_string()]);
        assert!(!t.all_connects);
    }

    fn file_action(kind: ActionKind, path: &str) -> crate::action::Action {
        use crate::action::Action;
        let path = std::path::PathBuf::from(path);
        match kind {
            ActionKind::Unlink => Action::Unlink { path },
            ActionKind::Rmdir => Action::Rmdir { path },
            ActionKind::Truncate => Action::Truncate { path },
            ActionKind::OpenWrite => Action::OpenWrite { path },
            ActionKind::Rename => Action::Rename {
                from: path.clone(),
                to: path,
            },
            _ => unreachable!("file kinds only"),
        }
    }
}
