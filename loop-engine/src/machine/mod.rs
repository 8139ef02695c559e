//! Pure decisions of the run loop: retry policy and watchdog. No IO, no clock: callers pass in
//! what happened and get back what to do, so every rule is unit-tested in isolation.

mod retry;
mod watchdog;

pub(crate) use retry::*;
pub(crate) use watchdog::*;
