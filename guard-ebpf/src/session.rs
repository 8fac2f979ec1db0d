//! Which session, if any, the current task belongs to.

use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use guard_common::SessionConfig;

use crate::maps::SESSIONS;

/// Depth below the cgroup2 root at which session cgroups live
/// (`guard.slice/session-<id>` is depth 2). Set by userspace at load time.
#[unsafe(no_mangle)]
static SESSION_DEPTH: i32 = 2;

/// The session of the current task: its id and configuration, or None.
///
/// One map lookup: the ancestor at the session depth names the session even for
/// sub-cgroups the agent makes, and tasks outside every session miss at once.
#[inline(always)]
pub fn current_session() -> Option<(u64, SessionConfig)> {
    let depth = unsafe { core::ptr::read_volatile(&SESSION_DEPTH) };
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(depth) };
    if id == 0 {
        return None;
    }
    let config = unsafe { SESSIONS.get(id) }?;
    Some((id, *config))
}
