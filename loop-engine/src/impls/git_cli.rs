//! The reference [`Vcs`]: it shells out to the `git` CLI (2.38 or newer, for
//! `merge-tree --write-tree`) through the engine's subprocess door.
//!
//! Merges are computed without touching any checkout (`merge-tree`, `commit-tree`) and land
//! with a compare-and-swap on the target ref, so a conflict or a crash never leaves a
//! half-merged branch behind. Every merge commit carries a `Loop-Run-Id` trailer, which is how
//! a repeated merge of the same run is recognised. This backend never fetches and never pushes.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{MergeOutcome, MergeRequest, Vcs, VcsError, WorktreeReport};
use crate::domain::MergeStrategy;
use crate::impls::git_refs::{HeadFile, RefFiles, plainly_valid_branch_name};
use crate::process::{Cmd, CmdOutput, ProcessError};

/// The trailer that marks a run's merge commit on the target branch.
pub const RUN_ID_TRAILER: &str = "Loop-Run-Id";

/// The identity of commits the engine makes when git has none configured.
const FALLBACK_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "agent-loop"),
    ("GIT_AUTHOR_EMAIL", "agent-loop@localhost"),
    ("GIT_COMMITTER_NAME", "agent-loop"),
    ("GIT_COMMITTER_EMAIL", "agent-loop@localhost"),
];

/// Upper bound for one git command; a hung git (a credential helper, a huge checkout on a dead
/// disk) must not stall a run forever.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Environment variables that would point git at another repository than the directory a
/// command runs in (e.g. when the daemon itself was started from a git hook).
const REPO_LOCATING_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

/// [`Vcs`] backed by the `git` command-line tool.
#[derive(Clone, Debug, Default)]
pub struct GitCli {
    env: Vec<(String, String)>,
}

/// One entry of `git worktree list --porcelain`.
#[derive(Debug)]
struct WorktreeEntry {
    path: PathBuf,
    /// The full ref checked out there (`refs/heads/x`); `None` when detached or bare.
    branch: Option<String>,
    /// Registered, but its directory is gone.
    prunable: bool,
}

impl GitCli {
    /// A backend that runs `git` with the inherited environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend that adds `env` to every git command (e.g. an isolated `GIT_CONFIG_GLOBAL` and
    /// a fixed identity in tests).
    pub fn with_env(env: Vec<(String, String)>) -> Self {
        Self { env }
    }

    /// The primary checkout of the repository containing `path` (for a linked worktree: the
    /// checkout it was created from; for a bare repository: the repository directory).
    pub async fn common_root(&self, path: &Path) -> Result<PathBuf, VcsError> {
        let dir = existing_dir(path);
        self.worktrees(&dir)
            .await?
            .into_iter()
            .next()
            .map(|entry| entry.path)
            .ok_or_else(|| VcsError::Fatal {
                detail: format!("git lists no worktree for {}", path.display()),
            })
    }

