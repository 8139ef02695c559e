//! The run loop of SPEC §6 as a pure state machine: which step comes next (review or
//! implement), when verification runs (gate, after a review that moved HEAD, final), when a
//! run is complete, when the watchdog rewrites the prompt, when an agent call is retried, and
//! when a run fails (retries spent, consecutive verification failures, iterations used up).
//!
//! No IO and no clock. The driver asks [`RunLoop::start`] for the first [`Decision`],
//! performs it, and feeds back what it observed with [`RunLoop::next`], until a decision ends
//! the run ([`Decision::Complete`] or [`Decision::Fail`]).

use std::time::Duration;

use crate::domain::ExitReason;
use crate::machine::{
    RetryBudget, RetryDecision, RetryPolicy, StepObservation, Watchdog, WatchdogConfig,
    WatchdogSignal, decide_retry,
};
use crate::outcome::FailureKind;
use crate::plan::PlanCounts;

/// The settings of the loop, from a run's config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LoopConfig {
    /// `iterations`: the iteration budget.
    pub(crate) iterations: u32,
    /// `reviewer`: review passes run.
    pub(crate) reviewer: bool,
    /// `max_review_passes`: review steps per pass (at least one).
    pub(crate) max_review_passes: u32,
    /// True when `verify_cmds` is not empty.
    pub(crate) verify: bool,
    /// `max_consecutive_verification_failures` (0 = no limit).
    pub(crate) max_consecutive_verification_failures: u32,
    /// The watchdog's thresholds.
    pub(crate) watchdog: WatchdogConfig,
    /// `watchdog_max_rewrites`.
    pub(crate) max_rewrites: u32,
    /// The retry policy of agent calls.
    pub(crate) retry: RetryPolicy,
    /// `max_no_progress_steps` (0 = no limit).
    pub(crate) max_no_progress_steps: u32,
    /// `max_cost_usd`, `max_tokens`, `max_wall_sec`.
    pub(crate) budget: Budget,
    /// `usage_limit_wait_max_sec`: the longest wait for a usage limit's reset.
    pub(crate) usage_limit_wait_max: Duration,
}

/// A run's budgets (SPEC §15); `None` = no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Budget {
    /// `max_cost_usd`.
    pub(crate) cost_usd: Option<f64>,
    /// `max_tokens` (input + output).
    pub(crate) tokens: Option<u64>,
    /// `max_wall_sec`.
    pub(crate) wall: Option<Duration>,
}

impl Budget {
    /// True when any limit is set.
    pub(crate) fn is_set(&self) -> bool {
        self.cost_usd.is_some() || self.tokens.is_some() || self.wall.is_some()
    }

    /// The first limit `spent` reached, if any.
    pub(crate) fn exhausted(&self, spent: &Spent) -> Option<BudgetKind> {
        if self.cost_usd.is_some_and(|limit| spent.cost_usd >= limit) {
            return Some(BudgetKind::Cost);
        }
        if self.tokens.is_some_and(|limit| spent.tokens >= limit) {
            return Some(BudgetKind::Tokens);
        }
        if self.wall.is_some_and(|limit| spent.wall >= limit) {
            return Some(BudgetKind::Wall);
        }
        None
    }
}

/// What a run has spent so far: every agent call (retries and the naming call included) and
/// the wall-clock time since its first step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Spent {
    /// Dollars, from the agents' own accounting.
    pub(crate) cost_usd: f64,
    /// Input + output tokens.
    pub(crate) tokens: u64,
    /// Wall-clock time.
    pub(crate) wall: Duration,
}

/// Which budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BudgetKind {
    /// `max_cost_usd`.
    Cost,
    /// `max_tokens`.
    Tokens,
    /// `max_wall_sec`.
    Wall,
}

/// Usage-limit waits one agent call may make in a row before the run gives up (a CLI that
/// keeps reporting a reset in the past would otherwise be called forever).
pub(crate) const MAX_USAGE_LIMIT_WAITS: u32 = 10;

/// What a run brings back from its stored steps when it starts again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// The iteration to start with (1 for a new run).
    pub(crate) first_iteration: u32,
    /// Watchdog rewrites already made.
    pub(crate) rewrites_used: u32,
    /// Verification failures in a row at the end of the history (an interrupted verification
    /// counts neither way).
    pub(crate) consecutive_verification_failures: u32,
    /// The run has not begun an iteration yet (`iterations_run` is 0).
    pub(crate) unstarted: bool,
}

