//! The YAML configuration of CONTRACT.md: typed schema, parsing and
//! validation.
//!
//! Parsing is in two steps. serde-saphyr reads the file into loose `raw`
//! types and stops at the first YAML syntax or type error (unknown field,
//! bad keyword or duration, wrong shape); then `validate` checks addresses,
//! ranges, references and cross-item rules and reports every error it finds
//! at once. Either way errors come out as `FILE:LINE:COLUMN: message`.

mod duration;
mod error;
pub mod import;
mod keyword;
mod raw;
mod schema;
mod script;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors};
pub use schema::*;

/// Reads and validates the file at `path`. A read error is reported like
/// the others, at line 0.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            &file_name,
            Span::default(),
            format!("cannot read the file: {e}"),
        )
    })?;
    parse_str(&text, &file_name)
}

/// Parses and validates `text`; `file_name` only labels the errors.
pub fn parse_str(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    let raw: raw::RawConfig =
        serde_saphyr::from_str(text).map_err(|e| ConfigErrors::from_yaml(file_name, &e))?;
    let mut errors = error::Errors::default();
    let config = validate::config(raw, &mut errors);
    errors.finish(file_name, config)
}
