//! Every rule of SPEC §6 (and each loop bug fixed since) as one row of a table, run against
//! the pure [`RunLoop`] without git or processes. A row is a rule's name, the settings, the
//! history a run starts with, and a script: the first decision, then pairs of what the driver
//! observed and the decision that must follow. To add a rule, add a row.

use std::time::Duration;

use crate::domain::ExitReason;
use crate::machine::{
    Decision, Failure, History, LoopConfig, Observation, RetryPolicy, RunLoop, StepObservation,
    Token, VerifyKind, Warning, WatchdogConfig, WatchdogSignal,
};
use crate::outcome::FailureKind;
use crate::plan::PlanCounts;

/// One rule.
pub(super) struct Row {
    pub(super) rule: &'static str,
    pub(super) cfg: LoopConfig,
    pub(super) history: History,
    pub(super) first: Decision,
    pub(super) script: Vec<(Observation, Decision)>,
}

pub(super) fn base() -> LoopConfig {
    LoopConfig {
        iterations: 50,
        reviewer: false,
        max_review_passes: 10,
        verify: false,
        max_consecutive_verification_failures: 0,
        watchdog: WatchdogConfig {
            no_progress_steps: 3,
            repeat_task_steps: 3,
            verification_failures: 2,
        },
        max_rewrites: 2,
        retry: RetryPolicy {
            retries: 0,
            backoff: Duration::from_secs(5),
            transient_retries: 0,
            transient_backoff_max: Duration::from_secs(60),
        },
        max_no_progress_steps: 0,
        budget: crate::machine::Budget::default(),
        usage_limit_wait_max: Duration::from_secs(3600),
    }
}

pub(super) fn with(f: impl FnOnce(&mut LoopConfig)) -> LoopConfig {
    let mut cfg = base();
    f(&mut cfg);
    cfg
}

pub(super) fn fresh() -> History {
    History {
        first_iteration: 1,
        ..History::default()
    }
}

// Decisions.
pub(super) fn start(iteration: u32) -> Decision {
    Decision::StartIteration { iteration }
}
pub(super) fn read_plan() -> Decision {
    Decision::ReadPlan
}
pub(super) fn read_head() -> Decision {
    Decision::ReadHead
}
pub(super) fn implement(iteration: u32, attempt: u32) -> Decision {
    Decision::Implement {
        iteration,
        attempt,
        retry: false,
    }
}
pub(super) fn implement_again(iteration: u32, attempt: u32) -> Decision {
    Decision::Implement {
        iteration,
        attempt,
        retry: true,
    }
}
pub(super) fn review(iteration: u32, pass: u32) -> Decision {
    Decision::Review {
        iteration,
        pass,
        attempt: 1,
        retry: false,
    }
}
pub(super) fn verify(iteration: u32, kind: VerifyKind) -> Decision {
    Decision::Verify { iteration, kind }
}
pub(super) fn complete(iteration: u32, reason: ExitReason) -> Decision {
    Decision::Complete { iteration, reason }
}
pub(super) fn rewrite(signal: WatchdogSignal, rewrite: u32, after_agent: bool) -> Decision {
    Decision::Rewrite {
        signal,
        rewrite,
        after_agent,
    }
}
pub(super) fn retry_after(secs: u64, transient: bool) -> Decision {
    Decision::RetryAgent {
        delay: Duration::from_secs(secs),
        transient,
    }
}
pub(super) fn fail(failure: Failure) -> Decision {
    Decision::Fail(failure)
}

// Observations.
pub(super) fn done() -> Observation {
    Observation::Done
}
pub(super) fn counts(pending: u32, to_review: u32) -> PlanCounts {
    PlanCounts {
        pending,
        to_review,
        total: pending + to_review,
        ..PlanCounts::default()
    }
}
pub(super) fn plan(pending: u32, to_review: u32) -> Observation {
    Observation::Plan(counts(pending, to_review))
}
pub(super) fn head(h: &str) -> Observation {
    Observation::Head(Some(h.to_owned()))
}
/// An implementation step that committed and changed the plan.
pub(super) fn worked(token: Token) -> Observation {
    Observation::Implemented {
        token,
        progress: StepObservation {
            head_changed: true,
            plan_changed: true,
            open_task_before: Some("a".into()),
            open_task_after: Some("b".into()),
            ..StepObservation::default()
        },
        plan: counts(1, 0),
    }
}
/// An implementation step that changed nothing.
pub(super) fn stalled() -> Observation {
    Observation::Implemented {
        token: Token::Absent,
        progress: StepObservation {
            open_task_before: Some("a".into()),
            open_task_after: Some("a".into()),
            ..StepObservation::default()
        },
        plan: counts(1, 0),
    }
}
pub(super) fn reviewed(token: Token, returning: bool, pending: u32, to_review: u32) -> Observation {
    Observation::Reviewed {
        token,
        returning,
        plan: counts(pending, to_review),
    }
}
pub(super) fn verified(passed: bool) -> Observation {
    Observation::Verified {
        passed,
        skipped: false,
    }
}
pub(super) fn failed(kind: FailureKind) -> Observation {
    Observation::AgentFailed { kind, jitter: 0.5 }
}