/// Which verification this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VerifyKind {
    /// After an implementation step (the gate).
    Gate,
    /// After a review pass that moved HEAD.
    Review,
    /// Before declaring the plan done.
    Final,
}

/// A warning the loop records without changing course.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Warning {
    /// The reviewer is off and the agent sent the token with tasks pending
    /// (`WARN_COMPLETE_WITH_PENDING`).
    CompleteWithPending {
        /// Tasks still pending.
        pending: u32,
    },
    /// The reviewer sent the token with tasks pending or awaiting review
    /// (`WARN_REVIEWER_COMPLETE_WITH_PENDING`).
    ReviewerCompleteWithPending {
        /// The review step's pass number.
        pass: u32,
        /// Tasks pending.
        pending: u32,
        /// Tasks awaiting review.
        to_review: u32,
    },
}

/// Why the loop ends a run as failed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Failure {
    /// The last agent attempt failed and is not retried (`claude_failed`).
    Agent,
    /// Every iteration was used and the plan is not done (`iterations_exhausted`).
    IterationsExhausted,
    /// Verification failed this many times in a row (`max_consecutive_failures`).
    Verification {
        /// The limit that was reached.
        limit: u32,
    },
    /// The run began with nothing to do: no open task and nothing to review
    /// (`plan_already_done`).
    PlanAlreadyDone {
        /// Tasks done.
        done: u32,
        /// Tasks in the plan.
        total: u32,
    },
    /// Implementation steps changed neither the plan nor HEAD this many times in a row, and
    /// the watchdog's rewrites are used up (`no_progress`).
    NoProgress {
        /// Steps without progress in a row.
        steps: u32,
    },
    /// A budget ran out (`budget_exhausted:<kind>`).
    Budget {
        /// Which one.
        kind: BudgetKind,
        /// What was spent when it was checked.
        spent: Spent,
    },
    /// The account's usage limit is reached and its reset is unknown, further away than
    /// `usage_limit_wait_max_sec`, or keeps not coming (`claude_failed`).
    UsageLimit {
        /// The wait the reset asked for, when known.
        wait: Option<Duration>,
    },
    /// The driver reported something the loop did not ask for (a bug; `failed`).
    Protocol {
        /// What was expected and what came.
        detail: String,
    },
}

/// What the completion detector saw in an agent's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// The completion token, accepted.
    Accepted,
    /// The token in a form the mode does not accept.
    Malformed,
    /// No token.
    Absent,
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision {
    /// Begin iteration `iteration` (a step boundary: pause and cancel are honoured here).
    /// Answer: [`Observation::Done`].
    StartIteration {
        /// The iteration.
        iteration: u32,
    },
    /// Read the plan (and save its counts). Answer: [`Observation::Plan`].
    ReadPlan,
    /// Read the worktree's HEAD. Answer: [`Observation::Head`].
    ReadHead,
    /// Run a review step. Answer: [`Observation::Reviewed`] or a failed attempt.
    Review {
        /// The iteration.
        iteration: u32,
        /// The review step's number in the iteration, both passes counted (`iR<pass>`), so
        /// every review step of a run has its own label.
        pass: u32,
        /// The attempt (1 for the first).
        attempt: u32,
        /// True when this repeats a failed attempt of the same call.
        retry: bool,
    },
    /// Run an implementation step. Answer: [`Observation::Implemented`] or a failed attempt.
    Implement {
        /// The iteration.
        iteration: u32,
        /// The attempt, counted over the whole phase (watchdog re-runs included).
        attempt: u32,
        /// True when this repeats a failed attempt of the same call.
        retry: bool,
    },
    /// The last agent attempt failed: record it as retrying and wait `delay`, then the same
    /// call is made again. Answer: [`Observation::Done`].
    RetryAgent {
        /// How long to wait.
        delay: Duration,
        /// True when the transient-failure budget paid for it.
        transient: bool,
    },
    /// Run the verification commands. Answer: [`Observation::Verified`].
    Verify {
        /// The iteration.
        iteration: u32,
        /// Which verification.
        kind: VerifyKind,
    },
    /// Measure what the run has spent (a budget is set; before an agent call and after one).
    /// Answer: [`Observation::Spent`].
    CheckBudget,
    /// The last agent attempt hit the account's usage limit: record it, wait `wait` (the
    /// reset), then the same call is made again; no retry is used. Answer:
    /// [`Observation::Done`].
    WaitUsageLimit {
        /// How long until the reset.
        wait: Duration,
    },
    /// Rewrite the prompt for the watchdog's signal. Answer: [`Observation::Rewritten`].
    Rewrite {
        /// The signal.
        signal: WatchdogSignal,
        /// The rewrite's number in the run (`prompt.rewrite.<n>.txt`).
        rewrite: u32,
        /// True when the rewrite follows an agent step (false: a failed gate).
        after_agent: bool,
    },
    /// Record a warning. Answer: [`Observation::Done`].
    Warn {
        /// The iteration.
        iteration: u32,
        /// The warning.
        warning: Warning,
    },
    /// The run is complete.
    Complete {
        /// The iteration it completed in.
        iteration: u32,
        /// `complete_plan` or `complete_reviewer`.
        reason: ExitReason,
    },
    /// The run failed.
    Fail(Failure),
}

