//! The review commands against a real server: `diff` (whole and `--stat`, plain when piped),
//! `merge` refused once the run merged, `worktrees` and `--prune`, `pr` without `gh` (exit
//! 69 naming it), `scrap`, and `retry` of a canceled run.

use std::time::Duration;

use crate::{created_id, daemon, json, loopctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_merge_worktrees_pr_scrap_and_retry_from_the_command_line() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    // The first run merges itself (squash into agent/widget).
    let id = created_id(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    assert_eq!(loopctl(&d, &repo, &["wait", &id]).await.code, 0);

    let stat = loopctl(&d, &repo, &["diff", &id, "--stat"]).await;
    assert!(stat.success(), "{}", stat.stderr_text());
    let text = stat.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("agent/widget against agent/widget~ ("),
        "{text}"
    );
    assert!(lines[1].starts_with("1 commit, "), "{text}");
    assert!(text.contains("STATUS    FILE"), "{text}");
    assert!(text.contains("specs/planning/widget-plan.md"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when piped: {text:?}");

    let whole = loopctl(&d, &repo, &["diff", &id]).await;
    assert!(whole.success(), "{}", whole.stderr_text());
    let patch = whole.stdout_text();
    assert!(
        patch.contains("diff --git a/specs/planning/widget-plan.md"),
        "{patch}"
    );
    assert!(patch.contains("\n+- [x] first task"), "{patch}");
    assert!(!patch.contains('\x1b'), "{patch:?}");
    let as_json = json(&loopctl(&d, &repo, &["--json", "diff", &id]).await);
    assert_eq!(as_json["head_ref"], "agent/widget");
    assert!(as_json["files"].as_array().is_some_and(|f| !f.is_empty()));

    let again = loopctl(&d, &repo, &["merge", &id]).await;
    assert_eq!(again.code, 65, "{}", again.stderr_text());
    assert!(
        again.stderr_text().contains("already merged"),
        "{}",
        again.stderr_text()
    );

    let listed = loopctl(&d, &repo, &["worktrees"]).await;
    assert!(listed.success(), "{}", listed.stderr_text());
    let t = listed.stdout_text();
    assert!(t.starts_with("RUN  "), "{t}");
    assert!(
        t.contains("merged") && t.contains("present (prunable)"),
        "{t}"
    );
    let pruned = loopctl(&d, &repo, &["worktrees", "--prune"]).await;
    assert!(pruned.success(), "{}", pruned.stderr_text());
    assert!(
        pruned.stdout_text().starts_with("removed "),
        "{}",
        pruned.stdout_text()
    );
    assert!(
        loopctl(&d, &repo, &["worktrees"])
            .await
            .stdout_text()
            .contains("gone")
    );

    // A second run that does not merge: no gh here, then scrapped.
    let second = created_id(
        &loopctl(
            &d,
            &repo,
            &[
                "--json",
                "run",
                "specs/widget.md",
                "--merge-strategy",
                "none",
            ],
        )
        .await,
    );
    assert_eq!(loopctl(&d, &repo, &["wait", &second]).await.code, 0);
    let pr = loopctl(&d, &repo, &["pr", &second]).await;
    assert_eq!(pr.code, 69, "{}", pr.stderr_text());
    assert!(pr.stderr_text().contains("`gh`"), "{}", pr.stderr_text());
    let scrapped = loopctl(&d, &repo, &["scrap", &second]).await;
    assert!(scrapped.success(), "{}", scrapped.stderr_text());
    let out = scrapped.stdout_text();
    assert!(
        out.starts_with(&format!("{second} scrapped (review: scrapped)")),
        "{out}"
    );
    assert!(out.contains("branch run/widget-2 deleted"), "{out}");

    // A canceled run is retried.
    drop(d);
    let d = daemon(400).await;
    let repo = d.repo.path().to_path_buf();
    let id = created_id(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(loopctl(&d, &repo, &["cancel", &id]).await.success());
    assert_eq!(loopctl(&d, &repo, &["wait", &id]).await.code, 2);
    let retried = loopctl(&d, &repo, &["retry", &id]).await;
    assert!(retried.success(), "{}", retried.stderr_text());
    assert!(
        retried
            .stdout_text()
            .contains("queued again (PENDING): it goes on from its last step on run/widget"),
        "{}",
        retried.stdout_text()
    );
    assert_eq!(loopctl(&d, &repo, &["wait", &id]).await.code, 0);
}
