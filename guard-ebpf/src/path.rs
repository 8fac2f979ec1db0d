//! Full paths from the dentry chain: walk `d_parent` up to the root of each
//! mount, cross to the parent mount at its mountpoint, and stop at the root of
//! the mount tree. Field offsets come from BTF at load time ([`OFFSETS`]).
//! A path that does not resolve in full is reported as truncated, never as
//! some shorter path.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str};
use guard_common::{KernelOffsets, NAME_MAX, PATH_DEPTH_MAX, PATH_MAX};

use crate::maps::PathScratch;

/// Struct offsets of the running kernel, written by userspace at load time.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    dentry_d_parent: 0,
    dentry_d_name: 0,
    dentry_d_inode: 0,
    qstr_name: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    super_block_s_dev: 0,
    path_mnt: 0,
    path_dentry: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    file_f_path: 0,
    file_f_flags: 0,
    file_f_mode: 0,
    task_struct_pid: 0,
    task_struct_tgid: 0,
    inode_i_ctime_sec: 0,
    _pad: 0,
};

/// Steps of the walk: components plus room for mount crossings.
const WALK_MAX: usize = PATH_DEPTH_MAX + 16;

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a global; volatile so the loader's value is used.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
pub fn read_u64(addr: u64) -> Result<u64, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }
}

#[inline(always)]
pub fn read_u32(addr: u64) -> Result<u32, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }
}

/// Mixes two words into a grant key part; deterministic across a syscall restart.
#[inline(always)]
pub fn mix(a: u64, b: u64) -> u64 {
    (a ^ b.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Identity of the inode behind a dentry (device and inode number), or 0.
#[inline(always)]
pub fn inode_id(o: &KernelOffsets, dentry: u64) -> u64 {
    let Ok(inode) = read_u64(dentry + o.dentry_d_inode as u64) else {
        return 0;
    };
    if inode == 0 {
        return 0;
    }
    let ino = read_u64(inode + o.inode_i_ino as u64).unwrap_or(0);
    let sb = read_u64(inode + o.inode_i_sb as u64).unwrap_or(0);
    let dev = if sb == 0 {
        0
    } else {
        read_u32(sb + o.super_block_s_dev as u64).unwrap_or(0)
    };
    mix(ino, dev as u64 + 1)
}

/// The `hash_len` word of a dentry's name (hash and length).
#[inline(always)]
pub fn name_hash(o: &KernelOffsets, dentry: u64) -> u64 {
    read_u64(dentry + o.dentry_d_name as u64).unwrap_or(0)
}

/// Writes the absolute path of `leaf` (a dentry, or 0) below the directory
/// `dir` (a `struct path *`) into `s.path`, NUL-terminated; `s.len` gets its
/// length. Returns false when the path is incomplete (too deep, too long, or
/// unreadable).
///
/// # Safety
/// `s` must point to a per-CPU scratch value.
#[inline(always)]
pub unsafe fn resolve(s: *mut PathScratch, o: &KernelOffsets, dir: u64, leaf: u64) -> bool {
    let (Ok(mut mnt), Ok(mut dentry)) = (
        read_u64(dir + o.path_mnt as u64),
        read_u64(dir + o.path_dentry as u64),
    ) else {
        unsafe { core::ptr::write_volatile(&mut (*s).depth, 0) };
        return unsafe { finish(s, false) };
    };
    let name_at = (o.dentry_d_name + o.qstr_name) as u64;
    // depth lives in the scratch map, not a register: the verifier then sees
    // one unknown value per step instead of one state per possible depth.
    unsafe { core::ptr::write_volatile(&mut (*s).depth, 0) };
    if leaf != 0 {
        let Ok(name) = read_u64(leaf + name_at) else {
            return unsafe { finish(s, false) };
        };
        unsafe {
            (*s).names[0] = name;
            core::ptr::write_volatile(&mut (*s).depth, 1);
        }
    }
    let mut complete = false;
    let mut mount = mnt.wrapping_sub(o.mount_mnt as u64);
    for _ in 0..WALK_MAX {
        let (Ok(mnt_root), Ok(parent)) = (
            read_u64(mnt + o.vfsmount_mnt_root as u64),
            read_u64(dentry + o.dentry_d_parent as u64),
        ) else {
            break;
        };
        if dentry == mnt_root || dentry == parent {
            let Ok(mnt_parent) = read_u64(mount + o.mount_mnt_parent as u64) else {
                break;
            };
            // The root of the mount tree, or a dentry cut off from its tree.
            if mnt_parent == mount || dentry != mnt_root {
                complete = true;
                break;
            }
            let Ok(mountpoint) = read_u64(mount + o.mount_mnt_mountpoint as u64) else {
                break;
            };
            dentry = mountpoint;
            mount = mnt_parent;
            mnt = mount + o.mount_mnt as u64;
            continue;
        }
        let depth = unsafe { core::ptr::read_volatile(&(*s).depth) } as usize;
        if depth >= PATH_DEPTH_MAX {
            break;
        }
        let Ok(name) = read_u64(dentry + name_at) else {
            break;
        };
        unsafe {
            (*s).names[depth & (PATH_DEPTH_MAX - 1)] = name;
            core::ptr::write_volatile(&mut (*s).depth, depth as u32 + 1);
        }
        dentry = parent;
    }
    unsafe { finish(s, complete) }
}

/// Writes the collected names root first as `/a/b/c`.
#[inline(always)]
unsafe fn finish(s: *mut PathScratch, complete: bool) -> bool {
    let depth = unsafe { core::ptr::read_volatile(&(*s).depth) };
    let mut complete = complete;
    let base = unsafe { (*s).path.as_mut_ptr() };
    let mut off: usize = 0;
    for i in 0..PATH_DEPTH_MAX as u32 {
        if i >= depth {
            break;
        }
        let idx = (depth - 1 - i) as usize & (PATH_DEPTH_MAX - 1);
        let name = unsafe { (*s).names[idx] };
        if off >= PATH_MAX - 1 {
            complete = false;
            break;
        }
        unsafe { *base.add(off & (PATH_MAX - 1)) = b'/' };
        off += 1;
        let n = unsafe {
            bpf_probe_read_kernel_str(
                base.add(off & (PATH_MAX - 1)).cast(),
                NAME_MAX as u32,
                name as *const _,
            )
        };
        if n <= 0 {
            complete = false;
            break;
        }
        off += (n - 1) as usize & (NAME_MAX - 1);
    }
    if depth == 0 {
        unsafe { *base = b'/' };
        off = 1;
    }
    if off >= PATH_MAX {
        off = PATH_MAX - 1;
        complete = false;
    }
    unsafe {
        *base.add(off & (PATH_MAX - 1)) = 0;
        (*s).len = off as u32;
    }
    complete
}
