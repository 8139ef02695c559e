//! The rows of issue 13 (SPEC §15): when the loop stops spending agent calls. Steps without
//! progress, budgets checked before and after agent steps, and waiting for a usage limit's
//! reset instead of burning retries. Run by `table.rs` with every other rule.

use std::time::Duration;

use crate::machine::table::{
    Row, done, fail, failed, fresh, implement, implement_again, plan, read_plan, retry_after,
    stalled, start, with, worked,
};
use crate::machine::{
    Budget, BudgetKind, Decision, Failure, Observation, Spent, StepObservation, Token,
    WatchdogSignal,
};
use crate::outcome::FailureKind;
use crate::plan::PlanCounts;

fn check() -> Decision {
    Decision::CheckBudget
}
fn spent(cost_usd: f64, tokens: u64, wall_secs: u64) -> Spent {
    Spent {
        cost_usd,
        tokens,
        wall: Duration::from_secs(wall_secs),
    }
}
fn spent_obs(cost_usd: f64, tokens: u64, wall_secs: u64) -> Observation {
    Observation::Spent(spent(cost_usd, tokens, wall_secs))
}
fn budget_fail(kind: BudgetKind, s: Spent) -> Decision {
    fail(Failure::Budget { kind, spent: s })
}
fn usage_limited(secs: Option<u64>) -> Observation {
    Observation::UsageLimited {
        wait: secs.map(Duration::from_secs),
    }
}
fn wait_reset(secs: u64) -> Decision {
    Decision::WaitUsageLimit {
        wait: Duration::from_secs(secs),
    }
}
/// A step that changed nothing on a plan with nothing left to implement.
fn stalled_on_finished_plan() -> Observation {
    Observation::Implemented {
        token: Token::Malformed,
        progress: StepObservation::default(),
        plan: PlanCounts {
            done: 1,
            total: 1,
            ..PlanCounts::default()
        },
    }
}

