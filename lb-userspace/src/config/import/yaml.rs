//! A small YAML writer for the imported file: block maps and lists, flow
//! forms for short ones, and comments wherever the importer puts them.
//! Written by hand because no serializer keeps comments; lbd's own parser
//! reads the result back in the tests.

/// A YAML value. Scalars are kept rendered ([`str`], [`raw`]).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(String),
    Map(Map),
    List(List),
    /// `[a, b]`: scalars only.
    FlowList(Vec<String>),
    /// `{ a: 1, b: x }`: scalars only.
    FlowMap(Vec<(String, String)>),
    /// `&NAME value`, for a value later entries repeat as `*NAME`
    /// (a [`Value::Scalar`] of that text). Map entries only.
    Anchored(String, Box<Value>),
}

#[derive(Debug, Clone)]
enum MapLine {
    Entry {
        key: String,
        value: Value,
        comment: Option<String>,
    },
    Comment(String),
}

/// A block map; entries and comments in the order they were added.
#[derive(Debug, Clone, Default)]
pub(crate) struct Map {
    lines: Vec<MapLine>,
}

impl Map {
    pub(crate) fn entry(&mut self, key: &str, value: Value) {
        self.lines.push(MapLine::Entry {
            key: key.to_owned(),
            value,
            comment: None,
        });
    }

    /// An entry with a comment at the end of its (first) line.
    pub(crate) fn entry_with_comment(&mut self, key: &str, value: Value, comment: &str) {
        self.lines.push(MapLine::Entry {
            key: key.to_owned(),
            value,
            comment: Some(comment.to_owned()),
        });
    }

    /// Comment lines (an empty text gives one empty comment line).
    pub(crate) fn comment(&mut self, text: &str) {
        if text.is_empty() {
            self.lines.push(MapLine::Comment(String::new()));
        }
        for line in text.lines() {
            self.lines.push(MapLine::Comment(line.to_owned()));
        }
    }

    pub(crate) fn has_entries(&self) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l, MapLine::Entry { .. }))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l, MapLine::Entry { key: k, .. } if k == key))
    }

    /// Replaces or adds `key`.
    pub(crate) fn set(&mut self, key: &str, value: Value) {
        for line in &mut self.lines {
            if let MapLine::Entry {
                key: k, value: v, ..
            } = line
                && k == key
            {
                *v = value;
                return;
            }
        }
        self.entry(key, value);
    }

    /// The list under `key`, created (empty) at the end if absent.
    pub(crate) fn list_mut(&mut self, key: &str) -> &mut List {
        let index = self.lines.iter().position(
            |l| matches!(l, MapLine::Entry { key: k, value: Value::List(_), .. } if k == key),
        );
        let index = index.unwrap_or_else(|| {
            self.entry(key, Value::List(List::default()));
            self.lines.len() - 1
        });
        match &mut self.lines[index] {
            MapLine::Entry {
                value: Value::List(l),
                ..
            } => l,
            _ => unreachable!("found or added above"),
        }
    }

    /// Adds every line of `other` after the ones here.
    pub(crate) fn extend(&mut self, other: Map) {
        self.lines.extend(other.lines);
    }
}

/// A block list.
#[derive(Debug, Clone, Default)]
pub(crate) struct List {
    lines: Vec<ListLine>,
}

#[derive(Debug, Clone)]
enum ListLine {
    Item(Value),
    Comment(String),
}

impl List {
    pub(crate) fn item(&mut self, value: Value) {
        self.lines.push(ListLine::Item(value));
    }

    pub(crate) fn comment(&mut self, text: &str) {
        for line in text.lines() {
            self.lines.push(ListLine::Comment(line.to_owned()));
        }
    }

    pub(crate) fn items(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l, ListLine::Item(_)))
            .count()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The only item, with the list's comments moved into it (a map item)
    /// or dropped into a map wrapper's place: used for `check:` when a
    /// real server has one check.
    pub(crate) fn into_single(self) -> Value {
        let mut comments = Vec::new();
        let mut item = None;
        for line in self.lines {
            match line {
                ListLine::Comment(c) => comments.push(c),
                ListLine::Item(v) => item = Some(v),
            }
        }
        let item = item.expect("into_single on a list with one item");
        match item {
            Value::Map(m) if !comments.is_empty() => {
                let mut with = Map::default();
                for c in comments {
                    with.comment(&c);
                }
                with.extend(m);
                Value::Map(with)
            }
            other => other,
        }
    }
}

/// A string scalar, quoted when YAML would read it as anything but that
/// string (a number, a boolean, null, a special character).
pub(crate) fn str(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./@+=".contains(c))
        && !text.starts_with(['-', '@', '.'])
        && text.parse::<f64>().is_err()
        && text.parse::<i64>().is_err()
        && !text.starts_with("0x")
        && !text.starts_with("0o")
        && ![
            "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~",
        ]
        .contains(&text.to_ascii_lowercase().as_str());
    if plain { text.to_owned() } else { quote(text) }
}

/// Always double-quoted, with JSON-style escapes (valid YAML).
pub(crate) fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// A scalar written as is: numbers, booleans, durations like `8s`.
pub(crate) fn raw(text: impl ToString) -> String {
    text.to_string()
}

