//! The API client the CLI (and a session handing its asks to the daemon) uses.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;

use super::wire::{ApiError, ErrorCode, Op, Request, Response, SessionInfo};
use crate::{
    controller::ASK_GRACE,
    decision::Decision,
    holds::{Hold, HoldRequest, HoldUpstream, Outcome, Resolution},
};

/// One connection to a controller.
pub struct Client {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

/// A call failed: either the controller said no, or talking to it failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Api(ApiError),
    #[error("{0:#}")]
    Transport(anyhow::Error),
}

impl Client {
    pub fn connect(path: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to guard at {}", path.display()))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self {
            path: path.to_owned(),
            writer: stream,
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) {
        let _ = self.writer.set_read_timeout(timeout);
    }

    pub fn send(&mut self, op: Op) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(&Request::new(op))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .with_context(|| format!("writing to {}", self.path.display()))
    }

    /// The next response line; `None` when the controller closed the connection.
    pub fn receive(&mut self) -> anyhow::Result<Option<Response>> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("reading from {}", self.path.display()))?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .with_context(|| format!("{} sent a line that is not a response", self.path.display()))
    }

    /// One request, one response.
    pub fn call(&mut self, op: Op) -> Result<Value, CallError> {
        self.send(op).map_err(CallError::Transport)?;
        match self.receive().map_err(CallError::Transport)? {
            Some(response) => response.into_result().map_err(CallError::Api),
            None => Err(CallError::Transport(anyhow::anyhow!(
                "{} closed the connection without answering",
                self.path.display()
            ))),
        }
    }
}

/// Connects and calls in one go, for CLI commands.
pub fn call(path: &Path, op: Op) -> Result<Value, CallError> {
    Client::connect(path)
        .map_err(CallError::Transport)?
        .call(op)
}

/// Hands a session's asks to a running daemon, which owns the decision.
///
/// If the daemon goes away during an ask (restart, crash), the held process
/// stays held here: the ask reconnects, registers the session again and asks
/// the new daemon, until the ask's own timeout runs out.
pub struct DaemonUpstream {
    socket: PathBuf,
    /// Sent again to a daemon that does not know the session (after a restart).
    session: std::sync::Mutex<Option<SessionInfo>>,
}

/// How often a session retries a daemon that went away.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

enum AskFailure {
    /// The daemon answered with an error: retrying the same ask cannot help,
    /// unless the error is that it does not know the session.
    Api(ApiError),
    /// Talking to the daemon failed: it may come back.
    Transport(anyhow::Error),
}

impl DaemonUpstream {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            session: std::sync::Mutex::new(None),
        }
    }

    /// Registers the session with the daemon and remembers it for re-registration.
    pub fn register(&self, info: SessionInfo) -> Result<(), CallError> {
        call(
            &self.socket,
            Op::Register {
                session: info.clone(),
            },
        )?;
        *self.session.lock().expect("upstream poisoned") = Some(info);
        Ok(())
    }

    fn reregister(&self) {
        let info = self.session.lock().expect("upstream poisoned").clone();
        if let Some(info) = info {
            // "already registered" is fine: another ask got there first.
            let _ = call(&self.socket, Op::Register { session: info });
        }
    }

    fn try_ask(
        &self,
        request: &HoldRequest,
        timeout: Duration,
        on_timeout: Decision,
        held: Duration,
        opened: &dyn Fn(&Hold),
    ) -> Result<Outcome, AskFailure> {
        let transport = AskFailure::Transport;
        let mut client = Client::connect(&self.socket).map_err(transport)?;
        client.set_timeout(Some(timeout + ASK_GRACE));
        client
            .send(Op::Ask {
                request: request.clone(),
                timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
                on_timeout,
                held_ms: held.as_millis().try_into().unwrap_or(u64::MAX),
            })
            .map_err(transport)?;
        loop {
            let Some(response) = client.receive().map_err(transport)? else {
                return Err(transport(anyhow::anyhow!(
                    "the daemon closed the connection during an ask"
                )));
            };
            let mut value = response.into_result().map_err(AskFailure::Api)?;
            if let Some(hold) = value.get_mut("opened") {
                let hold: Hold =
                    serde_json::from_value(hold.take()).map_err(|e| transport(e.into()))?;
                opened(&hold);
                continue;
            }
            if let Some(outcome) = value.get_mut("outcome") {
                return serde_json::from_value(outcome.take()).map_err(|e| transport(e.into()));
            }
            return Err(transport(anyhow::anyhow!(
                "unexpected answer to ask: {value}"
            )));
        }
    }
}

