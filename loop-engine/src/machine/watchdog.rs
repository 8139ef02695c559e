//! The watchdog (SPEC §6): notices a loop that stopped making progress, from what each
//! implementation step changed, and names the signal that justifies a prompt rewrite.

/// Why the watchdog wants the prompt rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WatchdogSignal {
    /// The same open task was worked again and again without being ticked.
    RepeatedTask,
    /// Verification failed repeatedly.
    VerificationFailed,
    /// No new commit and no plan change for several steps.
    NoProgress,
    /// The agent sent the completion token in a form that was not accepted.
    MalformedComplete,
}

impl WatchdogSignal {
    /// The SPEC spelling (`repeated_task`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RepeatedTask => "repeated_task",
            Self::VerificationFailed => "verification_failed",
            Self::NoProgress => "no_progress",
            Self::MalformedComplete => "malformed_complete",
        }
    }
}

/// What one implementation step changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StepObservation {
    /// HEAD moved.
    pub(crate) head_changed: bool,
    /// The plan file's contents changed.
    pub(crate) plan_changed: bool,
    /// The first open task before the step (normalised), if any.
    pub(crate) open_task_before: Option<String>,
    /// The first open task after the step.
    pub(crate) open_task_after: Option<String>,
    /// The completion token came in a form that was not accepted.
    pub(crate) malformed_complete: bool,
    /// The verification after the step: `Some(false)` failed, `Some(true)` passed, `None` not run.
    pub(crate) verification_passed: Option<bool>,
}

/// Thresholds of the watchdog (from the run's config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WatchdogConfig {
    /// `watchdog_no_progress_steps`.
    pub(crate) no_progress_steps: u32,
    /// `watchdog_repeat_task_steps`.
    pub(crate) repeat_task_steps: u32,
    /// Consecutive verification failures that raise `verification_failed`.
    pub(crate) verification_failures: u32,
}

/// The watchdog's memory of recent implementation steps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watchdog {
    history: Vec<StepObservation>,
}

impl Watchdog {
    /// An empty watchdog.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records a finished implementation step.
    pub(crate) fn observe(&mut self, obs: StepObservation) {
        self.history.push(obs);
        // Only the recent past matters; keep memory bounded on very long runs.
        if self.history.len() > 64 {
            self.history.remove(0);
        }
    }

    /// Attaches a verification result to the latest step.
    pub(crate) fn observe_verification(&mut self, passed: bool) {
        if let Some(last) = self.history.last_mut() {
            last.verification_passed = Some(passed);
        }
    }

    /// Forgets the history, after a rewrite (the new prompt gets a fresh chance).
    pub(crate) fn reset(&mut self) {
        self.history.clear();
    }

    /// The signal that the recent steps raise, if any (most specific first).
    pub(crate) fn signal(&self, cfg: &WatchdogConfig) -> Option<WatchdogSignal> {
        let last = self.history.last()?;
        if last.malformed_complete {
            return Some(WatchdogSignal::MalformedComplete);
        }
        let tail = |n: u32| -> Option<&[StepObservation]> {
            let n = usize::try_from(n).ok()?;
            if n == 0 || self.history.len() < n {
                return None;
            }
            Some(&self.history[self.history.len() - n..])
        };
        if let Some(steps) = tail(cfg.no_progress_steps)
            && steps.iter().all(|s| !s.head_changed && !s.plan_changed)
        {
            return Some(WatchdogSignal::NoProgress);
        }
        if let Some(steps) = tail(cfg.repeat_task_steps) {
            let first = steps[0].open_task_before.as_ref();
            if first.is_some()
                && steps.iter().all(|s| {
                    s.open_task_before.as_ref() == first && s.open_task_after.as_ref() == first
                })
            {
                return Some(WatchdogSignal::RepeatedTask);
            }
        }
        if let Some(steps) = tail(cfg.verification_failures)
            && steps.iter().all(|s| s.verification_passed == Some(false))
        {
            return Some(WatchdogSignal::VerificationFailed);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: WatchdogConfig = WatchdogConfig {
        no_progress_steps: 3,
        repeat_task_steps: 3,
        verification_failures: 2,
    };

    fn progress(task: &str, next: &str) -> StepObservation {
        StepObservation {
            head_changed: true,
            plan_changed: true,
            open_task_before: Some(task.into()),
            open_task_after: Some(next.into()),
            ..Default::default()
        }
    }

    fn check(steps: &[StepObservation], expected: Option<WatchdogSignal>) {
        let mut w = Watchdog::new();
        for s in steps {
            w.observe(s.clone());
        }
        assert_eq!(w.signal(&CFG), expected, "{steps:#?}");
    }

    #[test]
    fn steady_progress_raises_nothing() {
        check(
            &[progress("a", "b"), progress("b", "c"), progress("c", "d")],
            None,
        );
        check(&[], None);
    }

    #[test]
    fn no_commit_and_no_plan_change_for_n_steps_is_no_progress() {
        let idle = StepObservation::default();
        check(&[idle.clone(), idle.clone()], None);
        check(
            &[idle.clone(), idle.clone(), idle],
            Some(WatchdogSignal::NoProgress),
        );
    }

    #[test]
    fn the_same_task_worked_repeatedly_is_repeated_task() {
        let stuck = StepObservation {
            head_changed: true,
            plan_changed: false,
            open_task_before: Some("a".into()),
            open_task_after: Some("a".into()),
            ..Default::default()
        };
        check(&[stuck.clone(), stuck.clone()], None);
        check(
            &[stuck.clone(), stuck.clone(), stuck.clone()],
            Some(WatchdogSignal::RepeatedTask),
        );
        check(&[stuck.clone(), progress("a", "b"), stuck], None);
    }

    #[test]
    fn malformed_completion_is_flagged_at_once() {
        let m = StepObservation {
            malformed_complete: true,
            ..progress("a", "b")
        };
        check(&[m], Some(WatchdogSignal::MalformedComplete));
    }

    #[test]
    fn repeated_verification_failures_are_flagged() {
        let mut w = Watchdog::new();
        w.observe(progress("a", "b"));
        w.observe_verification(false);
        assert_eq!(w.signal(&CFG), None);
        w.observe(progress("b", "c"));
        w.observe_verification(false);
        assert_eq!(w.signal(&CFG), Some(WatchdogSignal::VerificationFailed));
        w.reset();
        assert_eq!(w.signal(&CFG), None);
    }
}
