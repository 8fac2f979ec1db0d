//! The socket protocol: one JSON object per line each way, versioned.
//!
//! Request:  `{"v":1,"op":"approve","id":3,"scope":"session"}`
//! Response: `{"v":1,"ok":true,"result":...}` or
//!           `{"v":1,"ok":false,"error":{"code":"unknown_op","message":"..."}}`
//! `ask` and `events` with `follow` answer with several lines (see docs/cli.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    decision::Decision,
    holds::{GrantScope, HoldId, HoldRequest},
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// Longest request line accepted; longer lines are answered with
/// `line_too_long` and the connection is closed. An `ask` carries a whole
/// argv (up to ARG_MAX, 2 MiB, which JSON escaping can grow several times),
/// and the sockets are root-only, so the bound is generous.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// One operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Ping,
    /// Pending holds.
    Holds,
    Approve {
        id: HoldId,
        #[serde(default = "once")]
        scope: GrantScope,
    },
    Deny {
        id: HoldId,
    },
    /// SIGKILL every process of a session and resolve its holds as killed.
    Kill {
        session: String,
    },
    Sessions,
    /// Standing grants.
    Grants,
    /// Recent events; with `follow`, keep streaming new ones.
    Events {
        #[serde(default)]
        follow: bool,
    },
    /// A `guard session` hands its session to the daemon.
    Register {
        session: SessionInfo,
    },
    Unregister {
        session: String,
    },
    /// A session's backend asks the daemon to decide a hold (streams).
    Ask {
        request: HoldRequest,
        timeout_ms: u64,
        on_timeout: Decision,
        /// How long the action has been held already: asked again after a
        /// daemon restart, the hold keeps its age (`guard holds`, audit wait_ms).
        /// Left out when zero, so a first ask reads the same to an older daemon.
        #[serde(default, skip_serializing_if = "is_zero")]
        held_ms: u64,
    },
    /// A session's backend reports a decision it applied without a hold.
    Report {
        request: HoldRequest,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn once() -> GrantScope {
    GrantScope::Once
}

/// The op names, for the `unknown_op` message.
pub const OPS: &[&str] = &[
    "ping",
    "holds",
    "approve",
    "deny",
    "kill",
    "sessions",
    "grants",
    "events",
    "register",
    "unregister",
    "ask",
    "report",
];

impl Op {
    /// Ops that change state and so are refused to session processes.
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Op::Ping | Op::Holds | Op::Sessions | Op::Grants | Op::Events { .. }
        )
    }

    /// Ops only a `guard session` process (root, outside every session) sends.
    pub fn from_session_supervisor(&self) -> bool {
        matches!(
            self,
            Op::Register { .. } | Op::Unregister { .. } | Op::Ask { .. } | Op::Report { .. }
        )
    }
}

/// A request line.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    pub fn new(op: Op) -> Self {
        Self { v: VERSION, op }
    }
}

/// A session as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub name: String,
    /// Absolute path of the session cgroup.
    pub cgroup: String,
    pub cgroup_id: u64,
    /// The `guard session` process (outside the cgroup).
    pub supervisor_pid: u32,
    /// The command's first process (inside the cgroup); 0 before it starts.
    pub agent_pid: u32,
    /// Who the session runs as; this uid (and root) may approve its holds.
    pub uid: u32,
    pub command: Vec<String>,
    pub started: String,
    /// The per-session socket of an embedded controller.
    pub socket: Option<String>,
}

/// Per-session tallies, for `guard sessions` and the end-of-session summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Decisions seen: holds, grants, and reported allow/log/deny/kill.
    pub seen: u64,
    pub held: u64,
    pub approved: u64,
    pub denied: u64,
    pub killed: u64,
    pub timed_out: u64,
    /// Let through by a standing grant without asking.
    pub by_grant: u64,
}

/// Machine-readable error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    LineTooLong,
    UnsupportedVersion,
    UnknownOp,
    BadRequest,
    /// The peer may not do this (inside a session, or the wrong user).
    Refused,
    NotFound,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    pub fn ok(result: Value) -> Self {
        Self {
            v: VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(error: ApiError) -> Self {
        Self {
            v: VERSION,
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    pub fn into_result(self) -> Result<Value, ApiError> {
        match (self.ok, self.error) {
            (true, _) => Ok(self.result.unwrap_or(Value::Null)),
            (false, Some(e)) => Err(e),
            (false, None) => Err(ApiError::new(
                ErrorCode::Internal,
                "the server reported failure without an error",
            )),
        }
    }
}

/// Parses one request line, with an error a person can act on for every way
/// it can be wrong.
pub fn parse_request(line: &[u8]) -> Result<Op, ApiError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            ErrorCode::BadJson,
            format!("request is not valid JSON ({e}); send one JSON object per line"),
        )
    })?;
    let Value::Object(map) = &value else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "request must be a JSON object such as {\"v\":1,\"op\":\"holds\"}",
        ));
    };
    match map.get("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!("unsupported protocol version {other}; this guard speaks {VERSION}"),
            ));
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!("request has no \"v\" field; add \"v\":{VERSION}"),
            ));
        }
    }
    let op = match map.get("op") {
        Some(Value::String(op)) => op.clone(),
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "request has no \"op\" string; use one of: {}",
                    OPS.join(", ")
                ),
            ));
        }
    };
    if !OPS.contains(&op.as_str()) {
        return Err(ApiError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {op:?}; use one of: {}", OPS.join(", ")),
        ));
    }
    let mut fields = map.clone();
    fields.remove("v");
    serde_json::from_value(Value::Object(fields)).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("bad arguments for op {op:?}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> ErrorCode {
        parse_request(line.as_bytes()).unwrap_err().code
    }

    #[test]
    fn good_requests_parse() {
        assert!(matches!(
            parse_request(br#"{"v":1,"op":"holds"}"#),
            Ok(Op::Holds)
        ));
        assert!(matches!(
            parse_request(br#"{"v":1,"op":"approve","id":3}"#),
            Ok(Op::Approve {
                id: 3,
                scope: GrantScope::Once
            })
        ));
        assert!(matches!(
            parse_request(br#"{"v":1,"op":"approve","id":3,"scope":"session"}"#),
            Ok(Op::Approve {
                scope: GrantScope::Session,
                ..
            })
        ));
        let round = serde_json::to_vec(&Request::new(Op::Deny { id: 9 })).unwrap();
        assert!(matches!(parse_request(&round), Ok(Op::Deny { id: 9 })));
    }

    #[test]
    fn every_malformation_has_its_code() {
        assert_eq!(code("{not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"holds"}"#), ErrorCode::UnsupportedVersion);
        assert_eq!(
            code(r#"{"v":2,"op":"holds"}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(code(r#"{"v":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"v":1,"op":"explode"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"v":1,"op":"approve"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"v":1,"op":"approve","id":"x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"v":1,"op":"deny","id":1,"extra":true}"#),
            ErrorCode::BadRequest
        );
        let msg = parse_request(br#"{"v":1,"op":"explode"}"#)
            .unwrap_err()
            .message;
        assert!(msg.contains("approve"), "{msg}");
    }
}