/// Renders a top-level map.
pub(crate) fn render(map: &Map) -> String {
    let mut out = Vec::new();
    render_map(map, 0, &mut out);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

fn comment_line(indent: usize, text: &str) -> String {
    if text.is_empty() {
        format!("{}#", pad(indent))
    } else {
        format!("{}# {text}", pad(indent))
    }
}

fn trailing(comment: &Option<String>) -> String {
    comment
        .as_ref()
        .map(|c| format!("  # {c}"))
        .unwrap_or_default()
}

fn inline(value: &Value) -> Option<String> {
    match value {
        Value::Scalar(s) => Some(s.clone()),
        Value::FlowList(items) => Some(format!("[{}]", items.join(", "))),
        Value::FlowMap(items) if items.is_empty() => Some("{}".to_owned()),
        Value::FlowMap(items) => Some(format!(
            "{{ {} }}",
            items
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        // Only comments: `key:` (null) with the comments below it.
        Value::Map(m) if !m.has_entries() && !m.is_empty() => Some(String::new()),
        Value::Map(m) if !m.has_entries() => Some("{}".to_owned()),
        Value::List(l) if l.items() == 0 => Some("[]".to_owned()),
        _ => None,
    }
}

fn render_map(map: &Map, indent: usize, out: &mut Vec<String>) {
    for line in &map.lines {
        match line {
            MapLine::Comment(c) => out.push(comment_line(indent, c)),
            MapLine::Entry {
                key,
                value,
                comment,
            } => {
                let key = str(key);
                if let Value::Anchored(name, inner) = value {
                    match inline(inner) {
                        Some(v) => out.push(format!(
                            "{}{key}: &{name} {v}{}",
                            pad(indent),
                            trailing(comment)
                        )),
                        None => {
                            out.push(format!(
                                "{}{key}: &{name}{}",
                                pad(indent),
                                trailing(comment)
                            ));
                            match inner.as_ref() {
                                Value::Map(m) => render_map(m, indent + 2, out),
                                Value::List(l) => render_list(l, indent + 2, out),
                                _ => unreachable!("inline covers the rest"),
                            }
                        }
                    }
                    continue;
                }
                match inline(value) {
                    Some(v) => {
                        // An empty block that only holds comments still
                        // shows them, below its `key:` / `[]`.
                        let sep = if v.is_empty() { "" } else { " " };
                        out.push(format!(
                            "{}{key}:{sep}{v}{}",
                            pad(indent),
                            trailing(comment)
                        ));
                        match value {
                            Value::Map(m) if !m.is_empty() => render_map(m, indent + 2, out),
                            Value::List(l) if !l.is_empty() => render_list(l, indent + 2, out),
                            _ => {}
                        }
                    }
                    None => {
                        out.push(format!("{}{key}:{}", pad(indent), trailing(comment)));
                        match value {
                            Value::Map(m) => render_map(m, indent + 2, out),
                            Value::List(l) => render_list(l, indent + 2, out),
                            _ => unreachable!("inline covers the rest"),
                        }
                    }
                }
            }
        }
    }
}

fn render_list(list: &List, indent: usize, out: &mut Vec<String>) {
    for line in &list.lines {
        match line {
            ListLine::Comment(c) => out.push(comment_line(indent, c)),
            ListLine::Item(value) => match inline(value) {
                Some(v) => out.push(format!("{}- {v}", pad(indent))),
                None => {
                    let mut inner = Vec::new();
                    match value {
                        Value::Map(m) => render_map(m, indent + 2, &mut inner),
                        Value::List(l) => render_list(l, indent + 2, &mut inner),
                        _ => unreachable!("inline covers the rest"),
                    }
                    // The first line that is not a comment carries the dash.
                    let mut dashed = false;
                    for line in inner {
                        if !dashed && !line.trim_start().starts_with('#') {
                            out.push(format!("{}- {}", pad(indent), &line[indent + 2..]));
                            dashed = true;
                        } else {
                            out.push(line);
                        }
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_yaml_would_misread_are_quoted() {
        assert_eq!(str("eth0"), "eth0");
        assert_eq!(str("172.17.252.38/20"), "172.17.252.38/20");
        assert_eq!(str("LVS_01"), "LVS_01");
        assert_eq!(str("1111"), "\"1111\"");
        assert_eq!(str("1.5"), "\"1.5\"");
        assert_eq!(str("yes"), "\"yes\"");
        assert_eq!(str("eth0:0"), "\"eth0:0\"");
        assert_eq!(str("::1"), "\"::1\"");
        assert_eq!(str("a b"), "\"a b\"");
        assert_eq!(str(""), "\"\"");
        assert_eq!(str("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn nested_blocks_and_comments() {
        let mut check = Map::default();
        check.entry("type", Value::Scalar("TCP".into()));
        check.comment("note");
        let mut checks = List::default();
        checks.comment("before");
        checks.item(Value::Map(check));
        let mut rs = Map::default();
        rs.entry("address", Value::Scalar("10.0.0.1".into()));
        rs.entry("checks", Value::List(checks));
        let mut reals = List::default();
        reals.item(Value::Map(rs));
        let mut top = Map::default();
        top.entry_with_comment("reals", Value::List(reals), "x");
        top.entry("ports", Value::FlowList(vec!["1".into(), "2".into()]));
        top.entry("empty", Value::Map(Map::default()));
        assert_eq!(
            render(&top),
            "reals:  # x\n  - address: 10.0.0.1\n    checks:\n      # before\n      - type: TCP\n        # note\nports: [1, 2]\nempty: {}\n"
        );
    }
}
