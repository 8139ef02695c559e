//! Pure decisions of the run loop: the loop of SPEC §6 (`run`), the retry policy and the
//! watchdog. No IO, no clock: callers pass in what happened and get back what to do, so every
//! rule is tested without git or processes (the table in `table.rs`).

mod retry;
mod run;
#[cfg(test)]
mod table;
#[cfg(test)]
mod table_stops;
mod watchdog;

pub(crate) use retry::*;
pub(crate) use run::*;
pub(crate) use watchdog::*;
