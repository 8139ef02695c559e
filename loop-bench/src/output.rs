//! Large output (issue 7 §5): an agent printing hundreds of megabytes; the daemon's peak RSS
//! while it runs, and whether the step log on disk holds every byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::Ctx;
use crate::harness::{Daemon, rss_kib, wait_terminal, workspace};
use crate::report::Report;

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mb: u64 = if ctx.quick { 5 } else { 500 };
    let bytes = mb * 1_000_000;
    crate::say(&format!("output: an agent printing {mb} MB"));
    let dir = ctx.tmp.path().join("output");
    let ws = dir.join("ws");
    workspace(
        &ws,
        1,
        &format!(
            "executor=command\nagent_cmd={} agent --bytes {bytes} {{prompt_file}}\n",
            ctx.bins.bench.display()
        ),
    )
    .await?;
    let daemon = Daemon::start(&ctx.bins, &dir.join("data"), &[]).await?;
    let peak = Arc::new(AtomicU64::new(daemon.rss_kib()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), daemon.pid);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let id = daemon.start_run(&ctx.bins, &ws, "specs/bench.md").await?;
    let status = wait_terminal(&daemon.client, &id, Duration::from_secs(600)).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let status = status?;
    let steps = daemon.client.steps(id.parse()?).await?;
    daemon.stop().await?;
    let log_size = steps
        .iter()
        .filter_map(|s| s.output_path.as_ref())
        .filter_map(|p| {
            std::fs::metadata(if p.is_absolute() {
                p.clone()
            } else {
                ws.join(p)
            })
            .ok()
        })
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    let bench = "output";
    report.check(
        bench,
        &format!("run with a {mb} MB agent completed"),
        status == "COMPLETED",
        status,
    );
    report.at_most(
        bench,
        &format!("daemon peak RSS during {mb} MB of output"),
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        64.0,
        "MiB",
    );
    report.check(
        bench,
        "step log on disk holds every byte",
        log_size >= bytes,
        format!("{log_size} B"),
    );
    Ok(())
}
