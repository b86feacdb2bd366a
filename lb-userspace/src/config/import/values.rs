//! Reading keepalived values (numbers, seconds, switches, scripts) into
//! rendered YAML scalars; a value that does not read is reported where it
//! stands.

use super::map::Ctx;
use super::tree::{Node, Word};
use super::yaml::{Map, Value, quote, raw, str};
use crate::config::{format_duration, parse_duration};

/// The one argument of `node`; a missing one is reported (comment in `map`).
pub(crate) fn one_arg(node: &Node, ctx: &mut Ctx, map: &mut Map) -> Option<String> {
    match node.arg(0) {
        Some(v) => Some(v.to_owned()),
        None => {
            let c = ctx.drop(node, "no value given");
            map.comment(&c);
            None
        }
    }
}

/// A keepalived number of seconds (integer or fractional) as an lbd
/// duration (`8s`, `1500ms`).
pub(crate) fn seconds(text: &str) -> Option<String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    parse_duration(text).ok().map(format_duration)
}

/// Sets `key` in `map` from `node`'s argument read by `read`; on a bad
/// or missing value, a NOT CARRIED OVER comment instead.
pub(crate) fn value(
    node: &Node,
    key: &str,
    map: &mut Map,
    ctx: &mut Ctx,
    expected: &str,
    read: impl Fn(&str) -> Option<String>,
) {
    match node.arg(0).and_then(read) {
        Some(v) => {
            map.set(key, Value::Scalar(v));
            let extra: Vec<&str> = node.args()[1..].iter().map(|w| w.text.as_str()).collect();
            if !extra.is_empty() {
                let c = ctx.drop_part(
                    node,
                    &extra.join(" "),
                    "one value expected, the rest is ignored",
                );
                map.comment(&c);
            }
        }
        None => {
            let c = ctx.drop(node, &format!("expected {expected}"));
            map.comment(&c);
        }
    }
}

/// A keepalived switch: alone it means on; keepalived 2 also takes an
/// explicit `on|off`, `true|false`, `yes|no`. None (reported, with a
/// comment in `map`) for anything else.
pub(crate) fn switch(node: &Node, ctx: &mut Ctx, map: &mut Map) -> Option<bool> {
    match node.arg(0).map(str::to_ascii_lowercase).as_deref() {
        None | Some("on" | "true" | "yes" | "1") => Some(true),
        Some("off" | "false" | "no" | "0") => Some(false),
        Some(_) => {
            let c = ctx.drop(node, "expected nothing, on or off");
            map.comment(&c);
            None
        }
    }
}

pub(crate) fn integer(min: i64, max: i64) -> impl Fn(&str) -> Option<String> {
    move |s: &str| {
        s.parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(raw)
    }
}

pub(crate) fn duration(s: &str) -> Option<String> {
    seconds(s)
}

pub(crate) fn string(s: &str) -> Option<String> {
    Some(str(s))
}

/// A keepalived script line (`notify_master "/x.sh arg"`, `misc_path`,
/// `script`): quoted words are split into arguments at blanks, honouring
/// quotes and backslashes but with no comments (as keepalived splits
/// them), bare words are one argument each. Written back as one string
/// that lbd splits into the same arguments.
pub(crate) fn script(args: &[Word]) -> Option<Value> {
    let mut argv: Vec<String> = Vec::new();
    for w in args {
        if w.quoted {
            argv.extend(split_command(&w.text)?);
        } else {
            argv.push(w.text.clone());
        }
    }
    if argv.first().is_none_or(|p| p.is_empty()) {
        return None;
    }
    // One string when lbd splits it back into the same arguments, else
    // the list of arguments.
    match shlex::try_join(argv.iter().map(String::as_str)) {
        Ok(joined) if shlex::split(&joined).as_ref() == Some(&argv) => {
            Some(Value::Scalar(str(&joined)))
        }
        _ => Some(Value::FlowList(argv.iter().map(|a| quote(a)).collect())),
    }
}

/// Splits a command line at blanks; '…' is literal, "…" and bare text take
/// backslash escapes. None for an unclosed quote.
fn split_command(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    out.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        ch => w.push(ch),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        ch => w.push(ch),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            ch => word.get_or_insert_with(String::new).push(ch),
        }
    }
    out.extend(word);
    Some(out)
}
