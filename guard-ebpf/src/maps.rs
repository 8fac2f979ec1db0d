//! Every map the kernel programs share with userspace.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use guard_common::SessionConfig;

/// cgroup v2 id of a session's cgroup -> its configuration. Filled by userspace.
#[map]
pub static SESSIONS: HashMap<u64, SessionConfig> = HashMap::with_max_entries(4096, 0);

/// Events for userspace. 4 MiB holds about a thousand exec events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Records lost because the ring buffer was full, indexed by event kind; per
/// CPU so counting needs no atomics. Userspace sums the CPUs.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(16, 0);
