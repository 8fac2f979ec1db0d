//! The kernel's decision tables, written from userspace: which paths,
//! endpoints and programs need a decision (everything else never leaves the
//! kernel), the grants held syscalls look for when they restart, and the
//! record of stopped tasks. Opened from the pin directory, so any thread or
//! a restarted daemon can use them.

use std::{
    net::IpAddr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData, lpm_trie::Key, lpm_trie::LpmTrie};
use guard_common::{
    EndpointPrefix, EventKind, Grant, GrantKey, HeldTask, NamePrefix, PathPrefix, RateBudget, Rule,
    WatchedExec,
    rules::{
        EXEC_NAME_MAX, NAME_KEY_LEN, NAME_PATTERN_MAX, PATH_PREFIX_MAX, RATE_SLOTS, grant_verdict,
    },
    session::SESSION_KEY_LEN,
};

/// How much of the tree below a path a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathScope {
    /// This file or directory only.
    Exact,
    /// Everything below this directory (not the directory itself).
    Below,
}

/// What a policy compiles to for the kernel (the policy's
/// `Policy::kernel_tables()` converts into one): everything listed needs a
/// decision in userspace or is refused; everything else never leaves the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelRuleSet {
    /// File ops held on paths no other entry covers (a rule on `/`; longer
    /// prefixes such as the workspace override it).
    pub unmatched_file_hold: u32,
    /// Trees whose changes (unlink, rmdir, rename, truncate, writable open) are held.
    pub protected_trees: Vec<PathBuf>,
    /// Single files whose changes are held.
    pub protected_files: Vec<PathBuf>,
    /// Trees where nothing is held even when unmatched files are (the workspace).
    pub allowed_trees: Vec<PathBuf>,
    /// Connects held: (address, prefix bits, port or any).
    pub held_endpoints: Vec<(IpAddr, u8, Option<u16>)>,
    /// Connects refused in the kernel.
    pub denied_endpoints: Vec<(IpAddr, u8, Option<u16>)>,
    /// Unix socket paths whose connect is held.
    pub held_unix_sockets: Vec<PathBuf>,
    /// Program base names stopped at exec.
    pub watched_programs: Vec<String>,
    /// Name patterns (on an object's name or its parent's) whose file ops are held.
    pub protected_names: Vec<(NameMatch, String)>,
}

/// Every file op a protected tree holds.
pub const FILE_OPS: u32 = EventKind::Unlink.bit()
    | EventKind::Rmdir.bit()
    | EventKind::Rename.bit()
    | EventKind::Truncate.bit()
    | EventKind::OpenWrite.bit();

/// How a name pattern matches the object's name or its parent's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// The whole name (`.git`, `id_rsa`).
    Exact,
    /// The start of the name (`id_` for `id_*`).
    Prefix,
    /// The end of the name (`.tfstate` for `*.tfstate`).
    Suffix,
    /// The whole name of any directory above the object, up to
    /// `ANCESTOR_NAMES_MAX` levels (`.git` for `**/.git/**`). The session
    /// needs `session_flags::ANCESTOR_NAMES`.
    Ancestor,
}

/// The pinned rule, grant and held-task maps.
pub struct KernelMaps {
    pin: PathBuf,
    paths: LpmTrie<MapData, PathPrefix, Rule>,
    endpoints: LpmTrie<MapData, EndpointPrefix, Rule>,
    execs: HashMap<MapData, WatchedExec, Rule>,
    name_prefixes: LpmTrie<MapData, NamePrefix, Rule>,
    name_suffixes: LpmTrie<MapData, NamePrefix, Rule>,
    ancestor_names: LpmTrie<MapData, NamePrefix, Rule>,
    grants: HashMap<MapData, GrantKey, Grant>,
    held: HashMap<MapData, u32, HeldTask>,
    guard_pids: HashMap<MapData, u32, u32>,
    rates: HashMap<MapData, u64, RateBudget>,
}

/// `trie`'s rule for exactly `key` merged with `rule` (an LPM lookup alone
/// would return a shorter covering entry's rule).
fn merged<K: aya::Pod + PartialEq>(
    trie: &LpmTrie<MapData, K, Rule>,
    key: &Key<K>,
    rule: Rule,
) -> Rule {
    let exact = trie
        .keys()
        .filter_map(Result::ok)
        .any(|k| k.prefix_len() == key.prefix_len() && k.data() == key.data());
    match trie.get(key, 0) {
        Ok(old) if exact => old.merge(rule),
        _ => rule,
    }
}

