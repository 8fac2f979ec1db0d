//! Struct field offsets of the running kernel, read from its BTF
//! (/sys/kernel/btf/vmlinux). Rust eBPF has no CO-RE relocations, so the
//! kernel programs get these in a global at load time instead.

use std::{borrow::Cow, path::Path};

use anyhow::{Context as _, bail};
use guard_common::KernelOffsets;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// One parsed type: what the offset lookups need and nothing more.
#[derive(Debug, Clone)]
struct BtfType {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// Referenced type for typedef/const/volatile/...
    type_ref: u32,
    /// (name_off, type id, bit offset) for struct and union members.
    members: Vec<(u32, u32, u32)>,
}

/// A parsed BTF blob (types and strings).
pub struct Btf {
    types: Vec<BtfType>,
    strings: Vec<u8>,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> anyhow::Result<Self> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let data = std::fs::read(path).with_context(|| {
            format!(
                "reading {}: guard needs a kernel built with CONFIG_DEBUG_INFO_BTF",
                path.display()
            )
        })?;
        Self::parse(&data).with_context(|| format!("parsing BTF in {}", path.display()))
    }

    pub fn parse(data: &[u8]) -> anyhow::Result<Self> {
        let u16_at = |o: usize| -> anyhow::Result<u16> {
            Ok(u16::from_le_bytes(
                data.get(o..o + 2).context("BTF truncated")?.try_into()?,
            ))
        };
        let u32_at = |o: usize| -> anyhow::Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(o..o + 4).context("BTF truncated")?.try_into()?,
            ))
        };
        if u16_at(0)? != BTF_MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = hdr_len + u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .context("BTF string section out of range")?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![BtfType {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            type_ref: 0,
            members: Vec::new(),
        }];
        let end = type_off + type_len;
        let mut at = type_off;
        while at < end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 => 4,  // int
                3 => 12, // array
                4 | 5 => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push((u32_at(m)?, u32_at(m + 4)?, u32_at(m + 8)?));
                    }
                    vlen * 12
                }
                6 => vlen * 8,   // enum
                13 => vlen * 8,  // func proto
                14 => 4,         // var
                15 => vlen * 12, // datasec
                17 => 4,         // decl tag
                19 => vlen * 12, // enum64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                other => bail!("unknown BTF kind {other}"),
            };
            at += extra;
            types.push(BtfType {
                name_off,
                kind,
                kind_flag,
                type_ref: size_or_type,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> Cow<'_, str> {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end])
    }

    fn struct_id(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| {
            t.kind == KIND_STRUCT && !t.members.is_empty() && self.name(t.name_off) == name
        })
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.type_ref
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset of `field` in the struct or union `id`, looking inside
    /// anonymous struct and union members.
    fn member_bits(&self, id: usize, field: &str) -> Option<u32> {
        let t = self.types.get(id)?;
        for &(name_off, type_id, offset) in &t.members {
            let bits = if t.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            };
            if name_off == 0 {
                let inner = self.resolve(type_id) as usize;
                if matches!(
                    self.types.get(inner).map(|t| t.kind),
                    Some(KIND_STRUCT | KIND_UNION)
                ) && let Some(b) = self.member_bits(inner, field)
                {
                    return Some(bits + b);
                }
            } else if self.name(name_off) == field {
                return Some(bits);
            }
        }
        None
    }

    /// Byte offset of `strukt.field`.
    pub fn offset_of(&self, strukt: &str, field: &str) -> anyhow::Result<u32> {
        let id = self
            .struct_id(strukt)
            .with_context(|| format!("struct {strukt} not in the kernel's BTF"))?;
        let bits = self
            .member_bits(id, field)
            .with_context(|| format!("struct {strukt} has no field {field} in this kernel"))?;
        if bits % 8 != 0 {
            bail!("{strukt}.{field} is a bit field");
        }
        Ok(bits / 8)
    }
}

/// The offsets every guard kernel program needs, for this kernel.
pub fn kernel_offsets(btf: &Btf) -> anyhow::Result<KernelOffsets> {
    Ok(KernelOffsets {
        dentry_d_parent: btf.offset_of("dentry", "d_parent")?,
        dentry_d_name: btf.offset_of("dentry", "d_name")?,
        dentry_d_inode: btf.offset_of("dentry", "d_inode")?,
        qstr_name: btf.offset_of("qstr", "name")?,
        inode_i_ino: btf.offset_of("inode", "i_ino")?,
        inode_i_sb: btf.offset_of("inode", "i_sb")?,
        super_block_s_dev: btf.offset_of("super_block", "s_dev")?,
        path_mnt: btf.offset_of("path", "mnt")?,
        path_dentry: btf.offset_of("path", "dentry")?,
        vfsmount_mnt_root: btf.offset_of("vfsmount", "mnt_root")?,
        mount_mnt: btf.offset_of("mount", "mnt")?,
        mount_mnt_parent: btf.offset_of("mount", "mnt_parent")?,
        mount_mnt_mountpoint: btf.offset_of("mount", "mnt_mountpoint")?,
        file_f_path: btf.offset_of("file", "f_path")?,
        file_f_flags: btf.offset_of("file", "f_flags")?,
        file_f_mode: btf.offset_of("file", "f_mode")?,
        task_struct_pid: btf.offset_of("task_struct", "pid")?,
        task_struct_tgid: btf.offset_of("task_struct", "tgid")?,
        // 6.11 split the ctime into seconds and nanoseconds; 6.6 renamed it
        // `__i_ctime`; before, `i_ctime`. tv_sec leads a timespec64.
        inode_i_ctime_sec: btf
            .offset_of("inode", "i_ctime_sec")
            .or_else(|_| btf.offset_of("inode", "__i_ctime"))
            .or_else(|_| btf.offset_of("inode", "i_ctime"))?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF resolves every field, with the offsets that
    /// have been stable for years where they are stable.
    #[test]
    fn resolves_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this machine");
            return;
        };
        let o = kernel_offsets(&btf).expect("every field resolves");
        assert_eq!(o.path_mnt, 0);
        assert_eq!(o.path_dentry, 8);
        assert_eq!(o.qstr_name, 8, "qstr is {{hash_len, name}}");
        assert_eq!(o.vfsmount_mnt_root, 0);
        assert!(o.dentry_d_parent > 0 && o.dentry_d_name > o.dentry_d_parent);
        assert!(o.mount_mnt > o.mount_mnt_parent && o.mount_mnt_mountpoint > o.mount_mnt_parent);
        eprintln!("{o:?}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(&[0; 4]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        assert!(Btf::parse(&[]).is_err());
    }
}
