//! Scripts (notify hooks, vrrp_scripts, SCRIPT checks). CONTRACT.md: a string
//! split into arguments like a shell would (quotes respected) but run without
//! a shell, or a list of arguments.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A command to run: program then arguments, never through a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Script {
    pub argv: Vec<String>,
}

impl Script {
    /// Splits `command` like a POSIX shell would, without expanding anything.
    pub fn parse(command: &str) -> Result<Self, String> {
        let argv = shlex::split(command).ok_or_else(|| {
            format!("script `{command}` has an unclosed quote or a trailing backslash")
        })?;
        Self::from_argv(argv)
    }

    fn from_argv(argv: Vec<String>) -> Result<Self, String> {
        match argv.first() {
            None => Err("script is empty (expected a command and its arguments)".to_owned()),
            Some(program) if program.is_empty() => {
                Err("script program is an empty string".to_owned())
            }
            Some(_) => Ok(Self { argv }),
        }
    }
}

impl fmt::Display for Script {
    /// Quoted so that the text splits back into the same arguments (shell
    /// quoting cannot carry a NUL byte; such an argument prints as Rust's debug form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match shlex::try_join(self.argv.iter().map(String::as_str)) {
            Ok(quoted) => f.write_str(&quoted),
            Err(_) => write!(f, "{:?}", self.argv),
        }
    }
}

impl<'de> Deserialize<'de> for Script {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScriptVisitor;

        impl<'de> Visitor<'de> for ScriptVisitor {
            type Value = Script;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command line string or a list of arguments")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Script, E> {
                Script::parse(v).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Script, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Script::from_argv(argv).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_any(ScriptVisitor)
    }
}