/// What the driver observed performing a [`Decision`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Observation {
    /// The decision was carried out; it has nothing to report.
    Done,
    /// The plan's counts.
    Plan(PlanCounts),
    /// The worktree's HEAD (`None` on an unborn branch).
    Head(Option<String>),
    /// A review step succeeded.
    Reviewed {
        /// The completion token in its answer.
        token: Token,
        /// The answer says "Returning to implementation".
        returning: bool,
        /// The plan after the step.
        plan: PlanCounts,
    },
    /// An implementation step succeeded.
    Implemented {
        /// The completion token in its answer.
        token: Token,
        /// What the step changed (for the watchdog; `malformed_complete` is set from
        /// `token`).
        progress: StepObservation,
        /// The plan after the step.
        plan: PlanCounts,
    },
    /// An agent attempt failed with a verdict of this kind. `jitter` in `[0, 1)` spreads
    /// the transient backoff.
    AgentFailed {
        /// The kind of failure.
        kind: FailureKind,
        /// A number in `[0, 1)`.
        jitter: f64,
    },
    /// The executor could not run the agent at all (not retried).
    AgentBroken,
    /// An agent attempt hit the account's usage limit; `wait` is the time left until its
    /// reset (`None`: the agent gave no reset time).
    UsageLimited {
        /// Time until the reset.
        wait: Option<Duration>,
    },
    /// What the run has spent.
    Spent(Spent),
    /// A verification finished.
    Verified {
        /// It passed.
        passed: bool,
        /// It was skipped because HEAD was verified already (the result is the earlier one
        /// and counts neither way).
        skipped: bool,
    },
    /// A watchdog rewrite was attempted.
    Rewritten {
        /// The rewritten prompt is in force (false: the rewrite could not be made; the loop
        /// goes on unchanged).
        ok: bool,
    },
}

/// The review pass before the implementation step, or the one after the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Before,
    After,
}

/// Where the loop waits for an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Nothing asked yet.
    Begin,
    /// The plan asked of a run resumed with its iteration budget spent.
    ResumedSpent,
    /// The plan asked before a run's first iteration.
    Unstarted,
    /// `StartIteration` asked.
    Starting,
    /// HEAD asked at the start of a review pass.
    PassHead(Pass),
    /// The plan asked before review step `r`.
    ReviewPlan(Pass, u32),
    /// Review step `r` running.
    Reviewing(Pass, u32),
    /// Waiting before retrying review step `r`.
    ReviewRetry(Pass, u32),
    /// Final verification after the reviewer's token.
    ReviewFinal(Pass),
    /// The reviewer's warning being recorded.
    ReviewWarned(Pass),
    /// HEAD asked at the end of a pass.
    PassEndHead(Pass),
    /// Verification after a pass that moved HEAD.
    PassVerify(Pass),
    /// The plan asked before (`Before`) or after (`After`) the implementation step.
    PlanCheck(Pass),
    /// Final verification before (`Before`) or after (`After`) the implementation step.
    Final(Pass),
    /// The implementation step running.
    Implementing,
    /// Waiting before retrying the implementation step.
    ImplementRetry,
    /// A rewrite after the implementation step.
    ImplementRewrite,
    /// The gate running.
    Gate,
    /// A rewrite after a failed gate.
    GateRewrite,
    /// `WARN_COMPLETE_WITH_PENDING` being recorded.
    Warned,
    /// The spending asked before the decision kept in `RunLoop::guarded`.
    Budget,
    /// The run ended.
    Ended,
}

