//! Policy file errors: where (file:line:column) and how to fix it.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem is not at one place (an unreadable file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl PolicyError {
    pub fn new(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// From a YAML/serde error: its location, and its message without the
    /// location suffix serde_norway appends.
    pub fn from_yaml(file: &str, source: &str, e: &serde_norway::Error) -> Self {
        let mut message = e.to_string();
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        let message = explain_serde_message(&message);
        match e.location() {
            Some(loc) => {
                // Values checked by our own parsers are reported at the start of
                // their mapping; point at the quoted bad value itself instead.
                let (line, column) = quoted_value(&message)
                    .and_then(|value| locate_after(source, loc.index(), &value))
                    .unwrap_or((loc.line(), loc.column()));
                Self::new(file, line, column, message)
            }
            None => {
                let (line, column) = if source.trim().is_empty() {
                    (1, 1)
                } else {
                    (0, 0)
                };
                Self::new(file, line, column, message)
            }
        }
    }

    /// An error about a value found after parsing: located at the first place
    /// `needle` occurs in the source (the `n`th occurrence, 0-based).
    pub fn at_text(
        file: &str,
        source: &str,
        needle: &str,
        n: usize,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = locate(source, needle, n).unwrap_or((1, 1));
        Self::new(file, line, column, message)
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

/// 1-based line and column of the `n`th occurrence of `needle`.
pub fn locate(source: &str, needle: &str, n: usize) -> Option<(usize, usize)> {
    let (offset, _) = source.match_indices(needle).nth(n)?;
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// The first `"..."` in a message (our parsers quote the bad value with {:?}).
fn quoted_value(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    let value = &message[start..start + len];
    (!value.is_empty()).then(|| value.to_string())
}

fn locate_after(source: &str, from: usize, needle: &str) -> Option<(usize, usize)> {
    let from = source.get(from..).map_or(0, |_| from);
    let offset = from + source[from..].find(needle)?;
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// Adds the fix to serde's terse messages.
fn explain_serde_message(message: &str) -> String {
    if message.contains("unknown field") {
        format!("{message}: remove or rename the key (docs/policy.md lists every key)")
    } else if message.contains("missing field") {
        format!("{message}: add it (docs/policy.md shows an example of every rule)")
    } else if message.contains("unknown variant") {
        format!("{message}: use one of the listed values")
    } else if message.contains("invalid type") {
        format!("{message}: check the value's shape against docs/policy.md")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_columns_from_one() {
        let text = "a: 1\nfiles:\n  - id: x\n";
        assert_eq!(locate(text, "id: x", 0), Some((3, 5)));
        assert_eq!(locate(text, "nope", 0), None);
    }
}
