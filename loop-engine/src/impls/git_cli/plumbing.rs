//! The git command door of [`GitCli`]: one git process per call, with a timeout, no prompts,
//! English messages, no repository-locating variables, and the engine's identity as the
//! fallback for commits; plus the small helpers every other part shares.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::VcsError;
use crate::config::resolve_path;
use crate::process::{Cmd, CmdOutput, ProcessError};

/// The identity of commits the engine makes when git has none configured.
pub(super) const FALLBACK_IDENTITY: [(&str, &str); 4] = [
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

/// [`Vcs`](crate::backend::Vcs) backed by the `git` command-line tool.
#[derive(Clone, Debug, Default)]
pub struct GitCli {
    env: Vec<(String, String)>,
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

    /// Runs git in `dir`. A non-zero exit is returned as output, except for lock contention
    /// (`Retryable`) and "not a git repository" (`NotFound`), which no caller can handle
    /// differently.
    pub(super) async fn git<I, S>(&self, dir: &Path, args: I) -> Result<CmdOutput, VcsError>
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
    pub(super) async fn spawn_git(
        &self,
        dir: &Path,
        args: &[OsString],
        config_identity_only: bool,
        fallback_identity: bool,
    ) -> Result<CmdOutput, VcsError> {
        let cmd = self.command(dir, args, config_identity_only, fallback_identity);
        Self::output(dir, cmd).await
    }

    /// Runs a read-only git command in `dir` keeping at most `limit` bytes of its output (the
    /// rest is discarded as it arrives, see [`CmdOutput::stdout_truncated`]); a non-zero exit
    /// is returned as output, as with [`GitCli::git`].
    pub(super) async fn git_limited<I, S>(
        &self,
        dir: &Path,
        args: I,
        limit: usize,
    ) -> Result<CmdOutput, VcsError>
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
        let cmd = self.command(dir, &args, false, false).stdout_limit(limit);
        let out = Self::output(dir, cmd).await?;
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
        Ok(out)
    }

    /// Runs a read-only git command in `dir` and hands its standard output to `each` chunk by
    /// chunk as it arrives (nothing is collected here, so memory stays bounded whatever git
    /// prints). A non-zero exit is `Fatal` with git's message.
    pub(super) async fn git_chunks<F>(
        &self,
        dir: &Path,
        args: &[&str],
        mut each: F,
    ) -> Result<(), VcsError>
    where
        F: FnMut(&[u8]) + Send,
    {
        use tokio::io::AsyncReadExt;
        let os: Vec<OsString> = os_args(args);
        let cmd = self.command(dir, &os, false, false);
        let mut child = cmd.to_tokio().spawn().map_err(|e| VcsError::Fatal {
            detail: format!(
                "cannot run `git {}` in {}: {e}",
                show_args(&os),
                dir.display()
            ),
        })?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let work = async {
            let read_out = async {
                let mut buf = vec![0u8; 64 << 10];
                if let Some(p) = stdout.as_mut() {
                    loop {
                        let n = p.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        each(&buf[..n]);
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            let read_err = async {
                let mut err = Vec::new();
                if let Some(p) = stderr.as_mut() {
                    p.take(64 << 10).read_to_end(&mut err).await?;
                    tokio::io::copy(p, &mut tokio::io::sink()).await?;
                }
                Ok::<_, std::io::Error>(err)
            };
            let (out, err, status) = tokio::join!(read_out, read_err, child.wait());
            out?;
            Ok::<_, std::io::Error>((err?, status?))
        };
        let (err, status) = match tokio::time::timeout(GIT_TIMEOUT, work).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                return Err(VcsError::Fatal {
                    detail: format!(
                        "cannot read `git {}` in {}: {e}",
                        show_args(&os),
                        dir.display()
                    ),
                });
            }
            Err(_) => {
                return Err(VcsError::Fatal {
                    detail: format!(
                        "`git {}` in {} timed out after {} s",
                        show_args(&os),
                        dir.display(),
                        GIT_TIMEOUT.as_secs()
                    ),
                });
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(VcsError::Fatal {
                detail: format!(
                    "`git {}` in {} failed: {}",
                    show_args(&os),
                    dir.display(),
                    String::from_utf8_lossy(&err).trim()
                ),
            })
        }
    }

    /// The git command with the door's settings.
    fn command(
        &self,
        dir: &Path,
        args: &[OsString],
        config_identity_only: bool,
        fallback_identity: bool,
    ) -> Cmd {
        // Prompts would hang a daemon, and the error matching needs English messages.
        let mut cmd = Cmd::new("git", dir);
        if config_identity_only {
            cmd = cmd.args(["-c", "user.useConfigOnly=true"]);
        }
        let mut cmd = cmd
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            // With the run marker the door adds inside a run, recovery finds this git.
            .env(crate::process::VCS_CHILD_KEY, "1")
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
        cmd
    }

    async fn output(dir: &Path, cmd: Cmd) -> Result<CmdOutput, VcsError> {
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
    pub(super) async fn run<I, S>(&self, dir: &Path, args: I) -> Result<CmdOutput, VcsError>
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
    pub(super) async fn text<I, S>(&self, dir: &Path, args: I) -> Result<String, VcsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Ok(self.run(dir, args).await?.stdout_text())
    }

    /// The object `rev` names, peeled to `kind` (`commit`, `tree`); `None` if there is none.
    pub(super) async fn resolve(
        &self,
        dir: &Path,
        rev: &str,
        kind: &str,
    ) -> Result<Option<String>, VcsError> {
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
}

/// True when git refused to commit for want of a user name or email.
pub(super) fn lacks_identity(stderr: &str) -> bool {
    stderr.contains("Please tell me who you are")
        || stderr.contains("auto-detection is disabled")
        || stderr.contains("empty ident name")
        || stderr.contains("unable to auto-detect email address")
}

pub(super) fn is_lock_contention(stderr: &str) -> bool {
    (stderr.contains("index.lock") && stderr.contains("exists"))
        || (stderr.contains("Unable to create '") && stderr.contains(".lock'"))
}

/// The error for a git command that exited non-zero.
pub(super) fn failed(dir: &Path, args: &[OsString], out: &CmdOutput) -> VcsError {
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

pub(super) fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

pub(super) fn show_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A path printed by git on one line (kept as bytes: paths need not be UTF-8).
pub(super) fn path_from_stdout(stdout: &[u8]) -> PathBuf {
    let line = stdout.strip_suffix(b"\n").unwrap_or(stdout);
    PathBuf::from(OsString::from_vec(line.to_vec()))
}

/// `path` if it is a directory, else its parent (git needs a directory to run in).
pub(super) fn existing_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_owned();
    }
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
        .to_owned()
}

/// Compares paths after resolving symlinks (git prints resolved paths), also for a path whose
/// last components no longer exist ([`resolve_path`], the one path normaliser).
pub(super) fn same_path(a: &Path, b: &Path) -> bool {
    normalize(a) == normalize(b)
}

/// `path` absolute, with symlinks and `..` resolved ([`resolve_path`]).
pub(super) fn normalize(path: &Path) -> PathBuf {
    resolve_path(Path::new("/"), path)
}