fn open(pin: &Path, name: &str) -> anyhow::Result<Map> {
    let path = pin.join(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Ok(Map::from_map_data(data)?)
}

impl KernelMaps {
    pub fn open(pin: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            pin: pin.to_path_buf(),
            paths: LpmTrie::try_from(open(pin, "PATH_RULES")?)?,
            endpoints: LpmTrie::try_from(open(pin, "ENDPOINT_RULES")?)?,
            execs: HashMap::try_from(open(pin, "WATCHED_EXEC")?)?,
            name_prefixes: LpmTrie::try_from(open(pin, "NAME_PREFIX_RULES")?)?,
            name_suffixes: LpmTrie::try_from(open(pin, "NAME_SUFFIX_RULES")?)?,
            ancestor_names: LpmTrie::try_from(open(pin, "ANCESTOR_NAME_RULES")?)?,
            grants: HashMap::try_from(open(pin, "GRANTS")?)?,
            held: HashMap::try_from(open(pin, "HELD")?)?,
            guard_pids: HashMap::try_from(open(pin, "GUARD_PIDS")?)?,
            rates: HashMap::try_from(open(pin, "RATES")?)?,
        })
    }

    /// The pin directory these maps come from.
    pub fn pin_path(&self) -> &Path {
        &self.pin
    }

    /// Sets what the kernel does with `ops` on `path` (absolute) in a session.
    pub fn set_path_rule(
        &mut self,
        session: u64,
        path: &Path,
        scope: PathScope,
        rule: Rule,
    ) -> anyhow::Result<()> {
        let key = path_key(session, path, scope)?;
        self.paths.insert(&key, rule, 0)?;
        Ok(())
    }

    /// Sets (merging with what is there) the rule of a raw path prefix: the
    /// bytes are matched as they are (`/dir/` covers what is below `/dir`).
    pub fn set_path_prefix(
        &mut self,
        session: u64,
        prefix: &[u8],
        rule: Rule,
    ) -> anyhow::Result<()> {
        if !prefix.starts_with(b"/") || prefix.len() > PATH_PREFIX_MAX {
            bail!(
                "rule prefix {:?} must be absolute and at most {PATH_PREFIX_MAX} bytes",
                String::from_utf8_lossy(prefix)
            );
        }
        let mut data = PathPrefix {
            session: session.to_be_bytes(),
            path: [0; PATH_PREFIX_MAX],
        };
        data.path[..prefix.len()].copy_from_slice(prefix);
        let key = Key::new(((SESSION_KEY_LEN + prefix.len()) * 8) as u32, data);
        let merged = merged(&self.paths, &key, rule);
        self.paths.insert(&key, merged, 0)?;
        Ok(())
    }

    /// Sets what the kernel does with connects to `addr/prefix_bits` (and
    /// `port`, or any port) in a session.
    pub fn set_endpoint_rule(
        &mut self,
        session: u64,
        addr: IpAddr,
        prefix_bits: u8,
        port: Option<u16>,
        rule: Rule,
    ) -> anyhow::Result<()> {
        let key = endpoint_key(session, addr, prefix_bits, port)?;
        self.endpoints.insert(&key, rule, 0)?;
        Ok(())
    }

    /// Sets what the kernel does with `ops` on objects whose own name or
    /// whose parent directory's name matches `pattern`.
    pub fn set_name_rule(
        &mut self,
        session: u64,
        how: NameMatch,
        pattern: &str,
        rule: Rule,
    ) -> anyhow::Result<()> {
        let key = name_key(session, how, pattern)?;
        let trie = match how {
            NameMatch::Suffix => &mut self.name_suffixes,
            NameMatch::Ancestor => &mut self.ancestor_names,
            NameMatch::Exact | NameMatch::Prefix => &mut self.name_prefixes,
        };
        let rule = merged(trie, &key, rule);
        trie.insert(&key, rule, 0)?;
        Ok(())
    }

    /// Gives a session a rate budget: ops its rules mark `counted` stay in
    /// the kernel until more than `limit` of them fall within `window`
    /// (with `ignore_recent`, ops on objects changed within the window are
    /// not charged).
    pub fn set_rate_budget(
        &mut self,
        session: u64,
        limit: u32,
        window: Duration,
        ignore_recent: bool,
    ) -> anyhow::Result<()> {
        if limit as usize >= RATE_SLOTS {
            bail!(
                "a kernel rate budget counts at most {} ops, not {limit}",
                RATE_SLOTS - 1
            );
        }
        let budget = RateBudget {
            limit,
            ignore_recent: ignore_recent.into(),
            window_ns: window.as_nanos().try_into().unwrap_or(u64::MAX),
            realtime_offset_ns: clock_ns(libc::CLOCK_REALTIME).saturating_sub(monotonic_ns()),
            seq: 0,
            slots: [0; RATE_SLOTS],
        };
        self.rates.insert(session, budget, 0)?;
        Ok(())
    }

    /// Makes an exec of a program with this base name stop the task (or be
    /// refused) in a session. The name is the base name of the path given to
    /// execve(2); for a script that is the script, not its interpreter.
    pub fn watch_exec(&mut self, session: u64, name: &str, rule: Rule) -> anyhow::Result<()> {
        self.execs.insert(exec_key(session, name)?, rule, 0)?;
        Ok(())
    }

    /// Installs a compiled rule set for a session (on top of what is there).
    pub fn install(&mut self, session: u64, rules: &KernelRuleSet) -> anyhow::Result<()> {
        let hold = |mask| Rule::holding(mask);
        if rules.unmatched_file_hold != 0 {
            let rule = Rule::holding(rules.unmatched_file_hold);
            self.set_path_rule(session, Path::new("/"), PathScope::Below, rule)?;
        }
        for p in &rules.allowed_trees {
            self.set_path_rule(session, p, PathScope::Below, Rule::ALLOW)?;
        }
        for p in &rules.protected_trees {
            self.set_path_rule(session, p, PathScope::Below, hold(FILE_OPS))?;
            self.set_path_rule(session, p, PathScope::Exact, hold(FILE_OPS))?;
        }
        for p in &rules.protected_files {
            self.set_path_rule(session, p, PathScope::Exact, hold(FILE_OPS))?;
        }
        for p in &rules.held_unix_sockets {
            self.set_path_rule(session, p, PathScope::Exact, hold(EventKind::Connect.bit()))?;
        }
        for &(addr, bits, port) in &rules.held_endpoints {
            self.set_endpoint_rule(session, addr, bits, port, hold(EventKind::Connect.bit()))?;
        }
        for &(addr, bits, port) in &rules.denied_endpoints {
            let deny = Rule {
                deny: EventKind::Connect.bit(),
                ..Rule::ALLOW
            };
            self.set_endpoint_rule(session, addr, bits, port, deny)?;
        }
        for (how, pattern) in &rules.protected_names {
            self.set_name_rule(session, *how, pattern, hold(FILE_OPS))?;
        }
        for name in &rules.watched_programs {
            self.watch_exec(session, name, hold(EventKind::Exec.bit()))?;
        }
        Ok(())
    }

    /// Writes a decision for a held action; the restarted syscall uses it.
    /// `once` grants are removed by their first use; every grant expires.
    pub fn grant(
        &mut self,
        session: u64,
        kind: EventKind,
        object_id: u64,
        allow: bool,
        once: bool,
        valid_for: Duration,
    ) -> anyhow::Result<()> {
        let key = GrantKey {
            session,
            object_id,
            op: kind as u32,
            _pad: 0,
        };
        let expires_ns =
            monotonic_ns().saturating_add(valid_for.as_nanos().min(u64::MAX as u128) as u64);
        let grant = Grant {
            expires_ns,
            verdict: if allow {
                grant_verdict::ALLOW
            } else {
                grant_verdict::DENY
            },
            once: once as u32,
        };
        self.grants.insert(key, grant, 0)?;
        Ok(())
    }

    /// Tasks the kernel stopped and that no grant has released yet, by thread id.
    pub fn held(&self) -> Vec<(u32, HeldTask)> {
        self.held.iter().filter_map(Result::ok).collect()
    }

    /// Session tasks may not signal this process (needs BPF LSM).
    pub fn protect_pid(&mut self, pid: u32) -> anyhow::Result<()> {
        self.guard_pids.insert(pid, 1, 0)?;
        Ok(())
    }

    pub fn unprotect_pid(&mut self, pid: u32) {
        let _ = self.guard_pids.remove(&pid);
    }

    pub fn forget_held(&mut self, tid: u32) {
        let _ = self.held.remove(&tid);
    }

    /// Removes every rule and grant of a session (when it ends).
    pub fn clear_session(&mut self, session: u64) {
        let be = session.to_be_bytes();
        let paths: Vec<_> = self
            .paths
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data().session == be)
            .collect();
        for k in paths {
            let _ = self.paths.remove(&k);
        }
        let endpoints: Vec<_> = self
            .endpoints
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data().session == be)
            .collect();
        for k in endpoints {
            let _ = self.endpoints.remove(&k);
        }
        let execs: Vec<_> = self
            .execs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.session == session)
            .collect();
        for k in execs {
            let _ = self.execs.remove(&k);
        }
        for trie in [
            &mut self.name_prefixes,
            &mut self.name_suffixes,
            &mut self.ancestor_names,
        ] {
            let names: Vec<_> = trie
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.data().session == be)
                .collect();
            for k in names {
                let _ = trie.remove(&k);
            }
        }
        let grants: Vec<_> = self
            .grants
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.session == session)
            .collect();
        for k in grants {
            let _ = self.grants.remove(&k);
        }
        let _ = self.rates.remove(&session);
    }
}

