//! The approval prompt on the session's own terminal.
//!
//! When an action of a session started from a terminal is held, guard freezes
//! the session cgroup (so a full-screen agent cannot draw or read), takes the
//! terminal, switches it to cooked mode, shows what was attempted and reads
//! a/s/d/k. Then it restores the saved termios exactly, thaws the session and
//! sends SIGWINCH so a TUI in raw mode redraws.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, Ordering},
        mpsc,
    },
};

use anyhow::Context as _;

use crate::{
    action::Action,
    ancestry,
    cgroup::Cgroup,
    freeze::SessionFreeze,
    holds::{GrantScope, Hold, HoldBroker, HoldObserver, Resolution},
};

/// What the person answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    ApproveOnce,
    ApproveSession,
    Deny,
    /// Kill the whole session.
    Kill,
}

impl Choice {
    fn parse(line: &str) -> Option<Self> {
        match line.trim().to_ascii_lowercase().as_str() {
            "a" | "approve" | "y" | "yes" => Some(Choice::ApproveOnce),
            "s" | "session" => Some(Choice::ApproveSession),
            "d" | "deny" | "n" | "no" => Some(Choice::Deny),
            "k" | "kill" => Some(Choice::Kill),
            _ => None,
        }
    }
}

/// The controlling terminal, opened once when the session starts.
pub struct Terminal {
    tty: File,
}

impl Terminal {
    /// The process's controlling terminal, if it has one.
    pub fn open() -> Option<Self> {
        Self::open_path(Path::new("/dev/tty")).ok()
    }

    /// A specific terminal device (tests drive a pseudo-terminal this way).
    pub fn open_path(path: &Path) -> anyhow::Result<Self> {
        // Non-blocking: a terminal nobody reads (a stopped emulator, a full
        // pty) must not wedge the prompt; writes wait in poll, where they
        // notice that the hold was decided elsewhere. This is guard's own
        // open file description, so the agent's descriptors are unaffected.
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(tty.as_raw_fd()) } != 1 {
            anyhow::bail!("{} is not a terminal", path.display());
        }
        Ok(Self { tty })
    }

    /// Freezes the session, asks about `hold` on the terminal, restores the
    /// terminal, thaws (unless a `freeze` hold still keeps it frozen), and
    /// sends SIGWINCH to `redraw` (the agent's pid). Returns None if
    /// `still_pending` turns false first (someone else decided, or the ask
    /// timed out).
    pub fn ask(
        &self,
        hold: &Hold,
        freeze: &SessionFreeze,
        redraw: i32,
        still_pending: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<Choice>> {
        freeze.hold();
        let result = self.with_cooked_terminal(|| self.prompt(hold, still_pending));
        freeze.release();
        if redraw != 0 {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(redraw, libc::SIGWINCH) };
        }
        result
    }

    fn with_cooked_terminal<T>(
        &self,
        body: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let fd = self.tty.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; saved is valid for writes.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error()).context("tcgetattr on the terminal");
        }
        let foreground = Foreground::take(fd);
        let mut cooked = saved;
        cooked.c_lflag |= libc::ICANON | libc::ECHO | libc::ECHOE | libc::ECHOK;
        // No ISIG: a ^C here must not signal the (frozen) agent's group.
        cooked.c_lflag &= !libc::ISIG;
        cooked.c_iflag |= libc::ICRNL;
        cooked.c_iflag &= !(libc::INLCR | libc::IGNCR);
        cooked.c_oflag |= libc::OPOST | libc::ONLCR;
        // TCSAFLUSH drops keys typed for the agent, so they cannot answer us.
        if let Err(e) = set_termios(fd, libc::TCSAFLUSH, &cooked) {
            drop(foreground);
            return Err(e).context("tcsetattr on the terminal");
        }
        let result = body();
        // Restores exactly what was saved.
        let restored = set_termios(fd, libc::TCSADRAIN, &saved);
        drop(foreground);
        restored.context("restoring the terminal settings")?;
        result
    }

    fn prompt(
        &self,
        hold: &Hold,
        still_pending: &dyn Fn() -> bool,
    ) -> anyhow::Result<Option<Choice>> {
        if self.write_while(describe(hold).as_bytes(), still_pending)? {
            loop {
                if !self.write_while(
                    b"guard: [a]pprove once, approve for the [s]ession, [d]eny, [k]ill the session? ",
                    still_pending,
                )? {
                    break;
                }
                let Some(line) = self.read_line(still_pending)? else {
                    break;
                };
                if let Some(choice) = Choice::parse(&line) {
                    let said = match choice {
                        Choice::ApproveOnce => "approved once",
                        Choice::ApproveSession => "approved for this session",
                        Choice::Deny => "denied",
                        Choice::Kill => "killing the session",
                    };
                    self.write_briefly(format!("guard: {said}\n").as_bytes());
                    return Ok(Some(choice));
                }
                if !self.write_while(b"guard: answer a, s, d or k\n", still_pending)? {
                    break;
                }
            }
        }
        self.write_briefly(b"\nguard: decided elsewhere; resuming\n");
        Ok(None)
    }

    /// Writes all of `bytes` unless `keep_going` turns false first (checked
    /// whenever the terminal cannot take more); false if it gave up.
    fn write_while(&self, bytes: &[u8], keep_going: &dyn Fn() -> bool) -> anyhow::Result<bool> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let full = match (&self.tty).write(rest) {
                Ok(0) => true,
                Ok(n) => {
                    rest = &rest[n..];
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                Err(e) => return Err(e).context("writing to the terminal"),
            };
            if full {
                if !keep_going() {
                    return Ok(false);
                }
                self.poll(libc::POLLOUT);
            }
        }
        Ok(true)
    }

    /// A closing line (the answer taken, or stepping aside): written if the
    /// terminal takes it within a second, dropped otherwise.
    fn write_briefly(&self, bytes: &[u8]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        if let Err(e) = self.write_while(bytes, &|| std::time::Instant::now() < deadline) {
            log::warn!("the terminal prompt could not write: {e:#}");
        }
    }

    /// Waits up to 200 ms for `events` on the terminal; the events that
    /// came, 0 if none did (or poll was interrupted), so callers recheck
    /// whether the hold is still pending at least that often.
    fn poll(&self, events: libc::c_short) -> libc::c_short {
        let mut pfd = libc::pollfd {
            fd: self.tty.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
            return 0;
        }
        pfd.revents
    }

    /// One line from the terminal, or None once `still_pending` turns false.
    fn read_line(&self, still_pending: &dyn Fn() -> bool) -> anyhow::Result<Option<String>> {
        let mut line = Vec::new();
        loop {
            if !still_pending() {
                return Ok(None);
            }
            let revents = self.poll(libc::POLLIN);
            if revents == 0 {
                continue;
            }
            if revents & (libc::POLLHUP | libc::POLLERR) != 0 && revents & libc::POLLIN == 0 {
                anyhow::bail!("the terminal hung up");
            }
            let mut buf = [0u8; 256];
            let n = match (&self.tty).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e).context("reading the answer from the terminal"),
            };
            if n == 0 {
                anyhow::bail!("the terminal closed");
            }
            line.extend_from_slice(&buf[..n]);
            if line.contains(&b'\n') || line.len() > 4096 {
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }
}

