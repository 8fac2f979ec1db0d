//! Turns a policy's compiled kernel tables (`Policy::kernel_tables()`) into
//! the kernel's maps for one session: path prefixes with what each location
//! holds, name patterns, endpoints, unix socket prefixes and watched
//! programs. What the maps cannot express exactly is widened (held and
//! decided in userspace), never narrowed.

use std::net::{IpAddr, Ipv6Addr};

use guard_common::{EventKind, Rule, session_flags};

use crate::{
    action::ActionKind,
    kernel_maps::{KernelMaps, NameMatch},
    policy::kernel::{KernelTables, NamePattern, op_bit, path_flags},
};

/// Port ranges wider than this hold every connect instead of one entry per port.
const MAX_PORTS_PER_RANGE: u32 = 1024;

const ALL_KINDS: [(ActionKind, EventKind); 7] = [
    (ActionKind::Exec, EventKind::Exec),
    (ActionKind::Unlink, EventKind::Unlink),
    (ActionKind::Rmdir, EventKind::Rmdir),
    (ActionKind::Rename, EventKind::Rename),
    (ActionKind::Truncate, EventKind::Truncate),
    (ActionKind::OpenWrite, EventKind::OpenWrite),
    (ActionKind::Connect, EventKind::Connect),
];

/// The policy's op mask (its `op_bit` layout) in the kernel's layout.
pub fn kernel_bits(policy_mask: u32) -> u32 {
    ALL_KINDS
        .iter()
        .filter(|(a, _)| policy_mask & op_bit(*a) != 0)
        .fold(0, |m, (_, e)| m | e.bit())
}

/// The session's address rules (CIDRs and resolved host names): each goes
/// up to policy on any port. Also called when host names resolve anew.
pub fn install_addresses(
    maps: &mut KernelMaps,
    session: u64,
    tables: &KernelTables,
) -> anyhow::Result<()> {
    let connect = Rule::holding(EventKind::Connect.bit());
    for entry in tables.ipv4.iter().chain(&tables.ipv6) {
        maps.set_endpoint_rule(
            session,
            entry.net.network(),
            entry.net.prefix_len(),
            None,
            connect,
        )?;
    }
    Ok(())
}

