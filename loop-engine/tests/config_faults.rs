//! Config faults (issue 6): every config key given a wrong value in `.loop/config` is refused
//! when the run is created, with an error naming the key, the value and the file, and nothing
//! is scheduled, branched or run.

use loop_engine::backend::{RunFilter, Store};
use loop_engine::config::KEY_SPECS;
use loop_engine::impls::SimulatedAgent;

use crate::support::{Harness, Setup};

/// A value `key` must refuse, derived from what the key accepts; `None` for keys whose every
/// value is valid at creation time (free text such as a model name).
fn wrong_value(key: &str, accepts: &str) -> Option<&'static str> {
    match (key, accepts) {
        // Free text and paths whose problems only show when used: any text is acceptable.
        ("context_files" | "verify_cmds" | "setup_cmds", _) => None,
        // Free text, but never loopd's own variables.
        ("agent_env", _) => Some("LOOPD_TOKEN"),
        // Extra CLI arguments, split like a shell would: an unclosed quote cannot be.
        ("codex_args" | "gemini_args", _) => Some("--flag 'unclosed"),
        // Free text that must parse as a size or a number of CPUs.
        ("agent_memory_max", _) => Some("lots"),
        ("agent_cpu_max", _) => Some("-1"),
        // Free text, but an http:// URL / an `env:` secret must name something.
        ("notify_webhook_url", _) => Some("https://hooks.example.test/loop"),
        ("notify_webhook_secret", _) => Some("env:"),
        (_, "text (empty = unset)") => None,
        (_, "path (empty = unset)") => None,
        (_, "path") => Some(""),
        (_, "text") => Some("   "),
        (_, "true|false|1|0|yes|no|on|off") => Some("maybe"),
        (_, a) if a.starts_with("integer") => Some("-3x"),
        (_, a) if a.starts_with("US dollars") => Some("-1"),
        (_, a) if a.starts_with("seconds") => Some("9223372036854775808"),
        (_, "branch name (empty = unset)") => Some("../../x"),
        (_, "start of a branch name") => Some("-x/"),
        (_, a) if a.contains('|') => Some("sideways"),
        _ => panic!("no wrong value known for key {key} ({accepts}): add one here"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_with_a_wrong_value_is_refused_naming_key_value_and_file() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    let config_path = h.repo.path().join(".loop/config");
    let original = std::fs::read_to_string(&config_path).expect("config");
    let mut refused = 0;
    let mut free = Vec::new();
    for spec in KEY_SPECS {
        let accepts = spec.accepts();
        let Some(value) = wrong_value(spec.key, &accepts) else {
            free.push(spec.key);
            continue;
        };
        std::fs::write(&config_path, format!("{original}{}={value}\n", spec.key)).expect("config");
        let err = h
            .engine
            .create_run(h.request())
            .await
            .expect_err(&format!("{}={value:?} must be refused", spec.key));
        let text = err.to_string();
        assert!(text.contains(spec.key), "names the key: {text}");
        assert!(
            text.contains(&format!("`{value}`"))
                || (value.trim().is_empty() && text.contains("``")),
            "names the value {value:?}: {text}"
        );
        assert!(text.contains(".loop/config"), "names the file: {text}");
        refused += 1;
    }
    // Nothing was created, let alone run: no run, no branch, no worktree.
    let runs = h
        .store
        .list_runs(&RunFilter::default())
        .await
        .expect("list");
    assert!(runs.is_empty(), "{runs:?}");
    let branches = h.repo.git(["branch", "--list"]);
    assert!(!branches.contains("run/"), "{branches}");
    // The keys that accept any value are a deliberate, short list.
    assert_eq!(
        free,
        [
            "prompt_file",
            "context_files",
            "verify_cmds",
            "codex_model",
            "gemini_model",
            "agent_cmd",
            "setup_cmds",
            "notify_cmd"
        ],
        "a new key needs a wrong value in wrong_value()"
    );
    assert!(refused >= 30, "{refused} keys checked");
    // The same config with the original values still creates a run.
    std::fs::write(&config_path, &original).expect("config");
    h.engine
        .create_run(h.request())
        .await
        .expect("valid config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_lines_and_bad_templates_are_refused_before_anything_runs() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    let config_path = h.repo.path().join(".loop/config");
    let original = std::fs::read_to_string(&config_path).expect("config");
    for (extra, must_contain) in [
        (
            "this line has no equals sign\n",
            ".loop/config:8: cannot parse",
        ),
        ("executor=command\n", "agent_cmd"),
        (
            "executor=command\nagent_cmd=sh 'unterminated\n",
            "agent_cmd",
        ),
        ("iterations=0\n", "iterations"),
        ("max_concurrency=99999999999999999999\n", "max_concurrency"),
    ] {
        std::fs::write(&config_path, format!("{original}{extra}")).expect("config");
        let err = h
            .engine
            .create_run(h.request())
            .await
            .expect_err(&format!("{extra:?} must be refused"));
        let text = format!("{err}");
        assert!(text.contains(must_contain), "{extra:?}: {text}");
    }
    let runs = h
        .store
        .list_runs(&RunFilter::default())
        .await
        .expect("list");
    assert!(runs.is_empty(), "{runs:?}");
}
