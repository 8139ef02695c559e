//! Crash-recovery chaos (issue 6): runs of 5 tasks each under `max_concurrency`, a scripted
//! agent whose steps take 50–500 ms, and `kill -9` of the daemon at seeded random moments
//! (during agent steps, verification, merges, event writes), restarting it each time. After
//! the last restart: every run ends `COMPLETED`; per run the event sequence is gap-free and
//! unique, every task is committed exactly once on the run branch, no two agents ever ran in
//! the same worktree at once, orphaned agents are gone, and the merge target holds the run's
//! work once.
//!
//! CI runs a short version (4 runs, 8 kills). `LOOP_CHAOS_LONG=1` runs the issue's full
//! version (10 runs, 30 kills); `LOOP_CHAOS_SEED=<n>` replays another schedule.

use std::path::Path;
use std::time::{Duration, Instant};

use loop_engine::domain::{RunId, RunStatus};
use loop_engine::testing::GitFixture;
use nix::sys::signal::Signal;

use super::{create_request, free_port, signal, start};

const TASKS: usize = 5;

/// The agent: checks that no other agent is alive in its worktree (pidfile), records start and
/// end with its pid, sleeps 50–500 ms, then ticks one task and commits it. Leftovers of a
/// predecessor killed mid-step are discarded first, as a fresh agent session would.
pub(super) fn agent_script(chaos: &Path) -> String {
    format!(
        r#"set -e
chaos={chaos}
name=$(pwd -P | tr '/' '_')
log="$chaos/$name.log"
pidf="$chaos/$name.pid"
if [ -e "$pidf" ]; then
  p=$(cat "$pidf")
  if [ -n "$p" ] && [ -r "/proc/$p/stat" ] && [ "$(sed 's/.*) //' "/proc/$p/stat" | cut -d' ' -f1)" != Z ] && grep -q agent.sh "/proc/$p/cmdline" 2>/dev/null; then
    echo "OVERLAP $$ $p" >> "$log"
  fi
fi
echo $$ > "$pidf"
echo "start $$ $(date +%s%N)" >> "$log"
git reset -q --hard 2>>"$log.err"
git clean -fdq 2>>"$log.err"
n=$(grep -c . "$log")
ms=$(( (n * 137) % 451 + 50 ))
sleep "$(printf '0.%03d' "$ms")"
plan=specs/planning/widget-plan.md
task=$(grep -m1 -- '- \[ \]' "$plan" | sed 's/- \[ \] //')
if [ -z "$task" ]; then
  echo "end $$ $(date +%s%N)" >> "$log"; rm -f "$pidf"
  echo '<promise>COMPLETE</promise>'; exit 0
fi
sed -i '0,/- \[ \]/s//- [x]/' "$plan"
echo "$task" >> work.txt
git add -A 2>>"$log.err"
git -c user.name=agent -c user.email=agent@localhost commit -qm "Implement: $task" 2>>"$log.err"
echo "end $$ $(date +%s%N)" >> "$log"
rm -f "$pidf"
if grep -q -- '- \[ \]' "$plan"; then echo "Completed $task."; else echo '<promise>COMPLETE</promise>'; fi
"#,
        chaos = chaos.display()
    )
}

/// A deterministic generator (xorshift64*) for the kill schedule.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn between_ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

pub(super) fn repo(chaos: &Path) -> GitFixture {
    let repo = GitFixture::new();
    let script = repo.root().join("agent.sh");
    std::fs::write(&script, agent_script(chaos)).expect("script");
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\nexecutor=command\nagent_cmd=sh {}\nmax_concurrency=3\nverify_cmds=test -f work.txt\n",
            script.display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    let plan: String = (1..=TASKS).map(|i| format!("- [ ] task {i}\n")).collect();
    repo.write_file("specs/planning/widget-plan.md", &plan);
    repo.commit_all("spec and plan");
    repo
}

