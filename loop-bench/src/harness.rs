//! What every benchmark needs: a private `loopd` started from the built binaries, its
//! resource figures read from `/proc`, `loopctl` invocations, throwaway git workspaces, clocks
//! and medians.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use loop_engine::process::{Cmd, Signal};
use loop_http::Client;

/// The token every private daemon is started with.
pub(crate) const TOKEN: &str = "loop-bench-token";

/// Nanoseconds since the Unix epoch: the clock the agent logs with, so the bench and the agent
/// (different processes) compare timestamps directly.
pub(crate) fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The median of `values` (0 for none).
pub(crate) fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The `p`th percentile (nearest rank) of `values` (0 for none).
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Milliseconds of a duration, as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where the built binaries are: `--bin-dir`, else the directory of this executable (cargo
/// puts `loopd`, `loopctl` and `loop-bench` side by side).
#[derive(Clone, Debug)]
pub(crate) struct Bins {
    pub(crate) loopd: PathBuf,
    pub(crate) loopctl: PathBuf,
    /// This binary: its `agent` subcommand is the tiny agent of every benchmark.
    pub(crate) bench: PathBuf,
}

impl Bins {
    pub(crate) fn locate(bin_dir: Option<&Path>) -> anyhow::Result<Self> {
        let bench = std::env::current_exe().context("cannot find loop-bench's own path")?;
        let dir = match bin_dir {
            Some(d) => d.to_path_buf(),
            None => bench
                .parent()
                .context("loop-bench has no parent directory")?
                .to_path_buf(),
        };
        let bins = Self {
            loopd: dir.join("loopd"),
            loopctl: dir.join("loopctl"),
            bench,
        };
        for b in [&bins.loopd, &bins.loopctl] {
            if !b.exists() {
                bail!(
                    "{} does not exist: build it first (cargo build --release -p loopd -p loopctl)",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A private loopd on a free loopback port with its own data dir.
pub(crate) struct Daemon {
    child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) client: Client,
    pub(crate) url: String,
    log: PathBuf,
}

/// CPU time and context switches of a process (all its threads) at one moment.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProcSample {
    /// utime + stime in clock ticks (USER_HZ, 100 per second on Linux).
    pub(crate) cpu_ticks: u64,
    /// Voluntary + involuntary context switches summed over the threads: each is one wake-up
    /// (or preemption) of a thread.
    pub(crate) switches: u64,
    /// Threads.
    pub(crate) threads: u64,
    /// Context switches per thread id, so a window counts only the threads that lived through
    /// it (an exiting thread takes its counters with it).
    pub(crate) per_thread: std::collections::HashMap<String, u64>,
}

impl ProcSample {
    /// Context switches between `self` and a later sample, over the threads present in both
    /// plus the whole count of threads born in between; and how many threads exited.
    pub(crate) fn switches_until(&self, later: &Self) -> (u64, u64) {
        let mut n = 0;
        for (tid, after) in &later.per_thread {
            n += after.saturating_sub(self.per_thread.get(tid).copied().unwrap_or(0));
        }
        let exited = self
            .per_thread
            .keys()
            .filter(|t| !later.per_thread.contains_key(*t))
            .count() as u64;
        (n, exited)
    }
}

impl Daemon {
    /// Starts loopd with `data_dir` and `extra` arguments and waits until `/health` answers.
    pub(crate) async fn start(
        bins: &Bins,
        data_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_env(bins, data_dir, extra, &[]).await
    }

    /// [`Daemon::start`] with extra environment variables for loopd.
    pub(crate) async fn start_with_env(
        bins: &Bins,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let log = data_dir.join("loopd.stderr.log");
        let mut cmd = Cmd::new(&bins.loopd, data_dir)
            .args(["--listen", &listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("LOOPD_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .to_tokio();
        cmd.stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bins.loopd.display()))?;
        let pid = child.id().context("loopd exited at once")?;
        let url = format!("http://{listen}");
        let client = Client::new(&url, Some(TOKEN.to_owned()))?;
        let started = Instant::now();
        loop {
            if client.health().await.is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!(
                    "loopd did not answer within 20 s; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self {
            child,
            pid,
            client,
            url,
            log,
        })
    }

    /// Resident set size in KiB (`VmRSS`).
    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }

    /// CPU ticks and context switches so far.
    pub(crate) fn sample(&self) -> ProcSample {
        let mut s = ProcSample::default();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
        {
            // Fields after the command: state is field 3, utime 14, stime 15.
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| {
                f.get(i - 3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            s.cpu_ticks = get(14) + get(15);
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            for t in tasks.flatten() {
                s.threads += 1;
                let text = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                let mut mine = 0;
                for line in text.lines() {
                    if let Some(v) = line
                        .strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                    {
                        mine += v.trim().parse::<u64>().unwrap_or(0);
                    }
                }
                s.switches += mine;
                s.per_thread
                    .insert(t.file_name().to_string_lossy().into_owned(), mine);
            }
        }
        s
    }

    /// The daemon's stderr so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `loopctl args...` in `cwd` against this daemon; fails unless it exits 0.
    pub(crate) async fn loopctl(
        &self,
        bins: &Bins,
        cwd: &Path,
        args: &[&str],
    ) -> anyhow::Result<String> {
        let out = Cmd::new(&bins.loopctl, cwd)
            .args(args)
            .env("LOOPD_ADDR", &self.url)
            .env("LOOPD_TOKEN", TOKEN)
            .output()
            .await?;
        if !out.success() {
            bail!(
                "loopctl {} failed: {}{}",
                args.join(" "),
                out.stdout_text(),
                out.stderr_text()
            );
        }
        Ok(out.stdout_text())
    }

    /// `loopctl --json run <spec>` in `ws`: the new run's id.
    pub(crate) async fn start_run(
        &self,
        bins: &Bins,
        ws: &Path,
        spec: &str,
    ) -> anyhow::Result<String> {
        let out = self.loopctl(bins, ws, &["--json", "run", spec]).await?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("loopctl run printed no JSON: {out}"))?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .context("loopctl run printed no id")
    }

    /// `kill -9` of loopd alone (its agents live on, as after a crash), waited for.
    pub(crate) async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 20 s).
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        loop_engine::process::signal_group(self.pid, Signal::Terminate);
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// `VmRSS` of a process in KiB (0 when it is gone).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs git with a fixed identity; fails unless it exits 0.
pub(crate) async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Cmd::new("git", dir).args(args).output().await?;
    if !out.success() {
        bail!("git {} failed: {}", args.join(" "), out.stderr_text());
    }
    Ok(out.stdout_text())
}

/// A fresh git repository at `dir` holding `specs/bench.md`, a plan of `tasks` open tasks and
/// `.loop/config` with `config` lines (after the bench's defaults), all committed on `main`.
pub(crate) async fn workspace(dir: &Path, tasks: usize, config: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("specs/planning"))?;
    std::fs::create_dir_all(dir.join(".loop"))?;
    git(dir, &["init", "-q", "-b", "main"]).await?;
    for (k, v) in [
        ("user.name", "loop bench"),
        ("user.email", "bench@localhost"),
        ("commit.gpgsign", "false"),
        // `git commit` may start a detached `git maintenance` that keeps the agent's output
        // pipe open: loopd then (rightly) waits for it, the bare shell loop does not. Both
        // arms must run the same agent, so neither gets background maintenance.
        ("maintenance.auto", "false"),
        ("gc.auto", "0"),
    ] {
        git(dir, &["config", k, v]).await?;
    }
    std::fs::write(dir.join("specs/bench.md"), "# Bench\n\nTick the tasks.\n")?;
    let mut plan = String::from("# Plan\n\n");
    for i in 1..=tasks {
        plan.push_str(&format!("- [ ] task {i}\n"));
    }
    std::fs::write(dir.join("specs/planning/bench-plan.md"), plan)?;
    std::fs::write(
        dir.join(".loop/config"),
        format!(
            "run_naming_mode=spec_slug\nartifact_mode=workspace\nreviewer=false\npostmortem=false\niterations={}\n{config}\n",
            tasks * 2 + 5
        ),
    )?;
    std::fs::write(dir.join(".gitignore"), "logs/\n")?;
    git(dir, &["add", "-A"]).await?;
    git(dir, &["commit", "-q", "-m", "init"]).await?;
    Ok(())
}

/// Polls the run (bench side) until it is terminal; returns its status.
pub(crate) async fn wait_terminal(
    client: &Client,
    id: &str,
    limit: Duration,
) -> anyhow::Result<String> {
    let id: loop_engine::domain::RunId = id.parse()?;
    let started = Instant::now();
    loop {
        let run = client.get_run(id).await?;
        if run.status.is_terminal() {
            return Ok(run.status.as_str().to_owned());
        }
        if started.elapsed() > limit {
            bail!("run {id} still {} after {limit:?}", run.status.as_str());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn switches_count_surviving_and_new_threads_only() {
        let sample = |pairs: &[(&str, u64)]| ProcSample {
            per_thread: pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
            ..ProcSample::default()
        };
        let before = sample(&[("1", 10), ("2", 50)]);
        let after = sample(&[("1", 12), ("3", 4)]);
        assert_eq!(before.switches_until(&after), (6, 1));
        assert_eq!(after.switches_until(&after), (0, 0));
    }

    #[test]
    fn rss_of_this_process_is_positive() {
        assert!(rss_kib(std::process::id()) > 0);
        assert_eq!(rss_kib(u32::MAX), 0);
    }
}