/// The loop's state for one run.
#[derive(Clone, Debug)]
pub(crate) struct RunLoop {
    cfg: LoopConfig,
    at: At,
    iteration: u32,
    /// The attempt of the current agent call (implementation: over the whole phase).
    attempt: u32,
    /// Review steps begun in this iteration (both passes): the next one's number.
    reviews: u32,
    /// Retries used by the current agent call.
    budget: RetryBudget,
    /// The implementation step's token was accepted.
    accepted: bool,
    /// HEAD when the current review pass began.
    pass_head: Option<Option<String>>,
    rewrites_used: u32,
    consecutive_verification_failures: u32,
    unstarted: bool,
    watchdog: Watchdog,
    /// Implementation steps in a row that changed neither the plan nor HEAD.
    no_progress: u32,
    /// Usage-limit waits of the current agent call.
    usage_waits: u32,
    /// The decision (and where it waits) held back while the spending is asked.
    guarded: Option<(At, Decision)>,
}

impl RunLoop {
    /// A loop for a run with these settings and this history.
    pub(crate) fn new(cfg: LoopConfig, history: History) -> Self {
        Self {
            cfg,
            at: At::Begin,
            iteration: history.first_iteration.max(1).saturating_sub(1),
            attempt: 0,
            reviews: 0,
            budget: RetryBudget::default(),
            accepted: false,
            pass_head: None,
            rewrites_used: history.rewrites_used,
            consecutive_verification_failures: history.consecutive_verification_failures,
            unstarted: history.unstarted,
            watchdog: Watchdog::new(),
            no_progress: 0,
            usage_waits: 0,
            guarded: None,
        }
    }

    /// The first decision.
    pub(crate) fn start(&mut self) -> Decision {
        if self.at != At::Begin {
            return self.protocol("start called twice");
        }
        if self.unstarted {
            // A run that would begin with nothing to do says so instead of completing.
            self.at = At::Unstarted;
            return Decision::ReadPlan;
        }
        if self.iteration >= self.cfg.iterations {
            // Resumed with its budget spent (say, after a crash in the last iteration): the
            // plan decides between done and exhausted.
            self.at = At::ResumedSpent;
            return Decision::ReadPlan;
        }
        self.next_iteration()
    }

    /// The decision that follows `obs`, the answer to the previous decision.
    ///
    /// With a budget set (SPEC §15), the spending is asked ([`Decision::CheckBudget`]) before
    /// every agent call and after every agent step, so no step starts once a budget is spent
    /// and a run stops as soon as one step spent it.
    pub(crate) fn next(&mut self, obs: Observation) -> Decision {
        let after_agent = matches!(
            obs,
            Observation::Implemented { .. }
                | Observation::Reviewed { .. }
                | Observation::AgentFailed { .. }
                | Observation::UsageLimited { .. }
        );
        let checked = matches!(obs, Observation::Spent(_));
        let decision = self.decide(obs);
        if checked {
            return decision;
        }
        self.guard(decision, after_agent)
    }

    /// Holds `decision` back behind a budget check when one is due.
    fn guard(&mut self, decision: Decision, after_agent: bool) -> Decision {
        if !self.cfg.budget.is_set() || self.at == At::Ended {
            return decision;
        }
        let agent_call = matches!(
            decision,
            Decision::Implement { .. } | Decision::Review { .. }
        );
        if !agent_call && !after_agent {
            return decision;
        }
        self.guarded = Some((self.at, decision));
        self.at = At::Budget;
        Decision::CheckBudget
    }

