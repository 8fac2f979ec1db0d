//! A cpio "newc" archive writer for the initramfs.
//!
//! Written here rather than staging a directory for `cpio -o`: the archive needs a
//! /dev/console device node (the kernel opens it before /init runs), which a
//! staging directory could only hold after a mknod, and the format is 30 lines.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    /// A regular file whose bytes come from `source` on the host.
    File {
        source: PathBuf,
        mode: u32,
    },
    /// A regular file with the given bytes.
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
}

/// The archive's members by absolute path; parents are added as directories.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Archive {
    /// Adds `entry` at the absolute path `path`, creating its parent directories.
    /// Re-adding a path with the same entry is a no-op; a different one is an error.
    pub fn add(&mut self, path: impl AsRef<Path>, entry: Entry) -> anyhow::Result<()> {
        let path = path.as_ref();
        if !path.is_absolute() || path == Path::new("/") {
            bail!(
                "initramfs path {} must be absolute and not /",
                path.display()
            );
        }
        for parent in path.ancestors().skip(1) {
            if parent == Path::new("/") {
                break;
            }
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(parent.to_path_buf(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(other) => bail!(
                    "initramfs: {} is {other:?}, cannot hold {}",
                    parent.display(),
                    path.display()
                ),
            }
        }
        match self.entries.get(path) {
            Some(existing) if *existing == entry => Ok(()),
            Some(existing) => bail!(
                "initramfs: {} added twice ({existing:?} and {entry:?})",
                path.display()
            ),
            None => {
                self.entries.insert(path.to_path_buf(), entry);
                Ok(())
            }
        }
    }

    /// Writes the archive; returns the bytes written. Sorted order puts every
    /// directory before what it holds, as the kernel's unpacker needs.
    pub fn write(&self, out: &mut impl Write) -> anyhow::Result<u64> {
        let mut writer = Counting {
            inner: out,
            count: 0,
        };
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let name = path
                .strip_prefix("/")
                .expect("paths are absolute")
                .to_str()
                .with_context(|| format!("non-UTF-8 initramfs path {}", path.display()))?;
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir => header(&mut writer, ino, 0o040755, 0, (0, 0), name)?,
                Entry::Symlink { target } => {
                    header(&mut writer, ino, 0o120777, target.len(), (0, 0), name)?;
                    data(&mut writer, &mut target.as_bytes())?;
                }
                Entry::CharDevice { major, minor } => {
                    header(&mut writer, ino, 0o020600, 0, (*major, *minor), name)?
                }
                Entry::Bytes { data: bytes, mode } => {
                    header(&mut writer, ino, 0o100000 | mode, bytes.len(), (0, 0), name)?;
                    data(&mut writer, &mut bytes.as_slice())?;
                }
                Entry::File { source, mode } => {
                    let file = fs::File::open(source)
                        .with_context(|| format!("opening {}", source.display()))?;
                    let len = file.metadata()?.len() as usize;
                    header(&mut writer, ino, 0o100000 | mode, len, (0, 0), name)?;
                    data(&mut writer, &mut io::Read::take(file, len as u64))?;
                }
            }
        }
        header(&mut writer, 0, 0, 0, (0, 0), "TRAILER!!!")?;
        Ok(writer.count)
    }
}

/// A newc header: magic, 13 eight-digit hex fields, the NUL-terminated name,
/// padded so the data starts on a 4-byte boundary.
fn header(
    out: &mut Counting<impl Write>,
    ino: u32,
    mode: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> anyhow::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: fixed, so identical inputs give identical archives
        u32::try_from(size).context("initramfs member larger than 4 GiB")?,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    let mut text = String::from("070701");
    for field in fields {
        text.push_str(&format!("{field:08X}"));
    }
    text.push_str(name);
    text.push('\0');
    out.write_all(text.as_bytes())?;
    pad(out)
}

fn data(out: &mut Counting<impl Write>, source: &mut impl io::Read) -> anyhow::Result<()> {
    io::copy(source, out)?;
    pad(out)
}

fn pad(out: &mut Counting<impl Write>) -> anyhow::Result<()> {
    let rest = (4 - out.count % 4) % 4;
    out.write_all(&[0; 3][..rest as usize])?;
    Ok(())
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_members_are_aligned() {
        let mut archive = Archive::default();
        archive
            .add(
                "/usr/bin/x",
                Entry::Bytes {
                    data: b"hello".to_vec(),
                    mode: 0o755,
                },
            )
            .unwrap();
        archive
            .add("/dev/console", Entry::CharDevice { major: 5, minor: 1 })
            .unwrap();
        let mut out = Vec::new();
        let len = archive.write(&mut out).unwrap();
        assert_eq!(len as usize, out.len());
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        let order: Vec<usize> = [
            "dev\0",
            "dev/console\0",
            "usr\0",
            "usr/bin\0",
            "usr/bin/x\0",
        ]
        .iter()
        .map(|n| text.find(n).unwrap_or_else(|| panic!("{n:?} missing")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "order {order:?}");
        assert!(text.contains("hello"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!\0"));
        // The console node: mode 020600, rdev 5:1.
        let console = text.find("dev/console").unwrap() - 110;
        assert_eq!(&text[console + 14..console + 22], "00002180");
        assert_eq!(&text[console + 78..console + 94], "0000000500000001");
    }

    #[test]
    fn conflicting_members_are_refused() {
        let mut archive = Archive::default();
        archive
            .add("/a", Entry::Symlink { target: "b".into() })
            .unwrap();
        archive
            .add("/a", Entry::Symlink { target: "b".into() })
            .unwrap();
        assert!(archive.add("/a", Entry::Dir).is_err());
        assert!(archive.add("/a/c", Entry::Dir).is_err());
        assert!(archive.add("relative", Entry::Dir).is_err());
    }

    #[test]
    fn the_cpio_tool_reads_it_back() {
        let mut archive = Archive::default();
        archive
            .add(
                "/init",
                Entry::Bytes {
                    data: b"#!/bin/sh\n".to_vec(),
                    mode: 0o755,
                },
            )
            .unwrap();
        archive.add("/etc/x y", Entry::Dir).unwrap();
        let mut out = Vec::new();
        archive.write(&mut out).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cpio is installed by scripts/setup.sh");
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let listing = child.wait_with_output().unwrap();
        assert!(listing.status.success());
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout),
            "etc\netc/x y\ninit\n"
        );
    }
}
