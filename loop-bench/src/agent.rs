//! The tiny agent every benchmark runs (`loop-bench agent ...`): logs its start, optionally
//! prints timestamped lines or a flood of bytes, sleeps, ticks one plan task, commits, and
//! logs its end. The same executable serves the bare shell loop and loopd, so both arms of a
//! comparison pay exactly the same agent cost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use loop_engine::process::Cmd;

use crate::harness::now_ns;

/// What one agent call does.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// Append `start <ns>` and `end <ns>` lines here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// The plan to tick (relative to the working directory).
    #[arg(long, default_value = "specs/planning/bench-plan.md")]
    plan: PathBuf,
    /// Sleep this long before ticking (the agent's "thinking").
    #[arg(long, default_value_t = 0)]
    sleep_ms: u64,
    /// Review mode: turn the first `[x]` into `[R]` when there is one, else tick a `[ ]`.
    #[arg(long)]
    review: bool,
    /// Print this many lines `L<i> <ns>` (for the fan-out benchmark).
    #[arg(long, default_value_t = 0)]
    lines: u64,
    /// Microseconds between those lines.
    #[arg(long, default_value_t = 1000)]
    line_interval_us: u64,
    /// Wait for this file to exist before printing lines (the bench creates it once every
    /// client listens).
    #[arg(long)]
    go: Option<PathBuf>,
    /// Print this many bytes of 100-byte lines (for the large-output benchmark).
    #[arg(long, default_value_t = 0)]
    bytes: u64,
    /// Whatever the executor appends (the prompt file): ignored.
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

fn log_line(path: Option<&Path>, what: &str) -> anyhow::Result<()> {
    if let Some(path) = path {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{what} {}", now_ns())?;
    }
    Ok(())
}

/// Ticks the plan text: the first `[x]` becomes `[R]` in review mode, else the first `[ ]`
/// becomes `[x]`. None when nothing is left to tick.
pub(crate) fn tick(plan: &str, review: bool) -> Option<String> {
    if review && let Some(i) = plan.find("- [x]") {
        return Some(format!("{}- [R]{}", &plan[..i], &plan[i + 5..]));
    }
    let i = plan.find("- [ ]")?;
    Some(format!("{}- [x]{}", &plan[..i], &plan[i + 5..]))
}

/// Runs one agent call in the current directory.
pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    log_line(args.log.as_deref(), "start")?;
    let cwd = std::env::current_dir()?;
    {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if args.lines > 0 {
            if let Some(go) = &args.go {
                while !go.exists() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            for i in 0..args.lines {
                writeln!(out, "L{i} {}", now_ns())?;
                out.flush()?;
                std::thread::sleep(Duration::from_micros(args.line_interval_us));
            }
        }
        if args.bytes > 0 {
            let line = [b"x".repeat(99), b"\n".to_vec()].concat();
            let block = line.repeat(655);
            let mut left = args.bytes;
            while left > 0 {
                let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
                out.write_all(&block[..n])?;
                left -= n as u64;
            }
            out.flush()?;
        }
    }
    if args.sleep_ms > 0 {
        std::thread::sleep(Duration::from_millis(args.sleep_ms));
    }
    let plan_path = cwd.join(&args.plan);
    let plan = std::fs::read_to_string(&plan_path)
        .with_context(|| format!("cannot read {}", plan_path.display()))?;
    if let Some(ticked) = tick(&plan, args.review) {
        std::fs::write(&plan_path, ticked)?;
        let out = Cmd::new("git", &cwd)
            .args(["commit", "-q", "-a", "-m", "tick"])
            .output()
            .await?;
        anyhow::ensure!(out.success(), "git commit failed: {}", out.stderr_text());
    }
    log_line(args.log.as_deref(), "end")?;
    Ok(())
}

/// The gaps (ms) between one call's `end` and the next call's `start` in an agent log, and
/// the first `start` (ns).
pub(crate) fn gaps(log: &str) -> (Vec<f64>, Option<u128>) {
    let mut gaps = Vec::new();
    let mut first = None;
    let mut last_end: Option<u128> = None;
    for line in log.lines() {
        let Some((what, ns)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ns) = ns.parse::<u128>() else {
            continue;
        };
        match what {
            "start" => {
                first.get_or_insert(ns);
                if let Some(end) = last_end.take() {
                    gaps.push(ns.saturating_sub(end) as f64 / 1e6);
                }
            }
            "end" => last_end = Some(ns),
            _ => {}
        }
    }
    (gaps, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_works_open_tasks_then_reviews() {
        let plan = "- [ ] a\n- [ ] b\n";
        let once = tick(plan, false).unwrap();
        assert_eq!(once, "- [x] a\n- [ ] b\n");
        assert_eq!(tick(&once, false).unwrap(), "- [x] a\n- [x] b\n");
        assert_eq!(tick(&once, true).unwrap(), "- [R] a\n- [ ] b\n");
        assert_eq!(tick("- [x] a\n", false), None);
    }

    #[test]
    fn gaps_pair_each_end_with_the_next_start() {
        let log = "start 1000000\nend 2000000\nstart 5000000\nend 6000000\nstart 6500000\n";
        let (g, first) = gaps(log);
        assert_eq!(g, vec![3.0, 0.5]);
        assert_eq!(first, Some(1_000_000));
    }
}