    fn decide(&mut self, obs: Observation) -> Decision {
        match (self.at, obs) {
            (At::Budget, Observation::Spent(spent)) => {
                if let Some(kind) = self.cfg.budget.exhausted(&spent) {
                    self.guarded = None;
                    return self.fail(Failure::Budget { kind, spent });
                }
                match self.guarded.take() {
                    Some((at, decision)) => {
                        self.at = at;
                        decision
                    }
                    None => self.protocol("a budget check with no decision held back"),
                }
            }
            (At::Unstarted, Observation::Plan(plan)) => {
                if plan.pending == 0 && !(self.cfg.reviewer && plan.to_review > 0) {
                    return self.fail(Failure::PlanAlreadyDone {
                        done: plan.done,
                        total: plan.total,
                    });
                }
                self.next_iteration()
            }
            (At::ResumedSpent, Observation::Plan(plan)) => {
                if plan.pending == 0 && !(self.cfg.reviewer && plan.to_review > 0) {
                    return self.final_verification(Pass::After);
                }
                self.fail(Failure::IterationsExhausted)
            }
            (At::Starting, Observation::Done) => {
                if self.cfg.reviewer {
                    self.start_pass(Pass::Before)
                } else {
                    self.plan_check(Pass::Before)
                }
            }
            (At::PassHead(pass), Observation::Head(head)) => {
                self.pass_head = Some(head);
                self.review_plan(pass, 1)
            }
            (At::ReviewPlan(pass, r), Observation::Plan(plan)) => {
                if plan.to_review == 0 {
                    return self.end_pass(pass);
                }
                self.attempt = 0;
                self.budget = RetryBudget::default();
                self.usage_waits = 0;
                self.review(pass, r, false)
            }
            (
                At::Reviewing(pass, r),
                Observation::Reviewed {
                    token,
                    returning,
                    plan,
                },
            ) => {
                if token == Token::Accepted {
                    if plan.pending == 0 && plan.to_review == 0 {
                        if !self.cfg.verify {
                            return self.complete(ExitReason::CompleteReviewer);
                        }
                        return self.verify(At::ReviewFinal(pass), VerifyKind::Final);
                    }
                    self.at = At::ReviewWarned(pass);
                    return Decision::Warn {
                        iteration: self.iteration,
                        warning: Warning::ReviewerCompleteWithPending {
                            pass: self.reviews,
                            pending: plan.pending,
                            to_review: plan.to_review,
                        },
                    };
                }
                if returning || plan.to_review == 0 || r >= self.cfg.max_review_passes.max(1) {
                    return self.end_pass(pass);
                }
                self.review_plan(pass, r + 1)
            }
            (
                At::Reviewing(pass, r),
                obs @ (Observation::AgentFailed { .. }
                | Observation::AgentBroken
                | Observation::UsageLimited { .. }),
            ) => self.agent_failed(obs, At::ReviewRetry(pass, r)),
            (At::ReviewRetry(pass, r), Observation::Done) => self.review(pass, r, true),
            (At::ReviewFinal(pass), Observation::Verified { passed, skipped }) => {
                if let Some(fail) = self.count_verification(passed, skipped) {
                    return fail;
                }
                if passed {
                    self.complete(ExitReason::CompleteReviewer)
                } else {
                    self.end_pass(pass)
                }
            }
            (At::ReviewWarned(pass), Observation::Done) => self.end_pass(pass),
            (At::PassEndHead(pass), Observation::Head(head)) => {
                if self.pass_head.as_ref() != Some(&head) {
                    // The reviewer changed something: check it before going on.
                    self.verify(At::PassVerify(pass), VerifyKind::Review)
                } else {
                    self.after_pass(pass)
                }
            }
            (At::PassVerify(pass), Observation::Verified { passed, skipped }) => {
                if let Some(fail) = self.count_verification(passed, skipped) {
                    return fail;
                }
                self.after_pass(pass)
            }
            (At::PlanCheck(Pass::Before), Observation::Plan(plan)) => {
                if plan.pending > 0 {
                    return self.implement_first();
                }
                if self.cfg.reviewer && plan.to_review > 0 {
                    // The review backlog is worked in the next iteration; nothing to implement.
                    return self.next_iteration();
                }
                self.final_verification(Pass::Before)
            }
            (At::PlanCheck(Pass::After), Observation::Plan(plan)) => {
                if plan.pending == 0 && !(self.cfg.reviewer && plan.to_review > 0) {
                    return self.final_verification(Pass::After);
                }
                if !self.cfg.reviewer && self.accepted && plan.pending > 0 {
                    self.at = At::Warned;
                    return Decision::Warn {
                        iteration: self.iteration,
                        warning: Warning::CompleteWithPending {
                            pending: plan.pending,
                        },
                    };
                }
                self.next_iteration()
            }
            (At::Final(pass), Observation::Verified { passed, skipped }) => {
                if let Some(fail) = self.count_verification(passed, skipped) {
                    return fail;
                }
                match (passed, pass) {
                    (true, _) => self.complete(ExitReason::CompletePlan),
                    // A failing final verification keeps the loop going.
                    (false, Pass::Before) => self.implement_first(),
                    (false, Pass::After) => self.next_iteration(),
                }
            }
            (
                At::Implementing,
                Observation::Implemented {
                    token,
                    mut progress,
                    plan,
                },
            ) => {
                progress.malformed_complete = token == Token::Malformed;
                if progress.head_changed || progress.plan_changed {
                    self.no_progress = 0;
                } else {
                    // An empty answer, or one with no effect (issue 13).
                    self.no_progress += 1;
                }
                self.watchdog.observe(progress);
                self.accepted = token == Token::Accepted;
                // A plan with nothing left to implement goes on to verification whatever the
                // answer looked like (issue 13): a rewrite would only re-run the agent on a
                // finished plan.
                if plan.pending > 0 {
                    if let Some(rewrite) = self.rewrite(At::ImplementRewrite, true) {
                        return rewrite;
                    }
                    // Steps without progress end the run once the watchdog can no longer
                    // rewrite the prompt for them (its rewrites count toward the limit).
                    let limit = self.cfg.max_no_progress_steps;
                    let rewrites_left = self.cfg.watchdog.no_progress_steps > 0
                        && self.rewrites_used < self.cfg.max_rewrites;
                    if limit > 0 && self.no_progress >= limit && !rewrites_left {
                        return self.fail(Failure::NoProgress {
                            steps: self.no_progress,
                        });
                    }
                }
                self.after_implementation()
            }
            (
                At::Implementing,
                obs @ (Observation::AgentFailed { .. }
                | Observation::AgentBroken
                | Observation::UsageLimited { .. }),
            ) => self.agent_failed(obs, At::ImplementRetry),
            (At::ImplementRetry, Observation::Done) => self.implement(true),
            (At::ImplementRewrite, Observation::Rewritten { ok }) => {
                if ok {
                    self.rewritten();
                    // The same phase again with the new prompt.
                    self.budget = RetryBudget::default();
                    return self.implement(false);
                }
                self.after_implementation()
            }
            (At::Gate, Observation::Verified { passed, skipped }) => {
                if let Some(fail) = self.count_verification(passed, skipped) {
                    return fail;
                }
                self.watchdog.observe_verification(passed);
                if passed {
                    return self.after_gate();
                }
                // Runner notes are written; the review is skipped this iteration.
                match self.rewrite(At::GateRewrite, false) {
                    Some(rewrite) => rewrite,
                    None => self.next_iteration(),
                }
            }
            (At::GateRewrite, Observation::Rewritten { ok }) => {
                if ok {
                    self.rewritten();
                }
                self.next_iteration()
            }
            (At::Warned, Observation::Done) => self.next_iteration(),
            (at, obs) => self.protocol(&format!("{obs:?} while waiting at {at:?}")),
        }
    }

