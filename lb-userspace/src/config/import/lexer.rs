//! keepalived.conf read the way keepalived's own parser (lib/parser.c) reads
//! it, line by line: `!` and `#` start a comment anywhere outside double
//! quotes (`\#` and `\!` are literal), `$NAME=value` defines a text
//! substitution used as `$NAME` or `${NAME}` (a value ending in `\`
//! continues on the next line), `@ID` lines belong to one config id,
//! `include PATTERN` reads every file the glob matches (relative to the
//! including file), and braces are tokens of their own wherever they sit.
//!
//! The result is a flat list of lines of tokens, each with its file and
//! line; [`super::tree`] turns it into nested blocks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::Diagnostic;

/// Where a token came from: file as the user named it, 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pos {
    pub file: Rc<str>,
    pub line: usize,
}

impl Pos {
    pub(crate) fn diagnostic(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: self.line,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A word; `quoted` if it was written in double quotes.
    Word {
        text: String,
        quoted: bool,
    },
    Open,
    Close,
}

/// The tokens of one line of input.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub pos: Pos,
    pub toks: Vec<Tok>,
}

/// How deep `$NAME` expansions may nest before we call it a loop.
const MAX_EXPANSIONS: usize = 64;
/// keepalived reads lines into a fixed buffer; this bound keeps definitions
/// that double at every level from filling the memory.
const MAX_LINE: usize = 64 * 1024;

/// Reads `path` and everything it includes.
/// `config_id`: keepalived's `-i ID`, which picks the `@ID` lines.
pub(crate) fn read(
    path: &Path,
    config_id: Option<&str>,
) -> Result<(Vec<Line>, Vec<Diagnostic>), Diagnostic> {
    let mut lexer = Lexer {
        config_id: config_id.map(str::to_owned),
        ..Lexer::default()
    };
    lexer.read_file(path, &path.display().to_string(), None)?;
    if let Some((name, pos)) = lexer.open_definition.take() {
        lexer.warnings.push(pos.diagnostic(format!(
            "definition ${name} continues (trailing `\\`) past the end of the file"
        )));
    }
    Ok((lexer.lines, lexer.warnings))
}

#[derive(Default)]
struct Lexer {
    config_id: Option<String>,
    lines: Vec<Line>,
    warnings: Vec<Diagnostic>,
    definitions: HashMap<String, String>,
    /// A multi-line definition still collecting lines, and where it began.
    open_definition: Option<(String, Pos)>,
    /// Canonical paths of the files being read, outermost first: an
    /// include of one of them is a cycle.
    stack: Vec<(PathBuf, String)>,
}

