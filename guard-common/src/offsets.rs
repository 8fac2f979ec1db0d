//! Kernel struct field offsets the programs need. Rust eBPF has no CO-RE, so
//! userspace reads them from /sys/kernel/btf/vmlinux at load time and passes
//! them in the `OFFSETS` global; one binary then runs on every kernel.

/// Byte offsets of the fields the path walk and the hooks read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub dentry_d_parent: u32,
    /// `struct qstr d_name`: `hash_len` (u64) then `name` (pointer).
    pub dentry_d_name: u32,
    pub dentry_d_inode: u32,
    pub qstr_name: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub super_block_s_dev: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub vfsmount_mnt_root: u32,
    /// Offset of the embedded `struct vfsmount mnt` in `struct mount`.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub file_f_path: u32,
    pub file_f_flags: u32,
    pub file_f_mode: u32,
    pub task_struct_pid: u32,
    pub task_struct_tgid: u32,
    /// Seconds of the inode's ctime (`i_ctime.tv_sec`, `__i_ctime.tv_sec` or
    /// `i_ctime_sec`, by kernel version).
    pub inode_i_ctime_sec: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
