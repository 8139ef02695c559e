//! Helpers shared by the tests of the git backend.

use super::GitCli;
use crate::backend::{MergeRequest, VcsError};
use crate::domain::{MergeStrategy, RunId};
use crate::testing::GitFixture;

pub(super) fn cli(fx: &GitFixture) -> GitCli {
    GitCli::with_env(fx.env())
}

/// Creates `name` from the current HEAD with one commit per file, then returns to `main`.
pub(super) fn run_branch(fx: &GitFixture, name: &str, files: &[(&str, &str)]) -> String {
    fx.git(["checkout", "-q", "-b", name]);
    for (path, contents) in files {
        fx.commit_file(path, contents, &format!("task: {path}"));
    }
    let tip = fx.head();
    fx.checkout("main");
    tip
}

pub(super) fn request(
    fx: &GitFixture,
    run: &str,
    target: &str,
    strategy: MergeStrategy,
) -> MergeRequest {
    MergeRequest {
        run_id: RunId::new(),
        repo: fx.path().to_owned(),
        run_branch: run.to_owned(),
        target_branch: target.to_owned(),
        base_branch: "main".to_owned(),
        strategy,
        message: "loop: demo (2 tasks)".to_owned(),
    }
}

pub(super) fn current_branch(fx: &GitFixture) -> String {
    fx.git(["symbolic-ref", "--short", "HEAD"])
}

pub(super) fn conflict_detail(result: Result<impl std::fmt::Debug, VcsError>) -> String {
    match result {
        Err(VcsError::Conflict { detail } | VcsError::MergeConflict { detail, .. }) => detail,
        other => panic!("expected a conflict, got {other:?}"),
    }
}
