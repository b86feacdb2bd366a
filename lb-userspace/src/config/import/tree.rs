//! Lines of tokens → nested statements. A statement is a keyword with its
//! arguments up to the end of the line, a `{` or a `}`; a `{` opens the
//! block of the statement before it, whether on the same line or alone on
//! the next one; a `}` closes the innermost block.

use super::Diagnostic;
use super::lexer::{Line, Pos, Tok};

/// One word of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    pub quoted: bool,
}

/// `keyword args... [{ block }]`.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub words: Vec<Word>,
    pub pos: Pos,
    pub block: Option<Vec<Node>>,
}

impl Node {
    pub(crate) fn keyword(&self) -> &str {
        &self.words[0].text
    }

    /// The `i`-th argument (0 = first after the keyword).
    pub(crate) fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(|w| w.text.as_str())
    }

    pub(crate) fn args(&self) -> &[Word] {
        &self.words[1..]
    }

    pub(crate) fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or_default()
    }

    /// The statement as written (quotes restored), with `{ … }` for a block.
    pub(crate) fn text(&self) -> String {
        let mut s = self
            .words
            .iter()
            .map(|w| {
                if w.quoted {
                    format!("\"{}\"", w.text)
                } else {
                    w.text.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        if self.block.is_some() {
            s.push_str(" { … }");
        }
        s
    }
}

/// keepalived nests four levels deep at most (virtual_server, real_server,
/// checker, url); far deeper input is a mistake, and a bound keeps the
/// recursive walks over the tree safe.
const MAX_DEPTH: usize = 64;

/// Builds the statement tree. An unmatched `}` or a `{` with nothing to
/// open is an error; blocks still open at the end of the input are closed
/// there with a warning (keepalived accepts such a file too).
pub(crate) fn build(lines: Vec<Line>) -> Result<(Vec<Node>, Vec<Diagnostic>), Diagnostic> {
    let mut warnings = Vec::new();
    // The blocks being filled, innermost last; each with the statement
    // that owns it (None for the top level).
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    for line in lines {
        let mut current: Option<Node> = None;
        for (i, tok) in line.toks.into_iter().enumerate() {
            match tok {
                Tok::Word { text, quoted } => {
                    current
                        .get_or_insert_with(|| Node {
                            words: Vec::new(),
                            pos: line.pos.clone(),
                            block: None,
                        })
                        .words
                        .push(Word { text, quoted });
                }
                Tok::Open => {
                    let owner = match current.take() {
                        Some(node) => node,
                        // `{` alone at the start of a line: the block of
                        // the statement on the line before.
                        None => {
                            let siblings = &mut stack.last_mut().expect("top level").1;
                            match siblings.last() {
                                Some(prev) if i == 0 && prev.block.is_none() => {
                                    siblings.pop().expect("checked")
                                }
                                _ => {
                                    return Err(line
                                        .pos
                                        .diagnostic("`{` without a keyword before it to open"));
                                }
                            }
                        }
                    };
                    if stack.len() > MAX_DEPTH {
                        return Err(line
                            .pos
                            .diagnostic(format!("blocks nested more than {MAX_DEPTH} deep")));
                    }
                    stack.push((Some(owner), Vec::new()));
                }
                Tok::Close => {
                    if let Some(node) = current.take() {
                        stack.last_mut().expect("top level").1.push(node);
                    }
                    if stack.len() == 1 {
                        return Err(line.pos.diagnostic("`}` without an open block to close"));
                    }
                    close(&mut stack);
                }
            }
        }
        if let Some(node) = current {
            stack.last_mut().expect("top level").1.push(node);
        }
    }
    while stack.len() > 1 {
        let owner = stack.last().and_then(|(o, _)| o.as_ref()).expect("inner");
        warnings.push(owner.pos.diagnostic(format!(
            "block `{}` is never closed: closed at the end of the file (a `}}` is missing)",
            owner
                .words
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )));
        close(&mut stack);
    }
    let top = stack.pop().expect("top level").1;
    Ok((top, warnings))
}

fn close(stack: &mut Vec<(Option<Node>, Vec<Node>)>) {
    let (owner, block) = stack.pop().expect("inner block");
    let mut owner = owner.expect("inner blocks have an owner");
    owner.block = Some(block);
    stack.last_mut().expect("top level").1.push(owner);
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    fn lines(text: &str) -> Vec<Line> {
        let file: Rc<str> = Rc::from("t.conf");
        text.lines()
            .enumerate()
            .map(|(i, l)| Line {
                pos: Pos {
                    file: file.clone(),
                    line: i + 1,
                },
                toks: l
                    .split_whitespace()
                    .map(|w| match w {
                        "{" => Tok::Open,
                        "}" => Tok::Close,
                        _ => Tok::Word {
                            text: w.into(),
                            quoted: false,
                        },
                    })
                    .collect(),
            })
            .filter(|l| !l.toks.is_empty())
            .collect()
    }

    fn shape(nodes: &[Node]) -> String {
        nodes
            .iter()
            .map(|n| match &n.block {
                None => n.text(),
                Some(b) => format!(
                    "{}@{}[{}]",
                    n.text().replace(" { … }", ""),
                    n.pos.line,
                    shape(b)
                ),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn braces_on_own_lines_and_mid_line() {
        let (nodes, warnings) =
            build(lines("a 1\nb\n{\nc 2 { d }\ne {\n}\n}\nf { g 3 } h 4")).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(shape(&nodes), "a 1; b@2[c 2@4[d]; e@5[]]; f@8[g 3]; h 4");
    }

    #[test]
    fn unbalanced_braces() {
        let e = build(lines("a {\n}\n}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:3: `}` without an open block to close"
        );
        let e = build(lines("{")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:1: `{` without a keyword before it to open"
        );
        let (nodes, warnings) = build(lines("a {\nb {\nc 1")).unwrap();
        assert_eq!(shape(&nodes), "a@1[b@2[c 1]]");
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0]
                .to_string()
                .starts_with("t.conf:2: block `b` is never closed")
        );
    }
}
