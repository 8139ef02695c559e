//! report.tsv in the seed's vocabulary (issue 13 items 6–8, SPEC §7): a real run's report
//! (the simulated agent, real git) read the way the seed's `bin/loop-analyze` reads it, rows
//! carrying the plan's counts after their step, and a run that fails before any agent ran
//! saying why in its folder.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use loop_engine::backend::ExecPurpose;
use loop_engine::domain::{Run, RunStatus};
use loop_engine::impls::SimulatedAgent;
use loop_engine::testing::{Act, ScriptedExecutor};

use crate::support::{Harness, Setup};

/// The header of report.tsv, column by column (SPEC §7).
const COLUMNS: [&str; 11] = [
    "timestamp_ms",
    "kind",
    "iteration",
    "duration_ms",
    "exit_code",
    "output_bytes",
    "output_lines",
    "output_path",
    "message",
    "tasks_done",
    "tasks_total",
];

/// One report.tsv row, its fields by column name.
#[derive(Debug)]
struct Row(HashMap<&'static str, String>);

impl Row {
    fn get(&self, column: &str) -> &str {
        self.0
            .get(column)
            .map_or_else(|| panic!("no column {column}"), String::as_str)
    }

    fn kind(&self) -> &str {
        self.get("kind")
    }

    fn message(&self) -> &str {
        self.get("message")
    }

    fn number(&self, column: &str) -> Option<i64> {
        let text = self.get(column);
        (!text.is_empty()).then(|| {
            text.parse()
                .unwrap_or_else(|_| panic!("{column} `{text}` is not a number: {self:?}"))
        })
    }

    fn tasks(&self) -> (i64, i64) {
        (
            self.number("tasks_done").expect("tasks_done"),
            self.number("tasks_total").expect("tasks_total"),
        )
    }

    /// A message matched whole as `key=value` (how the seed's tools read every message but
    /// RUN_START's): the value, when the message is exactly `key=<value>`.
    fn whole(&self, key: &str) -> Option<&str> {
        self.message().strip_prefix(key)?.strip_prefix('=')
    }
}

/// The seed's analysis of a run folder, in its spirit: the header must be the SPEC §7 header,
/// every row has all 11 fields, RUN_START's message is split on spaces into `key=value`.
struct Analysis {
    rows: Vec<Row>,
}

impl Analysis {
    fn read(folder: &Path) -> Self {
        let text = std::fs::read_to_string(folder.join("report.tsv")).expect("report.tsv");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("a header").split('\t').collect();
        assert_eq!(header, COLUMNS, "report.tsv header");
        let rows = lines
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), COLUMNS.len(), "a whole row: {line:?}");
                Row(COLUMNS
                    .iter()
                    .copied()
                    .zip(fields.iter().map(|f| (*f).to_owned()))
                    .collect())
            })
            .collect();
        Self { rows }
    }

    fn of(&self, kind: &str) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.kind() == kind).collect()
    }

    fn one(&self, kind: &str) -> &Row {
        let rows = self.of(kind);
        assert_eq!(rows.len(), 1, "one {kind} row: {rows:?}");
        rows[0]
    }

    /// RUN_START's message split on spaces, as the seed does.
    fn run_start(&self) -> HashMap<String, String> {
        self.one("RUN_START")
            .message()
            .split(' ')
            .map(|pair| {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("`{pair}` of RUN_START is not key=value"));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}

fn folder(run: &Run) -> PathBuf {
    run.workspace_root
        .join("logs/loop")
        .join(format!("run-{}", run.id))
}

fn summary(run: &Run) -> serde_json::Value {
    let text = std::fs::read_to_string(folder(run).join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_reads_with_the_seed_vocabulary() {
    let h = Harness::new(
        Setup {
            tasks: 3,
            config: vec![
                ("verify_cmds", "true | test -d specs".into()),
                ("model", "sonnet".into()),
            ],
            ..Setup::default()
        },
        SimulatedAgent::new(),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let a = Analysis::read(&folder(&run));

    let start = a.run_start();
    assert_eq!(
        start.get("spec").map(PathBuf::from),
        Some(run.spec_path.clone())
    );
    assert_eq!(
        start.get("plan").map(PathBuf::from),
        Some(run.plan_path.clone())
    );
    assert_eq!(start.get("iterations").map(String::as_str), Some("50"));
    assert_eq!(start.get("model").map(String::as_str), Some("sonnet"));
    assert_eq!(start.get("mode").map(String::as_str), Some("trailing"));

    let prompt = a.one("PROMPT_SNAPSHOT");
    assert_eq!(prompt.message(), "prompt");
    assert!(
        prompt.get("output_path").ends_with("prompt.txt"),
        "{prompt:?}"
    );

    // One implementation step per task; each ITERATION_END carries the counts its step
    // left, the last one the finished plan.
    let ends = a.of("ITERATION_END");
    assert_eq!(
        ends.iter().map(|r| r.tasks()).collect::<Vec<_>>(),
        vec![(1, 3), (2, 3), (3, 3)],
        "{ends:?}"
    );
    for end in &ends {
        assert_eq!(end.message(), "", "a successful step: {end:?}");
        assert_eq!(end.number("exit_code"), Some(0));
        assert!(end.number("duration_ms").is_some(), "{end:?}");
        assert!(end.number("output_bytes").is_some(), "{end:?}");
        assert!(end.number("output_lines").is_some(), "{end:?}");
        assert!(end.get("output_path").ends_with(".log"), "{end:?}");
    }
    for start in a.of("ITERATION_START") {
        assert_eq!(start.message(), "", "{start:?}");
    }
    for tail in a.of("ITERATION_TAIL") {
        assert_eq!(tail.message(), "last 200 lines");
        assert!(tail.get("output_path").ends_with(".tail.txt"), "{tail:?}");
        let written = std::fs::read(tail.get("output_path")).expect("the tail file");
        assert_eq!(tail.number("output_bytes"), Some(written.len() as i64));
        assert!(tail.number("output_lines").is_some(), "{tail:?}");
    }

    let complete = a.one("COMPLETE_DETECTED");
    assert!(
        matches!(complete.whole("mode"), Some("exact" | "trailing")),
        "{complete:?}"
    );
    assert_eq!(complete.get("iteration"), "3");
    assert_eq!(complete.tasks(), (3, 3), "the count after its step");
    assert!(
        complete.get("output_path").ends_with(".log"),
        "{complete:?}"
    );

    // Verification: every start says how many commands, every command is `cmd=`, every end
    // has a status; the gate after each step and the final one passed.
    for s in a.of("VERIFY_START") {
        assert_eq!(s.whole("cmds"), Some("2"), "{s:?}");
    }
    let cmds: Vec<&str> = a
        .of("VERIFY_CMD_END")
        .iter()
        .filter_map(|r| r.whole("cmd"))
        .collect();
    assert!(cmds.contains(&"true"), "{cmds:?}");
    assert!(cmds.contains(&"test -d specs"), "{cmds:?}");
    for r in a.of("VERIFY_CMD_END") {
        assert_eq!(r.number("exit_code"), Some(0));
        assert!(r.number("output_lines").is_some(), "{r:?}");
    }
    let verify_ends = a.of("VERIFY_END");
    assert!(!verify_ends.is_empty());
    for v in &verify_ends {
        assert_eq!(v.whole("status"), Some("ok"), "{v:?}");
        assert_eq!(v.number("exit_code"), Some(0));
    }
    for skip in a.of("VERIFY_SKIP") {
        assert_eq!(skip.whole("reason"), Some("no_changes"), "{skip:?}");
    }

    let end = a.one("RUN_END");
    assert_eq!(end.whole("reason"), Some("complete_plan"));
    assert_eq!(end.get("iteration"), "3", "iterations run");
    assert_eq!(
        end.number("exit_code"),
        Some(0),
        "the last agent's exit code"
    );
    assert!(end.number("duration_ms").is_some(), "{end:?}");
    assert_eq!(end.tasks(), (3, 3));
    assert!(a.of("RUN_FAILURE").is_empty());
    // Every kind the engine adds keeps the key=value style (the seed's words are exact).
    for r in &a.rows {
        let m = r.message();
        let seed_words = matches!(m, "" | "prompt" | "last 200 lines");
        assert!(
            seed_words || m.split(' ').next().is_some_and(|w| w.contains('=')),
            "{r:?}"
        );
    }
    assert_eq!(summary(&run)["last_exit_code"], 0);
}

/// A completion token sent with tasks pending is detected in its mode, the row shows the
/// counts (nothing done yet), and the warning says how many are pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_tasks_pending_is_reported_with_its_counts() {
    let exec = ScriptedExecutor::new(vec![
        (
            ExecPurpose::Implementation,
            Act::Reply("All done.\n<promise>COMPLETE</promise>".into()),
        ),
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Implementation, Act::Agent),
    ]);
    let h = Harness::new(
        Setup {
            tasks: 2,
            config: vec![("merge_strategy", "none".into())],
            ..Setup::default()
        },
        exec,
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let a = Analysis::read(&folder(&run));
    let detected = a.of("COMPLETE_DETECTED");
    assert_eq!(detected.len(), 2, "{detected:?}");
    assert_eq!(detected[0].whole("mode"), Some("trailing"));
    assert_eq!(detected[0].tasks(), (0, 2));
    let warn = a.one("WARN_COMPLETE_WITH_PENDING");
    assert_eq!(warn.whole("pending"), Some("2"));
    assert_eq!(warn.get("iteration"), "1");
    assert_eq!(detected[1].tasks(), (2, 2));
}

/// A malformed token is reported with the head of the output, on one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_token_is_reported_with_the_output_head() {
    let exec = ScriptedExecutor::new(vec![
        (
            ExecPurpose::Implementation,
            Act::Reply("Not yet.\n<promise>COMPLETE</promise> (I think)".into()),
        ),
        (ExecPurpose::Implementation, Act::Agent),
    ]);
    let h = Harness::new(
        Setup {
            tasks: 1,
            config: vec![("merge_strategy", "none".into())],
            ..Setup::default()
        },
        exec,
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let a = Analysis::read(&folder(&run));
    let warn = a.one("WARN_MALFORMED_COMPLETE");
    assert_eq!(
        warn.whole("output_head"),
        Some("Not yet. <promise>COMPLETE</promise> (I think)")
    );
}

/// A run whose worktree cannot be made fails before any agent ran; its folder says why: a
/// RUN_FAILURE row with the failure, RUN_END with the reason and the run's exit code, and a
/// complete summary.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_any_agent_says_why_in_the_run_folder() {
    // No script: any agent call would be an unexpected one.
    let exec = ScriptedExecutor::new(Vec::new());
    let h = Harness::new(Setup::default(), exec.clone());
    let run = h.create().await;
    assert!(
        !run.worktree_path.as_os_str().is_empty(),
        "the worktree path is known at creation"
    );
    // A file where the worktree goes: git cannot add the worktree there.
    std::fs::write(&run.worktree_path, "in the way\n").expect("a file in the way");
    h.drive().await;
    let run = h.engine.get_run(run.id).await.expect("the run");
    assert_eq!(run.status, RunStatus::Failed);
    assert!(exec.received().is_empty(), "no agent ran");
    let failure = run.failure.clone().expect("a failure");
    assert!(failure.contains("cannot prepare worktree"), "{failure}");

    let a = Analysis::read(&folder(&run));
    let why = a.one("RUN_FAILURE");
    assert_eq!(
        why.message(),
        format!(
            "reason=failed failure={}",
            failure.replace(['\n', '\t'], " ")
        )
    );
    let end = a.one("RUN_END");
    assert_eq!(end.whole("reason"), Some("failed"));
    assert_eq!(end.number("exit_code"), Some(1), "the run's own exit code");
    assert!(a.of("ITERATION_START").is_empty());
    let kinds: Vec<&str> = a.rows.iter().map(Row::kind).collect();
    assert_eq!(kinds, ["RUN_START", "RUN_FAILURE", "RUN_END"]);

    let s = summary(&run);
    assert_eq!(s["exit_reason"], "failed");
    assert_eq!(s["last_exit_code"], 1);
    assert_eq!(s["failure"], failure.as_str());
    assert_eq!(s["iterations_run"], 0);
    assert!(s["last_iteration_log"].is_null(), "{s}");
}

/// An agent that cannot be started (its program is gone by the time the run starts) leaves
/// an ITERATION_END row saying why (no exit code: no process ran), the failure row and a
/// RUN_END with the run's own exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_start_leaves_its_reason_in_the_report() {
    let tools = tempfile::tempdir().expect("a temp dir");
    let agent = tools.path().join("agent.sh");
    std::fs::write(&agent, "#!/bin/sh\necho hi\n").expect("the agent script");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))
        .expect("the agent script is executable");
    let h = Harness::without_executor(Setup {
        config: vec![
            ("executor", "command".into()),
            ("agent_cmd", format!("{} {{prompt_file}}", agent.display())),
        ],
        ..Setup::default()
    });
    let run = h.create().await;
    std::fs::remove_file(&agent).expect("the agent is gone");
    h.drive().await;
    let run = h.engine.get_run(run.id).await.expect("the run");
    assert_eq!(run.status, RunStatus::Failed);
    let a = Analysis::read(&folder(&run));
    let end = a.one("ITERATION_END");
    let reason = end.whole("reason").expect("ITERATION_END says why");
    assert!(reason.contains("agent.sh"), "{end:?}");
    assert_eq!(end.number("exit_code"), None, "no process ran: {end:?}");
    assert_eq!(end.tasks(), (0, 3));
    let why = a.one("RUN_FAILURE");
    assert!(
        why.message().starts_with("reason=claude_failed failure="),
        "{why:?}"
    );
    let run_end = a.one("RUN_END");
    assert_eq!(run_end.whole("reason"), Some("claude_failed"));
    assert_eq!(run_end.number("exit_code"), Some(1));
    assert_eq!(summary(&run)["last_exit_code"], 1);
}
