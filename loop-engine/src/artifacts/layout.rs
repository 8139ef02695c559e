//! The run folder layout (SPEC §7): one folder per run, named by run id only, with fixed file
//! names, so that scripts, `loopctl inspect` and the mirror agree on where everything is.

use std::path::{Component, Path, PathBuf};

use crate::domain::RunId;

/// The folder holding every artifact of one run, either in the workspace
/// (`<workspace>/<log_dir>/run-<id>/`) or in the global log dir (`<global>/runs/run-<id>/`).
///
/// Only names paths; nothing touches the disk until [`RunFolder::create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunFolder {
    root: PathBuf,
}

impl RunFolder {
    /// The workspace copy: `<workspace_root>/<log_dir>/run-<run_id>/`. An absolute `log_dir`
    /// replaces the workspace root, as `Path::join` does.
    pub(crate) fn workspace(workspace_root: &Path, log_dir: &Path, run_id: RunId) -> Self {
        Self {
            root: workspace_root.join(log_dir).join(folder_name(run_id)),
        }
    }

    /// The global mirror: `<global_log_dir>/runs/run-<run_id>/`. `global_log_dir` must already
    /// be expanded (no `~`).
    pub(crate) fn global(global_log_dir: &Path, run_id: RunId) -> Self {
        Self {
            root: global_log_dir.join("runs").join(folder_name(run_id)),
        }
    }

    /// A run folder at an explicit path (e.g. one read back from the store).
    #[cfg(test)]
    pub(crate) fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `prompt.txt`: the prompt snapshot.
    pub(crate) fn prompt(&self) -> PathBuf {
        self.root.join("prompt.txt")
    }

    /// `plan.snapshot.md`: the plan as it was when the run was created; the run's worktree
    /// plan is seeded from it (so a queued run does not inherit an earlier run's ticks).
    pub(crate) fn plan_snapshot(&self) -> PathBuf {
        self.root.join("plan.snapshot.md")
    }

    /// `run.log`: the human-readable run log.
    pub(crate) fn run_log(&self) -> PathBuf {
        self.root.join("run.log")
    }

    /// `report.tsv`: one row per reported event.
    pub(crate) fn report(&self) -> PathBuf {
        self.root.join("report.tsv")
    }

    /// `summary.json`: written at every run end.
    pub(crate) fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// `runner-notes.txt`: instructions the runner passes to the next agent step.
    pub(crate) fn runner_notes(&self) -> PathBuf {
        self.root.join("runner-notes.txt")
    }

    /// `iter-<slug>.log`: the whole output of one agent step.
    pub(crate) fn iteration_log(&self, slug: &str) -> PathBuf {
        self.root.join(format!("iter-{slug}.log"))
    }

    /// `iter-<slug>.tail.txt`: the last lines of that output.
    pub(crate) fn iteration_tail(&self, slug: &str) -> PathBuf {
        self.root.join(format!("iter-{slug}.tail.txt"))
    }

    /// `verify/`: the verification logs.
    pub(crate) fn verify_dir(&self) -> PathBuf {
        self.root.join("verify")
    }

    /// `verify/verify-<slug>-<n>.log`: the log of the `n`-th verification command.
    pub(crate) fn verify_log(&self, slug: &str, n: u32) -> PathBuf {
        self.verify_dir().join(format!("verify-{slug}-{n}.log"))
    }

    /// `verify/verify-<slug>-failure.txt`: what failed, for the runner notes.
    pub(crate) fn verify_failure(&self, slug: &str) -> PathBuf {
        self.verify_dir().join(format!("verify-{slug}-failure.txt"))
    }

    /// `prompt.rewrite.<n>.txt`: the `n`-th watchdog rewrite of the prompt.
    pub(crate) fn prompt_rewrite(&self, n: u32) -> PathBuf {
        self.root.join(format!("prompt.rewrite.{n}.txt"))
    }

    /// Creates the folder and its `verify/` subfolder (and any missing parents). Idempotent.
    /// Both are private to their owner (mode 0700).
    pub(crate) fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.verify_dir())?;
        for dir in [self.root.clone(), self.verify_dir()] {
            let private = std::fs::Permissions::from_mode(super::files::PRIVATE_DIR_MODE);
            std::fs::set_permissions(dir, private)?;
        }
        Ok(())
    }

    /// `path` relative to the folder, so the same file can be placed under another run folder.
    /// `None` when `path` is not strictly inside the folder (or climbs out of it with `..`).
    pub(crate) fn relative(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut components = rel.components().peekable();
        components.peek()?;
        if components.all(|c| matches!(c, Component::Normal(_))) {
            Some(rel.to_path_buf())
        } else {
            None
        }
    }
}

fn folder_name(run_id: RunId) -> String {
    format!("run-{run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> RunId {
        "0190a8b4-7c3e-7d2a-9f00-0123456789ab".parse().unwrap()
    }

    #[test]
    fn workspace_folder_is_under_the_log_dir() {
        let f = RunFolder::workspace(Path::new("/ws"), Path::new("logs/loop"), id());
        assert_eq!(
            f.root(),
            Path::new("/ws/logs/loop/run-0190a8b4-7c3e-7d2a-9f00-0123456789ab")
        );
        let abs = RunFolder::workspace(Path::new("/ws"), Path::new("/var/log/x"), id());
        assert_eq!(
            abs.root(),
            Path::new("/var/log/x/run-0190a8b4-7c3e-7d2a-9f00-0123456789ab")
        );
    }

    #[test]
    fn global_folder_is_under_runs() {
        let f = RunFolder::global(Path::new("/home/u/.local/share/loopd"), id());
        assert_eq!(
            f.root(),
            Path::new("/home/u/.local/share/loopd/runs/run-0190a8b4-7c3e-7d2a-9f00-0123456789ab")
        );
    }

    #[test]
    fn file_names_match_the_spec() {
        let f = RunFolder::at("/r");
        assert_eq!(f.prompt(), Path::new("/r/prompt.txt"));
        assert_eq!(f.run_log(), Path::new("/r/run.log"));
        assert_eq!(f.report(), Path::new("/r/report.tsv"));
        assert_eq!(f.summary(), Path::new("/r/summary.json"));
        assert_eq!(f.runner_notes(), Path::new("/r/runner-notes.txt"));
        assert_eq!(f.iteration_log("03R01"), Path::new("/r/iter-03R01.log"));
        assert_eq!(f.iteration_tail("07"), Path::new("/r/iter-07.tail.txt"));
        assert_eq!(
            f.verify_log("07", 2),
            Path::new("/r/verify/verify-07-2.log")
        );
        assert_eq!(
            f.verify_failure("07"),
            Path::new("/r/verify/verify-07-failure.txt")
        );
        assert_eq!(f.prompt_rewrite(1), Path::new("/r/prompt.rewrite.1.txt"));
    }

    #[test]
    fn create_makes_root_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let f = RunFolder::workspace(dir.path(), Path::new("logs/loop"), id());
        f.create().unwrap();
        assert!(f.root().is_dir());
        assert!(f.verify_dir().is_dir());
        f.create().unwrap();
    }

    #[test]
    fn relative_strips_the_root_only_for_inner_paths() {
        let f = RunFolder::at("/r");
        assert_eq!(
            f.relative(Path::new("/r/verify/verify-07-1.log")),
            Some(PathBuf::from("verify/verify-07-1.log"))
        );
        assert_eq!(f.relative(Path::new("/r")), None);
        assert_eq!(f.relative(Path::new("/other/prompt.txt")), None);
        assert_eq!(f.relative(Path::new("/r/../etc/passwd")), None);
    }
}
