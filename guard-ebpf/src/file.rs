//! File hooks (BPF LSM): unlink, rmdir, rename, truncate and writable opens.
//! Loaded only where BPF LSM is active.
//!
//! Each hook resolves the object's full path, looks it up in the session's
//! path rules and either lets it through (nothing leaves the kernel), refuses
//! it, or holds it (see `hold`).

use aya_ebpf::{macros::lsm, maps::lpm_trie::Key, programs::LsmContext};
use guard_common::{
    ANCESTOR_NAMES_MAX, EventKind, PATH_MAX, PathPrefix, Rule, event::path_flags,
    rules::PATH_PREFIX_MAX, session::SESSION_KEY_LEN, session_flags,
};

use crate::{
    event::{emit, fill_header},
    hold::{refuse_or_stop, use_grant},
    maps::{FILE_SCRATCH, PATH_RULES, PATH_SCRATCH, PathScratch},
    names::{ancestor_rule, name_rule},
    path::{inode_id, mix, name_hash, offsets, read_u32, read_u64, resolve},
    rate::{Charge, charge},
    session::current_session,
};

const FMODE_WRITE: u32 = 0x2;
const O_TRUNC: u32 = 0o1000;

/// The ops [`session_flags::HOLD_UNMATCHED_FILES`] holds. Writable opens are
/// held only where a rule says so: /dev/null and friends are opened for
/// writing all the time.
const UNMATCHED_HOLD: u32 = EventKind::Unlink.bit()
    | EventKind::Rmdir.bit()
    | EventKind::Rename.bit()
    | EventKind::Truncate.bit();

#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    // The last argument is the previous program's return value: never overrule a denial.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    file_hook(EventKind::Unlink, ctx.arg(0), ctx.arg(1), 0, 0)
}

#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    file_hook(EventKind::Rmdir, ctx.arg(0), ctx.arg(1), 0, 0)
}

#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    // (old_dir, old_dentry, new_dir, new_dentry, flags); the previous return
    // value is not read because the argument count changed across kernels.
    file_hook(
        EventKind::Rename,
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        ctx.arg(3),
    )
}

#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    file_hook(EventKind::Truncate, ctx.arg(0), 0, 0, 0)
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let file: u64 = ctx.arg(0);
    let o = offsets();
    let mode = read_u32(file + o.file_f_mode as u64).unwrap_or(0);
    let flags = read_u32(file + o.file_f_flags as u64).unwrap_or(0);
    let kind = if flags & O_TRUNC != 0 {
        EventKind::Truncate
    } else if mode & FMODE_WRITE != 0 {
        EventKind::OpenWrite
    } else {
        return 0;
    };
    file_hook(kind, file + o.file_f_path as u64, 0, 0, 0)
}

