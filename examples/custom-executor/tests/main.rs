//! The template executor drives a shell script that stands in for another agent CLI: through a
//! whole run on a temporary repository, and call by call against the `Executor` contract
//! (streaming, idle timeout, cancellation).

use custom_executor::ScriptAgent;
use loop_engine::domain::{ExitReason, RunStatus};
use loop_engine::engine::{CreateRun, Engine};
use loop_engine::impls::{GitCli, MemoryStore};
use loop_engine::testing::GitFixture;

const AGENT: &str = r#"#!/bin/sh
# Stand-in agent: tick the first open task, commit, answer like a real agent would.
set -e
plan=specs/planning/demo-plan.md
sed -i '0,/- \[ \]/s//- [x]/' "$plan"
echo "work for $(grep -c -- '- \[x\]' "$plan")" >> work.txt
git add -A
git -c user.name=agent -c user.email=agent@localhost commit -qm "agent: one task"
if grep -q -- '- \[ \]' "$plan"; then echo "Completed a task. more remain."; else echo '<promise>COMPLETE</promise>'; fi
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_agent_completes_a_plan() {
    let repo = GitFixture::new();
    repo.write_file(
        ".loop/config",
        "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\n",
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/demo.md", "# Demo\n");
    repo.write_file("specs/planning/demo-plan.md", "- [ ] one\n- [ ] two\n");
    repo.commit_all("spec and plan");
    let script = repo.root().join("agent.sh");
    std::fs::write(&script, AGENT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The script ignores the prompt file it is given; a real CLI would read it.
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor(ScriptAgent::new(&script))
        .vcs(GitCli::with_env(repo.env()))
        .build()
        .unwrap();
    let run = engine
        .create_run(CreateRun {
            workspace_root: repo.path().to_path_buf(),
            spec_path: "specs/demo.md".into(),
            ..CreateRun::default()
        })
        .await
        .unwrap()
        .run;
    engine.run_until_idle().await.unwrap();
    let run = engine.get_run(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    assert_eq!(run.tasks_done, 2);
    // The work is on the merge target; the user's checkout stays on its branch.
    let target = run.merge_target_branch.clone().expect("a merge target");
    assert!(
        repo.file_at(&target, "work.txt").is_some(),
        "the work was merged into {target}"
    );
}

/// The template keeps the process half of the `Executor` contract: these call it directly, as
/// the engine does, with scripts that stand in for an agent CLI.
mod contract {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use custom_executor::ScriptAgent;
    use loop_engine::backend::{
        ExecContext, ExecPurpose, ExecRequest, ExecSignal, Executor, FailureKind, OutputStream,
        Termination, Verdict,
    };
    use loop_engine::domain::{RunId, StepId};
    use tokio::sync::mpsc::UnboundedReceiver;
    use tokio_util::sync::CancellationToken;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("agent.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("make the script executable");
        path
    }

    fn request(dir: &Path) -> ExecRequest {
        ExecRequest {
            run_id: RunId::new(),
            step_id: StepId::new(),
            purpose: ExecPurpose::Implementation,
            label: "1".into(),
            prompt: "tick the first task".into(),
            model: "model-x".into(),
            workdir: dir.to_path_buf(),
            log_path: dir.join("logs/iter-01.log"),
            timeout: Some(Duration::from_secs(60)),
            idle_timeout: None,
            env: vec![("EXTRA".into(), "from-the-request".into())],
            limits: Default::default(),
        }
    }

    fn context() -> (
        ExecContext,
        UnboundedReceiver<ExecSignal>,
        CancellationToken,
    ) {
        let cancel = CancellationToken::new();
        let (output, _) = tokio::sync::broadcast::channel(64);
        let (signals, rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = ExecContext {
            output,
            signals,
            cancel: cancel.clone(),
        };
        (ctx, rx, cancel)
    }

    fn spawned_pid(rx: &mut UnboundedReceiver<ExecSignal>) -> u32 {
        match rx.try_recv() {
            Ok(ExecSignal::Spawned { pid, .. }) => pid,
            other => panic!("expected Spawned, got {other:?}"),
        }
    }

    /// True while `pid` is a live process (not gone, not a zombie).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|s| s.starts_with('Z'))
        })
    }

    /// Waits (up to 3 s) for `pid` to die.
    async fn dies(pid: u32) -> bool {
        for _ in 0..150 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn read_pid(path: &Path) -> u32 {
        for _ in 0..300 {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no pid in {}", path.display());
    }

    #[tokio::test]
    async fn output_streams_while_the_agent_runs() {
        let dir = tempfile::tempdir().unwrap();
        let agent = ScriptAgent::new(script(
            dir.path(),
            r#"echo "prompt: $(cat "$1") for $AGENT_MODEL $EXTRA"; sleep 1; echo done >&2; echo second"#,
        ));
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        let mut chunks = ctx.output.subscribe();
        let call = tokio::spawn({
            let (req, ctx) = (req.clone(), ctx.clone());
            async move {
                let outcome = agent.execute(req, ctx).await;
                (outcome, Instant::now())
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(10), chunks.recv())
            .await
            .expect("output arrives before the agent ends")
            .unwrap();
        let first_at = Instant::now();
        assert_eq!(first.step_id, req.step_id);
        assert_eq!(first.offset, 0);
        assert_eq!(first.stream, OutputStream::Stdout);
        assert_eq!(
            &first.data[..],
            b"prompt: tick the first task for model-x from-the-request\n"
        );
        // The log holds what was published, before the agent has finished.
        assert_eq!(std::fs::read(&req.log_path).unwrap(), first.data.to_vec());
        let (outcome, ended_at) = call.await.unwrap();
        let outcome = outcome.unwrap();
        assert!(
            ended_at - first_at >= Duration::from_millis(700),
            "the first chunk came {:?} before the end",
            ended_at - first_at
        );
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(outcome.termination, Some(Termination::Exited));
        assert_eq!(outcome.stderr_tail, "done\n");
        assert!(outcome.output_text.ends_with("second\n"));
        assert_eq!(outcome.output_lines, 3);
        let log = std::fs::read(&req.log_path).unwrap();
        assert_eq!(log.len() as u64, outcome.output_bytes);
        assert!(ScriptAgent::new("x").judge(&outcome).is_success());
    }

    #[tokio::test]
    async fn a_silent_agent_is_stopped_by_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let agent = ScriptAgent::new(script(
            dir.path(),
            "echo working; sleep 300 & echo $! > bg.pid; wait",
        ));
        let mut req = request(dir.path());
        req.idle_timeout = Some(Duration::from_millis(400));
        let (ctx, mut rx, _) = context();
        let started = Instant::now();
        let outcome = agent.execute(req, ctx).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(outcome.termination, Some(Termination::IdleTimedOut));
        assert_eq!(outcome.exit_code, 124);
        assert_eq!(outcome.output_text, "working\n");
        match ScriptAgent::new("x").judge(&outcome) {
            Verdict::Failure { kind, .. } => assert_eq!(kind, FailureKind::Timeout),
            Verdict::Success => panic!("an idle timeout is a failure"),
        }
        let pid = spawned_pid(&mut rx);
        let bg = read_pid(&dir.path().join("bg.pid")).await;
        assert!(dies(pid).await, "agent {pid} survived");
        assert!(dies(bg).await, "its background process {bg} survived");
    }

    #[tokio::test]
    async fn cancel_stops_the_agent_and_what_it_started_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let agent = ScriptAgent::new(script(
            dir.path(),
            "sleep 300 & echo $! > bg.pid; echo started; sleep 300",
        ));
        let req = request(dir.path());
        let (ctx, mut rx, cancel) = context();
        let mut chunks = ctx.output.subscribe();
        let started = Instant::now();
        let (outcome, ()) = tokio::join!(agent.execute(req, ctx.clone()), async {
            // Cancel once the agent is demonstrably running.
            let _ = chunks.recv().await;
            cancel.cancel();
        });
        let outcome = outcome.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(outcome.termination, Some(Termination::Canceled));
        assert_eq!(outcome.exit_code, 130);
        let pid = spawned_pid(&mut rx);
        let bg = read_pid(&dir.path().join("bg.pid")).await;
        assert!(dies(pid).await, "agent {pid} survived");
        assert!(dies(bg).await, "its background process {bg} survived");
    }

    #[tokio::test]
    async fn a_missing_program_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let agent = ScriptAgent::new(dir.path().join("no-such-agent"));
        let (ctx, _rx, _) = context();
        let err = agent.execute(request(dir.path()), ctx).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no-such-agent"), "{text}");
        assert!(text.contains("ScriptAgent program"), "{text}");
    }
}
