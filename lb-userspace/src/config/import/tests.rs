//! The keepalived grammar end to end: files on disk in, YAML that lbd's
//! own parser accepts out.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Imported, import_file};
use crate::config::{self, Config};

/// A directory of keepalived files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lbd-import-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Imports `name`; the YAML must pass lbd's validation.
    fn import(&self, name: &str) -> (Config, Imported) {
        let imported = import_file(&self.path(name)).unwrap_or_else(|e| panic!("{e}"));
        let config = config::parse_str(&imported.yaml, "imported")
            .unwrap_or_else(|e| panic!("{e}\n{}", imported.yaml));
        (config, imported)
    }

    /// The warnings with the directory taken out of the file names.
    fn warnings(&self, imported: &Imported) -> Vec<String> {
        imported
            .warnings
            .iter()
            .map(|w| self.relative(&w.to_string()))
            .collect()
    }

    fn relative(&self, text: &str) -> String {
        text.replace(&format!("{}/", self.0.display()), "")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn has(warnings: &[String], text: &str) -> bool {
    warnings.iter().any(|w| w.contains(text))
}

const INSTANCE: &str = "vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.0.0.100
    }
}
";

/// tests/data/keepalived/grammar/NAME.
fn grammar(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/keepalived/grammar")
        .join(name)
}

#[test]
fn includes_follow_globs_relative_to_the_including_file() {
    // includes/keepalived.conf: `include conf.d/*.conf` and `include
    // extra?dir/vs.conf` (`?` matches the blank), which includes
    // `reals/*.inc` from its own directory inside its virtual_server block.
    let imported = import_file(&grammar("includes/keepalived.conf")).unwrap();
    let config = config::parse_str(&imported.yaml, "imported").unwrap();
    assert_eq!(config.global.router_id.as_deref(), Some("main"));
    assert!(config.vrrp_instances.contains_key("VI_1"));
    assert!(config.vrrp_scripts.contains_key("chk"));
    let reals: Vec<String> = config.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(
        reals,
        ["10.0.0.11", "10.0.0.12"],
        "included in sorted order"
    );
    // Positions name the included file and its own line.
    let base = format!("{}/", grammar("includes").display());
    let warnings: Vec<String> = imported
        .warnings
        .iter()
        .map(|w| w.to_string().replace(&base, ""))
        .collect();
    assert!(
        has(
            &warnings,
            "extra dir/reals/a.inc:2: frobnicate: not carried over: unknown keyword in real_server"
        ),
        "{warnings:#?}"
    );
}

#[test]
fn an_include_that_matches_nothing_is_reported() {
    let dir = Dir::new(&[
        ("k.conf", "include missing/*.conf\ninclude \"a b.conf\"\n"),
        ("a b.conf", "global_defs {\n router_id quoted\n}\n"),
    ]);
    let (config, imported) = dir.import("k.conf");
    let warnings = dir.warnings(&imported);
    assert!(has(
        &warnings,
        "k.conf:1: include missing/*.conf: no file matches"
    ));
    // keepalived keeps the quotes as part of the path, and finds nothing.
    assert!(
        has(&warnings, "k.conf:2: include \"a b.conf\": no file matches"),
        "{warnings:#?}"
    );
    assert_eq!(config.global.router_id, None);
}

#[test]
fn an_include_cycle_is_a_clear_error() {
    let dir = Dir::new(&[
        ("a.conf", "global_defs {\n}\ninclude b.conf\n"),
        ("b.conf", "! b\ninclude sub/*.conf\n"),
        ("sub/c.conf", "include ../a.conf\n"),
    ]);
    let e = import_file(&dir.path("a.conf")).unwrap_err();
    let message = dir.relative(&e.to_string());
    assert!(
        message.starts_with("sub/c.conf:1: include cycle: "),
        "{message}"
    );
    assert!(
        message.contains("a.conf includes ")
            && message.contains("b.conf includes ")
            && message.ends_with("(a file may not include itself, directly or through others)"),
        "{message}"
    );
    let dir = Dir::new(&[("self.conf", "include self.conf\n")]);
    let e = import_file(&dir.path("self.conf")).unwrap_err();
    assert!(
        dir.relative(&e.to_string())
            .starts_with("self.conf:1: include cycle: ")
    );
}

