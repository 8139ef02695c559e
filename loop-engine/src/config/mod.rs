//! Configuration (SPEC §8): keys, defaults, the `key=value` file format and precedence.
//!
//! [`Config::load`] merges, lowest first: the built-in defaults, `<workspace>/.loop/config`,
//! the explicit config file (`--config FILE`, else `LOOP_CONFIG`), and the overrides from
//! the command line or the HTTP API. The path helpers find the workspace root and resolve
//! the spec and plan a run works on.

mod decl;
mod file;
mod keys;
mod layer;
mod layers;
mod paths;
mod schema;

pub use decl::{
    ArtifactMode, Config, ExecutorKind, KEY_SPECS, KEYS, MAX_INTERVAL_SEC, MAX_TIMEOUT_SEC,
    WorktreeCleanup, default_text, flag_help, key_spec, markdown_table,
};
pub use file::KeyValueFile;
pub use keys::KeySpec;
pub use layers::{ConfigLayers, LOOP_CONFIG_ENV, LoadedConfig, workspace_config_path};
pub use paths::{
    MAX_CONFIG_FILE_BYTES, MAX_DOC_FILE_BYTES, MAX_PROMPT_FILE_BYTES, default_plan_path,
    find_workspace_root, read_user_file, resolve_inside, resolve_path, resolve_plan_path,
    resolve_spec_path,
};