    /// Runs git in `dir`. A non-zero exit is returned as output, except for lock contention
    /// (`Retryable`) and "not a git repository" (`NotFound`), which no caller can handle
    /// differently.
    async fn git<I, S>(&self, dir: &Path, args: I) -> Result<CmdOutput, VcsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        if !dir.is_dir() {
            return Err(VcsError::NotFound {
                what: format!("directory {}", dir.display()),
            });
        }
        let first = args.first().and_then(|a| a.to_str());
        let commits = matches!(first, Some("commit" | "commit-tree" | "stash"));
        let mut out = self.spawn_git(dir, &args, commits, false).await?;
        if commits && !out.success() && lacks_identity(&out.stderr_text()) {
            // A fresh machine may have no git identity at all; commits the engine makes (seed,
            // merge) must not fail for that. The user's own identity always wins when set:
            // the first attempt refuses git's guesses, so only a missing one gets here.
            out = self.spawn_git(dir, &args, false, true).await?;
        }
        if out.timed_out {
            return Err(VcsError::Fatal {
                detail: format!(
                    "`git {}` in {} timed out after {} s",
                    show_args(&args),
                    dir.display(),
                    GIT_TIMEOUT.as_secs()
                ),
            });
        }
        if !out.success() {
            let stderr = out.stderr_text();
            if is_lock_contention(&stderr) {
                return Err(VcsError::Retryable {
                    detail: format!("`git {}` in {}: {stderr}", show_args(&args), dir.display()),
                });
            }
            if stderr.contains("not a git repository") {
                return Err(VcsError::NotFound {
                    what: format!("git repository at {}", dir.display()),
                });
            }
        }
        Ok(out)
    }

    /// One git process. `config_identity_only` makes git refuse to guess an identity from
    /// the host name (so a missing one is reported, not invented); `fallback_identity` sets
    /// the engine's own.
    async fn spawn_git(
        &self,
        dir: &Path,
        args: &[OsString],
        config_identity_only: bool,
        fallback_identity: bool,
    ) -> Result<CmdOutput, VcsError> {
        // Prompts would hang a daemon, and the error matching needs English messages.
        let mut cmd = Cmd::new("git", dir);
        if config_identity_only {
            cmd = cmd.args(["-c", "user.useConfigOnly=true"]);
        }
        let mut cmd = cmd
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .timeout(Some(GIT_TIMEOUT));
        for var in REPO_LOCATING_VARS {
            cmd = cmd.env_remove(var);
        }
        for (key, value) in &self.env {
            cmd = cmd.env(key, value);
        }
        if fallback_identity {
            for (key, value) in FALLBACK_IDENTITY {
                cmd = cmd.env(key, value);
            }
        }
        cmd.output().await.map_err(|e| match e {
            ProcessError::NotFound { .. } => VcsError::Fatal {
                detail: "git is not installed or not on PATH; agent-loop needs git for \
                         worktrees and merges"
                    .to_owned(),
            },
            other => VcsError::Fatal {
                detail: format!(
                    "cannot run git in {}: {}",
                    dir.display(),
                    crate::error::chain(&other)
                ),
            },
        })
    }

    /// Runs git in `dir` and requires success.
    async fn run<I, S>(&self, dir: &Path, args: I) -> Result<CmdOutput, VcsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.git(dir, &args).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(failed(dir, &args, &out))
        }
    }

    /// Runs git in `dir`, requires success and returns its trimmed stdout.
    async fn text<I, S>(&self, dir: &Path, args: I) -> Result<String, VcsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Ok(self.run(dir, args).await?.stdout_text())
    }

    /// The object `rev` names, peeled to `kind` (`commit`, `tree`); `None` if there is none.
    async fn resolve(&self, dir: &Path, rev: &str, kind: &str) -> Result<Option<String>, VcsError> {
        let spec = format!("{rev}^{{{kind}}}");
        let args = [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ];
        let out = self.git(dir, args).await?;
        match out.code {
            0 => Ok(Some(out.stdout_text())),
            1 => Ok(None),
            _ => Err(failed(dir, &os_args(args), &out)),
        }
    }

    async fn branch_tip(&self, dir: &Path, branch: &str) -> Result<Option<String>, VcsError> {
        let full = format!("refs/heads/{branch}");
        if let Some(tip) = RefFiles::locate(dir).and_then(|f| f.branch_tip(&full)) {
            return Ok(tip);
        }
        self.resolve(dir, &format!("refs/heads/{branch}"), "commit")
            .await
    }

    /// The full ref HEAD points to in `dir`; `None` when detached.
    async fn current_ref(&self, dir: &Path) -> Result<Option<String>, VcsError> {
        // The files answer in microseconds; git only when they cannot tell.
        if let Some(head) = RefFiles::locate(dir).and_then(|f| f.head_file()) {
            return Ok(match head {
                HeadFile::Symbolic(r) => Some(r),
                HeadFile::Detached(_) => None,
            });
        }
        let out = self.git(dir, ["symbolic-ref", "--quiet", "HEAD"]).await?;
        match out.code {
            0 => Ok(Some(out.stdout_text())),
            1 => Ok(None),
            _ => Err(failed(
                dir,
                &os_args(["symbolic-ref", "--quiet", "HEAD"]),
                &out,
            )),
        }
    }

    async fn is_ancestor(&self, dir: &Path, ancestor: &str, of: &str) -> Result<bool, VcsError> {
        let args = ["merge-base", "--is-ancestor", ancestor, of];
        let out = self.git(dir, args).await?;
        match out.code {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(failed(dir, &os_args(args), &out)),
        }
    }

    /// True when `since` is an ancestor of `head` on `full_ref`: read from the branch's reflog
    /// when it shows plain commits (the usual case after an agent step), else asked of git.
    async fn moved_forward(
        &self,
        dir: &Path,
        full_ref: &str,
        since: &str,
        head: &str,
    ) -> Result<bool, VcsError> {
        let from_reflog =
            RefFiles::locate(dir).and_then(|f| f.moved_forward_by_commits(full_ref, since, head));
        match from_reflog {
            Some(forward) => Ok(forward),
            None => self.is_ancestor(dir, since, head).await,
        }
    }

    /// Rejects names git would not accept as a branch, or would read as an option.
    async fn check_branch_name(&self, dir: &Path, name: &str) -> Result<(), VcsError> {
        let invalid = || VcsError::Conflict {
            detail: format!("`{name}` is not a valid git branch name"),
        };
        if name.is_empty() || name.starts_with('-') {
            return Err(invalid());
        }
        // git's rules, checked in place; only an unusual name costs a git process.
        if plainly_valid_branch_name(name) {
            return Ok(());
        }
        let out = self
            .git(dir, ["check-ref-format", "--branch", name])
            .await?;
        // `--branch` expands shorthands such as `@{-1}`; only a name that stays itself is a name.
        if out.success() && out.stdout_text() == name {
            Ok(())
        } else {
            Err(invalid())
        }
    }

    async fn worktrees(&self, dir: &Path) -> Result<Vec<WorktreeEntry>, VcsError> {
        let args = ["worktree", "list", "--porcelain", "-z"];
        let mut attempt = 0;
        loop {
            let out = self.git(dir, args).await?;
            if out.success() {
                return Ok(parse_worktrees(&out.stdout));
            }
            // `git worktree add` running elsewhere (a user, another tool) writes its entry in
            // several steps; a listing that catches it half-written fails with "failed to
            // read .../worktrees/<name>/...". A moment later the entry is whole.
            attempt += 1;
            if attempt >= 5 || !out.stderr_text().contains("/worktrees/") {
                return Err(failed(dir, &os_args(args), &out));
            }
            tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
        }
    }

    /// Removes the `index.lock` of the worktree at `dir`, returning its path if there was one.
    async fn remove_index_lock(&self, dir: &Path) -> Result<Option<PathBuf>, VcsError> {
        let out = self.run(dir, ["rev-parse", "--absolute-git-dir"]).await?;
        let git_dir = path_from_stdout(&out.stdout);
        let mut locks = vec![git_dir.join("index.lock"), git_dir.join("HEAD.lock")];
        // A git killed mid-commit also leaves the lock of the branch it was moving. Only this
        // worktree's own branch is touched: other worktrees' git may be working right now.
        let branch = self.git(dir, ["symbolic-ref", "-q", "HEAD"]).await?;
        if branch.success() {
            let common = self
                .run(
                    dir,
                    ["rev-parse", "--path-format=absolute", "--git-common-dir"],
                )
                .await?;
            let common = path_from_stdout(&common.stdout);
            let name = branch.stdout_text();
            if name.starts_with("refs/heads/") && !name.contains("..") {
                locks.push(common.join(format!("{name}.lock")));
            }
        }
        let mut removed = None;
        for lock in locks {
            match tokio::fs::remove_file(&lock).await {
                Ok(()) => removed = Some(lock),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VcsError::Fatal {
                        detail: format!("cannot remove stale lock {}: {e}", lock.display()),
                    });
                }
            }
        }
        Ok(removed)
    }

    /// The commit of this run's merge on `target`, if it already holds one.
    async fn find_run_merge(
        &self,
        req: &MergeRequest,
        run_exists: bool,
    ) -> Result<Option<String>, VcsError> {
        let grep = format!("--grep={RUN_ID_TRAILER}: {}", req.run_id);
        let target = format!("refs/heads/{}", req.target_branch);
        let mut args = vec![
            "log".to_owned(),
            "--format=%H".to_owned(),
            "--max-count=1".to_owned(),
            "--fixed-strings".to_owned(),
            grep,
            target,
        ];
        // The run's merge commit is never part of the run branch itself, so excluding the run
        // branch's history keeps the search short on long-lived targets.
        if run_exists {
            args.push(format!("^refs/heads/{}", req.run_branch));
        }
        args.push("--".to_owned());
        let sha = self.text(&req.repo, &args).await?;
        Ok((!sha.is_empty()).then_some(sha))
    }

    /// Checks out `target` in the primary checkout unless it is already there. The merge has
    /// landed by then, so a failure here is reported without undoing it.
    async fn check_out_target(&self, req: &MergeRequest, commit: &str) -> Result<(), VcsError> {
        let target_ref = format!("refs/heads/{}", req.target_branch);
        if self.current_ref(&req.repo).await?.as_deref() == Some(target_ref.as_str()) {
            return Ok(());
        }
        let mut out = self
            .git(&req.repo, ["checkout", "--quiet", &req.target_branch, "--"])
            .await?;
        if !out.success() && self.clear_seeded_untracked(req, &out.stderr_text()).await? {
            out = self
                .git(&req.repo, ["checkout", "--quiet", &req.target_branch, "--"])
                .await?;
        }
        if out.success() {
            Ok(())
        } else {
            Err(VcsError::Conflict {
                detail: format!(
                    "the run branch {} is merged into {} at {commit}, but {} could not be \
                     checked out in the primary checkout {}: {}; check it out by hand",
                    req.run_branch,
                    req.target_branch,
                    req.target_branch,
                    req.repo.display(),
                    out.stderr_text()
                ),
            })
        }
    }

    /// A user's spec and plan are often untracked in the primary checkout when the run seeds
    /// them into its branch; checking the target out then trips over them. Such files are
    /// removed (and true returned) only when every one of them is byte-identical to a version
    /// in the run branch's history, so no content of the user's is lost.
    async fn clear_seeded_untracked(
        &self,
        req: &MergeRequest,
        stderr: &str,
    ) -> Result<bool, VcsError> {
        if !stderr.contains("untracked working tree files would be overwritten") {
            return Ok(false);
        }
        let files: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix('\t'))
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        if files.is_empty() {
            return Ok(false);
        }
        for file in &files {
            let blob = self.text(&req.repo, ["hash-object", "--", file]).await?;
            let history = self
                .text(
                    &req.repo,
                    [
                        "log",
                        "--format=",
                        "--raw",
                        "--no-abbrev",
                        &req.run_branch,
                        "--",
                        file,
                    ],
                )
                .await?;
            if blob.is_empty() || !history.contains(&blob) {
                return Ok(false);
            }
        }
        for file in &files {
            let path = req.repo.join(file);
            if let Err(e) = std::fs::remove_file(&path) {
                return Err(VcsError::Fatal {
                    detail: format!("cannot remove {}: {e}", path.display()),
                });
            }
        }
        Ok(true)
    }

    /// Moves `target` from `old` (`None`: it must not exist yet) to `new`, failing if it moved.
    async fn compare_and_swap(
        &self,
        req: &MergeRequest,
        old: Option<&str>,
        new: &str,
    ) -> Result<(), VcsError> {
        let target_ref = format!("refs/heads/{}", req.target_branch);
        let reason = format!("loop: merge run {} ({})", req.run_id, req.run_branch);
        let out = self
            .git(
                &req.repo,
                [
                    "update-ref",
                    "-m",
                    &reason,
                    &target_ref,
                    new,
                    old.unwrap_or(""),
                ],
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(VcsError::Conflict {
                detail: format!(
                    "the branch {} changed while the run branch {} was being merged into it; \
                     nothing was merged, the run branch is kept ({})",
                    req.target_branch,
                    req.run_branch,
                    out.stderr_text()
                ),
            })
        }
    }

    /// Lands `new` on a target that is checked out in the primary checkout: the index and the
    /// working tree move first (refusing to overwrite untracked files), then the ref; if the
    /// ref moved under us, the checkout is moved back.
    async fn advance_checked_out_target(
        &self,
        req: &MergeRequest,
        old: &str,
        new: &str,
    ) -> Result<(), VcsError> {
        // `read-tree -m` trusts the index's stat data; refresh it so clean files are not
        // mistaken for modified ones. Exit 1 only means some entries needed refreshing.
        self.git(&req.repo, ["update-index", "-q", "--refresh"])
            .await?;
        let args = ["read-tree", "-m", "-u", old, new];
        let out = self.git(&req.repo, args).await?;
        if !out.success() {
            let stderr = out.stderr_text();
            if stderr.contains("would be overwritten") || stderr.contains("not uptodate") {
                return Err(VcsError::Conflict {
                    detail: format!(
                        "merging {} into {} would overwrite files in the primary checkout {}: \
                         {stderr}; nothing was merged, the run branch is kept",
                        req.run_branch,
                        req.target_branch,
                        req.repo.display()
                    ),
                });
            }
            return Err(failed(&req.repo, &os_args(args), &out));
        }
        if let Err(e) = self.compare_and_swap(req, Some(old), new).await {
            // The ref did not move, so the checkout must go back to where the ref still is.
            self.run(&req.repo, ["read-tree", "-m", "-u", new, old])
                .await?;
            return Err(e);
        }
        Ok(())
    }
}

