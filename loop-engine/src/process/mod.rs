//! The one door for subprocesses. Every child the engine starts (git, verification commands,
//! agents) is built here, so each gets an explicit working directory, its own process group,
//! a closed stdin unless input is given, and a timeout that kills the whole group.
//!
//! This file is the public command wrapper; the private `tree` module finds and stops the
//! process trees of agents (`/proc` scanning, signals, reaping of orphans).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod cgroup;
mod env;
mod tree;

pub(crate) use cgroup::{AgentCgroup, agent_cgroup_name, kill_run_cgroups};
pub use cgroup::{
    AgentLimits, Containment, CpuMax, NO_CGROUP_ENV, PARENT_NAME, cgroup_parent, containment,
    controllers, fallback_reason, without_cgroups,
};

pub use env::{AgentEnvEntry, DAEMON_PREFIX, agent_env_vars, is_allowed, parse_agent_env};
pub(crate) use tree::wait_run_vcs_children;

/// The environment variable that marks every child of a run (agents, verification commands,
/// the engine's own git) with the run's id, so a restarted daemon finds what a crashed one
/// left running.
pub const RUN_MARKER_KEY: &str = "LOOP_RUN_ID";

/// Set (to `1`) on the git processes the engine itself runs for a run (and so on their
/// hooks): recovery lets them finish instead of killing them halfway through a merge.
pub const VCS_CHILD_KEY: &str = "LOOP_VCS_CHILD";

tokio::task_local! {
    static RUN_MARKER: String;
}

/// Runs `fut` with every subprocess it starts through [`Cmd`] marked with
/// `LOOP_RUN_ID=<run_id>` (see [`RUN_MARKER_KEY`]).
pub async fn with_run_marker<F: std::future::Future>(run_id: String, fut: F) -> F::Output {
    RUN_MARKER.scope(run_id, fut).await
}

use tree::terminate_group;
pub use tree::{INTERRUPT_GRACE, KILL_GRACE, Signal, reap_orphans, signal_group};
pub(crate) use tree::{
    ProcessTree, adopt, kill_run_survivors, kill_survivor, process_start_time, reap_adopted,
};
#[cfg(test)]
pub(crate) use tree::{group_alive, proc_stat};

/// A subprocess could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program does not exist or is not executable.
    #[error("program `{program}` not found")]
    NotFound {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure to start or talk to it.
    #[error("cannot run `{program}`")]
    Io {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The result of a finished subprocess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; 124 after a timeout; 128+N after signal N.
    pub code: i32,
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
    /// True when the timeout killed it.
    pub timed_out: bool,
    /// True when standard output went past [`Cmd::stdout_limit`] and the rest was discarded.
    pub stdout_truncated: bool,
}

impl CmdOutput {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Standard output as (lossy) UTF-8, trimmed.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }

    /// Standard error as (lossy) UTF-8, trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// Exit code reported for a process killed by a timeout (as coreutils `timeout` does).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// A subprocess to run.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    cwd: PathBuf,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    allowed_env_only: bool,
    stdout_limit: Option<usize>,
}

