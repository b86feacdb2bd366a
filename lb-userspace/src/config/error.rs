//! Config errors as users read them: `FILE:LINE:COLUMN: message`, one a line
//! (CONTRACT.md, "Bad input"), plus the collector validation uses to report
//! every error it finds at once.

use std::fmt;

use serde::Serialize;

/// Where an item sits in the YAML file, 1-based. Line 0 means "no position"
/// (e.g. the file could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

impl Span {
    /// Position of a value deserialized through [`serde_saphyr::Spanned`]: where it is
    /// used, so an alias points at `*name` rather than at its anchor.
    pub(crate) fn of<T>(spanned: &serde_saphyr::Spanned<T>) -> Self {
        Self::from_location(&spanned.referenced)
    }

    pub(crate) fn from_location(location: &serde_saphyr::Location) -> Self {
        Self {
            line: usize::try_from(location.line()).unwrap_or(usize::MAX),
            column: usize::try_from(location.column()).unwrap_or(usize::MAX),
        }
    }
}

/// One error with the file and position it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one file; never empty when returned as an `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error, for failures that stop everything (I/O, YAML syntax).
    pub(crate) fn single(file: &str, span: Span, message: impl Into<String>) -> Self {
        Self {
            errors: vec![ConfigError {
                file: file.to_owned(),
                line: span.line,
                column: span.column,
                message: message.into(),
            }],
        }
    }

    /// The first syntax or type error serde-saphyr stopped at.
    pub(crate) fn from_yaml(file: &str, err: &serde_saphyr::Error) -> Self {
        use serde_saphyr::MessageFormatter as _;
        let span = err
            .location()
            .filter(|l| *l != serde_saphyr::Location::UNKNOWN)
            .map(|l| Span::from_location(&l))
            .unwrap_or_default();
        // The bare message (the position is ours to print, in our format), in
        // the wording serde-saphyr meant for users rather than developers.
        let message = serde_saphyr::UserMessageFormatter.format_message(err);
        Self::single(file, span, sanitize(&message))
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Keeps "one error a line" true whatever the file holds: control characters
/// that came from the input are escaped.
fn sanitize(message: &str) -> String {
    message
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Collects validation errors so that all of them are reported at once.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    found: Vec<(Span, String)>,
}

impl Errors {
    pub(crate) fn push(&mut self, span: Span, message: impl Into<String>) {
        self.found.push((span, message.into()));
    }

    /// `Ok(value)` when nothing was reported, else every error sorted by position.
    pub(crate) fn finish<T>(self, file: &str, value: T) -> Result<T, ConfigErrors> {
        if self.found.is_empty() {
            return Ok(value);
        }
        let mut found = self.found;
        // Stable: errors at one position keep the order they were found in.
        found.sort_by_key(|(span, _)| *span);
        Err(ConfigErrors {
            errors: found
                .into_iter()
                .map(|(span, message)| ConfigError {
                    file: file.to_owned(),
                    line: span.line,
                    column: span.column,
                    message: sanitize(&message),
                })
                .collect(),
        })
    }
}
