//! Syscall loops for the seccomp tests and `cargo xtask bench`: each mode makes
//! one kind of call in a tight loop and prints the time per call.
//!
//! Modes:
//!   unlink N DIR        create and unlink DIR/f N times (unlink timed)
//!   create N DIR        create DIR/f0 .. DIR/f<N-1>
//!   unlink-all DIR      unlink every file in DIR (timed)
//!   open N FILE         open(O_RDONLY) and close FILE N times
//!   open-trunc N FILE   open(O_WRONLY|O_TRUNC) and close FILE N times
//!   connect N ADDR      connect a TCP socket to ADDR (ip:port) N times
//!   connect-each ADDR.. connect once to each ADDR in turn, print `ok ADDR` or
//!                       `err ADDR <error>`; exit 1 if any failed
//!   open-excl-trunc P   open(P, O_WRONLY|O_CREAT|O_EXCL|O_TRUNC), print ok or the error
//!   escapes             try each refused syscall, print name=errno; then
//!                       no_new_privs=0|1 and seccomp=0|2 (the filter mode)
//!   race-unlink FREE PROT SECONDS
//!                       one thread unlinks a path buffer while another keeps
//!                       flipping it between FREE and PROT (same length)

use std::{
    ffi::CString,
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("missing argument {i}; see the module docs"))
    };
    match arg(0) {
        "unlink" => unlink_loop(arg(1).parse().expect("N"), arg(2)),
        "create" => {
            for i in 0..arg(1).parse::<u64>().expect("N") {
                std::fs::write(format!("{}/f{i}", arg(2)), b"x").expect("creating a file");
            }
        }
        "unlink-all" => unlink_all(arg(1)),
        "open" => open_loop(arg(1).parse().expect("N"), arg(2), libc::O_RDONLY),
        "open-trunc" => open_loop(
            arg(1).parse().expect("N"),
            arg(2),
            libc::O_WRONLY | libc::O_TRUNC,
        ),
        "connect" => connect_loop(arg(1).parse().expect("N"), arg(2)),
        "connect-each" => connect_each(&args[1..]),
        "open-excl-trunc" => {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC;
            match CString::new(arg(1)).map(|p| {
                // SAFETY: NUL-terminated path.
                unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o644) }
            }) {
                Ok(fd) if fd >= 0 => println!("ok"),
                _ => println!("err {}", std::io::Error::last_os_error()),
            }
        }
        "escapes" => escapes(),
        "race-unlink" => race_unlink(arg(1), arg(2), arg(3).parse().expect("SECONDS")),
        other => panic!("unknown mode {other:?}"),
    }
}

fn report(what: &str, n: u64, elapsed: Duration) {
    println!(
        "{what} {n} calls {:.0} ns/call",
        elapsed.as_nanos() as f64 / n as f64
    );
}

fn unlink_all(dir: &str) {
    let mut n = 0;
    let started = Instant::now();
    for entry in std::fs::read_dir(dir).expect("reading the directory") {
        let path = entry.expect("a directory entry").path();
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("unlink {}: {e}", path.display()));
        n += 1;
    }
    report("unlink", n, started.elapsed());
}

fn unlink_loop(n: u64, dir: &str) {
    let path = CString::new(format!("{dir}/f")).unwrap();
    let mut total = Duration::ZERO;
    for _ in 0..n {
        // SAFETY: NUL-terminated path; fds closed right away.
        unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o600,
            );
            assert!(
                fd >= 0,
                "creating {path:?}: {}",
                std::io::Error::last_os_error()
            );
            libc::close(fd);
            let t = Instant::now();
            let rc = libc::unlink(path.as_ptr());
            total += t.elapsed();
            assert_eq!(rc, 0, "unlink: {}", std::io::Error::last_os_error());
        }
    }
    report("unlink", n, total);
}

