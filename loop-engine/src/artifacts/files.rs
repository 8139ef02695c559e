//! Whole-file operations on artifacts: atomic writes, SHA-256 checksums, mirroring into the
//! global run folder, and the description the engine records in the store.
//!
//! Readers (`loopctl inspect`, a user's `cat`, the HTTP API) may look at any artifact at any
//! time, so files that are replaced as a whole are written to a temporary file in the same
//! directory, synced and renamed over the target: a reader sees the old file or the new one,
//! never half of one.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::layout::RunFolder;
use crate::domain::{ArtifactKind, ArtifactLocation};

/// Block size for streaming reads: large enough to be fast, small enough to never matter.
const BLOCK: usize = 64 * 1024;

/// Distinguishes temporary files of concurrent writers in the same process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically: temporary file in the same directory, fsync,
/// rename. Missing parent directories are created. On error the temporary file is removed and
/// the old `path` (if any) is left untouched.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, true, |file| file.write_all(bytes))
}

/// Replaces `path` with `bytes` atomically like [`write_atomic`], without syncing to disk: for
/// files derived from others (a log's tail) that a crash may lose but never tear. It keeps
/// two `fsync` calls off the path between two agent calls.
pub(crate) fn write_derived(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, false, |file| file.write_all(bytes))
}

/// The SHA-256 of a file's contents, as 64 lowercase hex digits. Streams the file in 64 KiB
/// blocks, so large agent logs are never held in memory.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Copies `file` (which must lie inside `src_folder`) to the same relative place under
/// `dst_folder`, creating directories as needed, and returns the destination path. The copy
/// is streamed into a temporary file and renamed into place, so a reader of the mirror never
/// sees a half-copied file; copying again replaces the previous copy.
pub(crate) fn mirror_file(
    src_folder: &RunFolder,
    dst_folder: &RunFolder,
    file: &Path,
) -> io::Result<PathBuf> {
    let rel = src_folder.relative(file).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "mirror {}: not inside run folder {}",
                file.display(),
                src_folder.root().display()
            ),
        )
    })?;
    let dst = dst_folder.root().join(rel);
    let mut src = File::open(file)?;
    // A mirror is a copy of a file that is itself not synced (agent logs are streamed).
    replace_with(&dst, false, |out| io::copy(&mut src, out).map(drop))?;
    Ok(dst)
}

/// An artifact file ready to be recorded in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArtifactFile {
    /// What it is.
    pub(crate) kind: ArtifactKind,
    /// Which copy it is.
    pub(crate) location: ArtifactLocation,
    /// Where it is.
    pub(crate) path: PathBuf,
    /// SHA-256 of its contents when described, hex.
    pub(crate) checksum: String,
}

impl ArtifactFile {
    /// The store record of this file for `run_id`.
    #[cfg(test)]
    pub(crate) fn into_new_artifact(
        self,
        run_id: crate::domain::RunId,
    ) -> crate::domain::NewArtifact {
        crate::domain::NewArtifact {
            run_id,
            kind: self.kind,
            location: self.location,
            path: self.path,
            checksum: self.checksum,
        }
    }
}

/// Describes an existing artifact file: its kind, location, path and current checksum.
pub(crate) fn describe(
    kind: ArtifactKind,
    location: ArtifactLocation,
    path: &Path,
) -> io::Result<ArtifactFile> {
    Ok(ArtifactFile {
        kind,
        location,
        path: path.to_path_buf(),
        checksum: sha256_file(path)?,
    })
}

/// Writes a temporary sibling of `path` with `fill`, syncs it when `durable` and renames it
/// over `path`.
fn replace_with(
    path: &Path,
    durable: bool,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("write {}: path has no file name", path.display()),
        )
    })?;
    fs::create_dir_all(dir)?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = private_options().create_new(true).open(&temp)?;
        fill(&mut file)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&temp, path)
    })();
    match result {
        Ok(()) if !durable => Ok(()),
        Ok(()) => {
            // The rename is durable only once the directory entry is; failing to sync a
            // directory (some filesystems refuse) does not undo the write, so it is ignored.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Mode of the files of a run folder: its owner only (an agent's log may hold what it printed,
/// secrets included).
pub(super) const PRIVATE_FILE_MODE: u32 = 0o600;

/// Mode of run folders: their owner only.
pub(super) const PRIVATE_DIR_MODE: u32 = 0o700;

/// Options that create a file with [`PRIVATE_FILE_MODE`] (for writing).
pub(crate) fn private_options() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(PRIVATE_FILE_MODE);
    options
}

/// Writes `bytes` to `path`, created with [`PRIVATE_FILE_MODE`] or truncated.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = private_options().create(true).truncate(true).open(path)?;
    file.write_all(bytes)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/summary.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(names(&dir.path().join("sub")), vec!["summary.json"]);
    }

    #[test]
    fn failed_atomic_write_keeps_the_old_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"old").unwrap();
        let err = replace_with(&p, true, |_| Err(io::Error::other("boom"))).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["a.txt"]);
    }

    #[test]
    fn sha256_of_known_strings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        fs::write(&p, "hello world").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        fs::write(&p, "").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn sha256_streams_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let data: Vec<u8> = (0..(3 * BLOCK + 17)).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), hex(&Sha256::digest(&data)));
    }

    #[test]
    fn mirror_creates_nested_dirs_with_identical_content() {
        let ws = tempfile::tempdir().unwrap();
        let global = tempfile::tempdir().unwrap();
        let src = RunFolder::at(ws.path().join("logs/loop/run-1"));
        let dst = RunFolder::at(global.path().join("runs/run-1"));
        src.create().unwrap();
        let log = src.verify_log("07", 1);
        fs::write(&log, b"verify output\n\xff binary").unwrap();

        let copied = mirror_file(&src, &dst, &log).unwrap();
        assert_eq!(copied, dst.root().join("verify/verify-07-1.log"));
        assert_eq!(fs::read(&copied).unwrap(), fs::read(&log).unwrap());
        assert_eq!(sha256_file(&copied).unwrap(), sha256_file(&log).unwrap());
        assert_eq!(names(&dst.verify_dir()), vec!["verify-07-1.log"]);

        // Mirroring again replaces the copy.
        fs::write(&log, b"changed").unwrap();
        mirror_file(&src, &dst, &log).unwrap();
        assert_eq!(fs::read(&copied).unwrap(), b"changed");
    }

    #[test]
    fn mirror_rejects_files_outside_the_source_folder() {
        let dir = tempfile::tempdir().unwrap();
        let src = RunFolder::at(dir.path().join("a"));
        let dst = RunFolder::at(dir.path().join("b"));
        let outside = dir.path().join("elsewhere.txt");
        fs::write(&outside, b"x").unwrap();
        let err = mirror_file(&src, &dst, &outside).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(!dst.root().exists());
    }

    #[test]
    fn describe_checksums_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("prompt.txt");
        fs::write(&p, "hello world").unwrap();
        let a = describe(ArtifactKind::Prompt, ArtifactLocation::Workspace, &p).unwrap();
        assert_eq!(a.path, p);
        assert_eq!(
            a.checksum,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let run_id = crate::domain::RunId::new();
        let rec = a.clone().into_new_artifact(run_id);
        assert_eq!(rec.run_id, run_id);
        assert_eq!(rec.kind, ArtifactKind::Prompt);
        assert_eq!(rec.location, ArtifactLocation::Workspace);
        assert_eq!(rec.checksum, a.checksum);
        assert!(
            describe(
                ArtifactKind::Prompt,
                ArtifactLocation::Global,
                &dir.path().join("no")
            )
            .is_err()
        );
    }
}