/// The LPM key of a path rule: session, then the path bytes (with a trailing
/// `/` for a tree, a NUL for one file).
pub fn path_key(session: u64, path: &Path, scope: PathScope) -> anyhow::Result<Key<PathPrefix>> {
    let raw = path.as_os_str().as_bytes();
    if !raw.starts_with(b"/") {
        bail!("rule path {} is not absolute", path.display());
    }
    let mut bytes = raw.to_vec();
    match scope {
        PathScope::Below => {
            if !bytes.ends_with(b"/") {
                bytes.push(b'/');
            }
        }
        PathScope::Exact => {
            while bytes.len() > 1 && bytes.ends_with(b"/") {
                bytes.pop();
            }
            bytes.push(0);
        }
    }
    if bytes.len() > PATH_PREFIX_MAX {
        bail!(
            "rule path {} is longer than the {} bytes the kernel can match; use a shorter prefix",
            path.display(),
            PATH_PREFIX_MAX - 1
        );
    }
    let mut data = PathPrefix {
        session: session.to_be_bytes(),
        path: [0; PATH_PREFIX_MAX],
    };
    data.path[..bytes.len()].copy_from_slice(&bytes);
    Ok(Key::new(((SESSION_KEY_LEN + bytes.len()) * 8) as u32, data))
}

