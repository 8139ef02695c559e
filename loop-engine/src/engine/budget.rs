//! What a run has spent against its budgets (SPEC §15), as clients show it: `loopctl inspect`,
//! `tail`'s status line, `summary.json` and the run resource of the HTTP API. Derived from the
//! run's stored steps (every agent call, retries and the naming call included), so it is the
//! same before and after a restart.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::{Run, Step, UnixMs};

/// Spent and limit of each budget of a run. A limit of `None` means no limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Dollars spent, from the agents' own accounting.
    pub cost_usd: f64,
    /// Input + output tokens used.
    pub tokens: u64,
    /// Seconds since the run's first step (to its end, for a finished run).
    pub wall_sec: u64,
    /// `max_cost_usd`.
    pub max_cost_usd: Option<f64>,
    /// `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `max_wall_sec` (`None` for 0, no limit).
    pub max_wall_sec: Option<u64>,
}

impl BudgetStatus {
    /// The status of `run` from its `steps`, at `now` (a finished run's wall time stops at
    /// its last update). A stored config that no longer parses shows no limits.
    pub fn of(run: &Run, steps: &[Step], now: UnixMs) -> Self {
        let cfg = Config::from_json(&run.config).unwrap_or_default();
        let mut status = Self {
            max_cost_usd: cfg.max_cost_usd,
            max_tokens: cfg.max_tokens,
            max_wall_sec: (cfg.max_wall_sec > 0).then_some(cfg.max_wall_sec),
            ..Self::default()
        };
        for usage in steps.iter().filter_map(|s| s.usage.as_ref()) {
            status.cost_usd += usage.cost_usd.unwrap_or(0.0).max(0.0);
            status.tokens = status.tokens.saturating_add(
                usage
                    .input_tokens
                    .unwrap_or(0)
                    .saturating_add(usage.output_tokens.unwrap_or(0)),
            );
        }
        if let Some(first) = steps.iter().filter_map(|s| s.started_at).min() {
            let end = if run.status.is_terminal() {
                run.updated_at
            } else {
                now
            };
            status.wall_sec = u64::try_from((end - first) / 1000).unwrap_or(0);
        }
        status
    }

    /// True when any budget is set.
    pub fn has_limit(&self) -> bool {
        self.max_cost_usd.is_some() || self.max_tokens.is_some() || self.max_wall_sec.is_some()
    }

    /// One line, e.g. `cost $0.1208/$1.0000, tokens 1200/-, wall 30 s/-` (`-`: no limit).
    pub fn text(&self) -> String {
        let cost = self
            .max_cost_usd
            .map_or_else(|| "-".to_owned(), |m| format!("${m:.4}"));
        let tokens = self
            .max_tokens
            .map_or_else(|| "-".to_owned(), |m| m.to_string());
        let wall = self
            .max_wall_sec
            .map_or_else(|| "-".to_owned(), |m| format!("{m} s"));
        format!(
            "cost ${:.4}/{cost}, tokens {}/{tokens}, wall {} s/{wall}",
            self.cost_usd, self.tokens, self.wall_sec
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_spent_and_limits() {
        let b = BudgetStatus {
            cost_usd: 0.12,
            tokens: 1200,
            wall_sec: 30,
            max_cost_usd: Some(1.0),
            max_tokens: None,
            max_wall_sec: Some(600),
        };
        assert!(b.has_limit());
        assert_eq!(
            b.text(),
            "cost $0.1200/$1.0000, tokens 1200/-, wall 30 s/600 s"
        );
        assert!(!BudgetStatus::default().has_limit());
    }
}