#[async_trait]
impl Vcs for GitCli {
    async fn repo_root(&self, path: &Path) -> Result<PathBuf, VcsError> {
        // The top of a checkout holds its `.git`: no process needed to say so.
        if RefFiles::locate(path).and_then(|f| f.head_file()).is_some()
            && let Ok(real) = std::fs::canonicalize(path)
        {
            return Ok(real);
        }
        let out = self
            .run(&existing_dir(path), ["rev-parse", "--show-toplevel"])
            .await?;
        Ok(path_from_stdout(&out.stdout))
    }

    async fn default_branch(&self, repo: &Path) -> Result<String, VcsError> {
        if let Some(name) = RefFiles::locate(repo).and_then(|f| f.default_branch()) {
            return Ok(name);
        }
        let remote_head = self
            .git(
                repo,
                [
                    "symbolic-ref",
                    "--quiet",
                    "--short",
                    "refs/remotes/origin/HEAD",
                ],
            )
            .await?;
        if remote_head.success() {
            let name = remote_head.stdout_text();
            let name = name.strip_prefix("origin/").unwrap_or(&name);
            if !name.is_empty() {
                return Ok(name.to_owned());
            }
        }
        let primary = self.common_root(repo).await?;
        if let Some(current) = self.current_ref(&primary).await?
            && let Some(name) = current.strip_prefix("refs/heads/")
        {
            return Ok(name.to_owned());
        }
        let configured = self
            .git(repo, ["config", "--get", "init.defaultBranch"])
            .await?;
        if configured.success() && !configured.stdout_text().is_empty() {
            return Ok(configured.stdout_text());
        }
        Ok("main".to_owned())
    }

    async fn list_branches(&self, repo: &Path) -> Result<Vec<String>, VcsError> {
        if let Some(names) = RefFiles::locate(repo).and_then(|f| f.branches()) {
            return Ok(names);
        }
        // Full ref names, stripped here: `refname:short` turns a branch into `heads/x` when a
        // tag of the same name exists.
        let text = self
            .text(repo, ["for-each-ref", "--format=%(refname)", "refs/heads"])
            .await?;
        Ok(text
            .lines()
            .filter_map(|line| line.strip_prefix("refs/heads/"))
            .map(str::to_owned)
            .collect())
    }

