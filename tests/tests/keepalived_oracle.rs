//! Debian's keepalived as the reference for the importer's grammar:
//! `keepalived --config-test` reads the same files (in a namespace with
//! the interfaces they name), and where keepalived finds an unknown
//! keyword the importer must report one at the same file and line, and
//! nowhere else. Files the importer reads without a syntax complaint must
//! not make keepalived complain about braces or quotes either.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lb_tests::netns::Netns;
use lb_userspace::config::import::import_file;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lb-userspace/tests/data/keepalived")
        .join(rel)
}

/// A namespace with the interfaces the fixtures name.
fn namespace() -> Netns {
    assert!(lb_tests::have_root(), "needs root (namespaces)");
    assert!(
        which("keepalived"),
        "keepalived is not installed (cargo xtask setup installs Debian's package)"
    );
    let ns = Netns::new("keepalived").unwrap();
    for (i, name) in ["eth0", "eth1", "eth2"].iter().enumerate() {
        let peer = format!("peer{i}");
        ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
            .unwrap();
        ns.link_up(name).unwrap();
    }
    ns
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        || Path::new("/usr/sbin").join(program).is_file()
}

/// keepalived's complaints about `file`: (file name, line, message),
/// deduplicated (each of its processes repeats them).
fn keepalived_says(ns: &Netns, file: &Path) -> BTreeSet<(String, usize, String)> {
    let out = ns
        .command(&[
            "keepalived",
            "--config-test",
            "-f",
            file.to_str().unwrap(),
            "-l",
        ])
        .output()
        .expect("running keepalived");
    let main = file_name(file.to_str().unwrap());
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| {
            // "(PATH: Line N) message", "(Line N) message" or "message".
            let Some(rest) = l.strip_prefix('(') else {
                return (main.clone(), 0, l.to_owned());
            };
            let Some((place, message)) = rest.split_once(") ") else {
                return (main.clone(), 0, l.to_owned());
            };
            let (path, line) = match place.rsplit_once("Line ") {
                Some((path, n)) => (path.trim_end_matches(": "), n.parse().unwrap_or(0)),
                None => ("", 0),
            };
            let name = if path.is_empty() {
                main.clone()
            } else {
                file_name(path)
            };
            (name, line, message.to_owned())
        })
        .collect()
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where keepalived finds unknown keywords (not counting the `}` it
/// stumbles on after an unknown block).
fn keepalived_unknown(said: &BTreeSet<(String, usize, String)>) -> BTreeSet<(String, usize)> {
    said.iter()
        .filter(|(_, _, m)| m.starts_with("Unknown keyword") && m != "Unknown keyword '}'")
        .map(|(f, l, _)| (f.clone(), *l))
        .collect()
}

/// Where the importer finds unknown keywords.
fn importer_unknown(file: &Path) -> BTreeSet<(String, usize)> {
    import_file(file)
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .filter(|w| w.message.contains("unknown keyword"))
        .map(|w| (file_name(&w.file), w.line))
        .collect()
}

fn syntax_complaints(said: &BTreeSet<(String, usize, String)>) -> Vec<String> {
    said.iter()
        .filter(|(_, _, m)| {
            m.contains("Unexpected '{'")
                || m.contains("missing '}'")
                || m.contains("Unterminated")
                || m.contains("No config files matched")
        })
        .map(|(f, l, m)| format!("{f}:{l}: {m}"))
        .collect()
}

#[test]
fn grammar_cases_read_the_same_in_keepalived() {
    let ns = namespace();
    for rel in [
        "grammar/braces.conf",
        "grammar/comments.conf",
        "grammar/definitions.conf",
        "grammar/includes/keepalived.conf",
        "grammar/unknown.conf",
    ] {
        let file = data(rel);
        let said = keepalived_says(&ns, &file);
        assert_eq!(
            syntax_complaints(&said),
            Vec::<String>::new(),
            "{rel}: {said:#?}"
        );
        assert_eq!(
            importer_unknown(&file),
            keepalived_unknown(&said),
            "{rel}: unknown keywords (importer, keepalived); keepalived said {said:#?}"
        );
    }
}

#[test]
fn the_unknown_keywords_fixture_has_them_at_every_level() {
    let ns = namespace();
    let file = data("grammar/unknown.conf");
    let lines: Vec<usize> = keepalived_unknown(&keepalived_says(&ns, &file))
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    // global_defs, vrrp_instance, virtual_server, real_server, url, HTTP_GET.
    assert_eq!(lines, [5, 10, 19, 21, 25, 27]);
}

/// Every option keepalived itself does not know in the seeds' configs is
/// reported by the importer (nat_mask…); `nb_get_retry` in TCP_CHECK,
/// which keepalived 2.2 no longer reads there but the seeds' keepalived
/// 1.3 did, is carried over as `retry` on purpose.
#[test]
fn what_keepalived_rejects_in_the_seeds_the_importer_reports() {
    let ns = namespace();
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(data(""))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            let n = file_name(p.to_str().unwrap());
            // seed002-nginx.conf is indented with non-breaking spaces,
            // which keepalived rejects line by line; the importer reads
            // them as blanks and says so (tests/import_keepalived.rs).
            n.starts_with("seed") && n.ends_with(".conf") && n != "seed002-nginx.conf"
        })
        .collect();
    seeds.sort();
    assert_eq!(seeds.len(), 14);
    for seed in seeds {
        let text = std::fs::read_to_string(&seed).unwrap();
        let said = keepalived_says(&ns, &seed);
        let reported: BTreeSet<usize> = import_file(&seed)
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.line)
            .collect();
        for (_, line, message) in said
            .iter()
            .filter(|(_, _, m)| m.starts_with("Unknown keyword"))
        {
            let source = text.lines().nth(line - 1).unwrap_or_default().trim();
            if source.starts_with("nb_get_retry") || message == "Unknown keyword '}'" {
                continue;
            }
            assert!(
                reported.contains(line),
                "{}:{line}: keepalived says {message:?} about `{source}`, the importer says nothing",
                seed.display()
            );
        }
    }
}