impl Lexer {
    fn read_file(
        &mut self,
        path: &Path,
        display: &str,
        included_at: Option<&Pos>,
    ) -> Result<(), Diagnostic> {
        let fail = |message: String| match included_at {
            Some(pos) => pos.diagnostic(message),
            None => Diagnostic {
                file: display.to_owned(),
                line: 0,
                message,
            },
        };
        let canonical = path
            .canonicalize()
            .map_err(|e| fail(format!("cannot read {display}: {e}")))?;
        if let Some(i) = self.stack.iter().position(|(p, _)| *p == canonical) {
            let chain: Vec<&str> = self.stack[i..]
                .iter()
                .map(|(_, name)| name.as_str())
                .chain(std::iter::once(display))
                .collect();
            return Err(fail(format!(
                "include cycle: {} (a file may not include itself, directly or through others)",
                chain.join(" includes ")
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read {display}: {e}")))?;
        let text = String::from_utf8_lossy(&bytes);
        self.stack.push((canonical, display.to_owned()));
        let file: Rc<str> = Rc::from(display);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut nbsp_lines: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let pos = Pos {
                file: file.clone(),
                line: i + 1,
            };
            if raw.contains('\u{a0}') {
                nbsp_lines.push(pos.line);
            }
            self.physical_line(raw, &pos, &dir)?;
        }
        // Text copied from a web page: read as blanks (the evident intent),
        // but keepalived itself would take them for part of a word.
        if let Some(&first) = nbsp_lines.first() {
            let pos = Pos { file, line: first };
            self.warnings.push(pos.diagnostic(format!(
                "non-breaking spaces (U+00A0) on {} line(s), the first here: read as blanks, \
                 but keepalived reads them as part of a word and rejects those lines (copied from a web page?)",
                nbsp_lines.len()
            )));
        }
        self.stack.pop();
        Ok(())
    }

    fn physical_line(&mut self, raw: &str, pos: &Pos, dir: &Path) -> Result<(), Diagnostic> {
        let (text, continued) = decomment(raw).map_err(|m| pos.diagnostic(m))?;
        if let Some((name, _)) = &self.open_definition {
            let name = name.clone();
            let value = self.definitions.entry(name).or_default();
            if !text.is_empty() {
                if !value.is_empty() {
                    value.push('\n');
                }
                value.push_str(&text);
            }
            if !continued {
                self.open_definition = None;
            }
            return Ok(());
        }
        if text.is_empty() {
            return Ok(());
        }
        let Some(text) = self.conditional(text, pos) else {
            return Ok(());
        };
        if text.starts_with("~SEQ") {
            self.warnings.push(pos.diagnostic(format!(
                "keepalived's ~SEQ line generator is not supported: line skipped, write its lines out: {text}"
            )));
            return Ok(());
        }
        if let Some((name, value)) = definition(&text) {
            self.definitions.insert(name.clone(), value);
            if continued {
                self.open_definition = Some((name, pos.clone()));
            }
            return Ok(());
        }
        let expanded = self.expand(&text, pos)?;
        // A multi-line definition expands into several lines, all at `pos`.
        for line in expanded.split('\n') {
            let toks = tokenize(line).map_err(|m| pos.diagnostic(m))?;
            if toks.is_empty() {
                continue;
            }
            if let [
                Tok::Word { text: kw, .. },
                Tok::Word {
                    text: pattern,
                    quoted,
                },
            ] = toks.as_slice()
                && kw == "include"
            {
                if *quoted {
                    // keepalived keeps the quotes as part of the name
                    // (and then finds no such file); so does the import.
                    self.include(&format!("\"{pattern}\""), pos, dir)?;
                } else {
                    self.include(pattern, pos, dir)?;
                }
                continue;
            }
            self.warn_undefined(&toks, pos);
            self.lines.push(Line {
                pos: pos.clone(),
                toks,
            });
        }
        Ok(())
    }

    /// `@ID line` is for the keepalived started with `-i ID` only, `@^ID
    /// line` for every other one. Without a config id (keepalived without
    /// `-i`) `@ID` lines are skipped and `@^ID` lines kept. A skipped line
    /// is reported; so is a kept one when no config id was chosen.
    fn conditional(&mut self, text: String, pos: &Pos) -> Option<String> {
        let Some(rest) = text.strip_prefix('@') else {
            return Some(text);
        };
        let (negated, rest) = match rest.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (id, line) = rest
            .split_once([' ', '\t'])
            .map_or((rest, ""), |(a, b)| (a, b.trim_start()));
        let mark = if negated { "@^" } else { "@" };
        let keep = (self.config_id.as_deref() == Some(id)) != negated;
        match (&self.config_id, keep) {
            (Some(_), true) => Some(line.to_owned()),
            (Some(chosen), false) => {
                self.warnings.push(pos.diagnostic(format!(
                    "`{mark}{id}` line skipped: the config id is {chosen}: {line}"
                )));
                None
            }
            (None, true) => {
                self.warnings.push(pos.diagnostic(format!(
                    "`{mark}{id}` line kept: no config id chosen (--config-id), so it is not `{id}`"
                )));
                Some(line.to_owned())
            }
            (None, false) => {
                self.warnings.push(pos.diagnostic(format!(
                    "`{mark}{id}` line skipped: no config id chosen (--config-id {id} picks it, as keepalived -i {id}): {line}"
                )));
                None
            }
        }
    }

    /// Replaces `$NAME` and `${NAME}` of known definitions until none is left.
    fn expand(&self, text: &str, pos: &Pos) -> Result<String, Diagnostic> {
        if self.definitions.is_empty() || !text.contains('$') {
            return Ok(text.to_owned());
        }
        let mut current = text.to_owned();
        for _ in 0..MAX_EXPANSIONS {
            match self.expand_once(&current) {
                Some(next) if next.len() > MAX_LINE => {
                    return Err(pos.diagnostic(format!(
                        "line longer than {} KiB once definitions are substituted",
                        MAX_LINE / 1024
                    )));
                }
                Some(next) => current = next,
                None => return Ok(current),
            }
        }
        Err(pos.diagnostic(format!(
            "definitions expand without end (a definition uses itself?): {text}"
        )))
    }

    /// One pass over `text`; None when nothing was replaced.
    fn expand_once(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some((name, len, braced)) = reference(after)
                && substitutable(&after[len..], braced)
                && let Some(value) = self.definitions.get(name)
                // A multi-line value only where its lines can follow: at
                // the end of the line.
                && (!value.contains('\n') || after[len..].trim().is_empty())
            {
                out.push_str(value);
                rest = &after[len..];
                changed = true;
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    /// Reports the `$NAME`s left in a line: undefined, or where keepalived
    /// does not substitute them.
    fn warn_undefined(&mut self, toks: &[Tok], pos: &Pos) {
        for tok in toks {
            let Tok::Word { text, .. } = tok else {
                continue;
            };
            let mut rest = text.as_str();
            while let Some(i) = rest.find('$') {
                let after = &rest[i + 1..];
                let Some((name, len, _)) = reference(after) else {
                    rest = after;
                    continue;
                };
                let message = if self.definitions.contains_key(name) {
                    format!(
                        "${name} is not substituted here: keepalived substitutes `$NAME` only before a blank, \
                         `,`, `)` or the end of the line (a multi-line one only at the end): write `${{{name}}}`"
                    )
                } else {
                    format!(
                        "${name} is not defined (no `${name}=...` line before it); kept as written"
                    )
                };
                self.warnings.push(pos.diagnostic(message));
                rest = &after[len..];
            }
        }
    }

    fn include(&mut self, pattern: &str, pos: &Pos, dir: &Path) -> Result<(), Diagnostic> {
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            dir.join(pattern)
        };
        let full_text = full.to_string_lossy().into_owned();
        let paths = glob::glob(&full_text)
            .map_err(|e| pos.diagnostic(format!("include {pattern}: bad pattern: {e}")))?;
        let mut matched: Vec<PathBuf> = Vec::new();
        for entry in paths {
            let path = entry.map_err(|e| pos.diagnostic(format!("include {pattern}: {e}")))?;
            if path.is_file() {
                matched.push(path);
            }
        }
        if matched.is_empty() {
            self.warnings
                .push(pos.diagnostic(format!("include {pattern}: no file matches {full_text}")));
            return Ok(());
        }
        matched.sort();
        for path in matched {
            let display = path.display().to_string();
            self.read_file(&path, &display, Some(pos))?;
        }
        Ok(())
    }
}

/// `NAME` or `{NAME}` at the start of `s` (just after a `$`): the name,
/// how many bytes the reference takes, and whether it is braced.
fn reference(s: &str) -> Option<(&str, usize, bool)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let first = body.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let name = &body[..len];
    if braced {
        body[len..]
            .starts_with('}')
            .then_some((name, len + 2, true))
    } else {
        Some((name, len, false))
    }
}

/// keepalived substitutes `${NAME}` anywhere, `$NAME` only before a blank,
/// `,`, `)` or the end of the line (parser.c, find_definition).
fn substitutable(after: &str, braced: bool) -> bool {
    braced || after.is_empty() || after.starts_with([' ', '\t', ',', ')'])
}

/// `$NAME=value`: nothing between the name and `=` (keepalived reads
/// `$NAME = value` as an ordinary line).
fn definition(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix('$')?;
    let first = rest.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let value = rest[len..].strip_prefix('=')?;
    Some((rest[..len].to_owned(), value.trim().to_owned()))
}

/// Removes the comment and surrounding whitespace, unescapes `\#` and `\!`
/// outside quotes; reports whether the line ends in a continuing `\`.
fn decomment(raw: &str) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(raw.len());
    let mut quoted = false;
    let mut chars = raw.trim_start().chars().peekable();
    let mut continued = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            '\\' => match chars.next() {
                None => {
                    continued = true;
                    break;
                }
                Some(n @ ('#' | '!')) if !quoted => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
            },
            '#' | '!' if !quoted => break,
            _ => out.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote: {}", raw.trim()));
    }
    Ok((out.trim_end().to_owned(), continued))
}

/// Splits a decommented line into words, quoted strings and braces.
fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else {
            return Ok(toks);
        };
        match c {
            '{' => {
                chars.next();
                toks.push(Tok::Open);
            }
            '}' => {
                chars.next();
                toks.push(Tok::Close);
            }
            _ => {
                let mut text = String::new();
                let mut quoted = false;
                let mut in_quote = false;
                while let Some(&c) = chars.peek() {
                    if !in_quote && (c.is_whitespace() || c == '{' || c == '}') {
                        break;
                    }
                    chars.next();
                    match c {
                        '"' => {
                            in_quote = !in_quote;
                            quoted = true;
                        }
                        '\\' if in_quote => match chars.next() {
                            Some(n @ ('"' | '\\')) => text.push(n),
                            Some(n) => {
                                text.push('\\');
                                text.push(n);
                            }
                            None => text.push('\\'),
                        },
                        _ => text.push(c),
                    }
                }
                if in_quote {
                    return Err(format!("unterminated quote: {line}"));
                }
                toks.push(Tok::Word { text, quoted });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokenize(line)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Tok::Word { text, .. } => text,
                Tok::Open => "{".into(),
                Tok::Close => "}".into(),
            })
            .collect()
    }

    #[test]
    fn comments_start_anywhere_outside_quotes() {
        assert_eq!(
            decomment("  state MASTER   #状态").unwrap().0,
            "state MASTER"
        );
        assert_eq!(decomment("a ! b").unwrap().0, "a");
        assert_eq!(
            decomment(r#"script "a # b" # c"#).unwrap().0,
            r#"script "a # b""#
        );
        assert_eq!(decomment(r"auth_pass 12\#4").unwrap().0, "auth_pass 12#4");
        assert!(decomment(r#"script "open"#).is_err());
        assert_eq!(decomment(r"$X=a \").unwrap(), ("$X=a".into(), true));
    }

    #[test]
    fn braces_are_tokens_anywhere() {
        assert_eq!(words("vrrp_instance VI_2{"), ["vrrp_instance", "VI_2", "{"]);
        assert_eq!(
            words("real_server 1.2.3.4 80 { weight 1 }"),
            ["real_server", "1.2.3.4", "80", "{", "weight", "1", "}"]
        );
        assert_eq!(words(r#"script "a { b }""#), ["script", "a { b }"]);
        assert_eq!(words("}}"), ["}", "}"]);
    }

    #[test]
    fn references() {
        assert_eq!(reference("VIP rest"), Some(("VIP", 3, false)));
        assert_eq!(reference("{VIP}x"), Some(("VIP", 5, true)));
        assert_eq!(reference("{VIP"), None);
        assert_eq!(reference("1x"), None);
        assert!(substitutable(" rest", false) && substitutable("", false));
        assert!(substitutable(",", false) && substitutable(")", false));
        assert!(!substitutable("/32", false) && substitutable("/32", true));
        assert_eq!(
            definition("$VIP=10.0.0.1 "),
            Some(("VIP".into(), "10.0.0.1".into()))
        );
        assert_eq!(
            definition("$VIP= 10.0.0.1"),
            Some(("VIP".into(), "10.0.0.1".into()))
        );
        assert_eq!(
            definition("$VIP = 10.0.0.1"),
            None,
            "keepalived allows no blank before ="
        );
        assert_eq!(definition("$VIP 10.0.0.1"), None);
    }
}
