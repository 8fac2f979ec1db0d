//! Relaying signals from `guard session` to the command it runs.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicI32, Ordering},
};

use anyhow::{Context as _, bail};

/// Relays signals sent to `guard session` (by kill, systemd, a CI runner) to
/// the command. Terminal-generated ones (^C, resize) already reach the
/// command through its process group, so those are not sent twice.
pub struct SignalRelay {
    old_mask: libc::sigset_t,
    child: Arc<AtomicI32>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

impl SignalRelay {
    /// Blocks the forwarded signals in this thread (and every thread started
    /// later) and starts the relay thread.
    pub fn block() -> anyhow::Result<Self> {
        let set = forwarded_set();
        // SAFETY: valid sigsets; pthread_sigmask affects only this thread.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) };
        if rc != 0 {
            bail!(
                "blocking signals: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        let child = Arc::new(AtomicI32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (child.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("guard-signals".into())
            .spawn(move || relay(&set, &c, &s))
            .context("starting the signal relay thread")?;
        Ok(Self {
            old_mask,
            child,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn forward_to(&self, pid: i32) {
        self.child.store(pid, Ordering::SeqCst);
    }

    /// Stops relaying and restores the signal mask.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().expect("signal relay poisoned").take() {
            let _ = t.join();
        }
        // SAFETY: restores the mask saved in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

fn relay(set: &libc::sigset_t, child: &AtomicI32, stop: &AtomicBool) {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: siginfo_t is plain data filled by sigtimedwait.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid set, info and timeout pointers.
        let sig = unsafe { libc::sigtimedwait(set, &mut info, &timeout) };
        if sig <= 0 {
            continue;
        }
        let pid = child.load(Ordering::SeqCst);
        // si_code <= 0: sent by a process (kill, sigqueue); SI_KERNEL: the tty
        // driver, which signalled the command's process group already.
        if pid > 0 && info.si_code <= 0 {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, sig) };
        }
    }
}
