//! The classic-BPF seccomp program a session runs under.
//!
//! Hand-assembled rather than built with a crate: seccompiler (rust-vmm) has no
//! `SECCOMP_RET_USER_NOTIF` action and libseccomp would add a C library for a
//! program of about sixty instructions whose every branch is listed below.

use libc::{sock_filter, sock_fprog};

/// What the filter does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Ask the supervisor (SECCOMP_RET_USER_NOTIF).
    Notify,
    /// Fail with this errno without leaving the kernel.
    Errno(i32),
}

/// Syscalls that always go to the supervisor: every call can destroy data or
/// reach a production endpoint.
#[cfg(target_arch = "x86_64")]
pub const NOTIFIED: &[(i64, &str)] = &[
    (libc::SYS_unlink, "unlink"),
    (libc::SYS_unlinkat, "unlinkat"),
    (libc::SYS_rmdir, "rmdir"),
    (libc::SYS_rename, "rename"),
    (libc::SYS_renameat, "renameat"),
    (libc::SYS_renameat2, "renameat2"),
    (libc::SYS_truncate, "truncate"),
    (libc::SYS_ftruncate, "ftruncate"),
    (libc::SYS_creat, "creat"),
    (libc::SYS_connect, "connect"),
];

/// Syscalls refused outright, with the errno and why (docs/backends.md lists them).
#[cfg(target_arch = "x86_64")]
pub const REFUSED: &[(i64, i32, &str)] = &[
    // ENOSYS so io_uring users fall back to plain syscalls, which are filtered.
    (libc::SYS_io_uring_setup, libc::ENOSYS, "io_uring_setup"),
    (libc::SYS_io_uring_enter, libc::ENOSYS, "io_uring_enter"),
    (
        libc::SYS_io_uring_register,
        libc::ENOSYS,
        "io_uring_register",
    ),
    // open_how (and so O_TRUNC) lives in memory the filter cannot read; callers
    // fall back to openat on ENOSYS as they do on kernels before 5.6.
    (libc::SYS_openat2, libc::ENOSYS, "openat2"),
    // clone3 flags are in memory too (namespaces); glibc falls back to clone.
    (libc::SYS_clone3, libc::ENOSYS, "clone3"),
    (libc::SYS_ptrace, libc::EPERM, "ptrace"),
    (
        libc::SYS_process_vm_writev,
        libc::EPERM,
        "process_vm_writev",
    ),
    (libc::SYS_process_vm_readv, libc::EPERM, "process_vm_readv"),
    (libc::SYS_pidfd_getfd, libc::EPERM, "pidfd_getfd"),
    (libc::SYS_bpf, libc::EPERM, "bpf"),
    (libc::SYS_userfaultfd, libc::EPERM, "userfaultfd"),
    (libc::SYS_kexec_load, libc::EPERM, "kexec_load"),
    (libc::SYS_kexec_file_load, libc::EPERM, "kexec_file_load"),
    (libc::SYS_init_module, libc::EPERM, "init_module"),
    (libc::SYS_finit_module, libc::EPERM, "finit_module"),
    (libc::SYS_delete_module, libc::EPERM, "delete_module"),
    (libc::SYS_mount, libc::EPERM, "mount"),
    (libc::SYS_umount2, libc::EPERM, "umount2"),
    (libc::SYS_pivot_root, libc::EPERM, "pivot_root"),
    (libc::SYS_chroot, libc::EPERM, "chroot"),
    (libc::SYS_setns, libc::EPERM, "setns"),
    (libc::SYS_open_tree, libc::EPERM, "open_tree"),
    (libc::SYS_move_mount, libc::EPERM, "move_mount"),
    (libc::SYS_fsopen, libc::EPERM, "fsopen"),
    (libc::SYS_fsmount, libc::EPERM, "fsmount"),
    (libc::SYS_fspick, libc::EPERM, "fspick"),
    (libc::SYS_mount_setattr, libc::EPERM, "mount_setattr"),
    (
        libc::SYS_name_to_handle_at,
        libc::EPERM,
        "name_to_handle_at",
    ),
    (
        libc::SYS_open_by_handle_at,
        libc::EPERM,
        "open_by_handle_at",
    ),
];

/// Namespaces that would change what a path names (mount) or unlock the rest (user).
pub const REFUSED_NAMESPACES: u32 = (libc::CLONE_NEWNS | libc::CLONE_NEWUSER) as u32;

const O_TRUNC: u32 = libc::O_TRUNC as u32;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32;
const TIOCSTI: u32 = libc::TIOCSTI as u32;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
/// x32 syscalls share x86_64's audit arch and set this bit in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// seccomp_data offsets: nr, arch, instruction_pointer, args[6].
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_low(i: u32) -> u32 {
    16 + 8 * i
}

