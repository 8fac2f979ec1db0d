//! Where guard pins its maps and program links on bpffs, so enforcement and
//! held tasks survive a daemon restart. GUARD_PIN_DIR overrides the default,
//! so parallel tests and daemons do not share state by accident.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Default pin directory of the daemon.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/guard";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A directory on bpffs holding guard's pinned maps (by name) and links
/// (under `links/`).
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    /// Removed (which detaches the pinned links) when dropped.
    ephemeral: bool,
}

impl PinDir {
    /// GUARD_PIN_DIR, or /sys/fs/bpf/guard.
    pub fn configured_path() -> PathBuf {
        std::env::var_os("GUARD_PIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR))
    }

    /// A pin directory that outlives this process (the daemon's).
    pub fn persistent(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let path = path.into();
        prepare(&path)?;
        Ok(Self {
            path,
            ephemeral: false,
        })
    }

    /// A private pin directory removed when this value is dropped: for an
    /// embedded controller or a test, whose enforcement ends with it.
    pub fn ephemeral() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/guard-{}-{nanos:x}",
            std::process::id()
        ));
        prepare(&path)?;
        Ok(Self {
            path,
            ephemeral: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Where a map is pinned (aya pins by map name).
    pub fn map_path(&self, map: &str) -> PathBuf {
        self.path.join(map)
    }

    /// Where a program's link is pinned.
    pub fn link_path(&self, program: &str) -> PathBuf {
        self.path.join("links").join(program)
    }

    /// Unpins everything: detaches the programs and frees the maps once no
    /// process holds them. Held tasks are not continued.
    pub fn remove_all(&self) -> anyhow::Result<()> {
        if self.path.exists() {
            fs::remove_dir_all(&self.path)
                .with_context(|| format!("removing pins in {}", self.path.display()))?;
        }
        Ok(())
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.ephemeral {
            let _ = self.remove_all();
        }
    }
}

fn prepare(path: &Path) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    ensure_bpffs(parent)?;
    fs::create_dir_all(path.join("links"))
        .with_context(|| format!("creating pin directory {}", path.display()))?;
    if !is_bpffs(path)? {
        bail!(
            "{} is not on a bpf file system; set GUARD_PIN_DIR to a directory under /sys/fs/bpf",
            path.display()
        );
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> anyhow::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated path and a zeroed statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(false);
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs on /sys/fs/bpf when nothing is mounted there (minimal VMs,
/// containers).
fn ensure_bpffs(dir: &Path) -> anyhow::Result<()> {
    if is_bpffs(dir)? {
        return Ok(());
    }
    let target = Path::new("/sys/fs/bpf");
    if !dir.starts_with(target) || is_bpffs(target)? {
        return Ok(());
    }
    log::info!("mounting bpffs on {}", target.display());
    let _ = fs::create_dir_all(target);
    let fstype = c"bpf";
    let tgt = c"/sys/fs/bpf";
    // SAFETY: NUL-terminated constant strings, no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "bpffs is not mounted on /sys/fs/bpf and mounting it failed ({}); run `mount -t bpf bpf /sys/fs/bpf`",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_path_honours_env() {
        // Read-only check of the default; the env override is exercised by
        // the integration tests, which set GUARD_PIN_DIR per test.
        if std::env::var_os("GUARD_PIN_DIR").is_none() {
            assert_eq!(PinDir::configured_path(), PathBuf::from(DEFAULT_PIN_DIR));
        }
        let p = PinDir {
            path: "/sys/fs/bpf/x".into(),
            ephemeral: false,
        };
        assert_eq!(
            p.link_path("file_open"),
            PathBuf::from("/sys/fs/bpf/x/links/file_open")
        );
        assert_eq!(p.map_path("GRANTS"), PathBuf::from("/sys/fs/bpf/x/GRANTS"));
    }
}
