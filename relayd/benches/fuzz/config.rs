//! Fuzz target `config`: relayd's configuration from TOML text and `RELAYD_*` variables
//! (`Config::from_toml_str`, what `Config::load` runs on the file it read).
//!
//! Files are TOML documents built from every key of every section with values of the right type
//! (at and beyond their limits) and of every other type, dotted keys, inline tables, arrays of
//! tables, duplicate and unknown sections, nesting far deeper than any real file; the example
//! `relayd.toml` with lines dropped, doubled or rewritten; and TOML-ish text. Environments set
//! known and unknown keys at any depth, with values TOML reads as scalars, tables or nothing.
//!
//! Properties: nothing panics; an accepted configuration passes every check `load` promises
//! (worker count, body limit, timeouts, routing and usage bounds, a known store); an error says
//! something and names where it came from (the file, the variable, or the key).

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use relayd::config::{Config, ConfigError};

use crate::inputs::{nested, text};

/// One generated case: the file's text and the environment.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    text: String,
    env: Vec<(String, String)>,
}

/// The name the file is given in errors.
const FILE_NAME: &str = "fuzz.toml";

/// What a key holds, to give it a good value most of the time.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Addr,
    Str,
    Store,
    LogFormat,
    List,
}

const TOP: &[(&str, Kind)] = &[
    ("listen", Kind::Addr),
    ("workers", Kind::Int),
    ("data_dir", Kind::Str),
    ("store", Kind::Store),
    ("redis_prefix", Kind::Str),
    ("encryption_key_file", Kind::Str),
    ("admin_token_file", Kind::Str),
    ("max_body_bytes", Kind::Int),
    ("log_format", Kind::LogFormat),
    ("log", Kind::Str),
    ("shutdown_grace_secs", Kind::Int),
    ("lisen", Kind::Addr),
];

const SECTIONS: &[(&str, &[(&str, Kind)])] = &[
    (
        "timeouts",
        &[
            ("connect_secs", Kind::Int),
            ("first_byte_secs", Kind::Int),
            ("idle_secs", Kind::Int),
            ("ping_secs", Kind::Int),
        ],
    ),
    ("metrics", &[("token", Kind::Str), ("listen", Kind::Addr)]),
    (
        "usage",
        &[
            ("flush_interval_ms", Kind::Int),
            ("batch_size", Kind::Int),
            ("queue_capacity", Kind::Int),
            ("max_pending", Kind::Int),
            ("retention_days", Kind::Int),
        ],
    ),
    (
        "routing",
        &[
            ("max_attempts", Kind::Int),
            ("queue_size", Kind::Int),
            ("queue_timeout_secs", Kind::Int),
            ("default_route", Kind::List),
            ("sticky_ttl_secs", Kind::Int),
            ("sticky_max_sessions", Kind::Int),
            ("cooldown_connect_secs", Kind::Int),
            ("cooldown_auth_secs", Kind::Int),
            ("probe_interval_secs", Kind::Int),
            ("lease_secs", Kind::Int),
        ],
    ),
    ("unknown", &[("key", Kind::Str)]),
];

/// A TOML basic string for `text`.
fn toml_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn int() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(
            &[
                "0", "1", "-1", "3", "10", "1023", "1024", "1025", "3600000", "3600001", "100000",
                "4294967296", "9223372036854775807", "-9223372036854775808", "0x10", "0o7", "0b1",
                "1_000", "+5", "99999999999999999999", "01",
            ][..],
        )
        .prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

/// A value of any TOML type, shallow or (rarely) deeply nested.
fn any_value() -> BoxedStrategy<String> {
    let scalar = prop_oneof![
        int(),
        select(
            &[
                "1.5",
                "inf",
                "-nan",
                "1e400",
                "true",
                "false",
                "1979-05-27T07:32:00Z",
                "07:32:00",
                "1979-05-27",
                "\"\"",
                "''",
                "'''multi\nline'''",
                "\"\"\"a\nb\"\"\"",
                "\"\\u00e9\"",
                "\"\\x\"",
                "[]",
                "{}",
            ][..],
        )
        .prop_map(str::to_owned),
        text().prop_map(|t| toml_str(&t)),
    ];
    let shallow = nested(&scalar.boxed(), 2, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(
                (select(&["a", "listen", "idle_secs", "b c"][..]), inner),
                0..3
            )
            .prop_map(|kv| {
                let members: Vec<String> = kv
                    .iter()
                    .map(|(k, v)| format!("{} = {v}", toml_str(k)))
                    .collect();
                format!("{{{}}}", members.join(", "))
            }),
        ]
        .boxed()
    });
    let deep = (
        select(&[("[", "]"), ("{a = ", "}")][..]),
        prop_oneof![10 => 1..200usize, 1 => 200..5_000usize],
    )
        .prop_map(|((open, close), depth)| {
            format!("{}1{}", open.repeat(depth), close.repeat(depth))
        });
    prop_oneof![
        12 => shallow,
        1 => deep,
    ]
    .boxed()
}

