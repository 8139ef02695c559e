//! The diff of [`GitCli`] (SPEC §12): the commits between two revisions with their files,
//! every changed file with its patch, and the counts. Patches are read from one `git diff`
//! as it streams and cut at the per-file and total byte limits while reading, so memory
//! stays bounded however large the change is (a 1 GB file costs at most the per-file limit).

use super::plumbing::{GitCli, failed, os_args};
use crate::backend::{
    CommitFile, Diff, DiffCommit, DiffFile, DiffLimits, DiffRequest, DiffStats, FileStatus,
    VcsError,
};

/// The most bytes of a file list (`--raw --numstat`) or a commit log that are read.
const LISTING_BYTES: usize = 16 << 20;

/// Options every diff of this file uses: renames found, no external diff drivers or text
/// conversion (a repository's config must not run programs here), no colour.
const DIFF_OPTS: [&str; 4] = ["-M", "--no-ext-diff", "--no-textconv", "--no-color"];

impl GitCli {
    pub(super) async fn diff(&self, req: &DiffRequest) -> Result<Diff, VcsError> {
        let repo = req.repo.as_path();
        let limits = req.limits.clamped();
        let head = self.commit_of(req, &req.head).await?;
        let base_tip = self.commit_of(req, &req.base).await?;
        let base = if req.merge_base {
            let out = self.git(repo, ["merge-base", &base_tip, &head]).await?;
            match out.code {
                0 => out.stdout_text(),
                1 => {
                    return Err(VcsError::Conflict {
                        detail: format!("{} and {} share no history", req.base, req.head),
                    });
                }
                _ => {
                    return Err(failed(
                        repo,
                        &os_args(["merge-base", &base_tip, &head]),
                        &out,
                    ));
                }
            }
        } else {
            base_tip
        };

        let (all_files, mut truncated) = self.changed_files(req, &base, &head).await?;
        let stats = stats_of(&all_files);
        let shown = all_files.len().min(limits.max_files);
        truncated |= shown < all_files.len();
        let mut files: Vec<DiffFile> = all_files
            .into_iter()
            .take(shown)
            .map(|f| DiffFile {
                path: f.path,
                status: f.status,
                old_path: f.old_path,
                patch: String::new(),
                additions: f.additions,
                deletions: f.deletions,
                binary: f.binary,
                truncated: false,
            })
            .collect();
        if !files.is_empty() {
            truncated |= self.patches(req, &base, &head, &limits, &mut files).await?;
        }
        let (commits, commits_cut) = self.commits(req, &base, &head, &limits).await?;
        truncated |= commits_cut;
        Ok(Diff {
            base_sha: base,
            head_sha: head,
            commits,
            files,
            stats,
            truncated,
        })
    }

    async fn commit_of(&self, req: &DiffRequest, rev: &str) -> Result<String, VcsError> {
        self.resolve(&req.repo, rev, "commit")
            .await?
            .ok_or_else(|| VcsError::NotFound {
                what: format!("revision `{rev}`"),
            })
    }

    /// The files changed from `from` to `to` with their counts, and whether the listing was
    /// cut at [`LISTING_BYTES`].
    async fn changed_files(
        &self,
        req: &DiffRequest,
        from: &str,
        to: &str,
    ) -> Result<(Vec<CommitFile>, bool), VcsError> {
        let mut args = vec!["diff", "--raw", "--numstat", "-z"];
        args.extend(DIFF_OPTS);
        args.extend([from, to, "--"]);
        let out = self.git_limited(&req.repo, &args, LISTING_BYTES).await?;
        if !out.success() {
            return Err(failed(&req.repo, &os_args(&args), &out));
        }
        Ok((parse_raw_numstat(&out.stdout), out.stdout_truncated))
    }