/// Installs `tables` for `session` and returns the session flags to set.
pub fn install(maps: &mut KernelMaps, session: u64, tables: &KernelTables) -> anyhow::Result<u32> {
    let everywhere = if tables.all_file_ops {
        tables.protected_ops
    } else {
        0
    };
    let hold = |mask: u32| Rule::holding(kernel_bits(mask));
    // The rate rule the kernel counts: what each location charges.
    let charged = |flags: u32| -> Rule {
        let Some(rate) = &tables.rate else {
            return Rule::ALLOW;
        };
        let counted = kernel_bits(rate.counted.for_flags(flags));
        Rule {
            counted,
            uncounted: if flags & path_flags::RATE_EXEMPT != 0 {
                counted
            } else {
                0
            },
            ..Rule::ALLOW
        }
    };
    // `/`: what no entry covers (outside every workspace).
    maps.set_path_prefix(
        session,
        b"/",
        hold(tables.ops_by_location.outside | everywhere).merge(charged(0)),
    )?;
    for entry in &tables.paths {
        let protected = if entry.flags & path_flags::PROTECTED != 0 {
            tables.protected_ops
        } else {
            0
        };
        let mask = tables.ops_by_location.for_flags(entry.flags) | protected | everywhere;
        let rule = hold(mask).merge(charged(entry.flags));
        let bytes = entry.prefix.as_bytes();
        if bytes.len() > guard_common::rules::PATH_PREFIX_MAX {
            if protected == 0 {
                // A cut workspace prefix would cover its siblings: leave it out
                // (its paths count as outside).
                continue;
            }
            // A cut protected prefix covers more: held in userspace, never missed.
            maps.set_path_prefix(
                session,
                &bytes[..guard_common::rules::PATH_PREFIX_MAX],
                rule,
            )?;
            continue;
        }
        maps.set_path_prefix(session, bytes, rule)?;
    }
    for name in &tables.protected_names {
        let (how, text) = match name {
            NamePattern::Exact(t) => (NameMatch::Exact, t),
            NamePattern::Prefix(t) => (NameMatch::Prefix, t),
            NamePattern::Suffix(t) => (NameMatch::Suffix, t),
            NamePattern::InDirectoryNamed(t) => (NameMatch::Ancestor, t),
        };
        if let Err(e) = maps.set_name_rule(session, how, text, hold(tables.protected_ops)) {
            log::warn!("name pattern {text:?} is not enforced in the kernel: {e:#}");
        }
    }

    let mut flags = session_flags::WATCH_FILES | session_flags::WATCH_CONNECT;
    if tables
        .protected_names
        .iter()
        .any(|n| matches!(n, NamePattern::InDirectoryNamed(_)))
    {
        flags |= session_flags::ANCESTOR_NAMES;
    }
    if let Some(rate) = &tables.rate {
        let all = kernel_bits(
            rate.counted.outside
                | rate.counted.workspace
                | rate.counted.build_dir
                | rate.counted.scratch,
        );
        let exempt = Rule {
            uncounted: all,
            ..Rule::ALLOW
        };
        for name in &rate.exempt_names {
            // Below a directory with this name, and the directory itself.
            maps.set_name_rule(session, NameMatch::Ancestor, name, exempt)?;
            maps.set_name_rule(session, NameMatch::Exact, name, exempt)?;
            flags |= session_flags::ANCESTOR_NAMES;
        }
        maps.set_rate_budget(session, rate.limit, rate.window, rate.ignore_recent)?;
    }
    let connect = Rule::holding(EventKind::Connect.bit());
    if tables.all_connects {
        flags |= session_flags::HOLD_UNMATCHED_CONNECT;
    }
    install_addresses(maps, session, tables)?;
    for &(from, to) in &tables.ports {
        if u32::from(to).saturating_sub(u32::from(from)) >= MAX_PORTS_PER_RANGE {
            flags |= session_flags::HOLD_UNMATCHED_CONNECT;
            continue;
        }
        for port in from..=to {
            // Prefix 0 on the address: this port on any address.
            maps.set_endpoint_rule(
                session,
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                0,
                Some(port),
                connect,
            )?;
        }
    }
    for prefix in &tables.unix_prefixes {
        maps.set_path_prefix(session, prefix.as_bytes(), connect)?;
    }

    flags |= session_flags::WATCH_EXEC;
    if tables.all_execs {
        flags |= session_flags::STOP_ALL_EXEC;
    }
    let exec = Rule::holding(EventKind::Exec.bit());
    for name in &tables.watched_programs {
        if let Err(e) = maps.watch_exec(session, name, exec) {
            log::warn!("watched program {name:?} is not stopped at exec: {e:#}");
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::kernel::OpMasks;

    #[test]
    fn op_masks_translate_bit_by_bit() {
        assert_eq!(
            kernel_bits(op_bit(ActionKind::Unlink)),
            EventKind::Unlink.bit()
        );
        let both = op_bit(ActionKind::Rename) | op_bit(ActionKind::Connect);
        assert_eq!(
            kernel_bits(both),
            EventKind::Rename.bit() | EventKind::Connect.bit()
        );
        assert_eq!(kernel_bits(0), 0);
    }

    #[test]
    fn location_picks_the_most_specific_mask() {
        let m = OpMasks {
            outside: 1,
            workspace: 2,
            build_dir: 4,
            scratch: 8,
        };
        assert_eq!(m.for_flags(0), 1);
        assert_eq!(m.for_flags(path_flags::WORKSPACE), 2);
        assert_eq!(
            m.for_flags(path_flags::WORKSPACE | path_flags::BUILD_DIR),
            4
        );
        assert_eq!(m.for_flags(path_flags::SCRATCH), 8);
    }
}