pub(super) fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Pids of agents that are alive now, per the pidfiles.
pub(super) fn live_agents(chaos: &Path) -> Vec<i32> {
    std::fs::read_dir(chaos)
        .expect("chaos dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.trim().parse().ok())
        .filter(|p| pid_alive(*p))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_runs_nothing_twice() {
    let long = std::env::var("LOOP_CHAOS_LONG").is_ok_and(|v| v == "1");
    let (runs_n, kills) = if long { (10, 30) } else { (4, 8) };
    let seed = std::env::var("LOOP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE_u64);
    let mut rng = Rng(seed.max(1));
    let started = Instant::now();
    let chaos = tempfile::tempdir().expect("chaos dir");
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let repos: Vec<GitFixture> = (0..runs_n).map(|_| repo(chaos.path())).collect();

    let mut d = start(data.path(), port).await;
    let mut ids: Vec<RunId> = Vec::new();
    for r in &repos {
        ids.push(
            d.client
                .create_run(&create_request(r))
                .await
                .expect("created")
                .run
                .id,
        );
    }
    let mut orphans_at_kill = 0;
    let mut watched = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(rng.between_ms(150, 1500)).await;
        signal(&d.child, Signal::SIGKILL);
        let _ = d.child.wait().await;
        let orphans = live_agents(chaos.path());
        orphans_at_kill += orphans.len();
        watched.extend(orphans);
        d = start(data.path(), port).await;
    }

    // After the last restart everything finishes.
    let deadline = Instant::now() + Duration::from_secs(if long { 600 } else { 180 });
    for id in &ids {
        loop {
            let run = d.client.get_run(*id).await.expect("run");
            if run.status.is_terminal() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} stuck in {:?}",
                run.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut events_checked = 0;
    let mut interrupted_steps = 0;
    let mut killed_by_recovery = 0;
    let mut agent_starts = 0;
    for (repo, id) in repos.iter().zip(&ids) {
        let run = d.client.get_run(*id).await.expect("run");
        // Events: 1..=n, each once, in order.
        let mut events = d.client.events(*id, None).await.expect("events");
        let mut expected = 1;
        let mut trail = Vec::new();
        while let Some(ev) = events.next().await.expect("event") {
            if matches!(
                ev.kind.as_str(),
                "RECOVERY_CLEANUP" | "STEP_STARTED" | "RUN_STARTED"
            ) {
                trail.push(format!("{} {}", ev.kind, ev.data["payload"]));
            }
            assert_eq!(ev.seq, expected, "run {id}: gap or repeat in events");
            if ev.kind == "RECOVERY_CLEANUP" && !ev.data["payload"]["killed_agent_pid"].is_null() {
                killed_by_recovery += 1;
            }
            expected += 1;
        }
        events_checked += expected - 1;
        let steps = d.client.steps(*id).await.expect("steps");
        interrupted_steps += steps
            .iter()
            .filter(|s| s.reason.as_deref() == Some("interrupted"))
            .count();
        assert!(
            steps.iter().all(|s| s.status != "IN_PROGRESS"),
            "{steps:#?}"
        );
        // No two agents at once in this worktree.
        let name = std::fs::canonicalize(&run.worktree_path)
            .expect("worktree")
            .display()
            .to_string()
            .replace('/', "_");
        let agent_log =
            std::fs::read_to_string(chaos.path().join(format!("{name}.log"))).expect("agent log");
        assert!(
            !agent_log.contains("OVERLAP"),
            "run {id}:\n{agent_log}\n{}",
            trail.join("\n")
        );
        assert_eq!(
            run.status,
            RunStatus::Completed,
            "{:?}\n{agent_log}\n{}\n{}\n{}",
            run.failure,
            std::fs::read_to_string(chaos.path().join(format!("{name}.log.err")))
                .unwrap_or_default(),
            trail.join("\n"),
            repo.git_in(&run.worktree_path, ["status", "--short"])
        );
        agent_starts += agent_log.lines().filter(|l| l.starts_with("start")).count();
        // Every task committed exactly once on the run branch.
        let log = repo.git(["log", "--format=%s", &run.run_branch]);
        for i in 1..=TASKS {
            let n = log
                .lines()
                .filter(|l| *l == format!("Implement: task {i}"))
                .count();
            assert_eq!(n, 1, "run {id}: task {i} committed {n} times:\n{log}");
        }
        // The merge target holds the run's work once: one squash commit, each task once.
        let target = run.merge_target_branch.clone().expect("target");
        let work = repo.file_at(&target, "work.txt").expect("work merged");
        for i in 1..=TASKS {
            assert_eq!(
                work.lines().filter(|l| *l == format!("task {i}")).count(),
                1,
                "run {id}: {target} has task {i} not exactly once:\n{work}"
            );
        }
        let merges = repo.git(["log", "--format=%s", &format!("main..{target}")]);
        assert_eq!(merges.lines().count(), 1, "{target}:\n{merges}");
    }
    // Agents orphaned by a kill are gone (killed by recovery, or finished on their own).
    for pid in &watched {
        assert!(!pid_alive(*pid), "orphaned agent {pid} still alive");
    }
    eprintln!(
        "chaos (seed {seed:#x}): {kills} kill -9 points, {runs_n} runs, {} tasks, {agent_starts} agent starts, \
         {events_checked} events checked, {interrupted_steps} interrupted steps, {orphans_at_kill} agents orphaned at kill time, \
         {killed_by_recovery} killed by recovery, {:?}",
        runs_n * TASKS,
        started.elapsed()
    );
    assert!(interrupted_steps > 0, "the kills hit running steps");
    signal(&d.child, Signal::SIGTERM);
    d.child.wait().await.expect("exits");
}
