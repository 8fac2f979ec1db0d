//! Decoding ring buffer records into events. The one place that reads the
//! kernel's bytes.

use guard_common::{EventHeader, EventKind, ExecEvent, FileEvent, event::verdict};
use serde::Serialize;

/// A decoded kernel event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelEvent {
    Exec {
        pid: u32,
        cgroup_id: u64,
        /// The program's path as the kernel resolved it; lossy only for display.
        filename: String,
        /// The path did not fit in the kernel buffer: never treat it as allowed.
        truncated: bool,
    },
    Unlink {
        pid: u32,
        cgroup_id: u64,
        denied: bool,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// Decodes one ring buffer record.
pub fn decode(record: &[u8]) -> Result<KernelEvent, DecodeError> {
    let header: EventHeader = read(record)?;
    match EventKind::from_u32(header.kind) {
        Some(EventKind::Exec) => {
            let event: ExecEvent = read(record)?;
            let len = (event.filename_len as usize).min(event.filename.len());
            Ok(KernelEvent::Exec {
                pid: header.pid,
                cgroup_id: header.cgroup_id,
                filename: String::from_utf8_lossy(&event.filename[..len]).into_owned(),
                truncated: event.truncated != 0,
            })
        }
        Some(EventKind::Unlink) => {
            let event: FileEvent = read(record)?;
            Ok(KernelEvent::Unlink {
                pid: event.header.pid,
                cgroup_id: event.header.cgroup_id,
                denied: event.header.verdict == verdict::DENIED,
            })
        }
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

/// Copies a `#[repr(C)]` plain-data struct out of a record, checking its length.
fn read<T: Copy>(record: &[u8]) -> Result<T, DecodeError> {
    if record.len() < size_of::<T>() {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: length checked above; T is a repr(C) plain-data type from
    // guard-common for which every bit pattern is valid.
    Ok(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain-data struct's bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            pid: 42,
            tid: 42,
            verdict: 0,
            cgroup_id: 7,
            ktime_ns: 1,
        }
    }

    #[test]
    fn decodes_exec_with_non_utf8_path() {
        let mut event = ExecEvent {
            header: header(EventKind::Exec),
            filename_len: 6,
            truncated: 0,
            filename: [0; guard_common::PATH_MAX],
        };
        event.filename[..6].copy_from_slice(b"/a\xffb c");
        let decoded = decode(&bytes_of(&event)).unwrap();
        assert_eq!(
            decoded,
            KernelEvent::Exec {
                pid: 42,
                cgroup_id: 7,
                filename: "/a\u{fffd}b c".into(),
                truncated: false
            }
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0; 4]), Err(DecodeError::Short(4)));
        let mut h = header(EventKind::Exec);
        h.kind = 99;
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        // A header that claims exec but is cut short.
        assert_eq!(
            decode(&bytes_of(&header(EventKind::Exec))),
            Err(DecodeError::Short(size_of::<EventHeader>()))
        );
    }

    #[test]
    fn length_beyond_buffer_is_clamped() {
        let event = ExecEvent {
            header: header(EventKind::Exec),
            filename_len: u32::MAX,
            truncated: 1,
            filename: [b'a'; guard_common::PATH_MAX],
        };
        match decode(&bytes_of(&event)).unwrap() {
            KernelEvent::Exec {
                filename,
                truncated,
                ..
            } => {
                assert_eq!(filename.len(), guard_common::PATH_MAX);
                assert!(truncated);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
