//! The socket server: one thread per connection, newline-delimited JSON.
//!
//! Plain threads rather than tokio: the hold broker is blocking by contract
//! (backends block in `ask`), connections are few (a CLI call, a session's
//! asks, an `events --follow`), and `guard session` need not start a runtime.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::{
            fs::PermissionsExt as _,
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::json;

use super::{
    peer::Peer,
    wire::{ApiError, ErrorCode, MAX_LINE, Op, Response, parse_request},
};
use crate::{controller::Controller, holds::Hold};

/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(120);

/// Most connections served at once; more are answered with an error and
/// closed, so a flood cannot exhaust threads.
pub const MAX_CONNECTIONS: usize = 256;

/// A running server; dropping it stops accepting and removes the socket.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` (removing a stale socket nobody answers on) and serves
    /// `controller` on it. `owner` may connect besides root (mode 0600).
    pub fn start(
        path: &Path,
        controller: Arc<Controller>,
        owner: Option<(u32, u32)>,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "creating the socket directory {}: set GUARD_SOCKET or --socket to a \
                     writable place",
                    dir.display()
                )
            })?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "another guard is already serving {}; stop it or use another --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the API socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", path.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let accept = std::thread::Builder::new()
            .name("guard-api".into())
            .spawn(move || accept_loop(listener, controller, stop_flag))?;
        Ok(Self {
            path: path.to_owned(),
            stop,
            accept: Some(accept),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, controller: Arc<Controller>, stop: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        if !poll(listener.as_raw_fd(), libc::POLLIN, 200) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    let _ = send(
                        &stream,
                        &Response::err(ApiError::new(
                            ErrorCode::Internal,
                            format!(
                                "more than {MAX_CONNECTIONS} connections are open; retry later"
                            ),
                        )),
                    );
                    continue;
                }
                let controller = controller.clone();
                let open_count = open.clone();
                let spawned = std::thread::Builder::new()
                    .name("guard-api-conn".into())
                    .spawn(move || {
                        serve_connection(stream, &controller);
                        open_count.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    open.fetch_sub(1, Ordering::SeqCst);
                    log::error!("cannot start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                log::warn!("accept on the API socket failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Whether `fd` has any of `events` within `timeout_ms`.
fn poll(fd: i32, events: i16, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) > 0 }
}

enum LineError {
    TooLong,
    Io,
}

/// Reads one line of at most `max` bytes (without the newline); `None` at EOF.
/// Stops reading as soon as the limit is passed, so a huge line never sits in memory.
fn read_line(reader: &mut BufReader<UnixStream>, max: usize) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(|_| LineError::Io)?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Ok(Some(line))
            };
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                if line.len() > max {
                    return Err(LineError::TooLong);
                }
                return Ok(Some(line));
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                reader.consume(n);
                if line.len() > max {
                    return Err(LineError::TooLong);
                }
            }
        }
    }
}

fn send(mut stream: &UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn serve_connection(stream: UnixStream, controller: &Controller) {
    let Ok(peer) = Peer::of(&stream) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader, MAX_LINE) {
            Ok(None) | Err(LineError::Io) => return,
            Ok(Some(line)) => line,
            Err(LineError::TooLong) => {
                let _ = send(
                    &writer,
                    &Response::err(ApiError::new(
                        ErrorCode::LineTooLong,
                        format!("request line longer than {MAX_LINE} bytes; closing connection"),
                    )),
                );
                return;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = match parse_request(&line) {
            Err(e) => send(&writer, &Response::err(e)),
            Ok(op @ Op::Ask { .. }) => serve_ask(op, &peer, controller, &writer),
            Ok(Op::Events { follow: true }) => {
                serve_follow(&peer, controller, &writer);
                return;
            }
            Ok(op) => {
                let response = match controller.handle(op, &peer) {
                    Ok(value) => Response::ok(value),
                    Err(e) => Response::err(e),
                };
                send(&writer, &response)
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// `ask`: an `opened` line as soon as a hold exists, then the `outcome` line.
fn serve_ask(op: Op, peer: &Peer, controller: &Controller, writer: &UnixStream) -> io::Result<()> {
    let Op::Ask {
        request,
        timeout_ms,
        on_timeout,
        held_ms,
    } = op
    else {
        unreachable!("serve_ask is only called with Op::Ask");
    };
    if let Some(why) = peer.session_refusal() {
        return send(
            writer,
            &Response::err(ApiError::new(ErrorCode::Refused, why)),
        );
    }
    if peer.uid != 0 {
        return send(
            writer,
            &Response::err(ApiError::new(
                ErrorCode::Refused,
                "refused: only root (a `guard session` supervisor) may ask",
            )),
        );
    }
    if controller.session(&request.session).is_none() {
        return send(
            writer,
            &Response::err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "session {:?} is not registered; register it first",
                    request.session
                ),
            )),
        );
    }
    let opened_writer: &UnixStream = writer;
    let opened = |hold: &Hold| {
        let _ = send(opened_writer, &Response::ok(json!({ "opened": hold })));
    };
    let outcome = controller.broker().ask_streaming(
        request,
        Duration::from_millis(timeout_ms),
        on_timeout,
        Duration::from_millis(held_ms),
        &opened,
    );
    send(writer, &Response::ok(json!({ "outcome": outcome })))
}

/// `events` with `follow`: recent events, then each new one, until the peer goes.
fn serve_follow(peer: &Peer, controller: &Controller, writer: &UnixStream) {
    let _ = peer;
    let (recent, rx) = controller.subscribe();
    if send(writer, &Response::ok(json!({ "following": true }))).is_err() {
        return;
    }
    for event in recent {
        if send(writer, &Response::ok(json!({ "event": event }))).is_err() {
            return;
        }
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(event) => {
                if send(writer, &Response::ok(json!({ "event": event }))).is_err() {
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A closed peer shows as readable (EOF) or hung up.
                if poll(writer.as_raw_fd(), libc::POLLIN | libc::POLLRDHUP, 0) {
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