#[test]
fn an_unreadable_file_is_an_error() {
    let dir = Dir::new(&[]);
    let e = import_file(&dir.path("nope.conf")).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(e.message.starts_with("cannot read"), "{e}");
}

#[test]
fn definitions_are_substituted() {
    let dir = Dir::new(&[(
        "k.conf",
        include_str!("../../../tests/data/keepalived/grammar/definitions.conf"),
    )]);
    let (config, imported) = dir.import("k.conf");
    assert_eq!(
        config.vrrp_instances["VI_1"].virtual_ipaddresses[0]
            .address
            .to_string(),
        "10.0.0.100/32"
    );
    let vs = &config.virtual_servers[0];
    assert_eq!(
        (vs.vip.addr().to_string(), vs.port),
        ("10.0.0.100".to_owned(), 8080)
    );
    let reals: Vec<(String, u16, u32)> = vs
        .real_servers
        .iter()
        .map(|r| (r.address.to_string(), r.port, r.weight))
        .collect();
    assert_eq!(
        reals,
        [
            ("10.0.0.11".to_owned(), 8080, 3),
            ("10.0.0.12".to_owned(), 8080, 3)
        ]
    );
    // An undefined name stays as written, and is reported.
    assert_eq!(
        config.vrrp_instances["VI_1"]
            .notify
            .master
            .as_ref()
            .unwrap()
            .argv,
        ["/bin/echo", "$UNDEFINED"]
    );
    assert!(has(
        &dir.warnings(&imported),
        "k.conf:12: $UNDEFINED is not defined"
    ));
}

#[test]
fn a_definition_that_uses_itself_is_an_error() {
    let dir = Dir::new(&[("k.conf", "$A=x $A\nglobal_defs {\n router_id $A\n}\n")]);
    let e = import_file(&dir.path("k.conf")).unwrap_err();
    assert!(
        dir.relative(&e.to_string())
            .starts_with("k.conf:3: definitions expand without end"),
        "{e}"
    );
}

#[test]
fn comments_in_odd_places() {
    let dir = Dir::new(&[(
        "k.conf",
        include_str!("../../../tests/data/keepalived/grammar/comments.conf"),
    )]);
    let (config, imported) = dir.import("k.conf");
    assert_eq!(config.global.router_id.as_deref(), Some("lvs"));
    assert_eq!(
        config.vrrp_scripts["chk"].script.argv,
        ["/bin/echo", "#not-a-comment", "!nor-this"]
    );
    let vi = &config.vrrp_instances["VI_1"];
    assert_eq!(vi.authentication.as_ref().unwrap().password, "ab#1");
    assert_eq!(vi.virtual_ipaddresses.len(), 1);
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
}

#[test]
fn braces_on_their_own_lines_and_mid_line() {
    let dir = Dir::new(&[(
        "k.conf",
        include_str!("../../../tests/data/keepalived/grammar/braces.conf"),
    )]);
    let (config, imported) = dir.import("k.conf");
    let vi = &config.vrrp_instances["VI_1"];
    assert_eq!(
        vi.virtual_ipaddresses[0].address.to_string(),
        "10.0.0.100/32"
    );
    assert_eq!(vi.track_interfaces, ["eth1"]);
    let [web, tls] = config.virtual_servers.as_slice() else {
        panic!("two virtual servers")
    };
    assert_eq!(web.scheduler, crate::config::Scheduler::Rr);
    let weights: Vec<u32> = web.real_servers.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [2, 1, 1]);
    assert_eq!(web.real_servers[1].checks[0].connect_timeout.as_secs(), 3);
    assert_eq!(tls.port, 443);
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
}

