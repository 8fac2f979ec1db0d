//! What an agent attempted, independent of which backend saw it (LSM hook,
//! seccomp notification, exec tracepoint). Policy decides on these.

use std::{ffi::OsString, fmt, net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// One attempted action, with everything the policy needs to decide it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    /// A program is about to run its first instruction.
    Exec {
        /// The resolved program path the kernel loaded.
        filename: PathBuf,
        /// argv as the new program sees it (bytes, not necessarily UTF-8).
        #[serde(serialize_with = "lossy_vec", deserialize_with = "os_vec")]
        argv: Vec<OsString>,
        cwd: PathBuf,
    },
    Unlink {
        path: PathBuf,
    },
    Rmdir {
        path: PathBuf,
    },
    /// rename(2) family; `to` is overwritten if it exists.
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    /// truncate(2) or open with O_TRUNC.
    Truncate {
        path: PathBuf,
    },
    /// Open for writing without truncation (protected files only).
    OpenWrite {
        path: PathBuf,
    },
    Connect {
        endpoint: Endpoint,
    },
}

/// A connect(2) destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Endpoint {
    Inet { addr: SocketAddr },
    Unix { path: PathBuf },
}

/// Which kind of action, for per-kind defaults and grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Exec,
    Unlink,
    Rmdir,
    Rename,
    Truncate,
    OpenWrite,
    Connect,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Exec { .. } => ActionKind::Exec,
            Action::Unlink { .. } => ActionKind::Unlink,
            Action::Rmdir { .. } => ActionKind::Rmdir,
            Action::Rename { .. } => ActionKind::Rename,
            Action::Truncate { .. } => ActionKind::Truncate,
            Action::OpenWrite { .. } => ActionKind::OpenWrite,
            Action::Connect { .. } => ActionKind::Connect,
        }
    }
}

impl fmt::Display for Action {
    /// One line for people: `rm -rf /x`, `unlink /x`, `connect 10.0.0.5:5432`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Exec { argv, filename, .. } => {
                if argv.is_empty() {
                    return write!(f, "exec {}", filename.display());
                }
                let words: Vec<_> = argv
                    .iter()
                    .map(|a| shell_quote(&a.to_string_lossy()).into_owned())
                    .collect();
                write!(f, "{}", words.join(" "))
            }
            Action::Unlink { path } => write!(f, "unlink {}", path.display()),
            Action::Rmdir { path } => write!(f, "rmdir {}", path.display()),
            Action::Rename { from, to } => {
                write!(f, "rename {} -> {}", from.display(), to.display())
            }
            Action::Truncate { path } => write!(f, "truncate {}", path.display()),
            Action::OpenWrite { path } => write!(f, "open-for-write {}", path.display()),
            Action::Connect {
                endpoint: Endpoint::Inet { addr },
            } => write!(f, "connect {addr}"),
            Action::Connect {
                endpoint: Endpoint::Unix { path },
            } => write!(f, "connect unix:{}", path.display()),
        }
    }
}

/// Quotes an argv word the way a shell would need it, so `sh -c 'a; b'` reads
/// back unambiguously to the person approving it.
fn shell_quote(word: &str) -> std::borrow::Cow<'_, str> {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^~".contains(&b));
    if plain {
        word.into()
    } else {
        format!("'{}'", word.replace('\'', r"'\''")).into()
    }
}

fn lossy_vec<S: serde::Serializer>(v: &[OsString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|a| a.to_string_lossy()))
}

/// Wire form of argv (the API and audit log carry it as strings).
fn os_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OsString>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .into_iter()
        .map(OsString::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_display_quotes_words_a_shell_would_split() {
        let action = Action::Exec {
            filename: PathBuf::from("/bin/sh"),
            argv: ["sh", "-c", "rm -v x; echo $?", "it's", ""]
                .map(OsString::from)
                .to_vec(),
            cwd: PathBuf::from("/"),
        };
        assert_eq!(action.to_string(), r"sh -c 'rm -v x; echo $?' 'it'\''s' ''");
    }
}
