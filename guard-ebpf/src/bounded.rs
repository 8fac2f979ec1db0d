//! Bounded mode (raw tracepoint `sys_enter`): for sessions guard adopted on a
//! kernel without BPF LSM. A watched syscall from a process in a bounded
//! session gets SIGSTOP, which lands when the call returns: the first call
//! completes and the process stops before its next instruction. Its maps live
//! here, apart from `maps.rs`, because only this mode uses them.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user_str_bytes, generated::bpf_get_current_ancestor_cgroup_id,
        generated::bpf_send_signal,
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, RingBuf},
    programs::RawTracePointContext,
};
use guard_common::bounded::{BoundedStop, NO_PATH_ARG};

/// Watched syscall number -> index of its path argument (or NO_PATH_ARG).
#[map]
pub static BOUNDED_SYSCALLS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// cgroup ids of bounded sessions (value unused).
#[map]
pub static BOUNDED_SESSIONS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// Stops for userspace.
#[map]
pub static BOUNDED_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

const SIGSTOP: u32 = 19;
const AT_FDCWD: i32 = -100;
/// Ancestor levels searched for a bounded session (adopted trees keep their
/// own cgroups, so the session may sit at any depth).
const MAX_DEPTH: i32 = 8;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn bounded_sys_enter(ctx: RawTracePointContext) -> i32 {
    try_bounded(&ctx).unwrap_or(0)
}

fn try_bounded(ctx: &RawTracePointContext) -> Option<i32> {
    // Every syscall on the machine passes here: the number check comes first.
    let nr: u64 = ctx.arg(1);
    let path_arg = *unsafe { BOUNDED_SYSCALLS.get(nr as u32) }?;
    let cgroup_id = bounded_session()?;
    let regs: u64 = ctx.arg(0);
    // x86_64 struct pt_regs offsets of di, si, dx, r10 (syscall args 0..3).
    let offset = match path_arg {
        0 => Some(112u64),
        1 => Some(104),
        2 => Some(96),
        3 => Some(56),
        _ => None,
    };
    let ptr: u64 = match offset {
        Some(off) if path_arg != NO_PATH_ARG => {
            unsafe { bpf_probe_read_kernel((regs + off) as *const u64) }.unwrap_or(0)
        }
        _ => 0,
    };
    // *at calls carry their path in argument 1 and the directory fd in 0.
    let dirfd: i32 = if path_arg == 1 {
        unsafe { bpf_probe_read_kernel((regs + 112) as *const u64) }.unwrap_or(0) as i32
    } else {
        AT_FDCWD
    };
    unsafe { bpf_send_signal(SIGSTOP) };
    let Some(mut entry) = BOUNDED_EVENTS.reserve::<BoundedStop>(0) else {
        return Some(0);
    };
    let event = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    unsafe {
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).nr = nr as u32;
        (*event).cgroup_id = cgroup_id;
        (*event).ktime_ns = bpf_ktime_get_ns();
        (*event).path_len = 0;
        (*event).dirfd = dirfd;
        (*event)._pad = 0;
        if ptr != 0
            && let Ok(bytes) = bpf_probe_read_user_str_bytes(ptr as *const u8, &mut (*event).path)
        {
            (*event).path_len = bytes.len() as u32;
        }
    }
    entry.submit(0);
    Some(0)
}

#[inline(always)]
fn bounded_session() -> Option<u64> {
    for depth in 1..=MAX_DEPTH {
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(depth) };
        if id == 0 {
            return None;
        }
        if unsafe { BOUNDED_SESSIONS.get(id) }.is_some() {
            return Some(id);
        }
    }
    None
}
