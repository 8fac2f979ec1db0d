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
use guard_common::rules::RATE_SLOTS;

use crate::maps::RATES;

/// Charges one op to `session`'s budget; true if it is over budget (or the
/// session has no budget, which userspace never leaves counted ops without).
#[inline(always)]
pub fn rate_spent(session: u64) -> bool {
    let Some(budget) = RATES.get_ptr_mut(session) else {
        return true;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    unsafe {
        let limit = core::ptr::read_volatile(&(*budget).limit) as u64;
        let window = core::ptr::read_volatile(&(*budget).window_ns);
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
