//! The budgets of a run (SPEC §15) as the loop sees them: the limits, what was spent, which
//! one ran out. Pure: the driver measures, [`Budget::exhausted`] decides.

use std::time::Duration;

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