/// A branch target while assembling.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Allow,
    Notify,
    Enosys,
    Eperm,
    Errno(i32),
    /// Index of a named block (argument checks).
    Block(usize),
    /// The next instruction.
    Next,
}

enum Insn {
    Load(u32),
    /// if A == k goto t else goto f
    JumpEq(u32, Label, Label),
    JumpGe(u32, Label, Label),
    JumpSet(u32, Label, Label),
    Ret(u32),
    /// Marks where a block starts; assembles to nothing.
    BlockStart(usize),
    ReturnTo(Label),
}

/// Assembles the session filter for this architecture.
#[cfg(target_arch = "x86_64")]
pub fn session_program() -> Vec<sock_filter> {
    const OPEN: usize = 0;
    const OPENAT: usize = 1;
    const NAMESPACES: usize = 2;
    const SECCOMP: usize = 3;
    const IOCTL: usize = 4;
    let mut p = vec![
        Insn::Load(OFF_ARCH),
        // Other ABIs (i386 via int 0x80) number syscalls differently: refuse them all.
        Insn::JumpEq(AUDIT_ARCH_NATIVE, Label::Next, Label::Enosys),
        Insn::Load(OFF_NR),
        Insn::JumpGe(X32_SYSCALL_BIT, Label::Enosys, Label::Next),
    ];
    for &(nr, _) in NOTIFIED {
        p.push(Insn::JumpEq(nr as u32, Label::Notify, Label::Next));
    }
    for &(nr, errno, _) in REFUSED {
        p.push(Insn::JumpEq(nr as u32, Label::Errno(errno), Label::Next));
    }
    for (nr, block) in [
        (libc::SYS_open, OPEN),
        (libc::SYS_openat, OPENAT),
        (libc::SYS_unshare, NAMESPACES),
        (libc::SYS_clone, NAMESPACES),
        (libc::SYS_seccomp, SECCOMP),
        (libc::SYS_ioctl, IOCTL),
    ] {
        p.push(Insn::JumpEq(nr as u32, Label::Block(block), Label::Next));
    }
    p.push(Insn::ReturnTo(Label::Allow));
    // open(path, flags): only O_TRUNC opens leave the kernel.
    p.push(Insn::BlockStart(OPEN));
    p.push(Insn::Load(off_arg_low(1)));
    p.push(Insn::JumpSet(O_TRUNC, Label::Notify, Label::Allow));
    // openat(dirfd, path, flags)
    p.push(Insn::BlockStart(OPENAT));
    p.push(Insn::Load(off_arg_low(2)));
    p.push(Insn::JumpSet(O_TRUNC, Label::Notify, Label::Allow));
    // unshare(flags) / clone(flags, ...): refuse new mount and user namespaces.
    p.push(Insn::BlockStart(NAMESPACES));
    p.push(Insn::Load(off_arg_low(0)));
    p.push(Insn::JumpSet(
        REFUSED_NAMESPACES,
        Label::Eperm,
        Label::Allow,
    ));
    // seccomp(op, flags, args): a second listener would see (and could
    // continue) calls before guard does.
    p.push(Insn::BlockStart(SECCOMP));
    p.push(Insn::Load(off_arg_low(1)));
    p.push(Insn::JumpSet(
        SECCOMP_FILTER_FLAG_NEW_LISTENER,
        Label::Eperm,
        Label::Allow,
    ));
    // ioctl(fd, TIOCSTI): typing into guard's terminal would approve a hold.
    p.push(Insn::BlockStart(IOCTL));
    p.push(Insn::Load(off_arg_low(1)));
    p.push(Insn::JumpEq(TIOCSTI, Label::Eperm, Label::Allow));
    assemble(p)
}

/// io_uring's three calls. x86_64 and i386 number them alike (425-427), and
/// x32 adds [`X32_SYSCALL_BIT`]; the io_uring program checks all of these.
#[cfg(target_arch = "x86_64")]
pub const IO_URING: [(i64, &str); 3] = [
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
];

/// The filter a session runs under when BPF LSM holds its file and connect
/// calls: only io_uring is refused (ENOSYS, so callers fall back to plain
/// syscalls). io_uring runs file ops on kernel worker threads, where an LSM
/// restart hold cannot stop the caller; refusing the ring keeps every file
/// op on a path the hooks can hold.
#[cfg(target_arch = "x86_64")]
pub fn io_uring_program() -> Vec<sock_filter> {
    let mut p = vec![Insn::Load(OFF_NR)];
    for (nr, _) in IO_URING {
        let nr = nr as u32;
        p.push(Insn::JumpEq(nr, Label::Enosys, Label::Next));
        p.push(Insn::JumpEq(
            nr | X32_SYSCALL_BIT,
            Label::Enosys,
            Label::Next,
        ));
    }
    p.push(Insn::ReturnTo(Label::Allow));
    assemble(p)
}

