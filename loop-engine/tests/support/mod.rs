//! Test harness: a temp git repository with a spec and a plan, an engine wired to it, and
//! helpers to run to the end and inspect the result.

use std::sync::Arc;
use std::time::Duration;

use loop_engine::backend::{Executor, Store};
use loop_engine::domain::{Event, EventKind, Run, RunId, Step};
use loop_engine::engine::{CreateRun, Engine, EngineSettings};
use loop_engine::impls::{GitCli, MemoryStore};
use loop_engine::testing::GitFixture;

pub(crate) const SPEC: &str = "# Widget\n\nBuild the widget.\n";

pub(crate) fn plan(n: usize) -> String {
    let mut s = String::from("# Widget plan\n\n## Tasks\n");
    for i in 1..=n {
        s.push_str(&format!("- [ ] Task number {i}\n"));
    }
    s.push_str("\n```\n- [ ] not a task (fenced)\n```\n- [ ]? Manual check\n");
    s
}

pub(crate) struct Harness {
    pub(crate) repo: GitFixture,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) engine: Engine,
}

pub(crate) struct Setup {
    pub(crate) tasks: usize,
    pub(crate) config: Vec<(&'static str, String)>,
    pub(crate) commit_seed: bool,
    pub(crate) max_concurrency: u32,
    /// False: the engine's git sees no identity (as on a fresh machine).
    pub(crate) git_identity: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            tasks: 3,
            config: Vec::new(),
            commit_seed: true,
            max_concurrency: 3,
            git_identity: true,
        }
    }
}

impl Harness {
    pub(crate) fn new(setup: Setup, executor: impl Executor + 'static) -> Self {
        Self::with_executor(setup, Arc::new(executor))
    }

    /// The engine picks its executor from the run's config (`executor=command`, ...).
    pub(crate) fn without_executor(setup: Setup) -> Self {
        Self::build(setup, None)
    }

    pub(crate) fn with_executor(setup: Setup, executor: Arc<dyn Executor>) -> Self {
        Self::build(setup, Some(executor))
    }

    fn build(setup: Setup, executor: Option<Arc<dyn Executor>>) -> Self {
        let repo = GitFixture::new();
        let global = repo.root().join("global-logs");
        let mut config = format!(
            "# test config\nrun_naming_mode=spec_slug\nreviewer=false\nglobal_log_dir={}\nclaude_retry_backoff_sec=0\nclaude_transient_retries=0\npostmortem=false\n",
            global.display()
        );
        for (k, v) in &setup.config {
            config.push_str(&format!("{k}={v}\n"));
        }
        repo.write_file(".loop/config", &config);
        repo.write_file("specs/widget.md", SPEC);
        repo.write_file("specs/planning/widget-plan.md", &plan(setup.tasks));
        repo.write_file(".gitignore", "logs/\n");
        if setup.commit_seed {
            repo.commit_all("spec and plan");
        } else {
            repo.commit_file(".gitignore", "logs/\n", "ignore logs");
        }
        let store = Arc::new(MemoryStore::new());
        let mut builder = Engine::builder().store_arc(store.clone());
        if let Some(executor) = executor {
            builder = builder.executor_arc(executor);
        }
        let mut git_env = repo.env();
        if !setup.git_identity {
            git_env.retain(|(k, _)| !k.ends_with("_NAME") && !k.ends_with("_EMAIL"));
        }
        let engine = builder
            .vcs(GitCli::with_env(git_env))
            .settings(EngineSettings {
                worker_id: "test-worker".into(),
                max_concurrency: setup.max_concurrency,
                ..EngineSettings::default()
            })
            .build()
            .expect("engine builds");
        Self {
            repo,
            store,
            engine,
        }
    }

    pub(crate) fn request(&self) -> CreateRun {
        CreateRun {
            workspace_root: self.repo.path().to_path_buf(),
            spec_path: "specs/widget.md".into(),
            ..CreateRun::default()
        }
    }

    pub(crate) async fn create(&self) -> Run {
        self.engine
            .create_run(self.request())
            .await
            .expect("run is created")
            .run
    }

    /// Creates one run and drives everything to the end (with a generous time limit).
    pub(crate) async fn run_one(&self) -> Run {
        let run = self.create().await;
        self.drive().await;
        self.engine.get_run(run.id).await.expect("run exists")
    }

    pub(crate) async fn drive(&self) {
        tokio::time::timeout(Duration::from_secs(120), self.engine.run_until_idle())
            .await
            .expect("runs finish in time")
            .expect("engine runs");
    }

    pub(crate) async fn events(&self, id: RunId) -> Vec<Event> {
        self.store
            .events_after(id, 0, 100_000)
            .await
            .expect("events")
    }

    pub(crate) async fn kinds(&self, id: RunId) -> Vec<EventKind> {
        self.events(id).await.into_iter().map(|e| e.kind).collect()
    }

    pub(crate) async fn steps(&self, id: RunId) -> Vec<Step> {
        self.store.list_steps(id).await.expect("steps")
    }

    pub(crate) fn worktree_plan(&self, run: &Run) -> String {
        std::fs::read_to_string(run.worktree_path.join("specs/planning/widget-plan.md"))
            .expect("plan in worktree")
    }

    pub(crate) fn report_kinds(&self, run: &Run) -> Vec<String> {
        let path = run
            .workspace_root
            .join("logs/loop")
            .join(format!("run-{}", run.id))
            .join("report.tsv");
        let text = std::fs::read_to_string(&path).expect("report.tsv");
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .unwrap_or_default()
                .starts_with("timestamp_ms\tkind"),
            "report.tsv starts with its header"
        );
        lines
            .map(|l| l.split('\t').nth(1).unwrap_or_default().to_owned())
            .collect()
    }
}

/// The child-process marker of [`rerun_with_sandbox`].
const SANDBOX_CHILD_ENV: &str = "LOOP_SANDBOX_CHILD";

/// As root, the Claude executor refuses to start a CLI unless the engine's own environment has
/// `IS_SANDBOX=1`, and a test may not change its own environment. So a test of a (fake or
/// real) Claude CLI calls this first: as root without `IS_SANDBOX=1` it runs `test_name`
/// again in a child process whose environment has it (plus `extra_env`), checks that the
/// child passed, and returns true (the caller returns); otherwise it returns false and the
/// caller goes on in this process.
pub(crate) async fn rerun_with_sandbox(test_name: &str, extra_env: &[(&str, &str)]) -> bool {
    let root = loop_engine::process::effective_uid() == Some(0);
    let sandbox_ok = std::env::var("IS_SANDBOX").as_deref() == Ok("1");
    if !root || sandbox_ok || std::env::var_os(SANDBOX_CHILD_ENV).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = loop_engine::process::Cmd::new(&exe, std::env::temp_dir())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("IS_SANDBOX", "1")
        .env(SANDBOX_CHILD_ENV, "1")
        .timeout(Some(Duration::from_secs(600)));
    for (k, v) in extra_env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.output().await.expect("the test binary runs");
    let stdout = out.stdout_text();
    let stderr = out.stderr_text();
    assert!(out.success(), "child run failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
    true
}