/// The rows.
#[expect(clippy::too_many_lines, reason = "the table is one list of rows")]
pub(super) fn rows() -> Vec<Row> {
    let cost = |limit: f64| {
        with(move |c| {
            c.budget = Budget {
                cost_usd: Some(limit),
                ..Budget::default()
            };
        })
    };
    vec![
        Row {
            rule: "issue 13: max_no_progress_steps steps without a commit or plan change end the run no_progress (no rewrites left)",
            cfg: with(|c| {
                c.max_no_progress_steps = 2;
                c.max_rewrites = 0;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (stalled(), read_plan()),
                (plan(1, 0), start(2)),
                (done(), read_plan()),
                (plan(1, 0), implement(2, 1)),
                (stalled(), fail(Failure::NoProgress { steps: 2 })),
            ],
        },
        Row {
            rule: "issue 13: the watchdog's rewrites come first; the steps before them count toward no_progress",
            cfg: with(|c| {
                c.max_no_progress_steps = 2;
                c.max_rewrites = 1;
                c.watchdog.no_progress_steps = 1;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    stalled(),
                    super::table::rewrite(WatchdogSignal::NoProgress, 1, true),
                ),
                (Observation::Rewritten { ok: true }, implement(1, 2)),
                (stalled(), fail(Failure::NoProgress { steps: 2 })),
            ],
        },
        Row {
            rule: "issue 13: a step that commits or changes the plan resets the no-progress count",
            cfg: with(|c| {
                c.max_no_progress_steps = 2;
                c.max_rewrites = 0;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (stalled(), read_plan()),
                (plan(1, 0), start(2)),
                (done(), read_plan()),
                (plan(1, 0), implement(2, 1)),
                (worked(Token::Absent), read_plan()),
                (plan(1, 0), start(3)),
                (done(), read_plan()),
                (plan(1, 0), implement(3, 1)),
                (stalled(), read_plan()),
            ],
        },
        Row {
            rule: "issue 13: a finished plan goes straight to final verification, even after a step without progress",
            cfg: with(|c| {
                c.max_no_progress_steps = 1;
                c.max_rewrites = 0;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (stalled_on_finished_plan(), read_plan()),
                (
                    plan(0, 0),
                    super::table::complete(1, crate::domain::ExitReason::CompletePlan),
                ),
            ],
        },
        Row {
            rule: "§15 with a budget set the spending is checked before an agent call",
            cfg: cost(1.0),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), check()),
                (spent_obs(0.0, 0, 0), implement(1, 1)),
            ],
        },
        Row {
            rule: "§15 a step never starts when the budget is already spent (a resumed run)",
            cfg: cost(1.0),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), check()),
                (
                    spent_obs(1.0, 0, 0),
                    budget_fail(BudgetKind::Cost, spent(1.0, 0, 0)),
                ),
            ],
        },
        Row {
            rule: "§15 a budget spent by one step ends the run right after it: budget_exhausted:cost",
            cfg: cost(0.01),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(2, 0), check()),
                (spent_obs(0.0, 0, 0), implement(1, 1)),
                (worked(Token::Absent), check()),
                (
                    spent_obs(0.05, 900, 3),
                    budget_fail(BudgetKind::Cost, spent(0.05, 900, 3)),
                ),
            ],
        },
        Row {
            rule: "§15 tokens (input + output) and wall-clock time are budgets too",
            cfg: with(|c| {
                c.budget = Budget {
                    tokens: Some(1000),
                    wall: Some(Duration::from_secs(60)),
                    ..Budget::default()
                };
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(2, 0), check()),
                (
                    spent_obs(9.0, 999, 61),
                    budget_fail(BudgetKind::Wall, spent(9.0, 999, 61)),
                ),
            ],
        },
        Row {
            rule: "§15 tokens reached: budget_exhausted:tokens",
            cfg: with(|c| {
                c.budget = Budget {
                    tokens: Some(1000),
                    ..Budget::default()
                };
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(2, 0), check()),
                (
                    spent_obs(9.0, 1000, 0),
                    budget_fail(BudgetKind::Tokens, spent(9.0, 1000, 0)),
                ),
            ],
        },
        Row {
            rule: "§15 retries count against the budget: checked after a failed attempt and before its retry",
            cfg: with(|c| {
                c.retry.retries = 1;
                c.budget = Budget {
                    cost_usd: Some(1.0),
                    ..Budget::default()
                };
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), check()),
                (spent_obs(0.0, 0, 0), implement(1, 1)),
                (failed(FailureKind::ExitCode(1)), check()),
                (spent_obs(0.5, 0, 0), retry_after(5, false)),
                (done(), check()),
                (
                    spent_obs(1.5, 0, 0),
                    budget_fail(BudgetKind::Cost, spent(1.5, 0, 0)),
                ),
            ],
        },
        Row {
            rule: "§15 a usage limit with a reset within usage_limit_wait_max_sec: wait, then the same call again, no retry used",
            cfg: base_no_retries(),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (usage_limited(Some(30)), wait_reset(30)),
                (done(), implement_again(1, 2)),
                (worked(Token::Absent), read_plan()),
            ],
        },
        Row {
            rule: "§15 a usage limit resetting later than usage_limit_wait_max_sec fails the run",
            cfg: with(|c| c.usage_limit_wait_max = Duration::from_secs(60)),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    usage_limited(Some(61)),
                    fail(Failure::UsageLimit {
                        wait: Some(Duration::from_secs(61)),
                    }),
                ),
            ],
        },
        Row {
            rule: "§15 a usage limit without a reset time fails the run (nothing to wait for)",
            cfg: base_no_retries(),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    usage_limited(None),
                    fail(Failure::UsageLimit { wait: None }),
                ),
            ],
        },
    ]
}

fn base_no_retries() -> crate::machine::LoopConfig {
    super::table::base()
}