fn good(kind: Kind) -> BoxedStrategy<String> {
    match kind {
        Kind::Int => int(),
        Kind::Addr => select(
            &[
                "\"127.0.0.1:3000\"",
                "\"0.0.0.0:0\"",
                "\"[::1]:8080\"",
                "\"localhost:3000\"",
                "\"nonsense\"",
                "\"127.0.0.1:70000\"",
            ][..],
        )
        .prop_map(str::to_owned)
        .boxed(),
        Kind::Str => text().prop_map(|t| toml_str(&t)).boxed(),
        Kind::Store => select(
            &[
                "\"embedded\"",
                "\"\"",
                "\" embedded \"",
                "\"redis://127.0.0.1:6379/0\"",
                "\"rediss://h\"",
                "\"postgres://x\"",
                "\"REDIS://h\"",
            ][..],
        )
        .prop_map(str::to_owned)
        .boxed(),
        Kind::LogFormat => select(&["\"text\"", "\"json\"", "\"xml\"", "\"JSON\""][..])
            .prop_map(str::to_owned)
            .boxed(),
        Kind::List => prop::collection::vec(text(), 0..3)
            .prop_map(|v| {
                let items: Vec<String> = v.iter().map(|t| toml_str(t)).collect();
                format!("[{}]", items.join(", "))
            })
            .boxed(),
    }
}

/// `key = value` for one of `keys`, usually with a good value.
fn line(keys: &'static [(&'static str, Kind)]) -> BoxedStrategy<String> {
    select(keys)
        .prop_flat_map(|(key, kind)| {
            prop_oneof![6 => good(kind), 1 => any_value()]
                .prop_map(move |value| format!("{key} = {value}"))
        })
        .boxed()
}

fn section() -> BoxedStrategy<String> {
    select(SECTIONS)
        .prop_flat_map(|(name, keys)| {
            let header = select(&["[{}]", "[ {} ]", "[[{}]]", "[{}.sub]", "[\"{}\"]"][..]);
            let header = prop_oneof![8 => Just("[{}]"), 1 => header];
            (header, prop::collection::vec(line(keys), 0..5)).prop_map(move |(header, lines)| {
                format!("{}\n{}\n", header.replace("{}", name), lines.join("\n"))
            })
        })
        .boxed()
}

/// A line that sets a section's key from the top level: dotted, or as an inline table.
fn dotted() -> BoxedStrategy<String> {
    let plain = select(SECTIONS).prop_flat_map(|(name, keys)| {
        (select(keys), any::<bool>()).prop_flat_map(move |((key, kind), inline)| {
            good(kind).prop_map(move |value| {
                if inline {
                    format!("{name} = {{ {key} = {value} }}")
                } else {
                    format!("{name}.{key} = {value}")
                }
            })
        })
    });
    let deep = prop_oneof![10 => 1..100usize, 1 => 100..5_000usize].prop_map(|depth| {
        let mut key = vec!["timeouts"; depth].join(".");
        key.push_str(" = 1");
        key
    });
    prop_oneof![8 => plain, 1 => deep].boxed()
}

fn document() -> BoxedStrategy<String> {
    (
        prop::collection::vec(line(TOP), 0..5),
        prop::collection::vec(dotted(), 0..2),
        prop::collection::vec(section(), 0..4),
        select(&["\n", "\r\n"][..]),
    )
        .prop_map(|(top, dotted, sections, eol)| {
            let mut out = String::new();
            for line in top.iter().chain(&dotted) {
                out.push_str(line);
                out.push('\n');
            }
            for section in sections {
                out.push_str(&section);
            }
            out.replace('\n', eol)
        })
        .boxed()
}

/// An edit of one line of the example file.
#[derive(Debug, Clone)]
enum Edit {
    Drop(Index),
    Double(Index),
    Rewrite(Index, String),
}

fn example_edited() -> BoxedStrategy<String> {
    const EXAMPLE: &str = include_str!("../../../examples/relayd.toml");
    let edit = prop_oneof![
        any::<Index>().prop_map(Edit::Drop),
        any::<Index>().prop_map(Edit::Double),
        (any::<Index>(), any_value()).prop_map(|(i, v)| Edit::Rewrite(i, v)),
    ];
    prop::collection::vec(edit, 0..4)
        .prop_map(|edits| {
            let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
            for edit in edits {
                match edit {
                    Edit::Drop(i) => {
                        lines.remove(i.index(lines.len()));
                    }
                    Edit::Double(i) => {
                        let at = i.index(lines.len());
                        lines.insert(at, lines[at].clone());
                    }
                    // Keeps the key (when the line has one) and puts another value after it.
                    Edit::Rewrite(i, value) => {
                        let at = i.index(lines.len());
                        let key = lines[at]
                            .split('=')
                            .next()
                            .unwrap_or_default()
                            .trim()
                            .to_owned();
                        lines[at] = format!("{key} = {value}");
                    }
                }
            }
            lines.join("\n")
        })
        .boxed()
}

