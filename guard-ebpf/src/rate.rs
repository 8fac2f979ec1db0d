//! The session's rate budget: a rate rule ("more than N deletions within T")
//! counted in the kernel, so deletions below the rate never leave it.
//!
//! The budget keeps the times of the last `limit + 1` charged ops in a ring
//! (`RateBudget::slots`). Charging an op takes the next slot; the op `limit`
//! places earlier sits in the slot after it. If that op is younger than the
//! window, more than `limit` ops fell within the window: the budget is spent.
//! The sequence number is a plain read and write: the BPF CPU level guard
//! builds for has no fetching atomic add. Two ops of one session charged on
//! two CPUs in the same instant can take the same slot, so such a collision
//! counts once; a racing newer write can only make an op look more recent,
//! which errs towards "spent" (docs/limitations.md).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use guard_common::{KernelOffsets, rules::RATE_SLOTS};

use crate::{maps::RATES, path::read_u64};

/// What charging an op did.
pub enum Charge {
    /// The budget ignores it: its object changed within the window.
    Recent,
    Within,
    Spent,
}

/// Charges one op on the object `dentry` to `session`'s budget. A session
/// without a budget (userspace never leaves counted ops without one) counts
/// as spent.
#[inline(always)]
pub fn charge(session: u64, o: &KernelOffsets, dentry: u64) -> Charge {
    let Some(budget) = RATES.get_ptr_mut(session) else {
        return Charge::Spent;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    unsafe {
        let window = core::ptr::read_volatile(&(*budget).window_ns);
        if core::ptr::read_volatile(&(*budget).ignore_recent) != 0 {
            let inode = read_u64(dentry + o.dentry_d_inode as u64).unwrap_or(0);
            let ctime = if inode == 0 {
                0
            } else {
                read_u64(inode + o.inode_i_ctime_sec as u64).unwrap_or(0) as i64
            };
            let real_now =
                now.wrapping_add(core::ptr::read_volatile(&(*budget).realtime_offset_ns));
            // Whole seconds, rounded towards "recent" (ctime has seconds here).
            let window_s = window.div_ceil(1_000_000_000);
            let now_s = real_now / 1_000_000_000;
            // Changed less than a window ago (or in the future: a skewed clock).
            if ctime > 0 && (ctime as u64).wrapping_add(window_s) > now_s {
                return Charge::Recent;
            }
        }
        if spent(budget, now, window) {
            Charge::Spent
        } else {
            Charge::Within
        }
    }
}

/// Takes the next slot of the ring; true if more than `limit` ops fell
/// within the window.
#[inline(always)]
unsafe fn spent(budget: *mut guard_common::RateBudget, now: u64, window: u64) -> bool {
    unsafe {
        let limit = core::ptr::read_volatile(&(*budget).limit) as u64;
        let ring = limit + 1;
        let seq = core::ptr::read_volatile(&(*budget).seq);
        core::ptr::write_volatile(&mut (*budget).seq, seq.wrapping_add(1));
        let slot = (seq % ring) as usize & (RATE_SLOTS - 1);
        let oldest = ((seq + 1) % ring) as usize & (RATE_SLOTS - 1);
        (*budget).slots[slot] = now;
        let then = core::ptr::read_volatile(&(*budget).slots[oldest]);
        then != 0 && now.wrapping_sub(then) <= window
    }
}
