//! Public-API tests of loop-engine: full runs through `Engine` with real git repositories,
//! the in-memory store and scripted agents.

mod agent_faults;
mod artifacts_trail;
mod config_faults;
mod create_checks;
mod driver_fixes;
mod engine_runs;
mod executor_judgement;
mod merge_checkout;
mod notify;
mod postmortem;
mod real_claude;
mod real_claude_stops;
mod report_vocabulary;
mod stops;
mod store_faults;
mod support;
mod tidy;