#[expect(clippy::too_many_lines, reason = "the table is one list of rows")]
fn table() -> Vec<Row> {
    use ExitReason::{CompletePlan, CompleteReviewer};
    use VerifyKind::{Final, Gate, Review};
    let mut rows = vec![
        Row {
            rule: "§6.2 no pending task and nothing to review: final verification, then complete_plan",
            cfg: with(|c| c.verify = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(0, 0), verify(1, Final)),
                (verified(true), complete(1, CompletePlan)),
            ],
        },
        Row {
            rule: "§6.2 without verify_cmds a finished plan completes at once",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![(done(), read_plan()), (plan(0, 0), complete(1, CompletePlan))],
        },
        Row {
            rule: "§6 a failing final verification keeps the loop going (implementation next)",
            cfg: with(|c| c.verify = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(0, 0), verify(1, Final)),
                (verified(false), implement(1, 1)),
            ],
        },
        Row {
            rule: "§6.2 plan done but review backlog left: next iteration, no implementation step",
            cfg: with(|c| c.reviewer = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(0, 2), review(1, 1)),
                (reviewed(Token::Absent, true, 0, 2), read_plan()),
                (plan(0, 2), start(2)),
            ],
        },
        Row {
            rule: "a run that begins with nothing to do fails plan_already_done, no agent step",
            cfg: base(),
            history: History {
                first_iteration: 1,
                unstarted: true,
                ..History::default()
            },
            first: read_plan(),
            script: vec![(
                Observation::Plan(PlanCounts {
                    done: 2,
                    total: 2,
                    ..PlanCounts::default()
                }),
                fail(Failure::PlanAlreadyDone { done: 2, total: 2 }),
            )],
        },
        Row {
            rule: "a run that begins with a review backlog has work: the first iteration",
            cfg: with(|c| c.reviewer = true),
            history: History {
                first_iteration: 1,
                unstarted: true,
                ..History::default()
            },
            first: read_plan(),
            script: vec![(plan(0, 1), start(1))],
        },
        Row {
            rule: "§6.3 pending tasks: an implementation step",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![(done(), read_plan()), (plan(2, 0), implement(1, 1))],
        },
        Row {
            rule: "§6.3 a failed step is retried claude_retries times after claude_retry_backoff_sec, then claude_failed",
            cfg: with(|c| c.retry.retries = 1),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (failed(FailureKind::ExitCode(1)), retry_after(5, false)),
                (done(), implement_again(1, 2)),
                (failed(FailureKind::ExitCode(1)), fail(Failure::Agent)),
            ],
        },
        Row {
            rule: "§6.3 refused credentials are never retried",
            cfg: with(|c| c.retry.retries = 3),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (failed(FailureKind::AuthRefused), fail(Failure::Agent)),
            ],
        },
        Row {
            rule: "§6.3 transient API failures use their own budget with exponential backoff",
            cfg: with(|c| c.retry.transient_retries = 1),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    failed(FailureKind::Transient { status: Some(529) }),
                    retry_after(5, true),
                ),
                (done(), implement_again(1, 2)),
                (
                    failed(FailureKind::Transient { status: Some(529) }),
                    fail(Failure::Agent),
                ),
            ],
        },
        Row {
            rule: "§6.3 an executor that cannot run the agent fails the run at once (claude_failed)",
            cfg: with(|c| c.retry.retries = 3),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (Observation::AgentBroken, fail(Failure::Agent)),
            ],
        },
        Row {
            rule: "§6.4 a failed gate skips the review and starts the next iteration",
            cfg: with(|c| {
                c.verify = true;
                c.reviewer = true;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_head()),
                (head("a"), read_plan()),
                (plan(1, 0), read_head()),
                (head("a"), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Absent), verify(1, Gate)),
                (verified(false), start(2)),
            ],
        },
        Row {
            rule: "§6.4-6 a passed gate, the plan re-read, done: final verification, complete_plan",
            cfg: with(|c| c.verify = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Accepted), verify(1, Gate)),
                (verified(true), read_plan()),
                (plan(0, 0), verify(1, Final)),
                (verified(true), complete(1, CompletePlan)),
            ],
        },
        Row {
            rule: "§6.5 with the reviewer on, a passed gate is followed by a review pass",
            cfg: with(|c| c.reviewer = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Absent), read_plan()),
                (plan(0, 1), review(1, 1)),
            ],
        },
        Row {
            rule: "§6.6 reviewer off, token with tasks pending: WARN_COMPLETE_WITH_PENDING and go on",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(2, 0), implement(1, 1)),
                (worked(Token::Accepted), read_plan()),
                (
                    plan(1, 0),
                    Decision::Warn {
                        iteration: 1,
                        warning: Warning::CompleteWithPending { pending: 1 },
                    },
                ),
                (done(), start(2)),
            ],
        },
        Row {
            rule: "§6.6 no warning when the agent did not send the token",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(2, 0), implement(1, 1)),
                (worked(Token::Absent), read_plan()),
                (plan(1, 0), start(2)),
            ],
        },
        Row {
            rule: "§6.1 reviewer token with nothing pending: final verification, complete_reviewer",
            cfg: with(|c| {
                c.reviewer = true;
                c.verify = true;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_head()),
                (head("a"), read_plan()),
                (plan(0, 1), review(1, 1)),
                (reviewed(Token::Accepted, false, 0, 0), verify(1, Final)),
                (verified(true), complete(1, CompleteReviewer)),
            ],
        },
        Row {
            rule: "§6.1 reviewer token with tasks pending: WARN_REVIEWER_COMPLETE_WITH_PENDING, the pass ends",
            cfg: with(|c| c.reviewer = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 1), review(1, 1)),
                (
                    reviewed(Token::Accepted, false, 1, 0),
                    Decision::Warn {
                        iteration: 1,
                        warning: Warning::ReviewerCompleteWithPending {
                            pass: 1,
                            pending: 1,
                            to_review: 0,
                        },
                    },
                ),
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
            ],
        },
        Row {
            rule: "§6.1 a review pass that moved HEAD is verified before implementation goes on",
            cfg: with(|c| {
                c.reviewer = true;
                c.verify = true;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_head()),
                (head("a"), read_plan()),
                (plan(1, 1), review(1, 1)),
                (reviewed(Token::Absent, true, 1, 0), read_head()),
                (head("b"), verify(1, Review)),
                (verified(true), read_plan()),
                (plan(1, 0), implement(1, 1)),
            ],
        },
        Row {
            rule: "§6.1 a review pass that left HEAD alone is not verified",
            cfg: with(|c| {
                c.reviewer = true;
                c.verify = true;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_head()),
                (head("a"), read_plan()),
                (plan(1, 1), review(1, 1)),
                (reviewed(Token::Absent, true, 1, 1), read_head()),
                (head("a"), read_plan()),
            ],
        },
        Row {
            rule: "§6.1 review steps go on while [x] tasks remain, at most max_review_passes",
            cfg: with(|c| {
                c.reviewer = true;
                c.max_review_passes = 2;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 2), review(1, 1)),
                (reviewed(Token::Absent, false, 1, 1), read_plan()),
                (plan(1, 1), review(1, 2)),
                (reviewed(Token::Absent, false, 1, 1), read_plan()),
                (plan(1, 1), implement(1, 1)),
            ],
        },
        Row {
            rule: "§6.1 a review step that leaves no [x] task ends the pass",
            cfg: with(|c| c.reviewer = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 1), review(1, 1)),
                (reviewed(Token::Absent, false, 1, 0), read_plan()),
                (plan(1, 0), implement(1, 1)),
            ],
        },
        Row {
            rule: "§6.1 a failed final verification after the reviewer's token ends the pass, the loop goes on",
            cfg: with(|c| {
                c.reviewer = true;
                c.verify = true;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_head()),
                (head("a"), read_plan()),
                (plan(0, 1), review(1, 1)),
                (reviewed(Token::Accepted, false, 0, 0), verify(1, Final)),
                (verified(false), read_head()),
                (head("a"), read_plan()),
                (plan(0, 0), verify(1, Final)),
            ],
        },
        Row {
            rule: "§6 the iteration budget spent: iterations_exhausted",
            cfg: with(|c| c.iterations = 1),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Absent), read_plan()),
                (plan(1, 0), fail(Failure::IterationsExhausted)),
            ],
        },
        Row {
            rule: "§6 a resumed run starts at its stored iteration",
            cfg: base(),
            history: History {
                first_iteration: 3,
                ..History::default()
            },
            first: start(3),
            script: vec![],
        },
        Row {
            rule: "issue 19: a run resumed with its budget spent and work left is exhausted",
            cfg: with(|c| c.iterations = 2),
            history: History {
                first_iteration: 3,
                ..History::default()
            },
            first: read_plan(),
            script: vec![(plan(1, 0), fail(Failure::IterationsExhausted))],
        },
        Row {
            rule: "issue 19: a run resumed with its budget spent and the plan done verifies and completes",
            cfg: with(|c| {
                c.iterations = 2;
                c.verify = true;
            }),
            history: History {
                first_iteration: 3,
                ..History::default()
            },
            first: read_plan(),
            script: vec![
                (plan(0, 0), verify(2, Final)),
                (verified(true), complete(2, CompletePlan)),
            ],
        },
        Row {
            rule: "issue 19: review steps are numbered over both passes of an iteration (unique labels)",
            cfg: with(|c| c.reviewer = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 1), review(1, 1)),
                (reviewed(Token::Absent, true, 1, 0), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Absent), read_plan()),
                (plan(0, 1), review(1, 2)),
                (
                    reviewed(Token::Accepted, false, 1, 0),
                    Decision::Warn {
                        iteration: 1,
                        warning: Warning::ReviewerCompleteWithPending {
                            pass: 2,
                            pending: 1,
                            to_review: 0,
                        },
                    },
                ),
            ],
        },
        Row {
            rule: "§6 watchdog malformed_complete: rewrite, then the same phase with the attempt incremented",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    worked(Token::Malformed),
                    rewrite(WatchdogSignal::MalformedComplete, 1, true),
                ),
                (Observation::Rewritten { ok: true }, implement(1, 2)),
            ],
        },
        Row {
            rule: "issue 13: a malformed token on a finished plan makes no extra agent call: final verification",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    Observation::Implemented {
                        token: Token::Malformed,
                        progress: StepObservation {
                            head_changed: true,
                            plan_changed: true,
                            open_task_before: Some("a".into()),
                            ..StepObservation::default()
                        },
                        plan: counts(0, 0),
                    },
                    read_plan(),
                ),
                (plan(0, 0), complete(1, CompletePlan)),
            ],
        },
        Row {
            rule: "issue 13: a finished plan goes to the gate and final verification, not to a rewrite",
            cfg: with(|c| {
                c.verify = true;
                c.watchdog.no_progress_steps = 1;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    Observation::Implemented {
                        token: Token::Absent,
                        progress: StepObservation::default(),
                        plan: counts(0, 0),
                    },
                    verify(1, Gate),
                ),
                (verified(true), read_plan()),
                (plan(0, 0), verify(1, Final)),
                (verified(true), complete(1, CompletePlan)),
            ],
        },
        Row {
            rule: "§6 watchdog no_progress: no commit and no plan change for several steps",
            cfg: with(|c| c.watchdog.no_progress_steps = 2),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (stalled(), read_plan()),
                (plan(1, 0), start(2)),
                (done(), read_plan()),
                (plan(1, 0), implement(2, 1)),
                (stalled(), rewrite(WatchdogSignal::NoProgress, 1, true)),
            ],
        },
        Row {
            rule: "§6 watchdog repeated_task: the same task worked again and again",
            cfg: with(|c| c.watchdog.repeat_task_steps = 2),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    Observation::Implemented {
                        token: Token::Absent,
                        progress: StepObservation {
                            head_changed: true,
                            open_task_before: Some("a".into()),
                            open_task_after: Some("a".into()),
                            ..StepObservation::default()
                        },
                        plan: counts(1, 0),
                    },
                    read_plan(),
                ),
                (plan(1, 0), start(2)),
                (done(), read_plan()),
                (plan(1, 0), implement(2, 1)),
                (
                    Observation::Implemented {
                        token: Token::Absent,
                        progress: StepObservation {
                            head_changed: true,
                            open_task_before: Some("a".into()),
                            open_task_after: Some("a".into()),
                            ..StepObservation::default()
                        },
                        plan: counts(1, 0),
                    },
                    rewrite(WatchdogSignal::RepeatedTask, 1, true),
                ),
            ],
        },
        Row {
            rule: "§6 watchdog verification_failed: repeated gate failures rewrite the prompt, next iteration",
            cfg: with(|c| c.verify = true),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Absent), verify(1, Gate)),
                (verified(false), start(2)),
                (done(), read_plan()),
                (plan(1, 0), implement(2, 1)),
                (worked(Token::Absent), verify(2, Gate)),
                (
                    verified(false),
                    rewrite(WatchdogSignal::VerificationFailed, 1, false),
                ),
                (Observation::Rewritten { ok: true }, start(3)),
            ],
        },
        Row {
            rule: "§6 watchdog: at most watchdog_max_rewrites per run, history included",
            cfg: base(),
            history: History {
                first_iteration: 1,
                rewrites_used: 2,
                ..History::default()
            },
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Malformed), read_plan()),
            ],
        },
        Row {
            rule: "§6 watchdog: a rewrite that cannot be made leaves the step's result unchanged",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (
                    worked(Token::Malformed),
                    rewrite(WatchdogSignal::MalformedComplete, 1, true),
                ),
                (Observation::Rewritten { ok: false }, read_plan()),
            ],
        },
        Row {
            rule: "max_consecutive_verification_failures: that many failures in a row fail the run",
            cfg: with(|c| {
                c.verify = true;
                c.max_consecutive_verification_failures = 2;
                c.max_rewrites = 0;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(1, 0), implement(1, 1)),
                (worked(Token::Absent), verify(1, Gate)),
                (verified(false), start(2)),
                (done(), read_plan()),
                (plan(1, 0), implement(2, 1)),
                (worked(Token::Absent), verify(2, Gate)),
                (verified(false), fail(Failure::Verification { limit: 2 })),
            ],
        },
        Row {
            rule: "a pass between two failed verifications resets the count",
            cfg: with(|c| {
                c.verify = true;
                c.max_consecutive_verification_failures = 2;
                c.max_rewrites = 0;
            }),
            history: History {
                first_iteration: 1,
                consecutive_verification_failures: 1,
                ..History::default()
            },
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(0, 0), verify(1, Final)),
                (verified(true), complete(1, CompletePlan)),
            ],
        },
        Row {
            rule: "fix 109df37: failures in a row before a restart still count after it",
            cfg: with(|c| {
                c.verify = true;
                c.max_consecutive_verification_failures = 2;
            }),
            history: History {
                first_iteration: 4,
                consecutive_verification_failures: 1,
                ..History::default()
            },
            first: start(4),
            script: vec![
                (done(), read_plan()),
                (plan(0, 0), verify(4, Final)),
                (verified(false), fail(Failure::Verification { limit: 2 })),
            ],
        },
        Row {
            rule: "§6 verification skipped at an already verified HEAD counts neither way",
            cfg: with(|c| {
                c.verify = true;
                c.max_consecutive_verification_failures = 1;
            }),
            history: fresh(),
            first: start(1),
            script: vec![
                (done(), read_plan()),
                (plan(0, 0), verify(1, Final)),
                (
                    Observation::Verified {
                        passed: false,
                        skipped: true,
                    },
                    implement(1, 1),
                ),
            ],
        },
        Row {
            rule: "an observation the loop did not ask for fails the run instead of panicking",
            cfg: base(),
            history: fresh(),
            first: start(1),
            script: vec![(
                verified(true),
                fail(Failure::Protocol {
                    detail: "run loop: Verified { passed: true, skipped: false } while waiting at Starting"
                        .into(),
                }),
            )],
        },
    ];
    rows.extend(super::table_stops::rows());
    rows
}

#[test]
fn every_rule_of_the_run_loop() {
    let mut failures = Vec::new();
    for row in table() {
        let mut run = RunLoop::new(row.cfg, row.history);
        let first = run.start();
        if first != row.first {
            failures.push(format!(
                "{}\n  first decision: expected {:?}, got {first:?}",
                row.rule, row.first
            ));
            continue;
        }
        for (n, (obs, expected)) in row.script.into_iter().enumerate() {
            let shown = format!("{obs:?}");
            let got = run.next(obs);
            if got != expected {
                failures.push(format!(
                    "{}\n  step {}: after {shown}: expected {expected:?}, got {got:?}",
                    row.rule,
                    n + 1
                ));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
