//! File hooks (BPF LSM). Loaded only where BPF LSM is active.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::{EventKind, FileEvent, event::verdict, session_flags};

use crate::{
    event::{count_drop, fill_header},
    maps::EVENTS,
    session::current_session,
};

const EPERM: i32 = 1;

#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    // The last argument is the previous LSM's return value: never overrule a denial.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    try_path_unlink().unwrap_or(0)
}

fn try_path_unlink() -> Option<i32> {
    let (cgroup_id, config) = current_session()?;
    let deny = config.flags & session_flags::DENY_UNLINK != 0;
    match EVENTS.reserve::<FileEvent>(0) {
        Some(mut entry) => {
            let event = entry.as_mut_ptr();
            unsafe {
                fill_header(&mut (*event).header, EventKind::Unlink, cgroup_id);
                (*event).header.verdict = if deny {
                    verdict::DENIED
                } else {
                    verdict::OBSERVED
                };
            }
            entry.submit(0);
        }
        None => count_drop(EventKind::Unlink),
    }
    Some(if deny { -EPERM } else { 0 })
}