    async fn prepare_worktree(
        &self,
        repo: &Path,
        path: &Path,
        branch: &str,
        base: &str,
    ) -> Result<WorktreeReport, VcsError> {
        self.check_branch_name(repo, branch).await?;
        let path = if path.is_absolute() {
            path.to_owned()
        } else {
            repo.join(path)
        };
        let branch_ref = format!("refs/heads/{branch}");
        let mut report = WorktreeReport::default();

        let mut entries = self.worktrees(repo).await?;
        let stale: Vec<PathBuf> = entries
            .iter()
            .filter(|e| e.prunable)
            .map(|e| e.path.clone())
            .collect();
        if !stale.is_empty() {
            self.run(repo, ["worktree", "prune"]).await?;
            report.cleaned.extend(
                stale
                    .iter()
                    .map(|p| format!("pruned the stale worktree registration {}", p.display())),
            );
            entries = self.worktrees(repo).await?;
        }

        if let Some(entry) = entries.iter().find(|e| same_path(&e.path, &path)) {
            if !path.exists() {
                return Err(VcsError::Conflict {
                    detail: format!(
                        "{} is registered as a locked worktree but its directory is missing; \
                         run `git worktree unlock` and `git worktree prune` in {}",
                        path.display(),
                        repo.display()
                    ),
                });
            }
            if entry.branch.as_deref() == Some(branch_ref.as_str()) {
                // The engine prepares a worktree before any agent runs in it, so a lock file
                // found now was left by a process that is gone.
                if let Some(lock) = self.remove_index_lock(&path).await? {
                    report
                        .cleaned
                        .push(format!("removed the stale lock {}", lock.display()));
                }
                return Ok(report);
            }
            let holds = entry
                .branch
                .as_deref()
                .and_then(|r| r.strip_prefix("refs/heads/"))
                .map_or_else(|| "a detached HEAD".to_owned(), |b| format!("branch {b}"));
            return Err(VcsError::Conflict {
                detail: format!(
                    "{} is already a worktree of {holds}, not of {branch}; choose another \
                     worktree path or remove it with `git worktree remove`",
                    path.display()
                ),
            });
        }
        if let Some(other) = entries
            .iter()
            .find(|e| e.branch.as_deref() == Some(branch_ref.as_str()))
        {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the branch {branch} is already checked out in {}; git allows a branch in \
                     one worktree only",
                    other.path.display()
                ),
            });
        }
        if path.symlink_metadata().is_ok() && !is_empty_dir(&path) {
            return Err(VcsError::Conflict {
                detail: format!(
                    "{} already exists and is not a worktree of {branch}; move it away or \
                     choose another worktree path",
                    path.display()
                ),
            });
        }

        if self.branch_tip(repo, branch).await?.is_none() {
            let from_files = RefFiles::locate(repo).and_then(|f| f.branch_by_name(base));
            let start = match from_files {
                Some(id) => Some(id),
                None => self.resolve(repo, base, "commit").await?,
            };
            let Some(start) = start else {
                let any_commit = self
                    .text(repo, ["rev-list", "--max-count=1", "--all"])
                    .await?;
                if any_commit.is_empty() {
                    return Err(VcsError::Conflict {
                        detail: format!(
                            "the repository {} has no commits yet; make an initial commit so \
                             the run branch {branch} can start from it",
                            repo.display()
                        ),
                    });
                }
                return Err(VcsError::NotFound {
                    what: format!("base branch `{base}`"),
                });
            };
            self.run(repo, ["branch", "--no-track", branch, &start])
                .await?;
            report.created_branch = true;
        }

        let mut add: Vec<OsString> = os_args(["worktree", "add", "--quiet", "--"]);
        add.push(path.clone().into_os_string());
        add.push(branch.into());
        self.run(repo, &add).await?;
        report.created_worktree = true;
        Ok(report)
    }

    async fn head(&self, dir: &Path) -> Result<Option<String>, VcsError> {
        // Read between every two agent calls: the files answer without a process.
        if let Some(id) = RefFiles::locate(dir).and_then(|f| f.head_commit()) {
            return Ok(Some(id));
        }
        let args = ["rev-parse", "--verify", "--quiet", "HEAD"];
        let out = self.git(dir, args).await?;
        match out.code {
            0 => Ok(Some(out.stdout_text())),
            1 => Ok(None),
            _ => Err(failed(dir, &os_args(args), &out)),
        }
    }

    async fn is_clean(&self, dir: &Path) -> Result<bool, VcsError> {
        // No optional locks: an agent may be running git in the same worktree.
        let status = self
            .text(
                dir,
                [
                    "--no-optional-locks",
                    "status",
                    "--porcelain=v1",
                    "--untracked-files=all",
                ],
            )
            .await?;
        Ok(status.is_empty())
    }

    async fn stash_changes(&self, dir: &Path, message: &str) -> Result<bool, VcsError> {
        if self.is_clean(dir).await? {
            return Ok(false);
        }
        self.run(
            dir,
            [
                "stash",
                "push",
                "--include-untracked",
                "--quiet",
                "-m",
                message,
            ],
        )
        .await?;
        Ok(true)
    }

    async fn check_branch(
        &self,
        dir: &Path,
        branch: &str,
        since: Option<String>,
    ) -> Result<(), VcsError> {
        let expected = format!("refs/heads/{branch}");
        let current = self.current_ref(dir).await?;
        if current.as_deref() != Some(expected.as_str()) {
            let now = current
                .as_deref()
                .map(|r| r.strip_prefix("refs/heads/").unwrap_or(r).to_owned())
                .unwrap_or_else(|| "a detached HEAD".to_owned());
            return Err(VcsError::Conflict {
                detail: format!(
                    "the worktree {} has {now} checked out instead of the run branch {branch}; \
                     work committed there is not part of the run",
                    dir.display()
                ),
            });
        }
        if let Some(since) = since
            && let Some(head) = self.head(dir).await?
            && !self.moved_forward(dir, &expected, &since, &head).await?
        {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the history of the run branch {branch} was rewritten: {since} is no longer \
                     an ancestor of its head {head}; the lost commits are still in the reflog"
                ),
            });
        }
        Ok(())
    }

    async fn show_file(
        &self,
        repo: &Path,
        rev: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, VcsError> {
        if self.resolve(repo, rev, "tree").await?.is_none() {
            return Err(VcsError::NotFound {
                what: format!("revision `{rev}`"),
            });
        }
        let mut spec = OsString::from(format!("{rev}:"));
        spec.push(path.as_os_str());
        let kind = self
            .git(repo, [OsStr::new("cat-file"), OsStr::new("-t"), &spec])
            .await?;
        if !kind.success() || kind.stdout_text() != "blob" {
            return Ok(None);
        }
        let out = self
            .run(repo, [OsStr::new("cat-file"), OsStr::new("blob"), &spec])
            .await?;
        Ok(Some(out.stdout))
    }

    async fn commit_paths(
        &self,
        dir: &Path,
        paths: &[PathBuf],
        message: &str,
    ) -> Result<Option<String>, VcsError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let literal = |p: &Path| {
            let mut spec = OsString::from(":(literal)");
            spec.push(p.as_os_str());
            spec
        };
        let (present, absent): (Vec<&PathBuf>, Vec<&PathBuf>) = paths
            .iter()
            .partition(|p| dir.join(p).symlink_metadata().is_ok());
        if !present.is_empty() {
            let mut args = os_args(["add", "--all", "--"]);
            args.extend(present.iter().map(|p| literal(p)));
            self.run(dir, &args).await?;
        }
        if !absent.is_empty() {
            // A named path that is gone is a deletion to commit (or nothing, if never tracked).
            let mut args = os_args(["rm", "--cached", "--quiet", "-r", "--ignore-unmatch", "--"]);
            args.extend(absent.iter().map(|p| literal(p)));
            self.run(dir, &args).await?;
        }

        let mut diff = os_args(["diff", "--cached", "--name-only", "-z", "--"]);
        diff.extend(paths.iter().map(|p| literal(p)));
        let changed = self.run(dir, &diff).await?.stdout;
        let changed: Vec<&[u8]> = changed
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .collect();
        if changed.is_empty() {
            return Ok(None);
        }
        // `--only` with the changed files (named from the top of the tree, as `diff` prints
        // them) leaves anything else the agent may have staged out of this commit.
        let mut commit = os_args([
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            message,
            "--only",
            "--",
        ]);
        commit.extend(changed.iter().map(|name| {
            let mut spec = OsString::from(":(top,literal)");
            spec.push(OsStr::from_bytes(name));
            spec
        }));
        self.run(dir, &commit).await?;
        self.head(dir).await
    }

    async fn remove_stale_lock(&self, dir: &Path) -> Result<bool, VcsError> {
        Ok(self.remove_index_lock(dir).await?.is_some())
    }

    async fn merge(&self, req: &MergeRequest) -> Result<MergeOutcome, VcsError> {
        let repo = req.repo.as_path();
        if req.strategy == MergeStrategy::None {
            return Err(VcsError::Fatal {
                detail: format!(
                    "merge strategy `none` asks for no merge of the run branch {}",
                    req.run_branch
                ),
            });
        }
        self.check_branch_name(repo, &req.target_branch).await?;
        if req.target_branch == req.run_branch {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the run branch {} is also the merge target; choose another target",
                    req.run_branch
                ),
            });
        }

        let dirty = self
            .text(repo, ["status", "--porcelain=v1", "--untracked-files=no"])
            .await?;
        if !dirty.is_empty() {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the primary checkout {} has uncommitted changes; commit or stash them, \
                     the run branch {} is kept",
                    repo.display(),
                    req.run_branch
                ),
            });
        }

        let target_ref = format!("refs/heads/{}", req.target_branch);
        let primary = self.repo_root(repo).await?;
        if let Some(other) = self.worktrees(repo).await?.into_iter().find(|e| {
            e.branch.as_deref() == Some(target_ref.as_str()) && !same_path(&e.path, &primary)
        }) {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the merge target {} is checked out in the worktree {}; switch that \
                     worktree to another branch, the run branch {} is kept",
                    req.target_branch,
                    other.path.display(),
                    req.run_branch
                ),
            });
        }

        let old_target = self.branch_tip(repo, &req.target_branch).await?;
        let run_tip = self.branch_tip(repo, &req.run_branch).await?;
        if let Some(old) = &old_target
            && self.find_run_merge(req, run_tip.is_some()).await?.is_some()
        {
            // A repeated call after a crash: the merge stands, only the checkout may be
            // missing.
            self.check_out_target(req, old).await?;
            return Ok(MergeOutcome::AlreadyMerged {
                commit: old.clone(),
            });
        }
        let Some(run_tip) = run_tip else {
            return Err(VcsError::NotFound {
                what: format!("run branch `{}`", req.run_branch),
            });
        };
        let start = match &old_target {
            Some(sha) => sha.clone(),
            None => self
                .resolve(repo, &req.base_branch, "commit")
                .await?
                .ok_or_else(|| VcsError::NotFound {
                    what: format!("base branch `{}`", req.base_branch),
                })?,
        };
        if self.is_ancestor(repo, &run_tip, &start).await? {
            return Ok(MergeOutcome::NothingToMerge);
        }

        let merge_tree = [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            &start,
            &run_tip,
        ];
        let out = self.git(repo, merge_tree).await?;
        let stdout = out.stdout_text();
        let mut lines = stdout.lines();
        let tree = match out.code {
            0 => lines.next().unwrap_or_default().to_owned(),
            1 => {
                let mut files: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
                files.dedup();
                return Err(VcsError::Conflict {
                    detail: format!(
                        "merging {} into {} conflicts in {}; nothing was merged, the run \
                         branch {} is kept",
                        req.run_branch,
                        req.target_branch,
                        files.join(", "),
                        req.run_branch
                    ),
                });
            }
            _ if out.stderr_text().contains("unrelated histories") => {
                return Err(VcsError::Conflict {
                    detail: format!(
                        "the run branch {} and {} share no history; nothing was merged",
                        req.run_branch, req.target_branch
                    ),
                });
            }
            _ => return Err(failed(repo, &os_args(merge_tree), &out)),
        };
        if tree.is_empty() {
            return Err(failed(repo, &os_args(merge_tree), &out));
        }
        if self.resolve(repo, &start, "tree").await?.as_deref() == Some(tree.as_str()) {
            return Ok(MergeOutcome::NothingToMerge);
        }

        let message = format!(
            "{}\n\n{RUN_ID_TRAILER}: {}\nLoop-Run-Branch: {}\n",
            req.message.trim_end(),
            req.run_id,
            req.run_branch
        );
        let mut commit_tree = vec!["commit-tree", tree.as_str(), "-p", start.as_str()];
        if req.strategy == MergeStrategy::Merge {
            commit_tree.extend(["-p", run_tip.as_str()]);
        }
        commit_tree.extend(["-m", message.as_str()]);
        let new = self.text(repo, commit_tree).await?;

        let primary_on_target =
            self.current_ref(repo).await?.as_deref() == Some(target_ref.as_str());
        match (&old_target, primary_on_target) {
            (Some(old), true) => self.advance_checked_out_target(req, old, &new).await?,
            _ => {
                self.compare_and_swap(req, old_target.as_deref(), &new)
                    .await?;
                self.check_out_target(req, &new).await?;
            }
        }
        Ok(MergeOutcome::Merged { commit: new })
    }
}

