//! The restart hold, kernel side: use a grant userspace wrote for this exact
//! action, or stop the task (SIGSTOP) and make the syscall restart when it
//! is continued. A stray SIGCONT therefore only re-enters the hook, finds no
//! grant, and stops again.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_send_signal};
use guard_common::{
    EventHeader, EventKind, Grant, GrantKey, HeldTask, event::verdict, rules::grant_verdict,
};

use crate::maps::{GRANTS, HELD, count, stat};

pub const EPERM: i32 = 1;
/// The syscall is restarted after the signal, whatever SA_RESTART says.
const ERESTARTNOINTR: i32 = 513;
const SIGSTOP: u32 = 19;

/// What userspace decided for this action, if it did: 0 (allow) or -EPERM.
#[inline(always)]
pub fn use_grant(session: u64, kind: EventKind, object_id: u64) -> Option<i32> {
    let key = GrantKey {
        session,
        object_id,
        op: kind as u32,
        _pad: 0,
    };
    let grant: Grant = unsafe { *GRANTS.get_ptr(key)? };
    let now = unsafe { bpf_ktime_get_ns() };
    if grant.expires_ns <= now {
        let _ = GRANTS.remove(key);
        return None;
    }
    // Only the thread whose delete succeeds uses a one-shot grant.
    if grant.once != 0 && GRANTS.remove(key).is_err() {
        return None;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = HELD.remove(tid);
    count(stat::GRANT_USED);
    Some(if grant.verdict == grant_verdict::ALLOW {
        0
    } else {
        -EPERM
    })
}

/// A rule's answer to a file or connect hook: refuse at once (`deny`,
/// counted and reported) or stop the task for userspace. Returns what the
/// hook returns; the caller emits the event afterwards.
#[inline(always)]
pub fn refuse_or_stop(header: *mut EventHeader, deny: bool, object_id: u64) -> i32 {
    if deny {
        unsafe { (*header).verdict = verdict::DENIED };
        count(stat::DENIED);
        -EPERM
    } else {
        stop(header, object_id)
    }
}

/// Stops the current task for userspace and returns what the hook returns.
/// The caller emits the event afterwards (its header says what happened).
#[inline(always)]
pub fn stop(header: *mut EventHeader, object_id: u64) -> i32 {
    let (kind, pid, tid, session, ktime_ns) = unsafe {
        (
            (*header).kind,
            (*header).pid,
            (*header).tid,
            (*header).cgroup_id,
            (*header).ktime_ns,
        )
    };
    let held = HeldTask {
        kind,
        pid,
        session,
        object_id,
        ktime_ns,
    };
    let _ = HELD.insert(tid, held, 0);
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        // No stop possible (a kernel worker, an exiting task): refuse rather
        // than let an undecided action through.
        let _ = HELD.remove(tid);
        unsafe { (*header).verdict = verdict::DENIED };
        count(stat::STOP_FAILED);
        return -EPERM;
    }
    unsafe { (*header).verdict = verdict::STOPPED };
    count(stat::HELD);
    -ERESTARTNOINTR
}
