//! Filling ring buffer records: the header every event starts with, and the
//! drop counters for records that found no room.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use guard_common::{EventHeader, EventKind, event::verdict};

use crate::maps::{DROPS, EVENTS};

#[inline(always)]
pub fn fill_header(header: &mut EventHeader, kind: EventKind, cgroup_id: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    header.kind = kind as u32;
    header.pid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.verdict = verdict::OBSERVED;
    header.cgroup_id = cgroup_id;
    header.ktime_ns = unsafe { bpf_ktime_get_ns() };
}

/// Count a record the ring buffer had no room for, so userspace can report it.
#[inline(always)]
pub fn count_drop(kind: EventKind) {
    if let Some(count) = DROPS.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot; nothing else writes it while this program runs.
        unsafe { *count += 1 };
    }
}

/// Copies a finished event from its scratch slot into the ring buffer.
#[inline(always)]
pub fn emit<T>(kind: EventKind, event: *const T) {
    // SAFETY: `event` points to a per-CPU scratch value of type T.
    if EVENTS.output::<T>(unsafe { &*event }, 0).is_err() {
        count_drop(kind);
    }
}
