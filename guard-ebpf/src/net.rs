//! connect(2) (BPF LSM `socket_connect`): IPv4, IPv6 and unix socket paths.
//! Endpoints a rule covers (CIDR and port) are held or refused; the rest
//! never leave the kernel.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str},
    macros::lsm,
    maps::lpm_trie::Key,
    programs::LsmContext,
};
use guard_common::{
    EndpointPrefix, EventKind, PathPrefix, Rule,
    event::{UNIX_PATH_MAX, path_flags},
    session::SESSION_KEY_LEN,
    session_flags,
};

use crate::{
    event::{emit, fill_header},
    hold::{refuse_or_stop, use_grant},
    maps::{CONNECT_SCRATCH, ENDPOINT_RULES, PATH_RULES, PATH_SCRATCH},
    path::mix,
    session::current_session,
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    try_connect(ctx.arg(1), ctx.arg(2)).unwrap_or(0)
}

fn try_connect(addr: u64, addrlen: i32) -> Option<i32> {
    let (session, config) = current_session()?;
    if config.flags & session_flags::WATCH_CONNECT == 0 {
        return None;
    }
    let ev = CONNECT_SCRATCH.get_ptr_mut(0)?;
    let family: u16 = unsafe { bpf_probe_read_kernel(addr as *const u16) }.ok()?;
    let unmatched = if config.flags & session_flags::HOLD_UNMATCHED_CONNECT != 0 {
        Rule::holding(EventKind::Connect.bit())
    } else {
        Rule::ALLOW
    };
    let mut flags = 0;
    let mut ip = [0u8; 16];
    let mut port = 0u16;
    let mut unix_len = 0u32;
    let rule;
    let object_id;
    match family {
        AF_INET | AF_INET6 => {
            let port_be: [u8; 2] =
                unsafe { bpf_probe_read_kernel((addr + 2) as *const [u8; 2]) }.ok()?;
            port = u16::from_be_bytes(port_be);
            if family == AF_INET {
                let v4: [u8; 4] =
                    unsafe { bpf_probe_read_kernel((addr + 4) as *const [u8; 4]) }.ok()?;
                ip[10] = 0xff;
                ip[11] = 0xff;
                ip[12..16].copy_from_slice(&v4);
            } else {
                ip = unsafe { bpf_probe_read_kernel((addr + 8) as *const [u8; 16]) }.ok()?;
            }
            let mut key = Key::new(
                ((SESSION_KEY_LEN + 2 + 16) * 8) as u32,
                EndpointPrefix {
                    session: session.to_be_bytes(),
                    port: port_be,
                    addr: ip,
                },
            );
            let exact = ENDPOINT_RULES.get(&key).copied();
            key.data.port = [0, 0];
            let any_port = ENDPOINT_RULES.get(&key).copied();
            rule = match (exact, any_port) {
                (None, None) => unmatched,
                (a, b) => {
                    let a = a.unwrap_or(Rule::ALLOW);
                    let b = b.unwrap_or(Rule::ALLOW);
                    a.merge(b)
                }
            };
            let hi = u64::from_be_bytes([ip[0], ip[1], ip[2], ip[3], ip[4], ip[5], ip[6], ip[7]]);
            let lo =
                u64::from_be_bytes([ip[8], ip[9], ip[10], ip[11], ip[12], ip[13], ip[14], ip[15]]);
            object_id = mix(mix(hi, lo), port as u64);
        }
        AF_UNIX => {
            let s = PATH_SCRATCH.get_ptr_mut(0)?;
            let bytes = unsafe { (*s).path.as_mut_ptr() };
            for i in 0..UNIX_PATH_MAX + 1 {
                unsafe { *bytes.add(i) = 0 };
            }
            let max = if addrlen > 2 && (addrlen as usize) < 2 + UNIX_PATH_MAX {
                (addrlen - 2) as u32
            } else {
                UNIX_PATH_MAX as u32
            };
            let n = unsafe {
                bpf_probe_read_kernel_str(
                    (*s).path.as_mut_ptr().cast(),
                    (max & 127) + 1,
                    (addr + 2) as *const _,
                )
            };
            let first = unsafe { (*s).path[0] };
            if n <= 1 || first == 0 {
                // Abstract sockets have no path to protect.
                return None;
            }
            unix_len = (n - 1) as u32;
            if first != b'/' {
                flags |= path_flags::RELATIVE;
            }
            let key_bytes = (unix_len as usize + 1) & 127;
            unsafe {
                (*s).prefix_len = ((SESSION_KEY_LEN + key_bytes) * 8) as u32;
                (*s).session = session.to_be_bytes();
            }
            let key = unsafe { &*(s as *const Key<PathPrefix>) };
            rule = PATH_RULES.get(key).copied().unwrap_or(unmatched);
            // FNV-1a over the whole (zero-padded) buffer: no data-dependent exit.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for i in 0..UNIX_PATH_MAX {
                h = (h ^ unsafe { *bytes.add(i) } as u64).wrapping_mul(0x0100_0000_01b3);
            }
            object_id = h;
            unsafe {
                let _ = bpf_probe_read_kernel_str(
                    (*ev).unix_path.as_mut_ptr().cast(),
                    UNIX_PATH_MAX as u32,
                    (*s).path.as_ptr().cast(),
                );
            }
        }
        _ => return None,
    }
    let bit = EventKind::Connect.bit();
    let mut hold = rule.hold & bit;
    let deny = rule.deny & bit;
    // A relative unix path is resolved in userspace, against the stopped task's cwd.
    if flags & path_flags::RELATIVE != 0 {
        hold |= bit;
    }
    if hold == 0 && deny == 0 {
        return None;
    }
    if deny == 0
        && let Some(rc) = use_grant(session, EventKind::Connect, object_id)
    {
        return Some(rc);
    }
    let header = unsafe { &mut (*ev).header };
    fill_header(header, EventKind::Connect, session);
    unsafe {
        (*ev).object_id = object_id;
        (*ev).family = family;
        (*ev).port = port;
        (*ev).flags = flags;
        (*ev).addr = ip;
        (*ev).unix_path_len = unix_len;
    }
    let rc = refuse_or_stop(header, deny != 0, object_id);
    emit(EventKind::Connect, ev);
    Some(rc)
}