    fn next_iteration(&mut self) -> Decision {
        if self.iteration >= self.cfg.iterations {
            return self.fail(Failure::IterationsExhausted);
        }
        self.iteration += 1;
        self.accepted = false;
        self.reviews = 0;
        self.at = At::Starting;
        Decision::StartIteration {
            iteration: self.iteration,
        }
    }

    fn start_pass(&mut self, pass: Pass) -> Decision {
        self.pass_head = None;
        if !self.cfg.verify {
            // HEAD matters only to decide whether to verify the pass.
            return self.review_plan(pass, 1);
        }
        self.at = At::PassHead(pass);
        Decision::ReadHead
    }

    fn review_plan(&mut self, pass: Pass, r: u32) -> Decision {
        self.at = At::ReviewPlan(pass, r);
        Decision::ReadPlan
    }

    fn review(&mut self, pass: Pass, r: u32, retry: bool) -> Decision {
        self.attempt += 1;
        if !retry {
            self.reviews += 1;
        }
        self.at = At::Reviewing(pass, r);
        Decision::Review {
            iteration: self.iteration,
            pass: self.reviews,
            attempt: self.attempt,
            retry,
        }
    }

    fn end_pass(&mut self, pass: Pass) -> Decision {
        if !self.cfg.verify {
            return self.after_pass(pass);
        }
        self.at = At::PassEndHead(pass);
        Decision::ReadHead
    }