impl HoldUpstream for DaemonUpstream {
    fn ask(
        &self,
        request: &HoldRequest,
        timeout: Duration,
        on_timeout: Decision,
        opened: &dyn Fn(&Hold),
    ) -> Outcome {
        let started = std::time::Instant::now();
        let timed_out = |why: String| {
            // Nobody could answer in time, so the timeout decision applies.
            log::error!("guard: {why}; applying {on_timeout}");
            Outcome {
                hold: Hold {
                    id: 0,
                    request: request.clone(),
                    since: std::time::SystemTime::now(),
                },
                resolution: Resolution::TimedOut {
                    decision: on_timeout,
                },
                waited: started.elapsed(),
                by_grant: false,
            }
        };
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return timed_out("the daemon did not decide before the ask timeout".into());
            }
            match self.try_ask(request, left, on_timeout, started.elapsed(), opened) {
                Ok(mut outcome) => {
                    outcome.waited = started.elapsed();
                    return outcome;
                }
                Err(AskFailure::Api(e)) if e.code == ErrorCode::NotFound => {
                    // Not registered yet (an ask on the very first exec) or
                    // any more (a restarted daemon): register, then ask again.
                    std::thread::sleep(Duration::from_millis(20).min(left));
                    self.reregister();
                }
                Err(AskFailure::Api(e)) => {
                    return timed_out(format!("the daemon refused the ask: {e}"));
                }
                Err(AskFailure::Transport(e)) => {
                    log::warn!("guard: asking the daemon failed ({e:#}); retrying");
                    std::thread::sleep(RECONNECT_EVERY.min(left));
                    if Client::connect(&self.socket).is_ok() {
                        self.reregister();
                    }
                }
            }
        }
    }

    fn report(&self, request: &HoldRequest) {
        if let Err(e) = call(
            &self.socket,
            Op::Report {
                request: request.clone(),
            },
        ) {
            log::error!("guard: reporting a decision to the daemon failed: {e}");
        }
    }
}

/// The terminal prompt's answers, sent to the daemon that owns the holds.
pub struct DaemonDecider {
    pub socket: PathBuf,
}

impl crate::terminal::Decider for DaemonDecider {
    fn is_pending(&self, hold: &Hold) -> bool {
        match call(&self.socket, Op::Holds) {
            Ok(value) => serde_json::from_value::<Vec<Hold>>(value)
                .map(|holds| holds.iter().any(|h| h.id == hold.id))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    fn decide(
        &self,
        hold: &Hold,
        choice: crate::terminal::Choice,
        _approver: &str,
    ) -> anyhow::Result<()> {
        use crate::{holds::GrantScope, terminal::Choice};
        // The daemon names the approver from our credentials.
        let op = match choice {
            Choice::ApproveOnce => Op::Approve {
                id: hold.id,
                scope: GrantScope::Once,
            },
            Choice::ApproveSession => Op::Approve {
                id: hold.id,
                scope: GrantScope::Session,
            },
            Choice::Deny => Op::Deny { id: hold.id },
            Choice::Kill => Op::Kill {
                session: hold.request.session.clone(),
            },
        };
        call(&self.socket, op)?;
        Ok(())
    }
}
