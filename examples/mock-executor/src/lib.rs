//! mock-executor: how to test a loop configuration without a model.
//!
//! Two tools ship with loop-engine's `testing` feature:
//! - `ScriptedExecutor`: a transcript of expected agent calls with canned behaviour (work the
//!   plan like an agent, reply, fail, hang, or anything in a closure). It fails the test on an
//!   unexpected call or an unused entry. Best for "given these agent answers, does my
//!   configuration end the way I expect?".
//! - mockall mocks of every backend trait (`MockExecutor`, `MockNotifier`, `MockVcs`,
//!   `MockStore`): best for interaction checks ("the notifier is told once about the failure").
//!
//! The tests in `tests/main.rs` are the template: copy one, change the config lines and the
//! script, and assert on the run's status, exit reason, steps and events.

/// The plan used by the template tests: three open tasks.
pub const PLAN: &str = "# Plan\n- [ ] first\n- [ ] second\n- [ ] third\n";