fn ret_value(label: Label) -> Option<u32> {
    Some(match label {
        Label::Allow => libc::SECCOMP_RET_ALLOW,
        Label::Notify => libc::SECCOMP_RET_USER_NOTIF,
        Label::Enosys => libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        Label::Eperm => libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        Label::Errno(e) => libc::SECCOMP_RET_ERRNO | (e as u32 & 0xffff),
        Label::Block(_) | Label::Next => return None,
    })
}

/// Lays out the program, appends one return per terminal label used, and
/// resolves jumps (cBPF jumps are forward, 8-bit, relative to the next insn).
fn assemble(mut program: Vec<Insn>) -> Vec<sock_filter> {
    let mut terminals: Vec<Label> = Vec::new();
    for insn in &program {
        let labels = match insn {
            Insn::JumpEq(_, t, f) | Insn::JumpGe(_, t, f) | Insn::JumpSet(_, t, f) => vec![*t, *f],
            Insn::ReturnTo(l) => vec![*l],
            _ => vec![],
        };
        for l in labels {
            if ret_value(l).is_some() && !terminals.contains(&l) {
                terminals.push(l);
            }
        }
    }
    // ReturnTo becomes a plain return of the terminal's value.
    for insn in &mut program {
        if let Insn::ReturnTo(l) = insn {
            *insn = Insn::Ret(ret_value(*l).expect("ReturnTo a terminal label"));
        }
    }
    // Positions of real instructions, blocks and terminals.
    let mut index = Vec::with_capacity(program.len());
    let mut blocks = std::collections::HashMap::new();
    let mut pos = 0usize;
    for insn in &program {
        index.push(pos);
        match insn {
            Insn::BlockStart(b) => {
                blocks.insert(*b, pos);
            }
            _ => pos += 1,
        }
    }
    let terminal_pos: Vec<(Label, usize)> = terminals
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, pos + i))
        .collect();
    let target = |label: Label, at: usize| -> u8 {
        let dest = match label {
            Label::Next => at + 1,
            Label::Block(b) => blocks[&b],
            other => {
                terminal_pos
                    .iter()
                    .find(|(l, _)| *l == other)
                    .expect("terminal collected")
                    .1
            }
        };
        let offset = dest - (at + 1);
        u8::try_from(offset).expect("seccomp program jump beyond 255 instructions")
    };
    let mut out = Vec::with_capacity(pos + terminals.len());
    for (i, insn) in program.iter().enumerate() {
        let at = index[i];
        let jump = |code: u32, k: u32, t: Label, f: Label| sock_filter {
            code: code as u16,
            jt: target(t, at),
            jf: target(f, at),
            k,
        };
        match insn {
            Insn::Load(off) => out.push(stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, *off)),
            Insn::JumpEq(k, t, f) => out.push(jump(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                *k,
                *t,
                *f,
            )),
            Insn::JumpGe(k, t, f) => out.push(jump(
                libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                *k,
                *t,
                *f,
            )),
            Insn::JumpSet(k, t, f) => out.push(jump(
                libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
                *k,
                *t,
                *f,
            )),
            Insn::Ret(v) => out.push(stmt(libc::BPF_RET | libc::BPF_K, *v)),
            Insn::BlockStart(_) => {}
            Insn::ReturnTo(_) => unreachable!("rewritten above"),
        }
    }
    for l in terminals {
        out.push(stmt(
            libc::BPF_RET | libc::BPF_K,
            ret_value(l).expect("terminal"),
        ));
    }
    out
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The kernel's view of a program; `program` must outlive the returned value.
pub fn fprog(program: &[sock_filter]) -> sock_fprog {
    sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut sock_filter,
    }
}

