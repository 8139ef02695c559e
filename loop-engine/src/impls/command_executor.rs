//! An [`Executor`] for any agent CLI (`executor=command`), built from a shell-like template such
//! as `codex exec --full-auto {prompt}`.
//!
//! The template is split into words once, with simple quoting (`'...'`, `"..."`, backslash),
//! and the placeholders are substituted inside each word per call, so no shell is involved and
//! a prompt can never be re-interpreted as syntax. `{prompt}` is the prompt text, `{prompt_file}`
//! a file holding it (written next to the log), `{model}` the model and `{workdir}` the
//! worktree. Without `{prompt}` and `{prompt_file}` the prompt is fed on stdin. Output is
//! streamed like the Claude executor's; stream-json `result` lines are used when they appear.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::{ExecContext, ExecOutcome, ExecRequest, Executor, ExecutorError};
use crate::impls::agent_process::{ProgramKey, run_measured};
use crate::process::Cmd;

const COMMAND_KEY: ProgramKey = ProgramKey {
    key: "agent_cmd",
    hint: "install the agent CLI, or fix agent_cmd so its first word is a program on PATH or a path",
};

/// The template placeholders.
const PROMPT: &str = "{prompt}";
const PROMPT_FILE: &str = "{prompt_file}";
const MODEL: &str = "{model}";
const WORKDIR: &str = "{workdir}";

/// An `agent_cmd` template could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid agent_cmd template `{template}`: {reason}")]
pub struct AgentCmdError {
    /// The template as configured.
    pub template: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Runs an arbitrary agent CLI from a command template.
#[derive(Clone, Debug)]
pub struct CommandExecutor {
    template: String,
    words: Vec<String>,
}

impl CommandExecutor {
    /// Parses `template` (the `agent_cmd` setting).
    pub fn new(template: &str) -> Result<Self, AgentCmdError> {
        let error = |reason: &str| AgentCmdError {
            template: template.to_owned(),
            reason: reason.to_owned(),
        };
        let words = split_words(template).map_err(error)?;
        match words.first() {
            None => Err(error("it is empty")),
            Some(first) if first.is_empty() => Err(error("the program (first word) is empty")),
            Some(_) => Ok(Self {
                template: template.to_owned(),
                words,
            }),
        }
    }

    /// The template as configured.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The words of the template, placeholders not yet substituted.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// True when the prompt is passed as an argument or a file rather than on stdin.
    pub fn prompt_in_args(&self) -> bool {
        self.words
            .iter()
            .any(|w| w.contains(PROMPT) || w.contains(PROMPT_FILE))
    }

    /// The words for `req`, with `prompt_file` standing for `{prompt_file}`.
    pub fn argv(&self, req: &ExecRequest, prompt_file: &Path) -> Vec<String> {
        let workdir = req.workdir.to_string_lossy();
        let prompt_file = prompt_file.to_string_lossy();
        let vars: [(&str, &str); 4] = [
            (PROMPT_FILE, &prompt_file),
            (PROMPT, &req.prompt),
            (MODEL, &req.model),
            (WORKDIR, &workdir),
        ];
        self.words.iter().map(|w| substitute(w, &vars)).collect()
    }
}

/// Where the prompt file for `{prompt_file}` goes: beside the log (`iter-07.log` →
/// `iter-07.prompt.txt`).
pub fn prompt_file_for(log_path: &Path) -> PathBuf {
    log_path.with_extension("prompt.txt")
}

#[async_trait]
impl Executor for CommandExecutor {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        let prompt_file = prompt_file_for(&req.log_path);
        if self.words.iter().any(|w| w.contains(PROMPT_FILE)) {
            // Small local writes, done in place: a hop to the blocking pool costs more than
            // the write on the path between two agent calls.
            let written = (|| {
                if let Some(dir) = prompt_file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&prompt_file, req.prompt.as_bytes())
            })();
            written.map_err(|e| ExecutorError::Fatal {
                detail: format!("cannot write the prompt file {}", prompt_file.display()),
                source: Some(Box::new(e)),
            })?;
        }
        let argv = self.argv(&req, &prompt_file);
        let (program, args) = argv.split_first().ok_or_else(|| ExecutorError::Fatal {
            detail: format!("agent_cmd `{}` has no program", self.template),
            source: None,
        })?;
        if program.is_empty() {
            return Err(ExecutorError::NotFound {
                program: self.template.clone(),
                key: COMMAND_KEY.key.into(),
                hint: COMMAND_KEY.hint.into(),
            });
        }
        let mut cmd = Cmd::new(program, &req.workdir).args(args);
        if !self.prompt_in_args() {
            cmd = cmd.stdin_bytes(req.prompt.as_bytes());
        }
        let run = run_measured(cmd, COMMAND_KEY, &req, &ctx).await?;
        tracing::debug!(
            step_id = %req.step_id,
            exit_code = run.outcome.exit_code,
            output_bytes = run.outcome.output_bytes,
            peak_retained = run.peak_retained,
            "agent command finished"
        );
        Ok(run.outcome)
    }
}

