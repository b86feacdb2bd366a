//! `lbd import-keepalived`: keepalived.conf → lbd YAML (CONTRACT.md).
//!
//! Three steps: [`lexer`] reads the file(s) the way keepalived does
//! (comments, quotes, `include`, `$NAME` definitions, braces anywhere),
//! [`tree`] nests the statements, and the mappers ([`map`], [`vrrp`],
//! [`lvs`], [`checks`], reading values with [`values`]) turn them into a
//! commented YAML document written by [`yaml`]. Whatever lbd cannot carry over becomes a comment at its
//! place in the YAML and a warning; nothing is dropped silently.

mod checks;
mod lexer;
mod lvs;
mod map;
mod tree;
mod values;
mod vrrp;
mod yaml;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

/// A message about a place in a keepalived file: `FILE:LINE: message`.
/// Line 0: the file as a whole (e.g. it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// The imported configuration.
#[derive(Debug, Clone)]
pub struct Imported {
    /// lbd YAML, with comments where keepalived options were not carried over.
    pub yaml: String,
    /// One per option not carried over (and per oddity of the input):
    /// first those of reading the files, then those of mapping, each in
    /// file order. What `lbd import-keepalived` prints on stderr.
    pub warnings: Vec<Diagnostic>,
}

/// Imports the keepalived configuration at `path` (and what it includes).
/// A syntax error (unbalanced braces, unterminated quote, include cycle,
/// unreadable file) stops the import.
pub fn import_file(path: &Path) -> Result<Imported, Diagnostic> {
    import_file_for(path, None)
}

/// [`import_file`] for the director keepalived would run as `-i
/// CONFIG_ID`: its `@CONFIG_ID` lines are read, other `@ID` lines not.
pub fn import_file_for(path: &Path, config_id: Option<&str>) -> Result<Imported, Diagnostic> {
    let (lines, mut warnings) = lexer::read(path, config_id)?;
    let (nodes, tree_warnings) = tree::build(lines)?;
    warnings.extend(tree_warnings);
    let mut ctx = map::Ctx::default();
    let doc = map::document(&nodes, &path.display().to_string(), &mut ctx);
    warnings.extend(ctx.warnings);
    Ok(Imported {
        yaml: yaml::render(&doc),
        warnings,
    })
}
