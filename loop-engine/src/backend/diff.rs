//! The value types of [`Vcs::diff`](crate::backend::Vcs::diff) and of the other review
//! operations (SPEC §12): what a run changed, bounded in size, and a pull request to open.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Size bounds of a diff: patches are cut at these many bytes (per file and in all) and
/// marked `truncated`; the rest of the diff (file list, counts) stays complete up to
/// `max_files` and `max_commits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLimits {
    /// The most bytes of one file's patch.
    pub max_file_bytes: usize,
    /// The most bytes of all patches together.
    pub max_total_bytes: usize,
    /// The most files listed (aggregate and per commit).
    pub max_files: usize,
    /// The most commits listed (newest first).
    pub max_commits: usize,
}

impl DiffLimits {
    /// The hard ceiling of `max_file_bytes` a request may ask for (8 MiB).
    pub const MAX_FILE_BYTES: usize = 8 << 20;
    /// The hard ceiling of `max_total_bytes` a request may ask for (32 MiB).
    pub const MAX_TOTAL_BYTES: usize = 32 << 20;

    /// These limits with each value brought under its hard ceiling.
    pub fn clamped(self) -> Self {
        Self {
            max_file_bytes: self.max_file_bytes.min(Self::MAX_FILE_BYTES),
            max_total_bytes: self.max_total_bytes.min(Self::MAX_TOTAL_BYTES),
            max_files: self.max_files.clamp(1, 100_000),
            max_commits: self.max_commits.clamp(1, 10_000),
        }
    }
}

impl Default for DiffLimits {
    /// 256 KiB per file, 2 MiB in all, 2,000 files, 500 commits.
    fn default() -> Self {
        Self {
            max_file_bytes: 256 << 10,
            max_total_bytes: 2 << 20,
            max_files: 2_000,
            max_commits: 500,
        }
    }
}

/// Which two commits to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffRequest {
    /// A checkout of the repository (the primary one).
    pub repo: PathBuf,
    /// The base revision (a branch name or a commit).
    pub base: String,
    /// The head revision.
    pub head: String,
    /// Compare against the merge base of `base` and `head` (true), or against `base` itself.
    pub merge_base: bool,
    /// Size bounds.
    pub limits: DiffLimits,
}

/// How a file changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// New in the head.
    Added,
    /// Changed in place (also a type change).
    Modified,
    /// Gone in the head.
    Deleted,
    /// Moved (and perhaps changed); `old_path` says from where.
    Renamed,
}

/// Line counts of a diff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffStats {
    /// Lines added.
    pub additions: u64,
    /// Lines deleted.
    pub deletions: u64,
    /// Files changed.
    pub files_changed: u64,
}

/// One file of a commit (counts only, no patch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitFile {
    /// The path in the commit.
    pub path: String,
    /// How it changed.
    pub status: FileStatus,
    /// Where a renamed file came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// Lines added.
    pub additions: u64,
    /// Lines deleted.
    pub deletions: u64,
    /// A binary file (no line counts).
    pub binary: bool,
}

/// One commit between base and head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffCommit {
    /// Its id.
    pub sha: String,
    /// Its whole message.
    pub message: String,
    /// `Name <email>`.
    pub author: String,
    /// Author time, seconds since the Unix epoch.
    pub timestamp: i64,
    /// The files it changed (against its first parent).
    pub files: Vec<CommitFile>,
    /// Its line counts.
    pub stats: DiffStats,
}

/// One file of the whole diff, with its patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffFile {
    /// The path in the head.
    pub path: String,
    /// How it changed.
    pub status: FileStatus,
    /// Where a renamed file came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// The unified diff of this file (`git diff` format, lossy UTF-8), cut at the limits;
    /// empty for a binary file.
    pub patch: String,
    /// Lines added.
    pub additions: u64,
    /// Lines deleted.
    pub deletions: u64,
    /// A binary file: no patch, no line counts.
    pub binary: bool,
    /// The patch was cut (or left out) because of a byte limit.
    pub truncated: bool,
}

/// What lies between a base and a head: the commits, the files with their patches, the
/// counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// The commit compared against (the merge base when asked for).
    pub base_sha: String,
    /// The head commit.
    pub head_sha: String,
    /// The commits in `base..head`, newest first.
    pub commits: Vec<DiffCommit>,
    /// Every changed file, in path order.
    pub files: Vec<DiffFile>,
    /// The whole diff's counts.
    pub stats: DiffStats,
    /// Something was cut: a patch, the file list or the commit list.
    pub truncated: bool,
}

/// A pull request to open for a run branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// Where the tool runs (the run's worktree, else the primary checkout).
    pub dir: PathBuf,
    /// The branch with the work.
    pub head: String,
    /// The branch to merge into.
    pub base: String,
    /// Its title.
    pub title: String,
    /// Its body (Markdown).
    pub body: String,
    /// Open it as a draft.
    pub draft: bool,
}