/// True when git failed because another git process holds a lock.
/// True when git refused to commit for want of a user name or email.
fn lacks_identity(stderr: &str) -> bool {
    stderr.contains("Please tell me who you are")
        || stderr.contains("auto-detection is disabled")
        || stderr.contains("empty ident name")
        || stderr.contains("unable to auto-detect email address")
}

fn is_lock_contention(stderr: &str) -> bool {
    (stderr.contains("index.lock") && stderr.contains("exists"))
        || (stderr.contains("Unable to create '") && stderr.contains(".lock'"))
}

/// The error for a git command that exited non-zero.
fn failed(dir: &Path, args: &[OsString], out: &CmdOutput) -> VcsError {
    VcsError::Fatal {
        detail: format!(
            "`git {}` in {} failed with exit code {}: {}",
            show_args(args),
            dir.display(),
            out.code,
            out.stderr_text()
        ),
    }
}

fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

fn show_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A path printed by git on one line (kept as bytes: paths need not be UTF-8).
fn path_from_stdout(stdout: &[u8]) -> PathBuf {
    let line = stdout.strip_suffix(b"\n").unwrap_or(stdout);
    PathBuf::from(OsString::from_vec(line.to_vec()))
}

/// `path` if it is a directory, else its parent (git needs a directory to run in).
fn existing_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_owned();
    }
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
        .to_owned()
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// Compares paths after resolving symlinks (git prints resolved paths), also for a path whose
/// last component no longer exists.
fn same_path(a: &Path, b: &Path) -> bool {
    normalize(a) == normalize(b)
}

fn normalize(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_owned()),
        _ => path.to_owned(),
    }
}

