//! Name patterns (`.git`, `*.tfstate`, `id_*`) on the object's own name and
//! its parent directory's name, for protected files that no path prefix
//! describes. Only the pattern lengths a session uses are looked up.

use aya_ebpf::helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str};
use guard_common::{
    NAME_MAX, NameLengths, NamePattern, PATH_DEPTH_MAX, Rule,
    rules::{NAME_PATTERN_MAX, name_match},
};

use crate::maps::{NAME_LENGTHS, NAME_RULES, PathScratch};

/// The union of the session's name rules matching the last two components
/// of the path in `s` (as left by `path::resolve`), if any matched.
///
/// # Safety
/// `s` must point to a per-CPU scratch value filled by `resolve`.
#[inline(always)]
pub unsafe fn name_rule(s: *mut PathScratch, session: u64) -> Option<Rule> {
    let lengths: NameLengths = unsafe { *NAME_LENGTHS.get_ptr(session)? };
    let depth = unsafe { core::ptr::read_volatile(&(*s).depth) } as usize;
    let mut hold = 0;
    let mut deny = 0;
    let mut matched = false;
    for i in 0..2 {
        if i >= depth {
            break;
        }
        let name = unsafe { (*s).names[i & (PATH_DEPTH_MAX - 1)] };
        if let Some(rule) = unsafe { component_rule(s, session, &lengths, name) } {
            hold |= rule.hold;
            deny |= rule.deny;
            matched = true;
        }
    }
    matched.then_some(Rule { hold, deny })
}

#[inline(always)]
unsafe fn component_rule(
    s: *mut PathScratch,
    session: u64,
    lengths: &NameLengths,
    name_ptr: u64,
) -> Option<Rule> {
    let buf = unsafe { (*s).name.as_mut_ptr() };
    let n = unsafe { bpf_probe_read_kernel_str(buf.cast(), NAME_MAX as u32, name_ptr as *const _) };
    if n <= 1 {
        return None;
    }
    // Through memory: one unknown length for the verifier, not one per value.
    unsafe { core::ptr::write_volatile(&mut (*s).name_len, (n - 1) as u32) };
    let len = unsafe { core::ptr::read_volatile(&(*s).name_len) } as usize & (NAME_MAX - 1);
    let mut hold = 0;
    let mut deny = 0;
    let mut matched = false;
    let mut key = NamePattern {
        session,
        kind: 0,
        len: 0,
        bytes: [0; NAME_PATTERN_MAX],
    };
    let mut check = |key: &NamePattern| {
        if let Some(rule) = NAME_RULES.get_ptr(key) {
            let rule = unsafe { *rule };
            hold |= rule.hold;
            deny |= rule.deny;
            matched = true;
        }
    };
    if lengths.exact != 0 && len <= NAME_PATTERN_MAX {
        key.kind = name_match::EXACT;
        key.len = len as u8;
        unsafe {
            bpf_probe_read_kernel(key.bytes.as_mut_ptr().cast(), len as u32, buf.cast());
        }
        check(&key);
    }
    for l in 1..=NAME_PATTERN_MAX {
        if l > len {
            break;
        }
        let bit = 1u32 << l;
        if lengths.prefix & bit != 0 {
            key.kind = name_match::PREFIX;
            key.len = l as u8;
            key.bytes = [0; NAME_PATTERN_MAX];
            unsafe {
                bpf_probe_read_kernel(key.bytes.as_mut_ptr().cast(), l as u32, buf.cast());
            }
            check(&key);
        }
        if lengths.suffix & bit != 0 {
            key.kind = name_match::SUFFIX;
            key.len = l as u8;
            key.bytes = [0; NAME_PATTERN_MAX];
            unsafe {
                bpf_probe_read_kernel(
                    key.bytes.as_mut_ptr().cast(),
                    l as u32,
                    buf.add((len - l) & (NAME_MAX - 1)).cast(),
                );
            }
            check(&key);
        }
    }
    matched.then_some(Rule { hold, deny })
}