/// What the filter does with syscall `nr` and these arguments, by running the
/// program in a tiny cBPF interpreter. Used by tests and `guard doctor`.
pub fn evaluate(program: &[sock_filter], nr: i64, args: [u64; 6]) -> Option<Treatment> {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
    #[cfg(target_arch = "x86_64")]
    data[4..8].copy_from_slice(&AUDIT_ARCH_NATIVE.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    while let Some(insn) = program.get(pc) {
        let code = insn.code as u32;
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                let off = insn.k as usize;
                acc = u32::from_ne_bytes(data[off..off + 4].try_into().ok()?);
                pc += 1;
            }
            c if c & 0x07 == libc::BPF_JMP => {
                let taken = match c & 0xf0 {
                    x if x == libc::BPF_JEQ => acc == insn.k,
                    x if x == libc::BPF_JGE => acc >= insn.k,
                    x if x == libc::BPF_JSET => acc & insn.k != 0,
                    _ => return None,
                };
                pc += 1 + if taken { insn.jt } else { insn.jf } as usize;
            }
            c if c == libc::BPF_RET | libc::BPF_K => {
                let k = insn.k;
                return match k & 0xffff_0000 {
                    x if x == libc::SECCOMP_RET_ALLOW => None,
                    x if x == libc::SECCOMP_RET_USER_NOTIF => Some(Treatment::Notify),
                    x if x == libc::SECCOMP_RET_ERRNO => {
                        Some(Treatment::Errno((k & 0xffff) as i32))
                    }
                    _ => None,
                };
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn treat(nr: i64, args: [u64; 6]) -> Option<Treatment> {
        evaluate(&session_program(), nr, args)
    }

    #[test]
    fn the_io_uring_program_refuses_the_ring_and_nothing_else() {
        let program = io_uring_program();
        for (nr, name) in IO_URING {
            assert_eq!(
                evaluate(&program, nr, [0; 6]),
                Some(Treatment::Errno(libc::ENOSYS)),
                "{name}"
            );
            assert_eq!(
                evaluate(&program, nr | X32_SYSCALL_BIT as i64, [0; 6]),
                Some(Treatment::Errno(libc::ENOSYS)),
                "x32 {name}"
            );
            // The session filter (no BPF LSM) refuses the same calls alike.
            assert_eq!(treat(nr, [0; 6]), Some(Treatment::Errno(libc::ENOSYS)));
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_unlinkat,
            libc::SYS_connect,
            libc::SYS_openat,
            libc::SYS_seccomp,
            libc::SYS_setuid,
        ] {
            assert_eq!(evaluate(&program, nr, [0; 6]), None, "syscall {nr}");
        }
    }

    #[test]
    fn ordinary_opens_stay_in_the_kernel_and_truncating_opens_notify() {
        let ro = libc::O_RDONLY as u64;
        let trunc = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64;
        assert_eq!(treat(libc::SYS_openat, [0, 0, ro, 0, 0, 0]), None);
        assert_eq!(
            treat(
                libc::SYS_openat,
                [0, 0, (libc::O_WRONLY | libc::O_APPEND) as u64, 0, 0, 0]
            ),
            None
        );
        assert_eq!(
            treat(libc::SYS_openat, [0, 0, trunc, 0, 0, 0]),
            Some(Treatment::Notify)
        );
        assert_eq!(
            treat(libc::SYS_open, [0, trunc, 0, 0, 0, 0]),
            Some(Treatment::Notify)
        );
        assert_eq!(treat(libc::SYS_open, [0, ro, 0, 0, 0, 0]), None);
        // openat's flags are argument 2: O_TRUNC in argument 1 must not matter.
        assert_eq!(treat(libc::SYS_openat, [0, trunc, ro, 0, 0, 0]), None);
        assert_eq!(treat(libc::SYS_read, [0; 6]), None);
    }

    #[test]
    fn every_listed_syscall_gets_its_treatment() {
        for &(nr, name) in NOTIFIED {
            assert_eq!(treat(nr, [0; 6]), Some(Treatment::Notify), "{name}");
        }
        for &(nr, errno, name) in REFUSED {
            assert_eq!(treat(nr, [0; 6]), Some(Treatment::Errno(errno)), "{name}");
        }
        assert_eq!(
            treat(
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]
            ),
            Some(Treatment::Errno(libc::EPERM))
        );
        assert_eq!(
            treat(libc::SYS_unshare, [libc::CLONE_FS as u64, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            treat(
                libc::SYS_clone,
                [(libc::CLONE_NEWNS | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0]
            ),
            Some(Treatment::Errno(libc::EPERM))
        );
        assert_eq!(
            treat(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            treat(
                libc::SYS_seccomp,
                [1, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, 0, 0, 0, 0]
            ),
            Some(Treatment::Errno(libc::EPERM))
        );
        assert_eq!(treat(libc::SYS_seccomp, [1, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            treat(libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]),
            Some(Treatment::Errno(libc::EPERM))
        );
        assert_eq!(
            treat(libc::SYS_ioctl, [0, libc::TIOCGWINSZ, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            treat(libc::SYS_unlink | X32_SYSCALL_BIT as i64, [0; 6]),
            Some(Treatment::Errno(libc::ENOSYS))
        );
    }
}
