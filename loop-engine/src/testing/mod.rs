//! Test support for engine users: mocks, a scripted executor, a git fixture, the store
//! contract suite and a webhook receiver. Enabled by the `testing` feature.

mod faulty_store;
mod git_fixture;
pub mod store_contract;

pub use faulty_store::FaultyStore;
pub use git_fixture::GitFixture;
mod scripted_executor;
pub use scripted_executor::{Act, CustomAction, ScriptedExecutor};
mod webhook_receiver;
pub use webhook_receiver::{ReceivedRequest, WebhookReceiver};