#[test]
fn unbalanced_braces_and_quotes_are_errors_with_positions() {
    for (text, expected) in [
        (
            "global_defs {\n}\n}\n",
            "k.conf:3: `}` without an open block to close",
        ),
        (
            "global_defs\n\n{\n{\n",
            "k.conf:4: `{` without a keyword before it to open",
        ),
        (
            "vrrp_script x {\n  script \"/bin/true\n}\n",
            "k.conf:2: unterminated quote: script \"/bin/true",
        ),
    ] {
        let dir = Dir::new(&[("k.conf", text)]);
        let e = import_file(&dir.path("k.conf")).unwrap_err();
        assert_eq!(dir.relative(&e.to_string()), expected);
    }
}

#[test]
fn unknown_keywords_are_reported_and_commented_at_their_place() {
    let dir = Dir::new(&[(
        "k.conf",
        "frobnicate_everything {
    deeply { nested }
}
global_defs {
    router_id r1
    bogus_global yes
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    priorty 120
}
virtual_server 10.0.0.1 80 {
    lb_algo rr
    lb_kind NAT
    wibble 3
    real_server 10.0.0.11 8080 {
        HTTP_GET {
            url { path /health
                  status_codes 200
            }
            wobble
        }
    }
}
",
    )]);
    let (_, imported) = dir.import("k.conf");
    let warnings = dir.warnings(&imported);
    for expected in [
        "k.conf:1: frobnicate_everything { … }: not carried over: unknown keyword in the top level",
        "k.conf:6: bogus_global yes: not carried over: unknown keyword in global_defs",
        "k.conf:11: priorty 120: not carried over: unknown keyword in vrrp_instance",
        "k.conf:16: wibble 3: not carried over: unknown keyword in virtual_server",
        "k.conf:20: status_codes 200: not carried over: unknown keyword in url",
        "k.conf:22: wobble: not carried over: unknown keyword in HTTP_GET",
    ] {
        assert!(has(&warnings, expected), "{expected}\nnot in {warnings:#?}");
    }
    for (line, text) in [
        (1, "frobnicate_everything"),
        (6, "bogus_global yes"),
        (11, "priorty 120"),
        (16, "wibble 3"),
        (20, "status_codes 200"),
        (22, "wobble"),
    ] {
        let comment = format!("# NOT CARRIED OVER (k.conf:{line}): {text}");
        assert!(
            dir.relative(&imported.yaml).contains(&comment),
            "{comment} not in\n{}",
            imported.yaml
        );
    }
}

#[test]
fn conditional_lines_follow_keepalived_without_a_config_id() {
    let dir = Dir::new(&[(
        "k.conf",
        "global_defs {\n@lvs01 router_id one\n@^lvs01 router_id other\n}\n",
    )]);
    let (config, imported) = dir.import("k.conf");
    assert_eq!(config.global.router_id.as_deref(), Some("other"));
    let warnings = dir.warnings(&imported);
    assert!(has(&warnings, "k.conf:2: `@lvs01` line skipped"));
    assert!(has(&warnings, "k.conf:3: `@^lvs01` line kept"));
}

#[test]
fn a_config_id_picks_its_lines_as_keepalived_i_does() {
    let text =
        "global_defs {\n@lvs01 router_id one\n@lvs02 router_id two\n@^lvs01 script_user x\n}\n";
    let dir = Dir::new(&[("k.conf", text)]);
    for (id, router_id, user) in [("lvs01", "one", "nobody"), ("lvs02", "two", "x")] {
        let imported = super::import_file_for(&dir.path("k.conf"), Some(id)).unwrap();
        let config = config::parse_str(&imported.yaml, "imported").unwrap();
        assert_eq!(config.global.router_id.as_deref(), Some(router_id));
        assert_eq!(config.global.script_user, user);
        let skipped = dir
            .warnings(&imported)
            .iter()
            .filter(|w| w.contains("line skipped: the config id is"))
            .count();
        assert_eq!(skipped, if id == "lvs01" { 2 } else { 1 });
    }
}