/// The LPM key of an endpoint rule. IPv4 is stored as ::ffff:a.b.c.d.
pub fn endpoint_key(
    session: u64,
    addr: IpAddr,
    prefix_bits: u8,
    port: Option<u16>,
) -> anyhow::Result<Key<EndpointPrefix>> {
    let (v6, bits) = match addr {
        IpAddr::V4(a) => {
            if prefix_bits > 32 {
                bail!("IPv4 prefix /{prefix_bits} is longer than 32 bits");
            }
            (a.to_ipv6_mapped(), 96 + prefix_bits as u32)
        }
        IpAddr::V6(a) => {
            if prefix_bits > 128 {
                bail!("IPv6 prefix /{prefix_bits} is longer than 128 bits");
            }
            (a, prefix_bits as u32)
        }
    };
    Ok(Key::new(
        ((SESSION_KEY_LEN + 2) * 8) as u32 + bits,
        EndpointPrefix {
            session: session.to_be_bytes(),
            port: port.unwrap_or(0).to_be_bytes(),
            addr: v6.octets(),
        },
    ))
}

/// The LPM key of a name pattern: exact names end with their NUL, suffixes
/// are stored reversed (they go in the suffix trie).
pub fn name_key(session: u64, how: NameMatch, pattern: &str) -> anyhow::Result<Key<NamePrefix>> {
    if pattern.is_empty() || pattern.contains('/') || pattern.contains('\0') {
        bail!("name pattern {pattern:?} must be one path component (no '/', not empty)");
    }
    if pattern.len() > NAME_PATTERN_MAX {
        bail!(
            "name pattern {pattern:?} is longer than {NAME_PATTERN_MAX} bytes; the kernel cannot match it"
        );
    }
    let mut bytes = pattern.as_bytes().to_vec();
    match how {
        NameMatch::Exact | NameMatch::Ancestor => bytes.push(0),
        NameMatch::Prefix => {}
        NameMatch::Suffix => bytes.reverse(),
    }
    let mut data = NamePrefix {
        session: session.to_be_bytes(),
        name: [0; NAME_KEY_LEN],
    };
    data.name[..bytes.len()].copy_from_slice(&bytes);
    Ok(Key::new(((SESSION_KEY_LEN + bytes.len()) * 8) as u32, data))
}

