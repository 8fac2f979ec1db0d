//! A pseudo-terminal for the terminal-prompt tests: the slave stands for the
//! agent's terminal, the master for the person's keyboard and screen.

use std::{
    ffi::CStr,
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::fs::OpenOptionsExt as _,
    },
    path::PathBuf,
    time::{Duration, Instant},
};

pub struct Pty {
    pub master: File,
    pub slave: File,
    pub slave_path: PathBuf,
    /// Everything read from the master so far.
    seen: Vec<u8>,
}

impl Pty {
    pub fn open() -> Self {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: out pointers are valid; name/termios/winsize may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: ptsname returns a static buffer for a valid master fd.
        let name = unsafe { CStr::from_ptr(libc::ptsname(master)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: both fds were just opened and are owned here.
        unsafe {
            Pty {
                master: File::from_raw_fd(master),
                slave: File::from_raw_fd(slave),
                slave_path: PathBuf::from(name),
                seen: Vec::new(),
            }
        }
    }

    /// The slave's current settings.
    pub fn termios(&self) -> libc::termios {
        // SAFETY: plain data filled by tcgetattr on an open tty fd.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) },
            0
        );
        t
    }

    /// Puts the slave in raw mode, as a full-screen agent TUI leaves it, and
    /// returns the settings it now has.
    pub fn make_raw(&self) -> libc::termios {
        let mut raw = self.termios();
        // SAFETY: raw is a valid termios; the fd is open.
        unsafe {
            libc::cfmakeraw(&mut raw);
            assert_eq!(
                libc::tcsetattr(self.slave.as_raw_fd(), libc::TCSANOW, &raw),
                0
            );
        }
        self.termios()
    }

    /// Fills what the pty holds for the screen (as a terminal nobody reads
    /// does) by writing to the slave until it would block; returns how much.
    pub fn fill_screen(&self) -> usize {
        // A second open file description, so O_NONBLOCK stays on this one.
        let slave = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&self.slave_path)
            .expect("opening the pty slave to fill it");
        let chunk = [b'.'; 1024];
        let mut total = 0;
        loop {
            match (&slave).write(&chunk) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return total,
                Err(e) => panic!("filling the pty: {e}"),
            }
        }
    }

    /// Reads the master until `needle` shows up in what this call read;
    /// returns that text. Panics with everything the terminal showed.
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let start = self.seen.len();
        while Instant::now() < deadline {
            if !self.read_some(50) {
                continue;
            }
            let text = String::from_utf8_lossy(&self.seen[start..]).into_owned();
            if text.contains(needle) {
                return text;
            }
        }
        panic!(
            "{needle:?} did not appear on the terminal within {timeout:?}; it shows {:?}",
            self.transcript()
        );
    }

    /// Reads whatever the master has now (for failure messages), and
    /// returns everything the terminal showed.
    pub fn drain(&mut self) -> String {
        while self.read_some(100) {}
        self.transcript()
    }

    /// Everything read from the master so far.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// One read if the master is readable within `wait_ms`; false if not.
    fn read_some(&mut self, wait_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, wait_ms) } <= 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(n) if n > 0 => {
                self.seen.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }
}

/// Whether two settings are the same in every field a prompt could change.
pub fn same_termios(a: &libc::termios, b: &libc::termios) -> bool {
    a.c_iflag == b.c_iflag
        && a.c_oflag == b.c_oflag
        && a.c_cflag == b.c_cflag
        && a.c_lflag == b.c_lflag
        && a.c_cc == b.c_cc
}
