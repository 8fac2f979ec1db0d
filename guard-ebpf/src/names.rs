//! Name patterns (`.git`, `*.tfstate`, `id_*`) on the object's own name and
//! its parent directory's name, for protected files no path prefix
//! describes. Two LPM lookups per name: prefixes (and exact names, which end
//! with their NUL) on the name, suffixes on the reversed name. The copies are
//! branch-free: bytes past the name are never compared (the key's
//! prefix_len stops at the name).

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str},
    maps::lpm_trie::Key,
};
use guard_common::{
    ANCESTOR_NAMES_MAX, NAME_MAX, NamePrefix, PATH_DEPTH_MAX, Rule,
    rules::{NAME_KEY_LEN, NAME_PATTERN_MAX},
    session::SESSION_KEY_LEN,
};

use crate::maps::{ANCESTOR_NAME_RULES, NAME_PREFIX_RULES, NAME_SUFFIX_RULES, PathScratch};

/// The union of the session's name rules matching the last two components
/// of the path in `s` (as left by `path::resolve`), if any matched.
///
/// # Safety
/// `s` must point to a per-CPU scratch value filled by `resolve`.
// A function of its own (a BPF-to-BPF call): inlined twice into
// path_rename it would overflow that program's 512-byte stack.
#[inline(never)]
pub unsafe fn name_rule(s: *mut PathScratch, session: u64) -> Option<Rule> {
    let depth = unsafe { core::ptr::read_volatile(&(*s).depth) } as usize;
    let mut rule = Rule::ALLOW;
    let mut matched = 0;
    for i in 0..2 {
        if i >= depth {
            break;
        }
        let name = unsafe { (*s).names[i & (PATH_DEPTH_MAX - 1)] };
        matched |= unsafe { component_rules(s, session, name, &mut rule) };
    }
    (matched != 0).then_some(rule)
}

#[inline(always)]
unsafe fn component_rules(
    s: *mut PathScratch,
    session: u64,
    name_ptr: u64,
    rule: &mut Rule,
) -> u32 {
    let buf = unsafe { (*s).name.as_mut_ptr() };
    let n = unsafe { bpf_probe_read_kernel_str(buf.cast(), NAME_MAX as u32, name_ptr as *const _) };
    if n <= 1 {
        return 0;
    }
    let mut matched = 0;
    unsafe { core::ptr::write_volatile(&mut (*s).name_len, (n - 1) as u32) };
    let len = unsafe { core::ptr::read_volatile(&(*s).name_len) } as usize & (NAME_MAX - 1);
    let key = unsafe { &mut (*s).name_key };
    key.session = session.to_be_bytes();

    // As is, with the NUL: prefixes, and exact names (which end with a NUL).
    unsafe {
        bpf_probe_read_kernel(
            key.name.as_mut_ptr().cast(),
            NAME_KEY_LEN as u32,
            buf.cast(),
        );
    }
    let with_nul = if len + 1 < NAME_KEY_LEN {
        len + 1
    } else {
        NAME_KEY_LEN
    };
    key.prefix_len = ((SESSION_KEY_LEN + with_nul) * 8) as u32;
    if let Some(found) =
        NAME_PREFIX_RULES.get(unsafe { &*(key as *const _ as *const Key<NamePrefix>) })
    {
        *rule = rule.merge(*found);
        matched = 1;
    }

    // Reversed: suffixes. Only the last NAME_PATTERN_MAX bytes can match.
    // The 32 bytes ending at the name's end (for a short name the bytes
    // before it are never compared), reversed as four byte-swapped words.
    let mut words = [0u64; NAME_KEY_LEN / 8];
    unsafe {
        bpf_probe_read_kernel(
            words.as_mut_ptr().cast(),
            NAME_KEY_LEN as u32,
            buf.wrapping_add(len).wrapping_sub(NAME_KEY_LEN).cast(),
        );
    }
    for (i, w) in words.iter().rev().enumerate() {
        key.name[i * 8..i * 8 + 8].copy_from_slice(&w.swap_bytes().to_le_bytes());
    }
    let tail = if len < NAME_PATTERN_MAX {
        len
    } else {
        NAME_PATTERN_MAX
    };
    key.prefix_len = ((SESSION_KEY_LEN + tail) * 8) as u32;
    if let Some(found) =
        NAME_SUFFIX_RULES.get(unsafe { &*(key as *const _ as *const Key<NamePrefix>) })
    {
        *rule = rule.merge(*found);
        matched = 1;
    }
    matched
}

/// The union of the session's ancestor-name rules matching any directory
/// above the object (up to `ANCESTOR_NAMES_MAX` levels), if any matched.
/// A path deeper than that is flagged by the caller and held.
///
/// # Safety
/// `s` must point to a per-CPU scratch value filled by `resolve`.
#[inline(never)]
pub unsafe fn ancestor_rule(s: *mut PathScratch, session: u64) -> Option<Rule> {
    let depth = unsafe { core::ptr::read_volatile(&(*s).depth) } as usize;
    let buf = unsafe { (*s).name.as_mut_ptr() };
    let mut rule = Rule::ALLOW;
    let mut matched = false;
    for i in 1..=ANCESTOR_NAMES_MAX {
        if i >= depth {
            break;
        }
        let name_ptr = unsafe { (*s).names[i & (PATH_DEPTH_MAX - 1)] };
        let n = unsafe {
            bpf_probe_read_kernel_str(buf.cast(), NAME_KEY_LEN as u32, name_ptr as *const _)
        };
        // Only names that fit whole (with their NUL) can equal a pattern.
        if n <= 1 || n as usize >= NAME_KEY_LEN {
            continue;
        }
        let key = unsafe { &mut (*s).name_key };
        key.session = session.to_be_bytes();
        unsafe {
            bpf_probe_read_kernel(
                key.name.as_mut_ptr().cast(),
                NAME_KEY_LEN as u32,
                buf.cast(),
            );
        }
        key.prefix_len = ((SESSION_KEY_LEN + (n as usize & (NAME_KEY_LEN - 1))) * 8) as u32;
        if let Some(found) =
            ANCESTOR_NAME_RULES.get(unsafe { &*(key as *const _ as *const Key<NamePrefix>) })
        {
            rule = rule.merge(*found);
            matched = true;
        }
    }
    matched.then_some(rule)
}
