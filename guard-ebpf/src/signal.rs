//! Signals from session tasks (BPF LSM `task_kill`): a SIGCONT to a task
//! stopped at exec would let it run without a decision, and any signal to
//! guard's own processes would stop the guard. Both are refused.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::EventKind;

use crate::{
    hold::EPERM,
    maps::{GUARD_PIDS, HELD, count, stat},
    path::{offsets, read_u32},
    session::current_session,
};

const SIGCONT: i32 = 18;

#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    // (p, info, sig, cred, previous return value)
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let sig: i32 = ctx.arg(2);
    if sig == 0 || current_session().is_none() {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    let o = offsets();
    let (Ok(pid), Ok(tgid)) = (
        read_u32(task + o.task_struct_pid as u64),
        read_u32(task + o.task_struct_tgid as u64),
    ) else {
        return 0;
    };
    // Only exec stops: a held file or connect syscall re-stops by itself.
    let exec_held = |tid: u32| {
        HELD.get_ptr(tid)
            .is_some_and(|held| unsafe { (*held).kind } == EventKind::Exec as u32)
    };
    let refuse = GUARD_PIDS.get_ptr(tgid).is_some()
        || (sig == SIGCONT && (exec_held(pid) || exec_held(tgid)));
    if refuse {
        count(stat::SIGNAL_REFUSED);
        -EPERM
    } else {
        0
    }
}