/// TOML-ish text: tokens in any order.
fn tomlish() -> BoxedStrategy<String> {
    const PIECES: &[&str] = &[
        "[", "]", "[[", "]]", "=", " ", "\n", "\r\n", "\"", "'", "'''", "\"\"\"", "a", "timeouts",
        "listen", "workers", ".", ",", "{", "}", "#", "1", "\\", "é", "\t", "true", "\u{0}",
        "\u{feff}",
    ];
    prop::collection::vec(select(PIECES), 0..40)
        .prop_map(|p| p.concat())
        .boxed()
}

fn env() -> BoxedStrategy<Vec<(String, String)>> {
    const SEGMENTS: &[&str] = &[
        "LISTEN",
        "WORKERS",
        "STORE",
        "TIMEOUTS",
        "IDLE_SECS",
        "ROUTING",
        "MAX_ATTEMPTS",
        "DEFAULT_ROUTE",
        "USAGE",
        "RETENTION_DAYS",
        "METRICS",
        "TOKEN",
        "LISTN",
        "",
        "listen",
    ];
    const VALUES: &[&str] = &[
        "900",
        "0",
        "-1",
        "true",
        "127.0.0.1:3000",
        "redis://x",
        "{a=1}",
        "[1,2]",
        "[\"fallback\"]",
        "x\ny = 1",
        "",
        "1e400",
        "\"quoted\"",
        "'lit'",
        "99999999999999999999",
        "= 1",
        "[",
    ];
    const OTHER: &[&str] = &[
        "HOME",
        "RELAYD_CONFIG",
        "RELAYD_ENCRYPTION_KEY",
        "RELAYD_ADMIN_TOKEN",
        "relayd_workers",
        "RELAYD_",
        "RELAYD",
    ];
    let name = prop_oneof![
        8 => prop::collection::vec(select(SEGMENTS), 1..4)
            .prop_map(|s| format!("RELAYD_{}", s.join("__"))),
        2 => select(OTHER).prop_map(str::to_owned),
        1 => prop_oneof![10 => 1..100usize, 1 => 100..5_000usize]
            .prop_map(|depth| format!("RELAYD_{}", vec!["TIMEOUTS"; depth].join("__"))),
    ];
    let value = prop_oneof![4 => select(VALUES).prop_map(str::to_owned), 1 => text()];
    prop::collection::vec((name, value), 0..4).boxed()
}

/// The strategy for [`Case`].
pub(crate) fn cases() -> BoxedStrategy<Case> {
    let text = prop_oneof![
        8 => document(),
        3 => example_edited(),
        2 => tomlish(),
        1 => Just(String::new()),
    ];
    (text, env())
        .prop_map(|(text, env)| Case { text, env })
        .boxed()
}

/// Checks every property on one case.
pub(crate) fn check(case: &Case) -> Result<(), TestCaseError> {
    match Config::from_toml_str(&case.text, FILE_NAME, case.env.clone()) {
        Ok(c) => {
            prop_assert!(c.workers <= 1024);
            prop_assert!(c.max_body_bytes >= 1024);
            let t = &c.timeouts;
            prop_assert!(
                t.connect_secs >= 1
                    && t.first_byte_secs >= 1
                    && t.idle_secs >= 1
                    && t.ping_secs >= 1
            );
            prop_assert!(c.routing.max_attempts >= 1 && c.routing.lease_secs >= 1);
            let u = &c.usage;
            prop_assert!((10..=3_600_000).contains(&u.flush_interval_ms));
            prop_assert!(u.batch_size >= 1 && u.queue_capacity >= 1);
            prop_assert!(u.max_pending >= u.batch_size && u.retention_days >= 1);
            prop_assert!(c.store_spec().is_ok());
            let _ = (
                c.admin_token_path(),
                c.shutdown_grace(),
                c.usage.retention(),
            );
            Ok(())
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            match &e {
                ConfigError::Invalid { origin, message } => {
                    prop_assert!(!message.is_empty(), "{}", e);
                    let file = origin.starts_with(&format!("config file {FILE_NAME}"));
                    let variable = origin
                        .strip_prefix("environment variable ")
                        .is_some_and(|v| case.env.iter().any(|(name, _)| name == v));
                    prop_assert!(file || variable, "error from nowhere: {}", e);
                }
                ConfigError::Value { key, message } => {
                    prop_assert!(!key.is_empty() && !message.is_empty());
                }
                ConfigError::Read { .. } => {
                    return Err(TestCaseError::fail(format!(
                        "read error without a read: {e}"
                    )));
                }
            }
            Ok(())
        }
    }
}
