//! Configuration (SPEC §8): keys, defaults, the `key=value` file format and precedence.
//!
//! [`Config::load`] merges, lowest first: the built-in defaults, `<workspace>/.loop/config`,
//! the explicit config file (`--config FILE`, else `LOOP_CONFIG`), and the overrides from
//! the command line or the HTTP API. The path helpers find the workspace root and resolve
//! the spec and plan a run works on.

mod file;
mod keys;
mod layers;
mod paths;
mod schema;

pub use file::KeyValueFile;
pub use keys::{KEY_SPECS, KEYS, KeySpec, key_spec};
pub use layers::{ConfigLayers, LOOP_CONFIG_ENV, LoadedConfig, workspace_config_path};
pub use paths::{
    default_plan_path, find_workspace_root, normalize_path, resolve_plan_path, resolve_spec_path,
};
pub use schema::{ArtifactMode, Config, ExecutorKind};
