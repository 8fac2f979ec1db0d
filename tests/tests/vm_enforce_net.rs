//! VM tier: connect rules. Endpoints a rule covers (IPv4, IPv6, unix socket
//! paths) are refused or held; other endpoints connect untouched and nothing
//! about them reaches userspace. Skipped where BPF LSM cannot attach.

mod kernel_harness;

use std::{
    ffi::CString,
    net::{SocketAddr, TcpListener},
    os::unix::ffi::OsStrExt as _,
    os::unix::net::UnixListener,
    path::Path,
    time::Duration,
};

use guard::{
    events::{KernelEvent, KernelVerdict},
    kernel_maps::PathScope,
    policy::Policy,
    programs::Probe,
};
use guard_common::{EventKind, Rule, session_flags};
use guard_tests::{TestCgroup, require_root};
use kernel_harness::*;

/// Forks a child that joins the session and runs `body` (which may only
/// make async-signal-safe calls); returns its exit code.
fn in_session_child(cg: &TestCgroup, body: impl FnOnce() -> i32) -> i32 {
    let procs = CString::new(cg.cgroup.path().join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    // SAFETY: the child only calls async-signal-safe functions, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(200);
            }
            libc::close(fd);
            libc::_exit(body());
        }
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "session child died: {status:#x}");
    libc::WEXITSTATUS(status)
}

/// connect(2) on a fresh socket: 0 or the errno.
fn connect_raw(family: i32, addr: *const libc::sockaddr, len: usize) -> i32 {
    // SAFETY: `addr` points to a live sockaddr of `len` bytes.
    unsafe {
        let s = libc::socket(family, libc::SOCK_STREAM, 0);
        if libc::connect(s, addr, len as u32) == 0 {
            0
        } else {
            *libc::__errno_location()
        }
    }
}

/// Connects to `addr` from a child in the session: 0 or the errno.
fn connect_in_session(cg: &TestCgroup, addr: SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            in_session_child(cg, || {
                connect_raw(
                    libc::AF_INET,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of_val(&sa),
                )
            })
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            in_session_child(cg, || {
                connect_raw(
                    libc::AF_INET6,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    size_of_val(&sa),
                )
            })
        }
    }
}

/// Connects to a unix socket path from a child in the session.
fn connect_unix_in_session(cg: &TestCgroup, path: &Path) -> i32 {
    let mut sa = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as u16,
        sun_path: [0; 108],
    };
    for (d, s) in sa.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    in_session_child(cg, || {
        connect_raw(
            libc::AF_UNIX,
            (&sa as *const libc::sockaddr_un).cast(),
            size_of_val(&sa),
        )
    })
}

#[test]
fn production_endpoint_is_refused_or_held_while_others_connect_untouched() {
    require_root();
    let policy = Policy::embedded_default();
    let Some(e) = Enforced::start_lsm(
        "vm-connect",
        &[Probe::LsmConnect],
        session_flags::WATCH_CONNECT,
        policy,
    ) else {
        return;
    };
    let prod = TcpListener::bind("127.0.0.2:5432").expect("listening on 127.0.0.2:5432");
    let held = TcpListener::bind("127.0.0.2:5433").expect("listening on 127.0.0.2:5433");
    let dev = TcpListener::bind("127.0.0.1:8080").expect("listening on 127.0.0.1:8080");
    {
        let mut tables = e.tables.lock().unwrap();
        let ip = "127.0.0.2".parse().unwrap();
        tables
            .set_endpoint_rule(
                e.session,
                ip,
                32,
                Some(5432),
                Rule {
                    deny: EventKind::Connect.bit(),
                    ..Rule::ALLOW
                },
            )
            .unwrap();
        tables
            .set_endpoint_rule(
                e.session,
                ip,
                32,
                Some(5433),
                Rule::holding(EventKind::Connect.bit()),
            )
            .unwrap();
    }

    assert_eq!(
        connect_in_session(&e.cg, "127.0.0.1:8080".parse().unwrap()),
        0,
        "the dev endpoint must connect"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.event_count(), 0, "an untouched connect reached userspace");

    assert_eq!(
        connect_in_session(&e.cg, "127.0.0.2:5432".parse().unwrap()),
        libc::EPERM,
        "the production endpoint must be refused"
    );
    // The held endpoint: stopped in the kernel, then decided by policy in
    // userspace (the placeholder policy allows connects), then connected.
    assert_eq!(
        connect_in_session(&e.cg, "127.0.0.2:5433".parse().unwrap()),
        0,
        "the held connect must complete once policy allowed it"
    );
    let events = e.settled_events(2);
    let denied = events.iter().any(|ev| matches!(ev, KernelEvent::Connect { verdict: KernelVerdict::Denied, endpoint, .. } if endpoint == &guard::action::Endpoint::Inet { addr: "127.0.0.2:5432".parse().unwrap() }));
    let stopped = events.iter().any(|ev| matches!(ev, KernelEvent::Connect { verdict: KernelVerdict::Stopped, endpoint, .. } if endpoint == &guard::action::Endpoint::Inet { addr: "127.0.0.2:5433".parse().unwrap() }));
    assert!(denied && stopped, "events: {events:#?}");
    assert_eq!(
        events.len(),
        2,
        "only the two watched connects: {events:#?}"
    );
    drop((prod, held, dev));
}

#[test]
fn ipv6_and_unix_socket_rules_apply_to_their_endpoints_only() {
    require_root();
    let Some(e) = Enforced::start_lsm(
        "vm-connect6",
        &[Probe::LsmConnect],
        session_flags::WATCH_CONNECT,
        Policy::embedded_default(),
    ) else {
        return;
    };
    let scratch = Scratch::new("vm-connect6");
    let sock = std::fs::canonicalize(&scratch.dir)
        .unwrap()
        .join("docker.sock");
    let other_sock = sock.with_file_name("other.sock");
    let _unix = UnixListener::bind(&sock).expect("binding docker.sock");
    let _other = UnixListener::bind(&other_sock).expect("binding other.sock");
    let v6 = TcpListener::bind("[::1]:5434").expect("listening on [::1]:5434");
    let v6_ok = TcpListener::bind("[::1]:5435").expect("listening on [::1]:5435");
    let deny = Rule {
        deny: EventKind::Connect.bit(),
        ..Rule::ALLOW
    };
    {
        let mut t = e.tables.lock().unwrap();
        t.set_endpoint_rule(e.session, "::1".parse().unwrap(), 128, Some(5434), deny)
            .unwrap();
        t.set_path_rule(e.session, &sock, PathScope::Exact, deny)
            .unwrap();
    }
    assert_eq!(
        connect_in_session(&e.cg, "[::1]:5434".parse().unwrap()),
        libc::EPERM
    );
    assert_eq!(connect_in_session(&e.cg, "[::1]:5435".parse().unwrap()), 0);
    assert_eq!(connect_unix_in_session(&e.cg, &sock), libc::EPERM);
    assert_eq!(connect_unix_in_session(&e.cg, &other_sock), 0);
    let events = e.settled_events(2);
    assert_eq!(
        events.len(),
        2,
        "only the two refused connects are reported: {events:#?}"
    );
    assert!(events.iter().any(|ev| matches!(ev, KernelEvent::Connect { endpoint: guard::action::Endpoint::Unix { path }, .. } if path == &sock)));
    drop((v6, v6_ok));
}
