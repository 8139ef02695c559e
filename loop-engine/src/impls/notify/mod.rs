//! The built-in notifiers a run's configuration turns on (SPEC §12, "tell the person"):
//! a signed JSON webhook (`notify_webhook_url`), a command fed the JSON on stdin
//! (`notify_cmd`) and a desktop notification (`notify_desktop`). Each is a plain
//! [`Notifier`](crate::backend::Notifier) and composes with any other; [`QueuedNotifier`]
//! puts one behind a bounded queue with retries, so none ever blocks a run.

mod body;
mod command;
mod desktop;
mod hmac;
mod queue;
mod webhook;

pub use body::notification_json;
pub use command::CommandNotifier;
pub use desktop::DesktopNotifier;
pub use hmac::{hmac_sha256, signature_header};
pub use queue::{QueuedNotifier, RetryPolicy};
pub use webhook::{SIGNATURE_HEADER, WebhookNotifier, WebhookUrl};
