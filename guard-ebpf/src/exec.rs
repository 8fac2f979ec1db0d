//! Exec: `sched/sched_process_exec`, where the new image is mapped but has run
//! no instruction yet. Watched programs are stopped here (exec stop):
//! userspace reads argv and cwd from /proc while the task is stopped, then
//! continues or kills it.

use aya_ebpf::{
    EbpfContext, helpers::generated::bpf_probe_read_kernel_str, macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::{
    EventKind, PATH_MAX, WatchedExec, event::verdict, rules::EXEC_NAME_MAX, session_flags,
};

use crate::{
    event::{emit, fill_header},
    hold::stop,
    maps::{EXEC_SCRATCH, WATCHED_EXEC},
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
    let Some((session, config)) = current_session() else {
        return Ok(());
    };
    let data_loc: u32 = unsafe { ctx.read_at(FILENAME_LOC_OFFSET) }?;
    let filename_ptr = unsafe { (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize) };
    let event = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0)?;
    let buf = unsafe { (*event).filename.as_mut_ptr() };
    let n = unsafe { bpf_probe_read_kernel_str(buf.cast(), PATH_MAX as u32, filename_ptr.cast()) };
    let (len, truncated) = if n > 0 {
        ((n - 1) as u32, (n as usize >= PATH_MAX) as u32)
    } else {
        (0, 1)
    };

    let watched = config.flags & session_flags::STOP_ALL_EXEC != 0
        || truncated != 0
        || is_watched(session, buf, len);
    if !watched && config.flags & session_flags::WATCH_EXEC == 0 {
        return Ok(());
    }
    let header = unsafe { &mut (*event).header };
    fill_header(header, EventKind::Exec, session);
    unsafe {
        (*event).filename_len = len;
        (*event).truncated = truncated;
    }
    if watched {
        stop(header, 0);
    } else {
        header.verdict = verdict::OBSERVED;
    }
    emit(EventKind::Exec, event);
    Ok(())
}

/// Whether the base name of the exec'd path is in the session's watch set.
#[inline(always)]
fn is_watched(session: u64, buf: *const u8, len: u32) -> bool {
    const MASK: usize = PATH_MAX - 1;
    // The base name starts after the last '/' among the last EXEC_NAME_MAX+1
    // bytes; a longer base name cannot be in the set.
    let mut start: Option<u32> = None;
    for j in 0..(EXEC_NAME_MAX as u32 + 1) {
        if j >= len {
            start = Some(0);
            break;
        }
        let pos = len - 1 - j;
        if unsafe { *buf.add(pos as usize & MASK) } == b'/' {
            start = Some(pos + 1);
            break;
        }
    }
    let Some(start) = start else {
        return false;
    };
    if start >= len {
        return false;
    }
    let mut key = WatchedExec {
        session,
        name: [0; EXEC_NAME_MAX + 1],
    };
    if len - start > EXEC_NAME_MAX as u32 {
        return false;
    }
    // A fixed-size string copy: it stops at the filename's NUL.
    unsafe {
        bpf_probe_read_kernel_str(
            key.name.as_mut_ptr().cast(),
            (EXEC_NAME_MAX + 1) as u32,
            buf.add(start as usize & MASK).cast(),
        )
    };
    WATCHED_EXEC.get_ptr(key).is_some()
}