fn path_of(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn the_header_names_the_source() {
    let dir = Dir::new(&[("k.conf", INSTANCE)]);
    let (_, imported) = dir.import("k.conf");
    assert!(imported.yaml.starts_with(&format!(
        "# lbd configuration imported from {} by `lbd import-keepalived`.",
        path_of(&dir.path("k.conf"))
    )));
}

#[test]
fn seq_generators_are_reported_not_expanded() {
    let dir = Dir::new(&[(
        "k.conf",
        "~SEQ(i, 1, 3) real_server 10.0.0.$i 80\nglobal_defs {\n}\n",
    )]);
    let (_, imported) = dir.import("k.conf");
    assert!(has(
        &dir.warnings(&imported),
        "k.conf:1: keepalived's ~SEQ line generator is not supported"
    ));
}

#[test]
fn runaway_input_is_an_error_not_a_crash() {
    let deep = "a {\n".repeat(100_000);
    let dir = Dir::new(&[
        ("deep.conf", deep.as_str()),
        (
            "double.conf",
            "$A=xx\n$B=${A}${A}\n$C=${B}${B}\n$D=${C}${C}\n$E=${D}${D}\n$F=${E}${E}\n$G=${F}${F}\n$H=${G}${G}\n$I=${H}${H}\n\
             $J=${I}${I}\n$K=${J}${J}\n$L=${K}${K}\n$M=${L}${L}\n$N=${M}${M}\n$O=${N}${N}\n$P=${O}${O}\nrouter_id $P\n",
        ),
    ]);
    let e = import_file(&dir.path("deep.conf")).unwrap_err();
    assert!(e.message.contains("nested more than 64 deep"), "{e}");
    let e = import_file(&dir.path("double.conf")).unwrap_err();
    assert!(e.message.contains("line longer than 64 KiB"), "{e}");
}

mod properties {
    use proptest::prelude::*;

    use super::Dir;
    use crate::config::import::import_file;

    /// Text made of keepalived's own pieces, so that the parser gets far.
    fn keepalivedish() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "{",
            "}",
            "\n",
            " ",
            "\"",
            "!",
            "#",
            "\\",
            "$X",
            "${X}",
            "$X=1",
            "@a ",
            "include ",
            "*.conf",
            "global_defs",
            "vrrp_instance",
            "virtual_server",
            "real_server",
            "TCP_CHECK",
            "HTTP_GET",
            "url",
            "path",
            "status_code",
            "virtual_server_group",
            "10.0.0.1",
            "80",
            "10.0.0.1-9",
            "fwmark",
            "group",
            "lb_kind",
            "DR",
            "weight",
            "virtual_ipaddress",
            "track_script",
            "interface",
            "eth0",
            "~SEQ",
            "é",
            "\t",
        ]);
        prop::collection::vec(piece, 0..200).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the input, the importer returns a result: YAML that
        /// lbd's parser reads (valid or with errors it reports), or a
        /// syntax error with a position; it never panics.
        #[test]
        fn never_panics_and_its_yaml_parses(text in keepalivedish()) {
            let dir = Dir::new(&[("k.conf", text.as_str())]);
            match import_file(&dir.path("k.conf")) {
                Ok(imported) => {
                    // Validation may fail (missing fields), but the text
                    // is always YAML.
                    let generic = serde_saphyr::from_str::<serde_json::Value>(&imported.yaml);
                    prop_assert!(generic.is_ok(), "{generic:?}\n{}", imported.yaml);
                }
                Err(e) => prop_assert!(e.line > 0 || e.message.starts_with("cannot read"), "{e}"),
            }
        }
    }
}

#[test]
fn definitions_follow_keepalived_where_it_is_strict() {
    let dir = Dir::new(&[(
        "k.conf",
        "$VIP=10.0.0.100\n$PORT = 80\n$M=a \\\n  b\nglobal_defs {\n    router_id $VIP/32\n    x $M y\n}\n",
    )]);
    let (config, imported) = dir.import("k.conf");
    // `$VIP/32`: keepalived substitutes `$NAME` only before a blank, `,`,
    // `)` or the end of the line.
    assert_eq!(config.global.router_id.as_deref(), Some("$VIP/32"));
    let warnings = dir.warnings(&imported);
    assert!(
        has(&warnings, "k.conf:6: $VIP is not substituted here"),
        "{warnings:#?}"
    );
    // `$PORT = 80` is no definition for keepalived: an unknown keyword.
    assert!(
        has(
            &warnings,
            "k.conf:2: $PORT = 80: not carried over: unknown keyword"
        ),
        "{warnings:#?}"
    );
    // A multi-line value in mid-line is not substituted either.
    assert!(
        has(&warnings, "k.conf:7: $M is not substituted here"),
        "{warnings:#?}"
    );
}

