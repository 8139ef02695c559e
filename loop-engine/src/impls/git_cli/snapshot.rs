//! The worktree snapshot a postmortem reads (SPEC §12): status, the last commit and the
//! uncommitted diff, as the seed's `bin/loop-analyze` took them. Read-only git commands; the
//! patches go straight from git into their files (`--output`), never whole through memory.

use std::path::{Path, PathBuf};

use super::plumbing::{GitCli, os_args};
use crate::backend::VcsError;

/// The snapshot's files, the git command behind each, and whether git writes the file itself
/// (`--output`) rather than its stdout being saved.
const FILES: &[(&str, &[&str], bool)] = &[
    (
        "git-status.txt",
        &["--no-optional-locks", "status", "-sb"],
        false,
    ),
    (
        "git-last-commit.txt",
        &["log", "-1", "--stat", "--no-color"],
        true,
    ),
    (
        "git-last-commit.patch",
        &[
            "show",
            "-1",
            "--stat",
            "--patch",
            "--no-color",
            "--no-ext-diff",
        ],
        true,
    ),
    (
        "git-diff.patch",
        &["--no-optional-locks", "diff", "--no-color", "--no-ext-diff"],
        true,
    ),
];

impl GitCli {
    pub(super) async fn write_snapshot(
        &self,
        dir: &Path,
        out_dir: &Path,
    ) -> Result<Vec<PathBuf>, VcsError> {
        let io = |path: &Path, e: std::io::Error| VcsError::Fatal {
            detail: format!("cannot write {}: {e}", path.display()),
        };
        let mut written = Vec::new();
        for (name, args, to_file) in FILES {
            let path = out_dir.join(name);
            let mut argv = os_args(*args);
            if *to_file {
                let mut opt = std::ffi::OsString::from("--output=");
                opt.push(path.as_os_str());
                argv.push(opt);
            }
            let out = self.git(dir, &argv).await?;
            if !out.success() {
                // A repository without commits has no last commit: say so in the file
                // instead of failing the whole snapshot.
                let text = format!("git {} failed: {}\n", args.join(" "), out.stderr_text());
                std::fs::write(&path, text).map_err(|e| io(&path, e))?;
            } else if !*to_file {
                std::fs::write(&path, &out.stdout).map_err(|e| io(&path, e))?;
            }
            private(&path).map_err(|e| io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Run folders are the owner's only (files 0600), whatever git's umask made of them.
fn private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