    /// Fills the patches of `files` from one streamed `git diff`, cut at the limits; true when
    /// anything was cut.
    async fn patches(
        &self,
        req: &DiffRequest,
        base: &str,
        head: &str,
        limits: &DiffLimits,
        files: &mut [DiffFile],
    ) -> Result<bool, VcsError> {
        let mut args = vec!["diff"];
        args.extend(DIFF_OPTS);
        args.extend([base, head, "--"]);
        let mut splitter = PatchSplitter::new(files.len(), *limits);
        self.git_chunks(&req.repo, &args, |chunk| splitter.feed(chunk))
            .await?;
        let patches = splitter.finish();
        let mut cut = false;
        for (file, (bytes, was_cut)) in files.iter_mut().zip(patches) {
            file.patch = String::from_utf8_lossy(&bytes).into_owned();
            file.truncated = was_cut;
            cut |= was_cut;
        }
        Ok(cut)
    }

    /// The commits of `base..head`, newest first, at most `max_commits`; true when cut.
    async fn commits(
        &self,
        req: &DiffRequest,
        base: &str,
        head: &str,
        limits: &DiffLimits,
    ) -> Result<(Vec<DiffCommit>, bool), VcsError> {
        let range = format!("{base}..{head}");
        let count: usize = self
            .text(&req.repo, ["rev-list", "--count", &range, "--"])
            .await?
            .parse()
            .unwrap_or(0);
        let max = format!("--max-count={}", limits.max_commits);
        let args = [
            "log",
            "--format=%H%x00%an <%ae>%x00%at%x00%B%x00",
            max.as_str(),
            range.as_str(),
            "--",
        ];
        let out = self.git_limited(&req.repo, args, LISTING_BYTES).await?;
        if !out.success() {
            return Err(failed(&req.repo, &os_args(args), &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split('\0').collect();
        let mut commits = Vec::new();
        for chunk in fields.chunks(4) {
            let [sha, author, at, message] = chunk else {
                break;
            };
            let sha = sha.trim();
            if sha.is_empty() {
                continue;
            }
            let parent = format!("{sha}^1");
            let from = if self.resolve(&req.repo, &parent, "commit").await?.is_some() {
                parent
            } else {
                // A root commit: compared with the empty tree.
                EMPTY_TREE.to_owned()
            };
            let (files, _) = self.changed_files(req, &from, sha).await?;
            let stats = stats_of(&files);
            let mut files = files;
            files.truncate(limits.max_files);
            commits.push(DiffCommit {
                sha: sha.to_owned(),
                message: message.trim_end().to_owned(),
                author: (*author).to_owned(),
                timestamp: at.trim().parse().unwrap_or(0),
                files,
                stats,
            });
        }
        let cut = out.stdout_truncated || commits.len() < count;
        Ok((commits, cut))
    }
}

/// git's empty tree, the base of a root commit.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

fn stats_of(files: &[CommitFile]) -> DiffStats {
    DiffStats {
        additions: files.iter().map(|f| f.additions).sum(),
        deletions: files.iter().map(|f| f.deletions).sum(),
        files_changed: u64::try_from(files.len()).unwrap_or(u64::MAX),
    }
}

/// Parses `git diff --raw --numstat -z`: first one raw record per file
/// (`:<modes> <shas> <status>\0<path>\0` or, for a rename or copy, `...R<score>\0<old>\0<new>\0`),
/// then one numstat record per file in the same order (`<add>\t<del>\t<path>\0`, or
/// `<add>\t<del>\t\0<old>\0<new>\0`; `-\t-` for a binary file). A record cut off at the end
/// (a truncated listing) is dropped.
fn parse_raw_numstat(bytes: &[u8]) -> Vec<CommitFile> {
    let text = String::from_utf8_lossy(bytes);
    let mut tokens = text.split('\0').peekable();
    let mut files: Vec<CommitFile> = Vec::new();
    let mut counted = 0usize;
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            continue;
        }
        if let Some(raw) = token.strip_prefix(':') {
            let letter = raw
                .rsplit(' ')
                .next()
                .and_then(|s| s.chars().next())
                .unwrap_or('M');
            let two_paths = matches!(letter, 'R' | 'C');
            let Some(first) = tokens.next() else { break };
            let (old_path, path) = if two_paths {
                let Some(second) = tokens.next() else { break };
                (Some(first.to_owned()), second.to_owned())
            } else {
                (None, first.to_owned())
            };
            let status = match letter {
                'A' | 'C' => FileStatus::Added,
                'D' => FileStatus::Deleted,
                'R' => FileStatus::Renamed,
                _ => FileStatus::Modified,
            };
            files.push(CommitFile {
                path,
                status,
                // A copy is shown as the new file it is; only a rename names where it came from.
                old_path: old_path.filter(|_| letter == 'R'),
                additions: 0,
                deletions: 0,
                binary: false,
            });
        } else {
            let mut parts = token.splitn(3, '\t');
            let (Some(add), Some(del), Some(rest)) = (parts.next(), parts.next(), parts.next())
            else {
                break;
            };
            if rest.is_empty() {
                // A rename: the two paths follow as their own records.
                if tokens.next().is_none() || tokens.next().is_none() {
                    break;
                }
            }
            if let Some(file) = files.get_mut(counted) {
                file.binary = add == "-" && del == "-";
                file.additions = add.parse().unwrap_or(0);
                file.deletions = del.parse().unwrap_or(0);
            }
            counted += 1;
        }
    }
    files
}

/// Splits the stream of one `git diff` into its files' patches (a file's section starts with
/// a line `diff --git `), keeping at most `max_file_bytes` of each and `max_total_bytes` in
/// all; what is beyond is dropped as it arrives and the file is marked cut.
struct PatchSplitter {
    patches: Vec<(Vec<u8>, bool)>,
    limits: DiffLimits,
    total: usize,
    /// The section being read (`None` before the first header).
    current: Option<usize>,
    /// The start of the current line while it may still be a section header.
    head: Vec<u8>,
    /// The current line started and is not known to be something else than a header yet.
    at_line_start: bool,
}

const SECTION: &[u8] = b"diff --git ";

impl PatchSplitter {
    fn new(files: usize, limits: DiffLimits) -> Self {
        Self {
            patches: vec![(Vec::new(), false); files],
            limits,
            total: 0,
            current: None,
            head: Vec::with_capacity(SECTION.len()),
            at_line_start: true,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.at_line_start {
                let b = rest[0];
                rest = &rest[1..];
                self.head.push(b);
                if b == b'\n' || self.head.len() == SECTION.len() {
                    if self.head == SECTION {
                        self.current = Some(self.current.map_or(0, |i| i + 1));
                    }
                    let head = std::mem::take(&mut self.head);
                    self.keep(&head);
                    self.at_line_start = b == b'\n';
                }
            } else {
                // The rest of the line goes as one slice.
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                let (line, tail) = rest.split_at(end);
                self.keep(line);
                rest = tail;
                self.at_line_start = line.last() == Some(&b'\n');
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let Some(i) = self.current else { return };
        // More sections than listed files (the list was cut): those are dropped.
        let Some((patch, cut)) = self.patches.get_mut(i) else {
            return;
        };
        let room = self
            .limits
            .max_file_bytes
            .saturating_sub(patch.len())
            .min(self.limits.max_total_bytes.saturating_sub(self.total));
        let take = bytes.len().min(room);
        patch.extend_from_slice(&bytes[..take]);
        self.total += take;
        if take < bytes.len() {
            *cut = true;
        }
    }

    fn finish(mut self) -> Vec<(Vec<u8>, bool)> {
        let head = std::mem::take(&mut self.head);
        self.keep(&head);
        // A file whose section never arrived within the total limit is cut too.
        let over = self.total >= self.limits.max_total_bytes;
        if over {
            for (patch, cut) in &mut self.patches {
                if patch.is_empty() {
                    *cut = true;
                }
            }
        }
        self.patches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impls::git_cli::test_support::*;
    use crate::testing::GitFixture;

    #[test]
    fn raw_numstat_records_become_files() {
        let raw = b":100644 100644 aaa bbb M\0src/a.rs\0:000000 100644 000 ccc A\0new.bin\0:100644 100644 ddd eee R090\0old.txt\0moved.txt\0:100644 000000 fff 000 D\0gone.txt\0\
3\t1\tsrc/a.rs\0-\t-\tnew.bin\0\x31\t0\t\0old.txt\0moved.txt\0\x30\t4\tgone.txt\0";
        let files = parse_raw_numstat(raw);
        assert_eq!(files.len(), 4);
        assert_eq!(
            (
                files[0].path.as_str(),
                files[0].status,
                files[0].additions,
                files[0].deletions
            ),
            ("src/a.rs", FileStatus::Modified, 3, 1)
        );
        assert!(files[1].binary);
        assert_eq!(files[1].status, FileStatus::Added);
        assert_eq!(files[2].status, FileStatus::Renamed);
        assert_eq!(files[2].old_path.as_deref(), Some("old.txt"));
        assert_eq!(files[2].path, "moved.txt");
        assert_eq!(files[2].additions, 1);
        assert_eq!(
            (files[3].status, files[3].deletions),
            (FileStatus::Deleted, 4)
        );
    }

    #[test]
    fn the_splitter_cuts_each_file_and_the_total_across_chunk_boundaries() {
        let limits = DiffLimits {
            max_file_bytes: 40,
            max_total_bytes: 70,
            max_files: 10,
            max_commits: 10,
        };
        let mut s = PatchSplitter::new(3, limits);
        let stream = format!(
            "diff --git a/a b/a\n+{}\ndiff --git a/b b/b\n+small\ndiff --git a/c b/c\n+late\n",
            "x".repeat(100)
        );
        for chunk in stream.as_bytes().chunks(7) {
            s.feed(chunk);
        }
        let out = s.finish();
        assert_eq!(out[0].0.len(), 40);
        assert!(out[0].1);
        assert_eq!(out[1].0, b"diff --git a/b b/b\n+small\n");
        assert!(!out[1].1);
        assert!(out[2].1, "the total limit cuts the last file");
        assert!(out[0].0.len() + out[1].0.len() + out[2].0.len() <= 70);
    }

    #[tokio::test]
    async fn a_diff_lists_commits_files_patches_and_counts() {
        let fx = GitFixture::new();
        let base = fx.head();
        fx.commit_file("keep.txt", "one\ntwo\n", "add keep");
        fx.commit_file("keep.txt", "one\nTWO\nthree\n", "change keep");
        std::fs::write(fx.path().join("blob.bin"), [0u8, 1, 2, 255, 0, 7]).unwrap();
        fx.git(["add", "blob.bin"]);
        fx.git(["commit", "-q", "-m", "add a binary"]);
        let head = fx.head();
        let vcs = cli(&fx);
        let req = DiffRequest {
            repo: fx.path().to_path_buf(),
            base: base.clone(),
            head: head.clone(),
            merge_base: true,
            limits: DiffLimits::default(),
        };
        let diff = vcs.diff(&req).await.unwrap();
        assert_eq!(
            (diff.base_sha.as_str(), diff.head_sha.as_str()),
            (base.as_str(), head.as_str())
        );
        assert_eq!(diff.commits.len(), 3);
        assert_eq!(diff.commits[0].message, "add a binary");
        assert!(diff.commits[0].files[0].binary);
        assert_eq!(diff.commits[1].stats.additions, 2);
        assert_eq!(diff.commits[1].stats.deletions, 1);
        let paths: Vec<&str> = diff.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["blob.bin", "keep.txt"]);
        assert!(diff.files[0].binary);
        assert_eq!(diff.files[1].status, FileStatus::Added);
        assert_eq!(diff.files[1].additions, 3);
        assert!(
            diff.files[1].patch.contains("+three"),
            "{}",
            diff.files[1].patch
        );
        assert_eq!(diff.stats.files_changed, 2);
        assert!(!diff.truncated);

        let missing = DiffRequest {
            head: "no-such-branch".into(),
            ..req
        };
        assert!(matches!(
            vcs.diff(&missing).await,
            Err(VcsError::NotFound { .. })
        ));
    }
}
