//! Exec: `sched/sched_process_exec`, where the new image is mapped but has run
//! no instruction yet.

use aya_ebpf::{
    EbpfContext, helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::{EventKind, ExecEvent, PATH_MAX, event::verdict, session_flags};

use crate::{
    event::{count_drop, fill_header},
    maps::EVENTS,
    session::current_session,
};

/// Offset of `__data_loc char[] filename` in the tracepoint record (after the
/// 8-byte common header); stable ABI of this tracepoint since it was added.
const FILENAME_LOC_OFFSET: usize = 8;

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_sched_process_exec(&ctx) {
        Ok(()) => 0,
        Err(_) => 0,
    }
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let Some((cgroup_id, config)) = current_session() else {
        return Ok(());
    };
    if config.flags & session_flags::WATCH_EXEC == 0 {
        return Ok(());
    }
    // Everything that can fail runs before the reservation: an early return
    // with a reserved record would leak it (the verifier refuses that).
    let data_loc: u32 = unsafe { ctx.read_at(FILENAME_LOC_OFFSET) }?;
    let filename_ptr = unsafe { (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize) };
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(EventKind::Exec);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    unsafe {
        fill_header(&mut (*event).header, EventKind::Exec, cgroup_id);
        (*event).header.verdict = verdict::OBSERVED;
        let buf = &mut (*event).filename;
        let (len, truncated) = match bpf_probe_read_kernel_str_bytes(filename_ptr, buf) {
            Ok(bytes) => (bytes.len() as u32, (bytes.len() + 1 >= PATH_MAX) as u32),
            Err(_) => (0, 1),
        };
        (*event).filename_len = len;
        (*event).truncated = truncated;
    }
    entry.submit(0);
    Ok(())
}
