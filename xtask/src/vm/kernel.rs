//! Debian's own kernels for the VM tier: find the newest cloud kernel of a
//! series with apt, download its package once, and keep only its vmlinuz.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// A kernel series the VM tier boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// Debian 12's own kernel (bookworm).
    #[value(name = "6.1")]
    V6_1,
    /// The 6.12 kernel Debian 12 ships through bookworm-security.
    #[value(name = "6.12")]
    V6_12,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    pub fn label(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// The Debian meta-package whose dependency names the newest kernel.
    fn meta_package(self) -> &'static str {
        match self {
            Series::V6_1 => "linux-image-cloud-amd64",
            Series::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }

    /// Whether a kernel release string (`uname -r`) belongs to this series.
    fn matches_release(self, release: &str) -> bool {
        release.starts_with(&format!("{}.", self.label())) && release.ends_with("-cloud-amd64")
    }
}

/// A kernel image ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub series: Series,
    /// `uname -r` of the kernel, e.g. 6.12.117+deb12-cloud-amd64.
    pub release: String,
    pub vmlinuz: PathBuf,
}

/// Where kernels are kept between runs: $GUARD_VM_CACHE, else
/// $XDG_CACHE_HOME/guard-vm, else ~/.cache/guard-vm. Shared by every checkout.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GUARD_VM_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("guard-vm")
}

/// The newest kernel of `series`: from the cache when apt names one already
/// there, downloaded otherwise. When apt or the download fails (offline), the
/// newest cached kernel of the series, with a note saying so.
pub fn fetch(series: Series, cache: &Path) -> anyhow::Result<Kernel> {
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let result = newest_release(series).and_then(|release| {
        let vmlinuz = cache.join(format!("vmlinuz-{release}"));
        if vmlinuz.is_file() {
            println!(
                "xtask: vm: kernel {release} cached at {}",
                vmlinuz.display()
            );
        } else {
            download(&release, cache, &vmlinuz)?;
        }
        Ok(Kernel {
            series,
            release,
            vmlinuz,
        })
    });
    match result {
        Ok(kernel) => Ok(kernel),
        Err(e) => match newest_cached(series, cache)? {
            Some(kernel) => {
                println!(
                    "xtask: vm: cannot get the newest {} kernel ({e:#}); using cached {}",
                    series.label(),
                    kernel.release
                );
                Ok(kernel)
            }
            None => Err(e),
        },
    }
}

/// Asks apt which kernel the series' meta-package depends on right now,
/// refreshing apt's lists once if they do not know it (a fresh machine).
fn newest_release(series: Series) -> anyhow::Result<String> {
    match depends_of_meta(series) {
        Ok(release) => Ok(release),
        Err(e) => {
            println!("xtask: vm: {e:#}; running apt-get update");
            apt_update()?;
            depends_of_meta(series)
        }
    }
}

fn apt_update() -> anyhow::Result<()> {
    let status = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed ({status}); run it as root and check the Debian sources");
    }
    Ok(())
}

fn depends_of_meta(series: Series) -> anyhow::Result<String> {
    let meta = series.meta_package();
    let output = Command::new("apt-cache")
        .args(["depends", "--important", meta])
        .output()
        .context("running apt-cache (the VM tier needs Debian's apt)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "apt-cache does not know {meta}: run `apt-get update` (Debian 12 sources needed)\n{}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    release_from_depends(&text, series)
        .with_context(|| format!("no linux-image dependency in `apt-cache depends {meta}`"))
}

/// Parses `Depends: linux-image-<release>` out of apt-cache depends output.
fn release_from_depends(text: &str, series: Series) -> Option<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: linux-image-"))
        .map(|release| release.trim().to_string())
        .find(|release| series.matches_release(release))
}

fn newest_cached(series: Series, cache: &Path) -> anyhow::Result<Option<Kernel>> {
    let mut found: Vec<String> = fs::read_dir(cache)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|release| series.matches_release(release))
        .collect();
    found.sort_by_key(|release| version_key(release));
    Ok(found.pop().map(|release| Kernel {
        series,
        vmlinuz: cache.join(format!("vmlinuz-{release}")),
        release,
    }))
}

/// Numeric parts of a release, so 6.1.0-56 sorts after 6.1.0-9.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// Downloads linux-image-<release>-unsigned and extracts its vmlinuz to `dest`.
fn download(release: &str, cache: &Path, dest: &Path) -> anyhow::Result<()> {
    let package = format!("linux-image-{release}-unsigned");
    // A private directory per process: several checkouts may share the cache.
    let work = cache.join(format!("download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let result = download_into(&package, release, &work, dest);
    let _ = fs::remove_dir_all(&work);
    result
}

fn download_into(package: &str, release: &str, work: &Path, dest: &Path) -> anyhow::Result<()> {
    println!("xtask: vm: downloading {package} (about 30 MB)");
    if !apt_download(package, work)? {
        // A stale package list names a file the mirror has since replaced.
        println!("xtask: vm: download failed; refreshing apt lists and retrying");
        apt_update()?;
        if !apt_download(package, work)? {
            bail!(
                "could not download {package}; check network access to deb.debian.org and `apt-cache policy {package}`"
            );
        }
    }
    let deb = fs::read_dir(work)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    println!("xtask: vm: extracting vmlinuz-{release}");
    let member = format!("./boot/vmlinuz-{release}");
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "$3""#)
        .args([
            "sh".as_ref(),
            deb.as_os_str(),
            work.as_os_str(),
            member.as_ref(),
        ])
        .status()
        .context("running dpkg-deb and tar")?;
    let extracted = work.join(&member);
    if !status.success() || !extracted.is_file() {
        bail!("{} holds no {member}", deb.display());
    }
    // Rename within the cache directory: readers never see half a kernel.
    fs::rename(&extracted, dest).with_context(|| format!("moving kernel to {}", dest.display()))
}

fn apt_download(package: &str, work: &Path) -> anyhow::Result<bool> {
    let status = Command::new("apt-get")
        // apt drops to the _apt user for downloads, which cannot write to a
        // root-owned cache; the package is verified against the signed lists either way.
        .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
        .current_dir(work)
        .status()
        .context("running apt-get download")?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_kernel_from_apt_cache_depends() {
        let text =
            "linux-image-6.12-cloud-amd64\n  Depends: linux-image-6.12.117+deb12-cloud-amd64\n";
        assert_eq!(
            release_from_depends(text, Series::V6_12).as_deref(),
            Some("6.12.117+deb12-cloud-amd64")
        );
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            release_from_depends(text, Series::V6_1).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        // A 6.12 kernel is not a 6.1 one, even though "6.12" starts with "6.1".
        assert_eq!(
            release_from_depends(
                "  Depends: linux-image-6.12.117+deb12-cloud-amd64",
                Series::V6_1
            ),
            None
        );
    }

    #[test]
    fn newest_cached_kernel_sorts_numerically() {
        let dir = std::env::temp_dir().join(format!("guard-vm-cache-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for name in [
            "vmlinuz-6.1.0-9-cloud-amd64",
            "vmlinuz-6.1.0-56-cloud-amd64",
            "vmlinuz-6.12.117+deb12-cloud-amd64",
        ] {
            fs::write(dir.join(name), b"").unwrap();
        }
        let newest = newest_cached(Series::V6_1, &dir).unwrap().unwrap();
        assert_eq!(newest.release, "6.1.0-56-cloud-amd64");
        let newest = newest_cached(Series::V6_12, &dir).unwrap().unwrap();
        assert_eq!(newest.release, "6.12.117+deb12-cloud-amd64");
        fs::remove_dir_all(&dir).unwrap();
    }
}