/// Replaces every placeholder of `vars` in `word`, in one pass, so substituted text (a prompt
/// that mentions `{model}`) is never substituted again.
fn substitute(word: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match vars.iter().find(|(name, _)| tail.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &tail[name.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits a template into words: whitespace separates words; `'...'` is literal; in `"..."` a
/// backslash escapes `"` and `\`; elsewhere a backslash escapes the next character. Quotes can
/// make an empty word (`''`).
pub(crate) fn split_words(template: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unbalanced single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unbalanced double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unbalanced double quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("it ends with a lone backslash"),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ExecPurpose, Termination};
    use crate::domain::{RunId, StepId};
    use tokio_util::sync::CancellationToken;

    fn request(dir: &Path, prompt: &str) -> ExecRequest {
        ExecRequest {
            run_id: RunId::new(),
            step_id: StepId::new(),
            purpose: ExecPurpose::Review,
            label: "2R1".into(),
            prompt: prompt.into(),
            model: "m-1".into(),
            workdir: dir.to_owned(),
            log_path: dir.join("logs/iter-02R01.log"),
            timeout: Some(std::time::Duration::from_secs(30)),
            idle_timeout: None,
            env: vec![("EXTRA_VAR".into(), "extra".into())],
            limits: Default::default(),
        }
    }

    async fn run(template: &str, req: &ExecRequest) -> ExecOutcome {
        CommandExecutor::new(template)
            .unwrap()
            .execute(req.clone(), ExecContext::detached(CancellationToken::new()))
            .await
            .unwrap()
    }

    #[test]
    fn splits_words_with_quotes() {
        assert_eq!(
            split_words(r#"codex exec --full-auto {prompt}"#).unwrap(),
            ["codex", "exec", "--full-auto", "{prompt}"]
        );
        assert_eq!(
            split_words(r#"  a 'b c'  "d \"e\" \n" f\ g '' x"y"z  "#).unwrap(),
            ["a", "b c", r#"d "e" \n"#, "f g", "", "xyz"]
        );
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn template_errors_name_agent_cmd() {
        for (template, reason) in [
            ("", "empty"),
            ("   ", "empty"),
            ("agent 'oops", "unbalanced single quote"),
            ("agent \"oops", "unbalanced double quote"),
            ("agent oops\\", "lone backslash"),
            ("'' x", "program"),
        ] {
            let err = CommandExecutor::new(template).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("agent_cmd"), "{text}");
            assert!(text.contains(reason), "{template}: {text}");
            assert_eq!(err.template, template);
        }
    }

    #[test]
    fn substitution_is_single_pass() {
        let vars = [(PROMPT, "say {model}"), (MODEL, "m")];
        assert_eq!(
            substitute("--p={prompt}/{model}{x}{", &vars),
            "--p=say {model}/m{x}{"
        );
    }

    #[tokio::test]
    async fn prompt_as_argument() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), "it's a \"prompt\" with $HOME and {model}");
        let outcome = run(
            r#"sh -c 'printf "%s|" "$@"; printf "%s" "$EXTRA_VAR"; cat' agent {prompt} --model={model} "{workdir}""#,
            &req,
        )
        .await;
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(
            outcome.output_text,
            format!(
                "it's a \"prompt\" with $HOME and {{model}}|--model=m-1|{}|extra",
                dir.path().display()
            )
        );
        assert!(
            CommandExecutor::new("true")
                .unwrap()
                .judge(&outcome)
                .is_success()
        );
    }

    #[tokio::test]
    async fn prompt_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let prompt = "line one\nline two\n".repeat(20_000);
        let req = request(dir.path(), &prompt);
        let outcome = run("sh -c 'wc -c'", &req).await;
        assert_eq!(outcome.output_text.trim(), prompt.len().to_string());
        let outcome = run("cat", &req).await;
        assert_eq!(outcome.output_bytes, prompt.len() as u64);
        assert_eq!(
            std::fs::read_to_string(&req.log_path).unwrap(),
            prompt,
            "the log holds the whole output"
        );
    }

    #[tokio::test]
    async fn prompt_file() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), "from a file");
        let outcome = run("cat {prompt_file}", &req).await;
        assert_eq!(outcome.output_text, "from a file");
        let file = prompt_file_for(&req.log_path);
        assert_eq!(file, dir.path().join("logs/iter-02R01.prompt.txt"));
        assert_eq!(std::fs::read_to_string(file).unwrap(), "from a file");
    }

    #[tokio::test]
    async fn result_lines_are_used_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), "p");
        let outcome = run(
            r#"sh -c 'echo noise; echo "{\"type\":\"result\",\"is_error\":false,\"result\":\"done\"}"'"#,
            &req,
        )
        .await;
        assert_eq!(outcome.output_text, "done");
        assert!(outcome.result.is_some());

        let outcome = run("sh -c 'echo failing >&2; exit 3'", &req).await;
        assert_eq!(outcome.exit_code, 3);
        assert_eq!(outcome.termination, Some(Termination::Exited));
        assert_eq!(outcome.stderr_tail, "failing\n");
        assert!(
            !CommandExecutor::new("true")
                .unwrap()
                .judge(&outcome)
                .is_success()
        );
    }

    #[tokio::test]
    async fn missing_program_names_agent_cmd() {
        let dir = tempfile::tempdir().unwrap();
        let err = CommandExecutor::new("no-such-agent-xyz {prompt}")
            .unwrap()
            .execute(
                request(dir.path(), "p"),
                ExecContext::detached(CancellationToken::new()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ExecutorError::NotFound { program, key, .. } if program == "no-such-agent-xyz" && key == "agent_cmd"),
            "{err:?}"
        );
    }
}