fn open_loop(n: u64, file: &str, flags: i32) {
    let path = CString::new(file).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: NUL-terminated path.
        unsafe {
            let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
            assert!(fd >= 0, "open {file}: {}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    }
    report("open", n, t.elapsed());
}

fn connect_loop(n: u64, addr: &str) {
    let addr: SocketAddr = addr.parse().expect("ADDR as ip:port");
    let t = Instant::now();
    for _ in 0..n {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        // Reset on close: thousands of TIME_WAIT sockets would exhaust
        // ephemeral ports and make later connects slow.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a live socket with a correctly sized value.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            );
        }
        drop(s);
    }
    report("connect", n, t.elapsed());
}

fn connect_each(addrs: &[String]) {
    let mut failed = false;
    for addr in addrs {
        let parsed: SocketAddr = addr.parse().expect("ADDR as ip:port");
        match TcpStream::connect(parsed) {
            Ok(_) => println!("ok {addr}"),
            Err(e) => {
                println!("err {addr} {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}

fn errno_name(e: i32) -> String {
    match e {
        0 => "OK".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EPERM => "EPERM".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EBADF => "EBADF".into(),
        libc::ENOTTY => "ENOTTY".into(),
        other => format!("errno{other}"),
    }
}

fn escapes() {
    let params = [0u8; 120];
    let one = |name: &str, f: &dyn Fn() -> i64| {
        let rc = f();
        let e = if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        println!("{name}={}", errno_name(e));
    };
    // SAFETY: as above.
    unsafe {
        one("io_uring_setup", &|| {
            libc::syscall(libc::SYS_io_uring_setup, 4, params.as_ptr())
        });
        one("ptrace", &|| {
            libc::syscall(libc::SYS_ptrace, libc::PTRACE_PEEKDATA, 1, 0, 0)
        });
        one("bpf", &|| libc::syscall(libc::SYS_bpf, 0, 0, 0));
        one("process_vm_writev", &|| {
            libc::syscall(libc::SYS_process_vm_writev, 1, 0, 0, 0, 0, 0)
        });
        one("unshare_user", &|| {
            libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)
        });
        one("openat2", &|| {
            libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, c"/".as_ptr(), 0, 0)
        });
        one("tiocsti", &|| {
            libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSTI, c"x".as_ptr())
        });
        println!(
            "no_new_privs={}",
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
        );
        println!("seccomp={}", libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0));
    }
}

/// Flips `buf` between two same-length paths while the main thread unlinks it.
/// Prints how many unlinks succeeded and whether PROT still exists.
fn race_unlink(free: &str, prot: &str, seconds: u64) {
    assert_eq!(free.len(), prot.len(), "paths must have the same length");
    static STOP: AtomicBool = AtomicBool::new(false);
    let len = free.len();
    let buf: &'static mut [u8] = Box::leak(vec![0u8; len + 1].into_boxed_slice());
    buf[..len].copy_from_slice(free.as_bytes());
    let addr = buf.as_mut_ptr() as usize;
    let (a, b) = (free.as_bytes().to_vec(), prot.as_bytes().to_vec());
    let flipper = std::thread::spawn(move || {
        let p = addr as *mut u8;
        while !STOP.load(Ordering::Relaxed) {
            for src in [&a, &b] {
                for (i, &byte) in src.iter().enumerate() {
                    // SAFETY: within the leaked buffer; racing on purpose.
                    unsafe { std::ptr::write_volatile(p.add(i), byte) };
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let free_c = CString::new(free).unwrap();
    let (mut calls, mut removed) = (0u64, 0u64);
    while Instant::now() < deadline && std::path::Path::new(prot).exists() {
        // SAFETY: recreate FREE so most calls have something to remove.
        unsafe {
            let fd = libc::open(
                free_c.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o600,
            );
            if fd >= 0 {
                libc::close(fd);
            }
        }
        // SAFETY: the buffer stays NUL-terminated (the flipper never writes its last byte).
        if unsafe { libc::unlink(addr as *const libc::c_char) } == 0 {
            removed += 1;
        }
        calls += 1;
    }
    STOP.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    println!(
        "calls={calls} removed={removed} prot_exists={}",
        std::path::Path::new(prot).exists()
    );
}
