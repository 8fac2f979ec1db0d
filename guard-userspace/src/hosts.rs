//! The host names of a policy's network rules, resolved by the session.
//!
//! The kernel only sees addresses, so a rule naming `db.prod.example.com`
//! matches a connect once guard has resolved the name. Each session (which
//! owns its kernel tables) resolves the names before its agent starts and
//! again every [`interval`], adding new addresses to the policy and to the
//! session's kernel endpoint table. An address a name no longer resolves to
//! stays in the kernel table (it still goes up to policy, which no longer
//! matches it): the safe side.

use std::{
    collections::BTreeMap,
    net::{IpAddr, ToSocketAddrs as _},
    sync::{Arc, mpsc},
    time::Duration,
};

use anyhow::Context as _;

use crate::policy::Policy;

/// How long one name may take to resolve before guard goes on without it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often names are resolved again unless GUARD_RESOLVE_INTERVAL says.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// `GUARD_RESOLVE_INTERVAL` (a duration such as `30s` or `5m`), else 60 s.
pub fn interval() -> anyhow::Result<Duration> {
    match std::env::var("GUARD_RESOLVE_INTERVAL") {
        Err(_) => Ok(DEFAULT_INTERVAL),
        Ok(text) => {
            let every = humantime::parse_duration(&text).with_context(|| {
                format!("GUARD_RESOLVE_INTERVAL={text:?}: write a duration such as 30s or 5m")
            })?;
            anyhow::ensure!(
                every >= Duration::from_secs(1),
                "GUARD_RESOLVE_INTERVAL={text:?}: at least 1s"
            );
            Ok(every)
        }
    }
}

/// The system resolver's addresses for `host`, or an error after `timeout`
/// (the lookup thread is left to finish on its own).
pub fn lookup(host: &str, timeout: Duration) -> std::io::Result<Vec<IpAddr>> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("guard-resolve".into())
        .spawn(move || {
            let result = (name.as_str(), 0)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>());
            let _ = tx.send(result);
        })?;
    let mut addrs = rx.recv_timeout(timeout).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}", humantime::format_duration(timeout)),
        )
    })??;
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// Resolves every name of `policy` once; records what resolved and returns
/// whether any name's addresses changed, plus the names that failed.
pub fn resolve_all(
    policy: &Policy,
    known: &mut BTreeMap<String, Vec<IpAddr>>,
    resolve: &mut dyn FnMut(&str) -> std::io::Result<Vec<IpAddr>>,
) -> (bool, Vec<(String, std::io::Error)>) {
    let mut changed = false;
    let mut failed = Vec::new();
    for host in policy.hosts_to_resolve() {
        match resolve(&host) {
            Ok(addrs) if addrs.is_empty() => failed.push((
                host,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            )),
            Ok(addrs) => {
                if known.get(&host) != Some(&addrs) {
                    policy.set_resolved(&host, addrs.clone());
                    known.insert(host, addrs);
                    changed = true;
                }
            }
            Err(e) => failed.push((host, e)),
        }
    }
    (changed, failed)
}

fn warn_unresolved(session: &str, failed: &[(String, std::io::Error)], every: Duration) {
    for (host, e) in failed {
        log::warn!(
            "session {session}: cannot resolve {host} ({e}); connects to its addresses are not \
             matched by its rule until it resolves (tried again every {})",
            humantime::format_duration(every)
        );
    }
}

/// What a session knows of its policy's names after a round of lookups.
pub struct Names {
    known: BTreeMap<String, Vec<IpAddr>>,
    /// Some name failed in the last round (said once, not every round).
    failing: bool,
}

/// Resolves `policy`'s names once, now: call it before the session's kernel
/// tables are compiled. None when the policy names no host.
pub fn resolve_now(session: &str, policy: &Policy, every: Duration) -> Option<Names> {
    if policy.hosts_to_resolve().is_empty() {
        return None;
    }
    let mut known = BTreeMap::new();
    let (_, failed) = resolve_all(policy, &mut known, &mut |h| lookup(h, LOOKUP_TIMEOUT));
    warn_unresolved(session, &failed, every);
    Some(Names {
        known,
        failing: !failed.is_empty(),
    })
}

/// Re-resolves a session's host names on a timer; stops when dropped.
pub struct Refresher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Refresher {
    /// Every `every`, resolves `policy`'s names again and calls `changed`
    /// after new addresses were recorded.
    pub fn start(
        session: &str,
        policy: &Arc<Policy>,
        every: Duration,
        mut names: Names,
        changed: impl Fn(&Policy) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel::<()>();
        let (policy, session) = (policy.clone(), session.to_owned());
        let thread = std::thread::Builder::new()
            .name("guard-hosts".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let (new, failed) = resolve_all(&policy, &mut names.known, &mut |h| {
                        lookup(h, LOOKUP_TIMEOUT)
                    });
                    if !failed.is_empty() && !names.failing {
                        warn_unresolved(&session, &failed, every);
                    }
                    names.failing = !failed.is_empty();
                    if new {
                        changed(&policy);
                    }
                }
            })
            .context("starting the host name refresher")?;
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_yaml(
            "version: 1\nnetwork:\n  - id: net.db\n    hosts: [db.example.test, \"*.wild.test\"]\n    \
             decision: deny\n",
            "test.yaml",
        )
        .unwrap()
    }

    #[test]
    fn names_resolve_change_and_fail_as_reported() {
        let p = policy();
        let mut known = BTreeMap::new();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        let mut asked = Vec::new();
        let (changed, failed) = resolve_all(&p, &mut known, &mut |h| {
            asked.push(h.to_owned());
            Ok(vec![a])
        });
        // Wildcards cannot be resolved in advance.
        assert_eq!(asked, ["db.example.test"]);
        assert!(changed && failed.is_empty());
        let (changed, _) = resolve_all(&p, &mut known, &mut |_| Ok(vec![a]));
        assert!(!changed, "same addresses are no change");
        let (changed, _) = resolve_all(&p, &mut known, &mut |_| Ok(vec![a, b]));
        assert!(changed);
        let (changed, failed) = resolve_all(&p, &mut known, &mut |_| {
            Err(std::io::Error::other("resolver down"))
        });
        assert!(!changed, "a failure keeps the addresses known");
        assert_eq!(failed.len(), 1);
        assert_eq!(known["db.example.test"], vec![a, b]);
        let (_, failed) = resolve_all(&p, &mut known, &mut |_| Ok(vec![]));
        assert_eq!(failed.len(), 1, "no addresses is a failure");
    }

    #[test]
    fn localhost_resolves_through_the_system_resolver() {
        let addrs = lookup("localhost", LOOKUP_TIMEOUT).unwrap();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }
}