impl Cmd {
    /// A command running `program` in `cwd`.
    pub fn new(program: impl AsRef<OsStr>, cwd: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            cwd: cwd.as_ref().to_owned(),
            env: Vec::new(),
            env_remove: Vec::new(),
            stdin: None,
            timeout: None,
            allowed_env_only: false,
            stdout_limit: None,
        }
    }

    /// Keeps at most `bytes` of standard output; the rest is read and discarded (the child is
    /// never blocked on a full pipe) and [`CmdOutput::stdout_truncated`] is set.
    pub fn stdout_limit(mut self, bytes: usize) -> Self {
        self.stdout_limit = Some(bytes);
        self
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (on top of the inherited environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.env.extend(
            vars.into_iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// Inherits only the allow-listed part of this process's environment (see
    /// [`is_allowed`]: `PATH`, `HOME`, locale, `ANTHROPIC_*`, `CLAUDE_*`, the git identity,
    /// proxies, ..., never `LOOPD_*`); variables set with [`Cmd::env`] still apply. For agents
    /// and verification commands.
    pub fn allowed_env_only(mut self) -> Self {
        self.allowed_env_only = true;
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Feeds `input` on stdin (stdin is closed otherwise).
    pub fn stdin_bytes(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Kills the process group after `timeout` (`None`: no limit).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The program.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The working directory.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The configured timeout.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether stdin input was configured.
    pub fn has_stdin(&self) -> bool {
        self.stdin.is_some()
    }

    /// Takes the configured stdin input, if any.
    pub fn take_stdin(&mut self) -> Option<Vec<u8>> {
        self.stdin.take()
    }

    /// A tokio command with everything set: cwd, env, its own process group, stdin closed or
    /// piped (when input is configured), stdout/stderr piped, killed when dropped.
    pub fn to_tokio(&self) -> tokio::process::Command {
        #[expect(
            clippy::disallowed_methods,
            reason = "this is the one place that builds subprocesses"
        )]
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if self.allowed_env_only {
            cmd.env_clear();
            cmd.envs(env::allowed_inherited());
        }
        if let Ok(run_id) = RUN_MARKER.try_with(Clone::clone) {
            cmd.env(RUN_MARKER_KEY, run_id);
        }
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The same command started through `shell_args` (`/bin/sh -c SCRIPT NAME ... --`): the
    /// program and its arguments come after them, so the script can `exec "$@"` them.
    pub(crate) fn through_shim(mut self, shell_args: Vec<OsString>) -> Self {
        let program = std::mem::replace(&mut self.program, OsString::from("/bin/sh"));
        let mut args = shell_args;
        args.push(program);
        args.append(&mut self.args);
        self.args = args;
        self
    }

    /// The same command started through `setpriv --pdeathsig KILL` (util-linux), where the
    /// host has it: the kernel then kills the process when the thread of loopd that started it
    /// dies, so an agent does not outlive a `kill -9` of its daemon (SPEC §14). `setpriv`
    /// execs the program (and a shim execs the agent), so the agent keeps the pid it was
    /// started with. The processes the agent starts are not covered: they stay in its cgroup
    /// or process group, where recovery and a takeover on this machine find and kill them.
    /// Unchanged where `setpriv` is missing or the program is not found (so a missing program
    /// still fails to spawn, with its own name).
    pub(crate) fn dying_with_parent(mut self) -> Self {
        let Some(setpriv) = setpriv() else {
            return self;
        };
        if !self.program_found() {
            return self;
        }
        let program = std::mem::replace(&mut self.program, setpriv.into());
        let mut args: Vec<OsString> = vec!["--pdeathsig".into(), "KILL".into(), "--".into()];
        args.push(program);
        args.append(&mut self.args);
        self.args = args;
        self
    }

    /// Whether the program exists and is executable, looked up as `execvp` would (relative to
    /// the working directory when it holds a `/`, else in the child's `PATH`).
    pub(crate) fn program_found(&self) -> bool {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        let executable = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if self.program.as_bytes().contains(&b'/') {
            return executable(&self.cwd.join(&self.program));
        }
        let path = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        std::env::split_paths(&path).any(|dir| executable(&self.cwd.join(dir).join(&self.program)))
    }

    fn spawn_error(&self, source: std::io::Error) -> ProcessError {
        let program = self.program.to_string_lossy().into_owned();
        if source.kind() == std::io::ErrorKind::NotFound
            || source.kind() == std::io::ErrorKind::PermissionDenied
        {
            ProcessError::NotFound { program, source }
        } else {
            ProcessError::Io { program, source }
        }
    }

    /// Runs to completion, capturing stdout and stderr. On timeout the whole process group gets
    /// TERM, then KILL after [`KILL_GRACE`], and the exit code is [`TIMEOUT_EXIT_CODE`].
    pub async fn output(mut self) -> Result<CmdOutput, ProcessError> {
        let input = self.stdin.take();
        let mut cmd = self.to_tokio();
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let pid = child.id();
        let io_err = |source| ProcessError::Io {
            program: self.program.to_string_lossy().into_owned(),
            source,
        };

        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let feed = async move {
            if let (Some(pipe), Some(bytes)) = (stdin.as_mut(), input) {
                // A child that exits without reading its input is not an error of ours.
                let _ = pipe.write_all(&bytes).await;
            }
            drop(stdin);
        };
        let limit = self.stdout_limit;
        let read_out = async move {
            let mut buf = Vec::new();
            let mut cut = false;
            if let Some(p) = stdout.as_mut() {
                match limit {
                    None => {
                        p.read_to_end(&mut buf).await?;
                    }
                    Some(limit) => {
                        let keep = u64::try_from(limit).unwrap_or(u64::MAX);
                        (&mut *p).take(keep).read_to_end(&mut buf).await?;
                        let rest = tokio::io::copy(p, &mut tokio::io::sink()).await?;
                        cut = rest > 0;
                    }
                }
            }
            Ok::<_, std::io::Error>((buf, cut))
        };
        let read_err = async move {
            let mut buf = Vec::new();
            if let Some(p) = stderr.as_mut() {
                p.read_to_end(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(buf)
        };
        let all = async {
            let ((), out, err, status) = tokio::join!(feed, read_out, read_err, child.wait());
            Ok::<_, std::io::Error>((out?, err?, status?))
        };

        let result = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, all).await.ok(),
            None => Some(all.await),
        };
        match result {
            Some(Ok(((stdout, stdout_truncated), stderr, status))) => Ok(CmdOutput {
                code: exit_code_of(status),
                stdout,
                stderr,
                timed_out: false,
                stdout_truncated,
            }),
            Some(Err(e)) => Err(io_err(e)),
            None => {
                if let Some(pid) = pid {
                    terminate_group(pid, KILL_GRACE).await;
                }
                Ok(CmdOutput {
                    code: TIMEOUT_EXIT_CODE,
                    stdout: Vec::new(),
                    stderr: format!(
                        "timed out after {} s",
                        self.timeout.map(|d| d.as_secs()).unwrap_or_default()
                    )
                    .into_bytes(),
                    timed_out: true,
                    stdout_truncated: false,
                })
            }
        }
    }
}

/// The shell-style exit code of a finished process: its code, or 128+N for signal N.
pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Makes this process the "child subreaper" of its descendants: an orphan of an agent (a tool
/// command the agent started with `setsid`, whose parent died) is re-parented to us instead of
/// to init, so it stays findable and killable. loopd and embedders call it once at start.
/// Re-parented orphans must then be reaped: see [`reap_orphans`].
pub fn become_child_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// The effective user id of this process, from `/proc/self/status` (`None` if unreadable).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_effective_uid(&status)
}

/// Where `setpriv` is, if the host has it (looked up once).
fn setpriv() -> Option<&'static Path> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .as_deref()
}

/// The effective uid (second number) of the `Uid:` line of a `/proc/<pid>/status` text.
fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let out = Cmd::new("sh", "/")
            .args(["-c", "echo hi; echo err >&2; exit 3"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout_text(), "hi");
        assert_eq!(out.stderr_text(), "err");
        assert!(!out.timed_out);
    }

    #[tokio::test]
    async fn feeds_stdin() {
        let out = Cmd::new("cat", "/")
            .stdin_bytes("piped in")
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "piped in");
    }

    #[tokio::test]
    async fn timeout_kills_the_group_with_124() {
        let started = std::time::Instant::now();
        let out = Cmd::new("sh", "/")
            .args(["-c", "sleep 30 & sleep 30"])
            .timeout(Some(Duration::from_millis(200)))
            .output()
            .await
            .unwrap();
        assert_eq!(out.code, TIMEOUT_EXIT_CODE);
        assert!(out.timed_out);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn missing_program_is_not_found() {
        let err = Cmd::new("definitely-not-a-program-xyz", "/")
            .output()
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn effective_uid_is_the_second_uid() {
        assert_eq!(
            parse_effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n"),
            Some(0)
        );
        assert!(effective_uid().is_some());
    }
}