/// tcsetattr, again if a signal interrupts its wait for output to drain.
fn set_termios(fd: i32, when: libc::c_int, termios: &libc::termios) -> std::io::Result<()> {
    loop {
        // SAFETY: fd is an open terminal; termios is a valid termios.
        if unsafe { libc::tcsetattr(fd, when, termios) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Makes guard the terminal's foreground process group for the prompt (an
/// agent shell with job control may own it), and gives it back on drop.
struct Foreground {
    fd: i32,
    previous: Option<libc::pid_t>,
    old_ttou: libc::sighandler_t,
}

impl Foreground {
    fn take(fd: i32) -> Self {
        // SAFETY: plain syscalls on an open fd; SIGTTOU is ignored so that
        // tcsetpgrp from a background group does not stop us.
        unsafe {
            let old_ttou = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            let fg = libc::tcgetpgrp(fd);
            let ours = libc::getpgrp();
            let previous = if fg > 0 && fg != ours && libc::tcsetpgrp(fd, ours) == 0 {
                Some(fg)
            } else {
                None
            };
            Self {
                fd,
                previous,
                old_ttou,
            }
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // SAFETY: as in take.
        unsafe {
            if let Some(fg) = self.previous {
                libc::tcsetpgrp(self.fd, fg);
            }
            libc::signal(libc::SIGTTOU, self.old_ttou);
        }
    }
}

/// Longest text shown for the action (a path may be 4096 bytes; an exec's
/// argv can be far longer), its reason and cwd, and each command line of the
/// process chain. An agent controls all of these; unbounded, they could
/// scroll the question off the screen or fill a terminal nobody is reading.
const SHOWN_ACTION: usize = 4200;
const SHOWN_REASON: usize = 600;
const SHOWN_CWD: usize = 1200;
const SHOWN_COMMAND: usize = 200;

/// What the person sees: the action, where, who, and which rule.
pub fn describe(hold: &Hold) -> String {
    let r = &hold.request;
    let process = ancestry::of(r.pid);
    let cwd = match &r.action {
        Action::Exec { cwd, .. } => Some(cwd.clone()),
        _ => process.cwd.clone(),
    };
    let mut text = format!(
        "\r\n\nguard: session {} attempted: {}\n",
        r.session,
        shown(&r.action.to_string(), SHOWN_ACTION)
    );
    text += &format!(
        "  hold {}   rule {}   ({})\n",
        hold.id, r.verdict.rule, r.verdict.decision
    );
    text += &format!("  why: {}\n", shown(&r.verdict.reason, SHOWN_REASON));
    if let Some(cwd) = cwd {
        text += &format!("  cwd: {}\n", shown(&cwd.to_string_lossy(), SHOWN_CWD));
    }
    text += "  process chain:\n";
    for link in process.chain.iter().take(8) {
        let command = if link.cmdline.is_empty() {
            &link.comm
        } else {
            &link.cmdline
        };
        text += &format!("    {:>7}  {}\n", link.pid, shown(command, SHOWN_COMMAND));
    }
    if process.chain.len() > 8 {
        text += &format!("    ({} more ancestors)\n", process.chain.len() - 8);
    }
    text
}

/// `s` on one line, at most `max` characters of it, saying how much was cut
/// (`guard holds --json` has the whole action, the audit log the chain).
fn shown(s: &str, max: usize) -> String {
    let line = one_line(s);
    let total = line.chars().count();
    if total <= max {
        return line;
    }
    let kept: String = line.chars().take(max).collect();
    format!("{kept}… [{} more characters]", total - max)
}

/// Control characters from an agent's argv must not drive our terminal.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Applies what the person chose, locally or through the daemon.
pub trait Decider: Send + Sync {
    fn is_pending(&self, hold: &Hold) -> bool;
    fn decide(&self, hold: &Hold, choice: Choice, approver: &str) -> anyhow::Result<()>;
}

/// Decides on the session's own (embedded) broker.
pub struct LocalDecider {
    pub broker: Arc<HoldBroker>,
    pub cgroup: Cgroup,
}

impl Decider for LocalDecider {
    fn is_pending(&self, hold: &Hold) -> bool {
        self.broker.is_pending(hold.id)
    }

    fn decide(&self, hold: &Hold, choice: Choice, approver: &str) -> anyhow::Result<()> {
        let approver = approver.to_owned();
        let resolution = match choice {
            Choice::ApproveOnce => Resolution::Approved {
                approver,
                scope: GrantScope::Once,
            },
            Choice::ApproveSession => Resolution::Approved {
                approver,
                scope: GrantScope::Session,
            },
            Choice::Deny => Resolution::Denied { approver },
            Choice::Kill => {
                // The holds end as killed even if the kill itself fails: a
                // held action must not wait out its timeout after a person
                // asked for the session's death.
                let killed = self.cgroup.kill();
                self.broker
                    .resolve_session(&hold.request.session, Resolution::Killed { approver });
                return killed;
            }
        };
        self.broker.resolve(hold.id, resolution)?;
        Ok(())
    }
}

/// Runs the prompt for one session's holds, one at a time, on its own thread.
pub struct TerminalApprover {
    session: String,
    queue: Mutex<mpsc::Sender<Hold>>,
}

impl TerminalApprover {
    /// `redraw` is the agent's pid, set once it is spawned (the prompt is
    /// started before, so no early hold is missed); 0 until then.
    pub fn start(
        terminal: Terminal,
        session: String,
        freeze: Arc<SessionFreeze>,
        redraw: Arc<AtomicI32>,
        decider: Arc<dyn Decider>,
        approver: String,
    ) -> anyhow::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel::<Hold>();
        std::thread::Builder::new()
            .name("guard-prompt".into())
            .spawn(move || {
                for hold in rx {
                    if !decider.is_pending(&hold) {
                        continue;
                    }
                    let pending = || decider.is_pending(&hold);
                    let redraw = redraw.load(Ordering::SeqCst);
                    match terminal.ask(&hold, &freeze, redraw, &pending) {
                        Ok(Some(choice)) => {
                            if let Err(e) = decider.decide(&hold, choice, &approver) {
                                log::warn!("applying the terminal answer failed: {e:#}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log::warn!("terminal prompt failed: {e:#}; use `guard approve`")
                        }
                    }
                }
            })
            .context("starting the prompt thread")?;
        Ok(Arc::new(Self {
            session,
            queue: Mutex::new(tx),
        }))
    }
}

impl HoldObserver for TerminalApprover {
    fn opened(&self, hold: &Hold) {
        if hold.request.session == self.session {
            let _ = self
                .queue
                .lock()
                .expect("prompt queue poisoned")
                .send(hold.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(Choice::parse(" a\n"), Some(Choice::ApproveOnce));
        assert_eq!(Choice::parse("S\n"), Some(Choice::ApproveSession));
        assert_eq!(Choice::parse("deny\n"), Some(Choice::Deny));
        assert_eq!(Choice::parse("k"), Some(Choice::Kill));
        assert_eq!(Choice::parse("maybe"), None);
    }

    #[test]
    fn long_text_is_cut_where_a_character_ends_and_says_so() {
        assert_eq!(shown("rm -rf /", 20), "rm -rf /");
        let long = "é".repeat(300);
        let cut = shown(&long, 200);
        assert!(cut.starts_with(&"é".repeat(200)), "{cut}");
        assert!(cut.ends_with("… [100 more characters]"), "{cut}");
        assert_eq!(shown("a\nb", 10), "a?b");
    }

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(one_line("rm \x1b[2J-rf\n/"), "rm ?[2J-rf?/");
    }
}