/// Parses `git worktree list --porcelain -z`: attributes end with NUL, entries with an empty
/// attribute.
fn parse_worktrees(stdout: &[u8]) -> Vec<WorktreeEntry> {
    let mut entries = Vec::new();
    let mut current: Option<WorktreeEntry> = None;
    for field in stdout.split(|b| *b == 0) {
        if let Some(path) = field.strip_prefix(b"worktree ") {
            entries.extend(current.take());
            current = Some(WorktreeEntry {
                path: PathBuf::from(OsStr::from_bytes(path)),
                branch: None,
                prunable: false,
            });
        } else if let Some(entry) = current.as_mut() {
            if let Some(branch) = field.strip_prefix(b"branch ") {
                entry.branch = Some(String::from_utf8_lossy(branch).into_owned());
            } else if field == b"prunable" || field.starts_with(b"prunable ") {
                entry.prunable = true;
            } else if field.is_empty() {
                entries.extend(current.take());
            }
        }
    }
    entries.extend(current);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunId;
    use crate::testing::GitFixture;

    fn cli(fx: &GitFixture) -> GitCli {
        GitCli::with_env(fx.env())
    }

    /// Creates `name` from the current HEAD with one commit per file, then returns to `main`.
    fn run_branch(fx: &GitFixture, name: &str, files: &[(&str, &str)]) -> String {
        fx.git(["checkout", "-q", "-b", name]);
        for (path, contents) in files {
            fx.commit_file(path, contents, &format!("task: {path}"));
        }
        let tip = fx.head();
        fx.checkout("main");
        tip
    }

    fn request(fx: &GitFixture, run: &str, target: &str, strategy: MergeStrategy) -> MergeRequest {
        MergeRequest {
            run_id: RunId::new(),
            repo: fx.path().to_owned(),
            run_branch: run.to_owned(),
            target_branch: target.to_owned(),
            base_branch: "main".to_owned(),
            strategy,
            message: "loop: demo (2 tasks)".to_owned(),
        }
    }

    fn current_branch(fx: &GitFixture) -> String {
        fx.git(["symbolic-ref", "--short", "HEAD"])
    }

    fn conflict_detail(result: Result<impl std::fmt::Debug, VcsError>) -> String {
        match result {
            Err(VcsError::Conflict { detail }) => detail,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn head_and_branch_checks_read_from_files_agree_with_git() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        let start = vcs.head(&wt).await.unwrap().unwrap();
        assert_eq!(start, fx.git_in(&wt, ["rev-parse", "HEAD"]));
        assert!(
            RefFiles::locate(&wt).is_some(),
            "the plain layout is read from files"
        );
        // Two agent commits: the reflog shows plain commits, so no git process is needed.
        for n in 0..2 {
            std::fs::write(wt.join(format!("f{n}.txt")), "x").unwrap();
            fx.git_in(&wt, ["add", "-A"]);
            fx.git_in(&wt, ["commit", "-q", "-m", "tick"]);
        }
        let head = vcs.head(&wt).await.unwrap().unwrap();
        assert_eq!(head, fx.git_in(&wt, ["rev-parse", "HEAD"]));
        let files = RefFiles::locate(&wt).unwrap();
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/a", &start, &head),
            Some(true)
        );
        vcs.check_branch(&wt, "run/a", Some(start.clone()))
            .await
            .unwrap();
        // An amend rewrites history: the reflog cannot vouch, git says no.
        fx.git_in(&wt, ["commit", "-q", "--amend", "-m", "tick again"]);
        let detail = conflict_detail(vcs.check_branch(&wt, "run/a", Some(head.clone())).await);
        assert!(detail.contains("was rewritten"), "{detail}");
        // Packed refs are not read from files; git answers and agrees.
        fx.git_in(&wt, ["pack-refs", "--all"]);
        let packed = vcs.head(&wt).await.unwrap().unwrap();
        assert_eq!(packed, fx.git_in(&wt, ["rev-parse", "HEAD"]));
        vcs.check_branch(&wt, "run/a", Some(start.clone()))
            .await
            .unwrap();
        // A detached HEAD is not the run branch.
        fx.git_in(&wt, ["checkout", "-q", "--detach"]);
        let detail = conflict_detail(vcs.check_branch(&wt, "run/a", Some(start)).await);
        assert!(detail.contains("a detached HEAD"), "{detail}");
    }

    #[tokio::test]
    async fn commits_without_an_identity_use_the_engines_and_a_configured_one_wins() {
        let fx = GitFixture::new();
        let env: Vec<(String, String)> = fx
            .env()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("_NAME") && !k.ends_with("_EMAIL"))
            .collect();
        let vcs = GitCli::with_env(env);
        let author = || fx.git(["log", "-1", "--format=%an <%ae>"]);
        fx.write_file("plan.md", "- [x] one\n");
        vcs.commit_paths(fx.path(), &[PathBuf::from("plan.md")], "seed")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(author(), "agent-loop <agent-loop@localhost>");
        fx.git(["config", "user.name", "Own Name"]);
        fx.git(["config", "user.email", "own@example.invalid"]);
        fx.write_file("plan.md", "- [x] two\n");
        vcs.commit_paths(fx.path(), &[PathBuf::from("plan.md")], "again")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(author(), "Own Name <own@example.invalid>");
    }

    #[tokio::test]
    async fn default_branch_is_the_checked_out_branch() {
        let fx = GitFixture::new();
        assert_eq!(cli(&fx).default_branch(fx.path()).await.unwrap(), "main");
        fx.git(["branch", "-m", "main", "trunk"]);
        assert_eq!(cli(&fx).default_branch(fx.path()).await.unwrap(), "trunk");
    }

    #[tokio::test]
    async fn default_branch_prefers_the_remote_head() {
        let fx = GitFixture::new();
        fx.git(["update-ref", "refs/remotes/origin/dev", "HEAD"]);
        fx.git([
            "symbolic-ref",
            "refs/remotes/origin/HEAD",
            "refs/remotes/origin/dev",
        ]);
        assert_eq!(cli(&fx).default_branch(fx.path()).await.unwrap(), "dev");
    }

    #[tokio::test]
    async fn default_branch_of_a_linked_worktree_is_the_primary_branch() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert_eq!(vcs.default_branch(&wt).await.unwrap(), "main");
        assert_eq!(
            normalize(&vcs.common_root(&wt).await.unwrap()),
            normalize(fx.path())
        );
        assert_eq!(
            normalize(&vcs.repo_root(&wt).await.unwrap()),
            normalize(&wt)
        );
    }

    #[tokio::test]
    async fn default_branch_falls_back_to_config_then_main_when_detached() {
        let fx = GitFixture::new();
        fx.git(["checkout", "-q", "--detach"]);
        let vcs = cli(&fx);
        assert_eq!(vcs.default_branch(fx.path()).await.unwrap(), "main");
        fx.git(["config", "init.defaultBranch", "develop"]);
        assert_eq!(vcs.default_branch(fx.path()).await.unwrap(), "develop");
    }

    #[tokio::test]
    async fn repo_root_of_a_subdirectory_and_outside_a_repo() {
        let fx = GitFixture::new();
        fx.write_file("src/lib.rs", "");
        let vcs = cli(&fx);
        let root = vcs.repo_root(&fx.path().join("src")).await.unwrap();
        assert_eq!(normalize(&root), normalize(fx.path()));
        let outside = vcs.repo_root(fx.root()).await;
        assert!(
            matches!(outside, Err(VcsError::NotFound { .. })),
            "{outside:?}"
        );
    }

    #[tokio::test]
    async fn list_branches_lists_local_branches() {
        let fx = GitFixture::new();
        fx.branch("feature/x");
        fx.branch("zeta");
        // A tag with a branch's name must not change how the branch is listed.
        fx.git(["tag", "zeta"]);
        let branches = cli(&fx).list_branches(fx.path()).await.unwrap();
        assert_eq!(branches, ["feature/x", "main", "zeta"]);
    }

    #[tokio::test]
    async fn prepare_worktree_creates_branch_and_worktree_beside_the_repo() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        let report = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert_eq!(
            report,
            WorktreeReport {
                created_branch: true,
                created_worktree: true,
                cleaned: vec![],
            }
        );
        assert!(!wt.starts_with(fx.path()));
        assert!(wt.join("README.md").is_file());
        assert_eq!(fx.git_in(&wt, ["symbolic-ref", "--short", "HEAD"]), "run/a");
        assert_eq!(fx.git(["rev-parse", "run/a"]), fx.head());
        assert_eq!(current_branch(&fx), "main");

        let again = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert_eq!(again, WorktreeReport::default());
    }

    #[tokio::test]
    async fn prepare_worktree_uses_an_existing_branch_and_a_relative_path() {
        let fx = GitFixture::new();
        let tip = run_branch(&fx, "run/b", &[("b.txt", "b\n")]);
        let report = cli(&fx)
            .prepare_worktree(fx.path(), Path::new("../repo.run-b"), "run/b", "main")
            .await
            .unwrap();
        assert!(!report.created_branch);
        assert!(report.created_worktree);
        let wt = fx.root().join("repo.run-b");
        assert_eq!(fx.git_in(&wt, ["rev-parse", "HEAD"]), tip);
        assert!(wt.join("b.txt").is_file());
    }

    #[tokio::test]
    async fn prepare_worktree_removes_a_stale_index_lock() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        let git_dir = PathBuf::from(fx.git_in(&wt, ["rev-parse", "--absolute-git-dir"]));
        let lock = git_dir.join("index.lock");
        std::fs::write(&lock, "").unwrap();

        let report = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert!(!lock.exists());
        assert!(!report.created_worktree && !report.created_branch);
        assert_eq!(report.cleaned.len(), 1, "{report:?}");
        assert!(report.cleaned[0].contains("index.lock"), "{report:?}");

        std::fs::write(&lock, "").unwrap();
        assert!(vcs.remove_stale_lock(&wt).await.unwrap());
        assert!(!lock.exists());
        assert!(!vcs.remove_stale_lock(&wt).await.unwrap());
    }

    #[tokio::test]
    async fn prepare_worktree_prunes_a_deleted_worktree_and_adds_it_again() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        std::fs::remove_dir_all(&wt).unwrap();

        let report = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert!(report.created_worktree);
        assert!(!report.created_branch);
        assert_eq!(report.cleaned.len(), 1, "{report:?}");
        assert!(report.cleaned[0].contains("pruned"), "{report:?}");
        assert!(report.cleaned[0].contains("repo.run-a"), "{report:?}");
        assert!(wt.join("README.md").is_file());
    }

    #[tokio::test]
    async fn prepare_worktree_refuses_an_occupied_path() {
        let fx = GitFixture::new();
        let occupied = fx.root().join("occupied");
        std::fs::create_dir(&occupied).unwrap();
        std::fs::write(occupied.join("notes.txt"), "mine").unwrap();
        let vcs = cli(&fx);
        let detail = conflict_detail(
            vcs.prepare_worktree(fx.path(), &occupied, "run/a", "main")
                .await,
        );
        assert!(detail.contains(&occupied.display().to_string()), "{detail}");
        assert_eq!(
            std::fs::read_to_string(occupied.join("notes.txt")).unwrap(),
            "mine"
        );
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"run/a".to_owned())
        );
    }

    #[tokio::test]
    async fn prepare_worktree_refuses_a_worktree_of_another_branch() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        let detail = conflict_detail(vcs.prepare_worktree(fx.path(), &wt, "run/b", "main").await);
        assert!(detail.contains("run/a"), "{detail}");
        // The primary checkout holds `main`, so no second worktree may take it.
        let other = fx.root().join("repo.main");
        let detail = conflict_detail(
            vcs.prepare_worktree(fx.path(), &other, "main", "main")
                .await,
        );
        assert!(detail.contains("already checked out"), "{detail}");
    }

    #[tokio::test]
    async fn prepare_worktree_reports_a_missing_base_and_an_empty_repo() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        let missing = vcs
            .prepare_worktree(fx.path(), &fx.root().join("wt"), "run/a", "nope")
            .await;
        match missing {
            Err(VcsError::NotFound { what }) => assert!(what.contains("nope"), "{what}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        let invalid = vcs
            .prepare_worktree(fx.path(), &fx.root().join("wt"), "bad..name", "main")
            .await;
        assert!(conflict_detail(invalid).contains("bad..name"));

        fx.git_in(fx.root(), ["init", "-q", "-b", "main", "empty"]);
        let empty = fx.root().join("empty");
        let detail = conflict_detail(
            vcs.prepare_worktree(&empty, &fx.root().join("wt"), "run/a", "main")
                .await,
        );
        assert!(detail.contains("no commits"), "{detail}");
    }

    #[tokio::test]
    async fn head_and_is_clean() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        assert_eq!(vcs.head(fx.path()).await.unwrap(), Some(fx.head()));
        assert!(vcs.is_clean(fx.path()).await.unwrap());
        fx.write_file("new.txt", "untracked\n");
        assert!(!vcs.is_clean(fx.path()).await.unwrap());
        std::fs::remove_file(fx.path().join("new.txt")).unwrap();
        fx.write_file("README.md", "changed\n");
        assert!(!vcs.is_clean(fx.path()).await.unwrap());

        fx.git_in(fx.root(), ["init", "-q", "-b", "main", "empty"]);
        assert_eq!(vcs.head(&fx.root().join("empty")).await.unwrap(), None);
        let outside = vcs.head(fx.root()).await;
        assert!(
            matches!(outside, Err(VcsError::NotFound { .. })),
            "{outside:?}"
        );
    }

    #[tokio::test]
    async fn show_file_reads_committed_contents() {
        let fx = GitFixture::new();
        fx.commit_file("docs/plan.md", "- [ ] one\n", "add plan");
        let vcs = cli(&fx);
        let plan = vcs
            .show_file(fx.path(), "HEAD", Path::new("docs/plan.md"))
            .await
            .unwrap();
        assert_eq!(plan.as_deref(), Some(b"- [ ] one\n".as_slice()));
        let before = vcs
            .show_file(fx.path(), "HEAD~1", Path::new("docs/plan.md"))
            .await
            .unwrap();
        assert_eq!(before, None);
        let dir = vcs
            .show_file(fx.path(), "HEAD", Path::new("docs"))
            .await
            .unwrap();
        assert_eq!(dir, None);
        let bad_rev = vcs
            .show_file(fx.path(), "no-such-rev", Path::new("docs/plan.md"))
            .await;
        assert!(
            matches!(bad_rev, Err(VcsError::NotFound { .. })),
            "{bad_rev:?}"
        );
    }

    #[tokio::test]
    async fn commit_paths_commits_only_the_named_paths() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        fx.write_file("plan.md", "- [x] one\n");
        fx.write_file("scratch.txt", "not mine\n");
        fx.write_file("staged.txt", "staged by someone else\n");
        fx.git(["add", "staged.txt"]);

        let sha = vcs
            .commit_paths(fx.path(), &[PathBuf::from("plan.md")], "loop: tick plan")
            .await
            .unwrap()
            .expect("a commit");
        assert_eq!(sha, fx.head());
        assert_eq!(
            fx.git(["show", "--name-only", "--format=%s", "HEAD"]),
            "loop: tick plan\n\nplan.md"
        );
        // What else was there is left as it was: still staged, still untracked.
        let status = fx.git(["status", "--porcelain=v1"]);
        assert!(status.contains("A  staged.txt"), "{status}");
        assert!(status.contains("?? scratch.txt"), "{status}");

        let again = vcs
            .commit_paths(fx.path(), &[PathBuf::from("plan.md")], "loop: tick plan")
            .await
            .unwrap();
        assert_eq!(again, None);
        assert_eq!(fx.head(), sha);
    }

    #[tokio::test]
    async fn commit_paths_commits_deletions_and_ignores_unknown_paths() {
        let fx = GitFixture::new();
        fx.commit_file("old.txt", "old\n", "add old");
        std::fs::remove_file(fx.path().join("old.txt")).unwrap();
        let vcs = cli(&fx);
        let sha = vcs
            .commit_paths(
                fx.path(),
                &[PathBuf::from("old.txt"), PathBuf::from("never-existed.txt")],
                "loop: drop old",
            )
            .await
            .unwrap();
        assert_eq!(sha, Some(fx.head()));
        assert_eq!(fx.file_at("HEAD", "old.txt"), None);
        assert_eq!(fx.file_at("HEAD~1", "old.txt").as_deref(), Some("old\n"));
        assert!(vcs.is_clean(fx.path()).await.unwrap());
    }

    #[tokio::test]
    async fn a_held_index_lock_is_retryable() {
        let fx = GitFixture::new();
        std::fs::write(fx.path().join(".git/index.lock"), "").unwrap();
        fx.write_file("plan.md", "x\n");
        let result = cli(&fx)
            .commit_paths(fx.path(), &[PathBuf::from("plan.md")], "m")
            .await;
        assert!(
            matches!(result, Err(VcsError::Retryable { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn missing_git_is_fatal_with_a_clear_message() {
        let fx = GitFixture::new();
        let mut env = fx.env();
        env.push(("PATH".to_owned(), "/nonexistent-loop-path".to_owned()));
        // `head` may answer from the ref files; `is_clean` always needs git.
        let result = GitCli::with_env(env).is_clean(fx.path()).await;
        match result {
            Err(VcsError::Fatal { detail }) => {
                assert!(detail.contains("git is not installed"), "{detail}");
            }
            other => panic!("expected Fatal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn squash_creates_the_target_and_checks_it_out() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        let wt = fx.root().join("repo.run-a");
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        for (file, text) in [("one.txt", "1\n"), ("two.txt", "2\n")] {
            std::fs::write(wt.join(file), text).unwrap();
            vcs.commit_paths(&wt, &[PathBuf::from(file)], &format!("task {file}"))
                .await
                .unwrap();
        }
        let run_tip = fx.git(["rev-parse", "run/a"]);
        let main_tip = fx.head();

        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let outcome = vcs.merge(&req).await.unwrap();
        let MergeOutcome::Merged { commit } = outcome else {
            panic!("expected Merged, got {outcome:?}");
        };
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), commit);
        assert_eq!(
            fx.log_subjects("agent/demo"),
            ["loop: demo (2 tasks)", "initial commit"]
        );
        let parents = fx.git(["rev-list", "--parents", "-n", "1", "agent/demo"]);
        assert_eq!(parents, format!("{commit} {main_tip}"));
        let body = fx.git(["log", "-1", "--format=%B", "agent/demo"]);
        assert!(
            body.contains(&format!("{RUN_ID_TRAILER}: {}", req.run_id)),
            "{body}"
        );
        assert_eq!(current_branch(&fx), "agent/demo");
        assert_eq!(
            std::fs::read_to_string(fx.path().join("two.txt")).unwrap(),
            "2\n"
        );
        assert!(vcs.is_clean(fx.path()).await.unwrap());
        // The run branch and the base are untouched.
        assert_eq!(fx.git(["rev-parse", "run/a"]), run_tip);
        assert_eq!(fx.git(["rev-parse", "main"]), main_tip);

        // A repeated call (e.g. after a crash) merges nothing twice.
        let again = vcs.merge(&req).await.unwrap();
        assert_eq!(
            again,
            MergeOutcome::AlreadyMerged {
                commit: commit.clone()
            }
        );
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), commit);
        assert_eq!(fx.log_subjects("agent/demo").len(), 2);
    }

    #[tokio::test]
    async fn already_merged_checks_the_target_out_again() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let MergeOutcome::Merged { commit } = vcs.merge(&req).await.unwrap() else {
            panic!("expected a merge");
        };
        // As if the engine crashed before the checkout.
        fx.checkout("main");
        let again = vcs.merge(&req).await.unwrap();
        assert_eq!(
            again,
            MergeOutcome::AlreadyMerged {
                commit: commit.clone()
            }
        );
        assert_eq!(current_branch(&fx), "agent/demo");

        // Still recognised once the run branch is gone.
        fx.git(["branch", "-D", "run/a"]);
        let gone = vcs.merge(&req).await.unwrap();
        assert_eq!(gone, MergeOutcome::AlreadyMerged { commit });
    }

    #[tokio::test]
    async fn the_target_ref_moves_only_from_the_expected_commit() {
        let fx = GitFixture::new();
        let first = fx.head();
        let second = fx.commit_file("a.txt", "a\n", "second");
        fx.branch("agent/demo");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let detail = conflict_detail(vcs.compare_and_swap(&req, Some(&first), &first).await);
        assert!(detail.contains("changed while"), "{detail}");
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), second);
        // `None` means the ref must not exist yet.
        assert!(vcs.compare_and_swap(&req, None, &first).await.is_err());
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), second);
        vcs.compare_and_swap(&req, Some(&second), &first)
            .await
            .unwrap();
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), first);
    }

    #[tokio::test]
    async fn merge_strategy_makes_a_merge_commit_with_two_parents() {
        let fx = GitFixture::new();
        let run_tip = run_branch(&fx, "run/a", &[("one.txt", "1\n"), ("two.txt", "2\n")]);
        // The target has moved on since the run started, so this is a real merge.
        let target_tip = fx.commit_file("other.txt", "o\n", "meanwhile on main");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "main", MergeStrategy::Merge);
        let MergeOutcome::Merged { commit } = vcs.merge(&req).await.unwrap() else {
            panic!("expected a merge");
        };
        let parents = fx.git(["rev-list", "--parents", "-n", "1", "main"]);
        assert_eq!(parents, format!("{commit} {target_tip} {run_tip}"));
        assert_eq!(fx.head(), commit);
        assert_eq!(fx.file_at("main", "one.txt").as_deref(), Some("1\n"));
        assert_eq!(fx.file_at("main", "other.txt").as_deref(), Some("o\n"));
        assert!(fx.path().join("two.txt").is_file());
        assert!(vcs.is_clean(fx.path()).await.unwrap());

        let again = vcs.merge(&req).await.unwrap();
        assert_eq!(
            again,
            MergeOutcome::AlreadyMerged {
                commit: commit.clone()
            }
        );
        assert_eq!(fx.head(), commit);
    }

    #[tokio::test]
    async fn a_conflict_changes_nothing() {
        let fx = GitFixture::new();
        let run_tip = run_branch(&fx, "run/a", &[("README.md", "run version\n")]);
        let main_tip = fx.commit_file("README.md", "main version\n", "edit readme on main");
        let vcs = cli(&fx);

        for target in ["main", "agent/new"] {
            let req = request(&fx, "run/a", target, MergeStrategy::Squash);
            let detail = conflict_detail(vcs.merge(&req).await);
            assert!(detail.contains("README.md"), "{detail}");
            assert!(detail.contains("run/a is kept"), "{detail}");
            assert_eq!(fx.git(["rev-parse", "main"]), main_tip);
            assert_eq!(fx.git(["rev-parse", "run/a"]), run_tip);
            assert_eq!(current_branch(&fx), "main");
            assert!(vcs.is_clean(fx.path()).await.unwrap());
            assert_eq!(
                std::fs::read_to_string(fx.path().join("README.md")).unwrap(),
                "main version\n"
            );
        }
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"agent/new".to_owned())
        );
    }

    #[tokio::test]
    async fn a_dirty_primary_checkout_changes_nothing() {
        let fx = GitFixture::new();
        let run_tip = run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        let main_tip = fx.head();
        fx.write_file("README.md", "work in progress\n");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let detail = conflict_detail(vcs.merge(&req).await);
        assert!(detail.contains("uncommitted changes"), "{detail}");
        assert!(detail.contains("run/a"), "{detail}");
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"agent/demo".to_owned())
        );
        assert_eq!(fx.git(["rev-parse", "run/a"]), run_tip);
        assert_eq!(fx.git(["rev-parse", "main"]), main_tip);
        assert_eq!(
            std::fs::read_to_string(fx.path().join("README.md")).unwrap(),
            "work in progress\n"
        );
    }

    #[tokio::test]
    async fn nothing_to_merge() {
        let fx = GitFixture::new();
        fx.branch("run/empty");
        let vcs = cli(&fx);
        let req = request(&fx, "run/empty", "agent/demo", MergeStrategy::Squash);
        assert_eq!(vcs.merge(&req).await.unwrap(), MergeOutcome::NothingToMerge);
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"agent/demo".to_owned())
        );

        // Work whose changes the target already holds is nothing to merge either.
        run_branch(&fx, "run/same", &[("same.txt", "s\n")]);
        fx.commit_file("same.txt", "s\n", "same change on main");
        let req = request(&fx, "run/same", "main", MergeStrategy::Squash);
        let before = fx.head();
        assert_eq!(vcs.merge(&req).await.unwrap(), MergeOutcome::NothingToMerge);
        assert_eq!(fx.head(), before);
    }

    #[tokio::test]
    async fn a_missing_run_branch_is_not_found() {
        let fx = GitFixture::new();
        let req = request(&fx, "run/gone", "agent/demo", MergeStrategy::Squash);
        let result = cli(&fx).merge(&req).await;
        assert!(
            matches!(result, Err(VcsError::NotFound { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_checked_out_target_is_updated_and_untracked_files_survive() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        fx.git(["checkout", "-q", "-b", "agent/demo"]);
        fx.write_file("notes/untracked.txt", "keep me\n");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let MergeOutcome::Merged { commit } = vcs.merge(&req).await.unwrap() else {
            panic!("expected a merge");
        };
        assert_eq!(current_branch(&fx), "agent/demo");
        assert_eq!(fx.head(), commit);
        assert_eq!(
            std::fs::read_to_string(fx.path().join("one.txt")).unwrap(),
            "1\n"
        );
        assert_eq!(
            std::fs::read_to_string(fx.path().join("notes/untracked.txt")).unwrap(),
            "keep me\n"
        );
        assert_eq!(
            fx.git(["status", "--porcelain=v1", "--untracked-files=all"]),
            "?? notes/untracked.txt"
        );
    }

    #[tokio::test]
    async fn an_untracked_file_in_the_way_changes_nothing() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        let main_tip = fx.head();
        fx.write_file("one.txt", "my own\n");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "main", MergeStrategy::Squash);
        let detail = conflict_detail(vcs.merge(&req).await);
        assert!(detail.contains("one.txt"), "{detail}");
        assert_eq!(fx.git(["rev-parse", "main"]), main_tip);
        assert_eq!(
            std::fs::read_to_string(fx.path().join("one.txt")).unwrap(),
            "my own\n"
        );
        assert_eq!(fx.git(["status", "--porcelain=v1"]), "?? one.txt");
    }

    #[tokio::test]
    async fn a_target_checked_out_in_another_worktree_is_refused() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        fx.branch("agent/demo");
        let vcs = cli(&fx);
        let wt = fx.root().join("elsewhere");
        vcs.prepare_worktree(fx.path(), &wt, "agent/demo", "main")
            .await
            .unwrap();
        let before = fx.git(["rev-parse", "agent/demo"]);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let detail = conflict_detail(vcs.merge(&req).await);
        assert!(detail.contains("elsewhere"), "{detail}");
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), before);
    }

    #[test]
    fn parses_porcelain_worktree_lists() {
        let raw = b"worktree /r\0HEAD abc\0branch refs/heads/main\0\0worktree /w\0HEAD def\0detached\0prunable gitdir file points to non-existent location\0\0";
        let entries = parse_worktrees(raw);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, Path::new("/r"));
        assert_eq!(entries[0].branch.as_deref(), Some("refs/heads/main"));
        assert!(!entries[0].prunable);
        assert_eq!(entries[1].branch, None);
        assert!(entries[1].prunable);
    }
}
