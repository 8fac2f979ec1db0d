//! cgroup v2: finding the mount, making session cgroups, moving, freezing and
//! killing the processes inside them.

use std::{
    fs,
    io::{self, BufRead as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Parent directory of every session cgroup, below the cgroup2 mount.
pub const SLICE: &str = "guard.slice";

/// Where the unified (v2) hierarchy is mounted, read from /proc/self/mountinfo.
/// /sys/fs/cgroup on most distros, /sys/fs/cgroup/unified on hybrid hosts.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let file = fs::File::open("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        if let Some(mount) = parse_mountinfo_cgroup2(&line) {
            return Ok(mount);
        }
    }
    bail!(
        "no cgroup2 file system is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup` \
         (guard needs cgroup v2 to scope sessions)"
    )
}

/// The mount point of a mountinfo line whose file system type is cgroup2.
fn parse_mountinfo_cgroup2(line: &str) -> Option<PathBuf> {
    // Fields: id parent major:minor root mountpoint options [optional...] - fstype source super
    let (before, after) = line.split_once(" - ")?;
    if after.split(' ').next()? != "cgroup2" {
        return None;
    }
    let mount = before.split(' ').nth(4)?;
    Some(PathBuf::from(unescape_mountinfo(mount)))
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup v2 directory guard owns.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `<mount>/guard.slice/<name>` (and the slice), failing if it exists.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            bail!("invalid cgroup name {name:?}: use letters, digits, '-' and '_'");
        }
        let slice = cgroup2_mount()?.join(SLICE);
        match fs::create_dir(&slice) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", slice.display())),
        }
        let path = slice.join(name);
        fs::create_dir(&path)
            .with_context(|| format!("creating session cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id the kernel programs see (`bpf_get_current_cgroup_id`): the
    /// directory's inode number on cgroup2.
    pub fn id(&self) -> anyhow::Result<u64> {
        Ok(fs::metadata(&self.path)
            .with_context(|| format!("stat {}", self.path.display()))?
            .ino())
    }

    /// Depth below the cgroup2 root (guard.slice/session-x is 2).
    pub fn depth(&self) -> anyhow::Result<i32> {
        let rel = self.path.strip_prefix(cgroup2_mount()?)?;
        Ok(rel.components().count() as i32)
    }

    /// Moves a process (all its threads) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> anyhow::Result<()> {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving pid {pid} into {}", self.path.display()))
    }

    /// Pids currently in this cgroup (not its children).
    pub fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let text = fs::read_to_string(self.path.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Whether any process is left in the cgroup or below it (`cgroup.events`).
    pub fn populated(&self) -> anyhow::Result<bool> {
        let events = fs::read_to_string(self.path.join("cgroup.events"))
            .with_context(|| format!("reading cgroup.events in {}", self.path.display()))?;
        Ok(events.lines().any(|l| l.trim() == "populated 1"))
    }

    /// Freezes (true) or thaws (false) every process in the cgroup at once.
    pub fn set_frozen(&self, frozen: bool) -> anyhow::Result<()> {
        fs::write(
            self.path.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
        .with_context(|| format!("writing cgroup.freeze in {}", self.path.display()))
    }

    /// SIGKILLs every process in the cgroup and its descendants.
    pub fn kill(&self) -> anyhow::Result<()> {
        fs::write(self.path.join("cgroup.kill"), "1")
            .with_context(|| format!("writing cgroup.kill in {}", self.path.display()))
    }

    /// Removes the directory and the cgroups below it (an exec stop's
    /// guard-hold cell left by a hold that ended as the session did), deepest
    /// first; the kernel refuses while processes remain.
    pub fn remove(&self) -> anyhow::Result<()> {
        if let Ok(entries) = fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    Cgroup::open(entry.path()).remove()?;
                }
            }
        }
        fs::remove_dir(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_mountinfo() {
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        let v2 = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(parse_mountinfo_cgroup2(v1), None);
        assert_eq!(
            parse_mountinfo_cgroup2(v2),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn optional_fields_and_escapes() {
        let line = r"29 23 0:26 / /mnt/my\040cg rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            parse_mountinfo_cgroup2(line),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }
}
