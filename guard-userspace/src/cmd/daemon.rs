//! `guard daemon [--socket PATH] [--audit-log PATH]`

use std::path::Path;

use anyhow::Context as _;

use super::finish;
use crate::{
    api::{endpoint, server::Server},
    audit::{self, AuditLog},
    cli::DaemonArgs,
    controller::Controller,
    holds::HoldBroker,
};

pub fn run(args: DaemonArgs, socket: Option<&Path>) -> i32 {
    finish(false, || {
        // Block the stop signals before any thread starts, then wait for one.
        let stop = stop_signals();
        // SAFETY: valid sigset; affects this thread and the threads it starts.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &stop, std::ptr::null_mut()) };
        let audit_path = audit::resolve_path(args.audit_log);
        let audit = AuditLog::open(&audit_path)?;
        let controller = Controller::new(HoldBroker::new(), Some(audit));
        let socket = endpoint::daemon_socket(socket);
        let server = Server::start(&socket, controller.clone(), None)?;
        let reaper = std::sync::Arc::downgrade(&controller);
        std::thread::Builder::new()
            .name("guard-reaper".into())
            .spawn(move || {
                while let Some(controller) = reaper.upgrade() {
                    controller.reap_dead_sessions();
                    drop(controller);
                    std::thread::sleep(std::time::Duration::from_secs(2));
                }
            })?;
        eprintln!(
            "guard daemon: serving {} (sessions without a daemon use {}), audit log {}",
            server.path().display(),
            endpoint::sessions_dir(&socket).display(),
            audit_path.display()
        );
        let mut sig: libc::c_int = 0;
        // SAFETY: valid set and out pointer.
        let rc = unsafe { libc::sigwait(&stop, &mut sig) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc)).context("waiting for signals");
        }
        eprintln!("guard daemon: stopping on signal {sig}");
        drop(server);
        Ok(())
    })
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}