pub fn exec_key(session: u64, name: &str) -> anyhow::Result<WatchedExec> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        bail!("watched program {name:?} must be a base name (no '/', not empty)");
    }
    if name.len() > EXEC_NAME_MAX {
        bail!(
            "watched program {name:?} is longer than {EXEC_NAME_MAX} bytes; the kernel cannot match it"
        );
    }
    let mut key = WatchedExec {
        session,
        name: [0; EXEC_NAME_MAX + 1],
    };
    key.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(key)
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys_mark_trees_and_exact_files() {
        let k = path_key(7, Path::new("/prod"), PathScope::Below).unwrap();
        assert_eq!(k.prefix_len(), (8 + 6) * 8);
        assert_eq!(&k.data().path[..6], b"/prod/");
        assert_eq!(k.data().session, 7u64.to_be_bytes());
        let k = path_key(7, Path::new("/prod/db.sqlite3/"), PathScope::Exact).unwrap();
        assert_eq!(&k.data().path[..17], b"/prod/db.sqlite3\0");
        assert!(path_key(7, Path::new("relative"), PathScope::Below).is_err());
        let long = format!("/{}", "a".repeat(300));
        let err = path_key(7, Path::new(&long), PathScope::Below)
            .err()
            .expect("a 300-byte prefix is refused");
        assert!(format!("{err}").contains("shorter prefix"));
    }

    #[test]
    fn endpoint_keys_map_ipv4_into_ipv6() {
        let k = endpoint_key(1, "127.0.0.2".parse().unwrap(), 32, Some(5432)).unwrap();
        assert_eq!(k.prefix_len(), 80 + 128);
        assert_eq!(k.data().port, 5432u16.to_be_bytes());
        assert_eq!(&k.data().addr[10..], &[0xff, 0xff, 127, 0, 0, 2]);
        let k = endpoint_key(1, "10.0.0.0".parse().unwrap(), 8, None).unwrap();
        assert_eq!(k.prefix_len(), 80 + 96 + 8);
        assert_eq!(k.data().port, [0, 0]);
        assert!(endpoint_key(1, "10.0.0.0".parse().unwrap(), 33, None).is_err());
    }

    #[test]
    fn name_patterns_are_single_components_that_fit() {
        let k = name_key(3, NameMatch::Suffix, ".tfstate").unwrap();
        assert_eq!(k.prefix_len(), (8 + 8) * 8);
        assert_eq!(&k.data().name[..8], b"etatsft.");
        let k = name_key(3, NameMatch::Exact, ".git").unwrap();
        assert_eq!(k.prefix_len(), (8 + 5) * 8);
        assert_eq!(&k.data().name[..5], b".git\0");
        assert!(name_key(3, NameMatch::Exact, ".git/x").is_err());
        assert!(name_key(3, NameMatch::Prefix, "").is_err());
        assert!(name_key(3, NameMatch::Exact, &"n".repeat(31)).is_err());
    }

    #[test]
    fn exec_names_are_base_names_that_fit() {
        assert_eq!(
            &exec_key(1, "terraform").unwrap().name[..10],
            b"terraform\0"
        );
        assert!(exec_key(1, "/usr/bin/terraform").is_err());
        assert!(exec_key(1, "").is_err());
        assert!(exec_key(1, &"x".repeat(32)).is_err());
    }
}
