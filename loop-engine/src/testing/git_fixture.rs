//! A throwaway git repository for tests. It isolates git from the machine's configuration
//! (no global or system config, fixed identity and dates, no signing) so tests behave the same
//! everywhere, and it keeps the repository one level down inside a temporary directory so
//! worktrees created beside the repository (`../repo.run-x`) are cleaned up with it.
//!
//! Every helper panics with git's stderr on failure: this is test support, and a failing
//! fixture must fail the test loudly. git is a declared test dependency; without it the
//! fixture panics rather than letting tests skip.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

use crate::process::{Cmd, CmdOutput, ProcessError};

/// The first commit date of a fixture (2023-11-14T22:13:20Z); each fixture commit adds a second.
const EPOCH: u64 = 1_700_000_000;

/// Environment variables that would point git at another repository than the one a command
/// runs in; they are removed so a test run from inside a git hook still works.
const REPO_LOCATING_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

/// A temporary git repository at `<tempdir>/repo` on branch `main` with one initial commit.
#[derive(Debug)]
pub struct GitFixture {
    dir: TempDir,
    repo: PathBuf,
    global_config: PathBuf,
    /// Seconds past [`EPOCH`] of the next fixture commit, so commit dates increase.
    tick: AtomicU64,
}

impl GitFixture {
    /// Creates the repository (`git init -b main`) with isolated configuration and an initial
    /// commit of `README.md`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("loop-git-fixture")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let global_config = dir.path().join("gitconfig");
        std::fs::write(&global_config, "")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", global_config.display()));
        let fixture = Self {
            repo: dir.path().join("repo"),
            global_config,
            dir,
            tick: AtomicU64::new(0),
        };
        fixture.git_in(fixture.root(), ["init", "-q", "-b", "main", "repo"]);
        fixture.git(["config", "commit.gpgsign", "false"]);
        fixture.git(["config", "tag.gpgsign", "false"]);
        fixture.commit_file("README.md", "# fixture\n", "initial commit");
        fixture
    }

    /// The repository (the primary checkout).
    pub fn path(&self) -> &Path {
        &self.repo
    }

    /// The temporary directory holding the repository (and any sibling worktrees).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The isolated git environment: no system config, an empty global config, a fixed identity
    /// and the current fixture date. Pass it to `GitCli::with_env` and to other subprocesses.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_at(self.tick.load(Ordering::SeqCst))
    }

    fn env_at(&self, tick: u64) -> Vec<(String, String)> {
        let date = format!("{} +0000", EPOCH + tick);
        [
            (
                "GIT_CONFIG_GLOBAL",
                self.global_config.to_string_lossy().into_owned(),
            ),
            ("GIT_CONFIG_NOSYSTEM", "1".to_owned()),
            ("GIT_AUTHOR_NAME", "Loop Test".to_owned()),
            ("GIT_AUTHOR_EMAIL", "loop-test@example.invalid".to_owned()),
            ("GIT_AUTHOR_DATE", date.clone()),
            ("GIT_COMMITTER_NAME", "Loop Test".to_owned()),
            (
                "GIT_COMMITTER_EMAIL",
                "loop-test@example.invalid".to_owned(),
            ),
            ("GIT_COMMITTER_DATE", date),
            ("GIT_TERMINAL_PROMPT", "0".to_owned()),
            ("LC_ALL", "C".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Writes `contents` to `rel` (relative to the repository), creating parent directories.
    pub fn write_file(&self, rel: impl AsRef<Path>, contents: &str) {
        let path = self.repo.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Writes `rel`, stages it and commits it on the current branch; returns the new commit.
    pub fn commit_file(&self, rel: impl AsRef<Path>, contents: &str, message: &str) -> String {
        let rel = rel.as_ref();
        self.write_file(rel, contents);
        self.git([OsStr::new("add"), OsStr::new("--"), rel.as_os_str()]);
        self.commit(message)
    }

    /// Stages everything (including deletions and untracked files) and commits it; returns the
    /// new commit.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(["add", "-A"]);
        self.commit(message)
    }

    fn commit(&self, message: &str) -> String {
        let tick = self.tick.fetch_add(1, Ordering::SeqCst);
        let out = self.run(
            &self.repo,
            self.env_at(tick),
            ["commit", "-q", "--no-verify", "-m", message],
        );
        check(&self.repo, "commit", out);
        self.head()
    }

    /// Creates branch `name` at the current HEAD (without checking it out).
    pub fn branch(&self, name: &str) {
        self.git(["branch", name]);
    }

    /// Checks out the existing branch (or revision) `name`.
    pub fn checkout(&self, name: &str) {
        self.git(["checkout", "-q", name]);
    }

    /// The commit checked out in the repository.
    pub fn head(&self) -> String {
        self.git(["rev-parse", "HEAD"])
    }

    /// Runs git in the repository and returns its trimmed stdout; panics with stderr on failure.
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.git_in(&self.repo, args)
    }

    /// Runs git in `dir` (e.g. a worktree) and returns its trimmed stdout; panics with stderr
    /// on failure.
    pub fn git_in<I, S>(&self, dir: &Path, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let out = self.run(dir, self.env(), &args);
        check(dir, &shown, out)
    }

    /// The subjects of the commits reachable from `branch`, newest first.
    pub fn log_subjects(&self, branch: &str) -> Vec<String> {
        self.git(["log", "--format=%s", branch, "--"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The contents of `path` at `rev`, `None` if it does not exist there.
    pub fn file_at(&self, rev: &str, path: &str) -> Option<String> {
        let spec = format!("{rev}:{path}");
        let out = self.run(&self.repo, self.env(), ["cat-file", "blob", spec.as_str()]);
        out.success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs git through the engine's subprocess door and waits for it synchronously. The
    /// command runs on its own thread with its own runtime, so the helpers also work inside
    /// `#[tokio::test]` functions, where blocking on the test's runtime is not allowed.
    fn run<I, S>(&self, dir: &Path, env: Vec<(String, String)>, args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Cmd::new("git", dir).args(args);
        for var in REPO_LOCATING_VARS {
            cmd = cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| ProcessError::Io {
                            program: "git".to_owned(),
                            source,
                        })?
                        .block_on(cmd.output())
                })
                .join()
        });
        match result {
            Ok(Ok(out)) => out,
            Ok(Err(ProcessError::NotFound { .. })) => panic!(
                "git is required by the tests (GitFixture) but was not found on PATH; install git"
            ),
            Ok(Err(e)) => panic!("cannot run git in {}: {e}", dir.display()),
            Err(_) => panic!("the thread running git in {} panicked", dir.display()),
        }
    }
}

impl Default for GitFixture {
    fn default() -> Self {
        Self::new()
    }
}

fn check(dir: &Path, shown: &str, out: CmdOutput) -> String {
    assert!(
        out.success(),
        "`git {shown}` in {} failed with exit code {}: {}",
        dir.display(),
        out.code,
        out.stderr_text()
    );
    out.stdout_text()
}