    fn after_pass(&mut self, pass: Pass) -> Decision {
        self.plan_check(pass)
    }

    fn plan_check(&mut self, pass: Pass) -> Decision {
        self.at = At::PlanCheck(pass);
        Decision::ReadPlan
    }

    fn final_verification(&mut self, pass: Pass) -> Decision {
        if !self.cfg.verify {
            return self.complete(ExitReason::CompletePlan);
        }
        self.verify(At::Final(pass), VerifyKind::Final)
    }

    fn verify(&mut self, at: At, kind: VerifyKind) -> Decision {
        self.at = at;
        Decision::Verify {
            iteration: self.iteration,
            kind,
        }
    }

    /// Counts a verification's verdict; the failure that ends the run when the limit of
    /// failures in a row is reached.
    fn count_verification(&mut self, passed: bool, skipped: bool) -> Option<Decision> {
        if skipped {
            return None;
        }
        if passed {
            self.consecutive_verification_failures = 0;
            return None;
        }
        self.consecutive_verification_failures += 1;
        let limit = self.cfg.max_consecutive_verification_failures;
        (limit > 0 && self.consecutive_verification_failures >= limit)
            .then(|| self.fail(Failure::Verification { limit }))
    }

    fn implement_first(&mut self) -> Decision {
        self.attempt = 0;
        self.budget = RetryBudget::default();
        self.usage_waits = 0;
        self.implement(false)
    }

    fn implement(&mut self, retry: bool) -> Decision {
        self.attempt += 1;
        self.at = At::Implementing;
        Decision::Implement {
            iteration: self.iteration,
            attempt: self.attempt,
            retry,
        }
    }

    fn after_implementation(&mut self) -> Decision {
        if self.cfg.verify {
            return self.verify(At::Gate, VerifyKind::Gate);
        }
        self.after_gate()
    }

    fn after_gate(&mut self) -> Decision {
        if self.cfg.reviewer {
            self.start_pass(Pass::After)
        } else {
            self.plan_check(Pass::After)
        }
    }

    /// A rewrite when the watchdog raises a signal and rewrites are left.
    fn rewrite(&mut self, at: At, after_agent: bool) -> Option<Decision> {
        let signal = self.watchdog.signal(&self.cfg.watchdog)?;
        if self.rewrites_used >= self.cfg.max_rewrites {
            return None;
        }
        self.at = at;
        Some(Decision::Rewrite {
            signal,
            rewrite: self.rewrites_used + 1,
            after_agent,
        })
    }

    fn rewritten(&mut self) {
        self.rewrites_used += 1;
        // The new prompt gets a fresh chance.
        self.watchdog.reset();
    }

    fn agent_failed(&mut self, obs: Observation, retry_at: At) -> Decision {
        if let Observation::UsageLimited { wait } = obs {
            // Waiting for the reset uses no retry: the same call goes again after it.
            return match wait {
                Some(wait)
                    if wait <= self.cfg.usage_limit_wait_max
                        && self.usage_waits < MAX_USAGE_LIMIT_WAITS =>
                {
                    self.usage_waits += 1;
                    self.at = retry_at;
                    Decision::WaitUsageLimit { wait }
                }
                _ => self.fail(Failure::UsageLimit { wait }),
            };
        }
        let Observation::AgentFailed { kind, jitter } = obs else {
            return self.fail(Failure::Agent);
        };
        match decide_retry(&self.cfg.retry, &mut self.budget, &kind, jitter) {
            RetryDecision::Retry { delay, transient } => {
                self.at = retry_at;
                Decision::RetryAgent { delay, transient }
            }
            RetryDecision::GiveUp => self.fail(Failure::Agent),
        }
    }

    fn complete(&mut self, reason: ExitReason) -> Decision {
        self.at = At::Ended;
        Decision::Complete {
            iteration: self.iteration,
            reason,
        }
    }

    fn fail(&mut self, failure: Failure) -> Decision {
        self.at = At::Ended;
        Decision::Fail(failure)
    }

    fn protocol(&mut self, detail: &str) -> Decision {
        self.fail(Failure::Protocol {
            detail: format!("run loop: {detail}"),
        })
    }
}