#[test]
fn xdp_interfaces_come_from_the_instances_and_their_vips() {
    let dir = Dir::new(&[(
        "k.conf",
        "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n  10.0.0.1 dev eth1\n  10.0.0.2\n }\n}\n\
         vrrp_instance B {\n interface eth2\n virtual_router_id 2\n virtual_ipaddress {\n  10.0.1.1 dev eth0\n }\n}\n",
    )]);
    let (config, _) = dir.import("k.conf");
    assert_eq!(config.global.interfaces, ["eth0", "eth1", "eth2"]);
}

#[test]
fn switches_take_an_optional_on_or_off_and_extra_words_are_reported() {
    let dir = Dir::new(&[(
        "k.conf",
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n lb_kind NAT\n inhibit_on_failure off\n alpha yes\n\
         delay_loop 5 10\n real_server 10.0.0.2 80 {\n  MISC_CHECK {\n   misc_path /bin/true\n   misc_dynamic false\n   alpha no\n  }\n\
         TCP_CHECK {\n   alpha maybe\n  }\n }\n}\n",
    )]);
    let (config, imported) = dir.import("k.conf");
    let vs = &config.virtual_servers[0];
    assert!(!vs.inhibit_on_failure);
    assert_eq!(vs.delay_loop.as_secs(), 5);
    let [misc, tcp] = vs.real_servers[0].checks.as_slice() else {
        panic!("two checks")
    };
    let crate::config::CheckKind::Script(s) = &misc.kind else {
        panic!("MISC_CHECK")
    };
    assert!(!s.dynamic);
    assert!(
        !misc.alpha,
        "the check's own `alpha no` beats the virtual server's"
    );
    assert!(
        tcp.alpha,
        "virtual server's alpha; `alpha maybe` is reported"
    );
    let warnings = dir.warnings(&imported);
    assert!(
        has(
            &warnings,
            "k.conf:7: 10 (in `delay_loop 5 10`): not carried over: one value expected"
        ),
        "{warnings:#?}"
    );
    assert!(
        has(
            &warnings,
            "k.conf:15: alpha maybe: not carried over: expected nothing, on or off"
        ),
        "{warnings:#?}"
    );
}

#[test]
fn persistence_follows_keepalived() {
    let vs = |name: &str, persistence: &str| {
        format!(
            "virtual_server 10.0.0.{name} 80 {{\n protocol TCP\n lb_algo rr\n lb_kind DR\n{persistence}\n real_server 10.0.0.9 80\n}}\n"
        )
    };
    let text = [
        vs("1", " persistence_timeout 0\n persistence_granularity 24"),
        vs("2", " persistence_granularity 255.255.255.0"),
        vs(
            "3",
            " persistence_timeout\n persistence_granularity 255.255.0.0",
        ),
        vs("4", " persistence_timeout 50"),
    ]
    .concat();
    let dir = Dir::new(&[("k.conf", text.as_str())]);
    let (config, imported) = dir.import("k.conf");
    let p: Vec<Option<(u64, u8)>> = config
        .virtual_servers
        .iter()
        .map(|v| v.persistence.map(|p| (p.timeout.as_secs(), p.netmask)))
        .collect();
    assert_eq!(p, [None, None, Some((360, 16)), Some((50, 32))]);
    let warnings = dir.warnings(&imported);
    assert!(
        has(
            &warnings,
            "k.conf:6: persistence_granularity 24: not carried over: the service is not persistent"
        ),
        "{warnings:#?}"
    );
    assert!(
        has(
            &warnings,
            "k.conf:13: persistence_granularity 255.255.255.0: not carried over"
        ),
        "{warnings:#?}"
    );
}
