//! One typed layer of configuration values as a figment provider, and the mapping of a
//! merged value (or a figment error) back to the layer that supplied it.

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::keys::KeySpec;
use crate::error::{ConfigError, ConfigSource};

/// Figment metadata names of the non-file layers, used to map a value back to its layer.
const DEFAULTS_NAME: &str = "built-in defaults";
const OVERRIDE_NAME: &str = "command-line/API override";
const EFFECTIVE_NAME: &str = "effective configuration";

/// One typed layer of configuration values, as a figment provider.
#[derive(Clone, Debug)]
pub(super) struct Layer {
    source: ConfigSource,
    values: Dict,
}

impl Layer {
    /// An empty layer whose values came from `source`.
    pub(super) fn new(source: ConfigSource) -> Self {
        Self {
            source,
            values: Dict::new(),
        }
    }

    /// Sets a key (a later value for the same key wins).
    pub(super) fn insert(&mut self, spec: &KeySpec, value: Value) {
        self.values.insert(spec.key.to_owned(), value);
    }

    /// The typed values, by key.
    pub(super) fn values(&self) -> &Dict {
        &self.values
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        match &self.source {
            ConfigSource::File(path) => {
                Metadata::named("config file").source(Source::File(path.clone()))
            }
            ConfigSource::Override => Metadata::named(OVERRIDE_NAME),
            ConfigSource::Effective => Metadata::named(EFFECTIVE_NAME),
            ConfigSource::Default => Metadata::named(DEFAULTS_NAME),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.values.clone())]))
    }
}

/// The layer a figment value came from, read back from its provider's metadata.
fn source_of_metadata(metadata: &Metadata) -> ConfigSource {
    match metadata.source.as_ref().and_then(Source::file_path) {
        Some(path) => ConfigSource::File(path.to_path_buf()),
        None if metadata.name == OVERRIDE_NAME => ConfigSource::Override,
        None if metadata.name == EFFECTIVE_NAME => ConfigSource::Effective,
        None => ConfigSource::Default,
    }
}

/// The layer that supplied the merged value of `key`.
pub(super) fn source_of_key(figment: &Figment, key: &str) -> ConfigSource {
    figment
        .find_metadata(key)
        .map(source_of_metadata)
        .unwrap_or(ConfigSource::Default)
}

/// Turns a figment extraction error into a [`ConfigError`] naming key, value and source.
/// Layers are typed before the merge, so this only fires if a layer and [`Config`] disagree.
pub(super) fn map_figment_error(figment: &Figment, err: figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let source_name = match &err.metadata {
        Some(metadata) => source_of_metadata(metadata),
        None => source_of_key(figment, &key),
    };
    let value = figment
        .find_value(&key)
        .ok()
        .map(|v| match v {
            Value::String(_, s) => s,
            other => serde_json::to_string(&other).unwrap_or_default(),
        })
        .unwrap_or_default();
    ConfigError::InvalidValue {
        key,
        value,
        source_name,
        reason: err.kind.to_string(),
    }
}
