//! loopd's own CPU per agent call as the machine's process count grows (issue 18): the same
//! instant-agent plan through loopd with the processes the machine has (~200 on a quiet box)
//! and with 3,000 idle processes added, with agents contained by cgroup and by the
//! process-group fallback (`LOOP_NO_CGROUP=1`). CPU is the daemon's utime + stime over the
//! whole run divided by the agent calls; the gap is the agent-logged time from one call's end
//! to the next call's start.

use anyhow::{Context, ensure};
use loop_engine::process::{Cmd, Signal, signal_group};
use tokio::io::AsyncBufReadExt;

use crate::Ctx;
use crate::agent::gaps;
use crate::harness::{Daemon, median, workspace};
use crate::report::Report;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// Processes on the machine now (entries of `/proc` that are pids).
fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// `n` idle `sleep` processes in one process group, killed on [`Idlers::stop`].
struct Idlers {
    child: tokio::process::Child,
    pgid: u32,
}

impl Idlers {
    async fn spawn(n: usize) -> anyhow::Result<Self> {
        let script = format!(
            "i=0; while [ $i -lt {n} ]; do sleep 3600 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; echo ready; wait"
        );
        let mut child = Cmd::new("sh", "/")
            .args(["-c", &script])
            .to_tokio()
            .spawn()
            .context("cannot start the idle processes")?;
        let pgid = child.id().context("the idle spawner exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await?;
        ensure!(line.trim() == "ready", "the idle spawner said {line:?}");
        Ok(Self { child, pgid })
    }

    /// Kills them and waits (30 s at most) until the machine is back to about `before`
    /// processes: their zombies are init's to reap, and the next arm must not be measured with
    /// 3,000 of them still in `/proc`.
    async fn stop(mut self, before: usize) {
        signal_group(self.pgid, Signal::Kill);
        let _ = self.child.wait().await;
        for _ in 0..300 {
            if process_count() <= before + 50 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Figures of one daemon over `reps` runs of `tasks` instant agent calls.
struct Arm {
    cpu_ms_per_call: f64,
    gap_ms: f64,
    processes: usize,
}

async fn measure(ctx: &Ctx, daemon: &Daemon, label: &str, tasks: usize) -> anyhow::Result<Arm> {
    let mut per_call = Vec::new();
    let mut all_gaps = Vec::new();
    let mut processes = Vec::new();
    for rep in 0..ctx.reps {
        let dir = ctx.tmp.path().join(format!("procs-{label}-{rep}"));
        let ws = dir.join("ws");
        let log = dir.join("agent.log");
        let config = format!(
            "executor=command\nagent_cmd={} agent --log {} {{prompt_file}}\n",
            ctx.bins.bench.display(),
            log.display()
        );
        workspace(&ws, tasks, &config).await?;
        processes.push(process_count() as f64);
        let before = daemon.sample().cpu_ticks;
        let id = daemon.start_run(&ctx.bins, &ws, "specs/bench.md").await?;
        daemon
            .loopctl(&ctx.bins, &ws, &["wait", &id])
            .await
            .with_context(|| format!("run {id} did not complete"))?;
        let after = daemon.sample().cpu_ticks;
        let (g, _) = gaps(&std::fs::read_to_string(&log)?);
        let calls = g.len() + 1;
        ensure!(
            calls >= tasks,
            "loopd made {calls} agent calls, expected {tasks}"
        );
        per_call.push((after - before) as f64 / TICKS_PER_SEC * 1000.0 / calls as f64);
        all_gaps.extend(g);
        crate::say(&format!(
            "    {label} rep {rep}: {:.2} ms loopd CPU per call, {} processes",
            per_call[rep], processes[rep]
        ));
    }
    Ok(Arm {
        cpu_ms_per_call: median(&per_call),
        gap_ms: median(&all_gaps),
        processes: median(&processes) as usize,
    })
}

async fn mode(
    ctx: &Ctx,
    report: &mut Report,
    containment: &str,
    env: &[(&str, &str)],
    tasks: usize,
    idle: usize,
) -> anyhow::Result<()> {
    let bench = "procs";
    let daemon = Daemon::start_with_env(
        &ctx.bins,
        &ctx.tmp.path().join(format!("procs-data-{containment}")),
        &[],
        env,
    )
    .await?;
    let health = daemon.client.health().await?;
    if health.containment != containment {
        report.notes.push(format!(
            "procs: loopd contains agents by {} here, so the {containment} rows are missing",
            health.containment
        ));
        daemon.stop().await?;
        return Ok(());
    }
    crate::say(&format!(
        "procs: {containment}: {tasks} instant agent calls, {} reps, then with {idle} idle processes added",
        ctx.reps
    ));
    let base = measure(ctx, &daemon, &format!("{containment}-base"), tasks).await?;
    let before = process_count();
    let idlers = Idlers::spawn(idle).await?;
    let loaded = measure(ctx, &daemon, &format!("{containment}-idle"), tasks).await;
    idlers.stop(before).await;
    let loaded = loaded?;
    daemon.stop().await?;
    let growth = loaded.cpu_ms_per_call / base.cpu_ms_per_call;
    if containment == "cgroup" {
        report.at_most(
            bench,
            &format!(
                "loopd CPU per agent call, cgroup, {} processes",
                base.processes
            ),
            base.cpu_ms_per_call,
            2.0,
            "ms",
        );
        report.at_most(
            bench,
            &format!(
                "loopd CPU per agent call, cgroup, {} processes (+{idle} idle)",
                loaded.processes
            ),
            loaded.cpu_ms_per_call,
            2.0,
            "ms",
        );
        report.at_most(
            bench,
            &format!("cgroup: growth with +{idle} idle processes"),
            growth,
            1.3,
            "x",
        );
    } else {
        report.info(
            bench,
            &format!(
                "loopd CPU per agent call, {containment}, {} processes",
                base.processes
            ),
            format!("{:.2} ms", base.cpu_ms_per_call),
        );
        report.info(
            bench,
            &format!(
                "loopd CPU per agent call, {containment}, {} processes (+{idle} idle)",
                loaded.processes
            ),
            format!("{:.2} ms", loaded.cpu_ms_per_call),
        );
        report.info(
            bench,
            &format!("{containment}: growth with +{idle} idle processes"),
            format!("{growth:.2} x"),
        );
    }
    report.info(
        bench,
        &format!(
            "median gap between calls, {containment}, {} processes",
            base.processes
        ),
        format!("{:.2} ms", base.gap_ms),
    );
    report.info(
        bench,
        &format!(
            "median gap between calls, {containment}, {} processes (+{idle} idle)",
            loaded.processes
        ),
        format!("{:.2} ms", loaded.gap_ms),
    );
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let tasks = if ctx.quick { 5 } else { 100 };
    let idle = if ctx.quick { 100 } else { 3000 };
    mode(ctx, report, "cgroup", &[], tasks, idle).await?;
    mode(
        ctx,
        report,
        "process-group",
        &[(loop_engine::process::NO_CGROUP_ENV, "1")],
        tasks,
        idle,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_processes() {
        assert!(super::process_count() >= 1);
    }
}