/// `dir` is a `struct path *` and `leaf` a dentry in it (or 0 when `dir` is
/// the object itself); `to_dir`/`to_leaf` are a rename's destination.
#[inline(always)]
fn file_hook(kind: EventKind, dir: u64, leaf: u64, to_dir: u64, to_leaf: u64) -> i32 {
    let Some((session, config)) = current_session() else {
        return 0;
    };
    let legacy_deny =
        kind as u32 == EventKind::Unlink as u32 && config.flags & session_flags::DENY_UNLINK != 0;
    if config.flags & session_flags::WATCH_FILES == 0 && !legacy_deny {
        return 0;
    }
    let (Some(s), Some(ev)) = (PATH_SCRATCH.get_ptr_mut(0), FILE_SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    let o = offsets();
    let bit = kind.bit();
    let unmatched = if config.flags & session_flags::HOLD_UNMATCHED_FILES != 0 {
        Rule::holding(UNMATCHED_HOLD)
    } else {
        Rule::ALLOW
    };

    let mut flags = 0;
    let complete = unsafe { resolve(s, &o, dir, leaf) };
    if !complete {
        flags |= path_flags::PATH_TRUNCATED;
    }
    let rule = with_names(
        lookup(s, session).unwrap_or(unmatched),
        s,
        session,
        config.flags,
    );
    let mut hold = rule.hold & bit;
    let mut deny = rule.deny & bit;
    let mut counted = rule.counted & !rule.uncounted & bit;
    let path_len = unsafe { copy_path(s, (*ev).path.as_mut_ptr()) };

    let dentry = if leaf != 0 {
        leaf
    } else {
        read_u64(dir + o.path_dentry as u64).unwrap_or(0)
    };
    let mut object_id = inode_id(&o, dentry);
    let mut target_len = 0;
    if to_dir != 0 {
        if !unsafe { resolve(s, &o, to_dir, to_leaf) } {
            flags |= path_flags::TARGET_TRUNCATED;
        }
        let to_rule = with_names(
            lookup(s, session).unwrap_or(unmatched),
            s,
            session,
            config.flags,
        );
        hold |= to_rule.hold & bit;
        deny |= to_rule.deny & bit;
        counted |= to_rule.counted & !to_rule.uncounted & bit;
        target_len = unsafe { copy_path(s, (*ev).target.as_mut_ptr()) };
        let to_dir_dentry = read_u64(to_dir + o.path_dentry as u64).unwrap_or(0);
        object_id = mix(
            object_id,
            mix(inode_id(&o, to_dir_dentry), name_hash(&o, to_leaf)),
        );
    }
    if legacy_deny {
        deny |= bit;
    }
    // A path that did not resolve in full is never allowed without a decision.
    if flags != 0 {
        hold |= bit;
    }
    // Every counted op is charged, held or not, so the window sees them all.
    // Only deletions are counted in the kernel (userspace keeps rate rules
    // on other ops): the charge inlined into path_rename's two path walks
    // is more than 6.1's verifier explores.
    let deletion =
        kind as u32 == EventKind::Unlink as u32 || kind as u32 == EventKind::Rmdir as u32;
    if deletion && counted != 0 && deny == 0 {
        match charge(session, &o, dentry) {
            Charge::Recent => {}
            Charge::Within => flags |= path_flags::RATE_CHARGED,
            Charge::Spent => {
                hold |= bit;
                flags |= path_flags::RATE_CHARGED | path_flags::RATE_EXCEEDED;
            }
        }
    }
    if hold == 0 && deny == 0 {
        return 0;
    }
    if deny == 0
        && let Some(rc) = use_grant(session, kind, object_id)
    {
        return rc;
    }

    let header = unsafe { &mut (*ev).header };
    fill_header(header, kind, session);
    unsafe {
        (*ev).object_id = object_id;
        (*ev).flags = flags;
        (*ev).path_len = path_len;
        (*ev).target_len = target_len;
        (*ev)._pad = 0;
    }
    let rc = refuse_or_stop(header, deny != 0, object_id);
    emit(kind, ev);
    rc
}

/// `rule` plus whatever the session's name patterns say about the path in
/// `s` (and its ancestor-name rules, when the session has any).
#[inline(always)]
fn with_names(rule: Rule, s: *mut PathScratch, session: u64, flags: u32) -> Rule {
    let mut rule = rule;
    if let Some(named) = unsafe { name_rule(s, session) } {
        rule = rule.merge(named);
    }
    if flags & session_flags::ANCESTOR_NAMES != 0 {
        if let Some(named) = unsafe { ancestor_rule(s, session) } {
            rule = rule.merge(named);
        }
        // Deeper than the ancestors compared: an unseen `.git` may be up there.
        let depth = unsafe { core::ptr::read_volatile(&(*s).depth) } as usize;
        if depth > ANCESTOR_NAMES_MAX + 1 {
            rule.hold = u32::MAX;
        }
    }
    rule
}

/// The session's rule for the path in `s`, if one covers it.
#[inline(always)]
fn lookup(s: *mut PathScratch, session: u64) -> Option<Rule> {
    unsafe {
        let len = core::ptr::read_volatile(&(*s).len) as usize;
        // Count the NUL too, so `/file\0` rules match only that file.
        let bytes = if len + 1 < PATH_PREFIX_MAX {
            len + 1
        } else {
            PATH_PREFIX_MAX
        };
        (*s).prefix_len = ((SESSION_KEY_LEN + bytes) * 8) as u32;
        (*s).session = session.to_be_bytes();
        let key = &*(s as *const Key<PathPrefix>);
        PATH_RULES.get(key).copied()
    }
}

/// Copies the path in `s` (with its NUL) into an event buffer; returns its length.
#[inline(always)]
unsafe fn copy_path(s: *mut PathScratch, dst: *mut u8) -> u32 {
    unsafe {
        let len = core::ptr::read_volatile(&(*s).len);
        let _ = aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst.cast(),
            PATH_MAX as u32,
            (*s).path.as_ptr().cast(),
        );
        len
    }
}
