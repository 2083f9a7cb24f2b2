//! The plugin config arrives as a JSON string chosen by the operator.

use serde::de::DeserializeOwned;

/// Parses the config string into `T`. An empty or blank string means "no config":
/// it parses as `{}`, so a `#[serde(default)]` struct gets its defaults.
///
/// The error text names the problem the way serde_json reports it (field,
/// line and column) and is meant to be returned to the host as is.
pub fn parse<T: DeserializeOwned>(config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(text).map_err(|e| format!("invalid plugin config: {e}"))
}

/// For plugins without settings: accepts only a blank string or `{}`.
pub fn expect_empty(config: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nothing {}
    parse::<Nothing>(config).map(drop)
}
