//! The daemon's dependency direction, checked on every test run: each top-level module of
//! `relayd/src` sits in one layer of [`LAYERS`] and may refer only to modules of lower layers
//! (through `use crate::…`, inline `crate::…` paths, or `super::` climbing out of itself).
//! [`FORBIDDEN`] adds edges that point down but are still wrong, `translate` may use only the
//! crates in [`TRANSLATE_CRATES`], and relayctl must depend on `shared`, never on relayd.
//!
//! The README's "Development" section draws the same table; [`the_readme_map_matches_the_table`]
//! keeps the two from drifting apart. Comments and string literals are ignored: a doc link is not
//! a dependency.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of strictly lower layers only; modules of
/// one layer are independent of each other.
const LAYERS: &[(&str, &[&str])] = &[
    ("secrets at rest", &["crypto"]),
    (
        "foundations",
        &[
            "auth",
            "config",
            "error",
            "logbuf",
            "metrics",
            "redis_endpoint",
            "serving_thread",
            "systemd",
            "translate",
        ],
    ),
    ("persistence", &["connection", "logfmt", "store"]),
    (
        "registries and shared state",
        &["accounts", "coordinator", "extract", "keys", "usage"],
    ),
    ("decisions", &["limits", "routing"]),
    ("upstream client", &["upstream"]),
    (
        "daemon tasks",
        &["cooling_probe", "profile_probe", "registry_sync", "workers"],
    ),
    ("state", &["state"]),
    ("handlers", &["admin", "lifecycle", "proxy"]),
    ("status page", &["ui"]),
    ("server", &["server"]),
    ("start-up", &["cli"]),
];

/// Edges the layers allow but the design does not: who must not know whom, and why.
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "routing",
        &["store", "usage", "keys"],
        "routing is pure selection over a snapshot; it does not read the store",
    ),
    (
        "coordinator",
        &["store", "accounts", "keys", "usage", "crypto", "config"],
        "the coordinator deals in ids; registries and the store are the daemon's business",
    ),
    (
        "upstream",
        &["store", "keys", "usage", "limits", "translate"],
        "the upstream client sends requests; it does not know callers or formats",
    ),
];

/// The only crates `translate` may use: it is pure data transformation.
const TRANSLATE_CRATES: &[&str] = &[
    "shared",
    "serde",
    "serde_json",
    "thiserror",
    "tracing",
    "hex",
    "sha2",
    "memchr",
    "itoa",
    // Conversation prefix hashes (`translate::prefix`): pure hashing.
    "xxhash_rust",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, as (path relative to `dir`, text), sorted.
fn sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The source with comments, string and character literals blanked out (newlines kept, so line
/// numbers stay right).
fn code_only(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(chars[i..j.min(chars.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F980}') or a lifetime ('a): only the former
            // is blanked.
            let end = if next == Some('\\') {
                chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&c| c == '\''))
                    .map(|p| i + 3 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The top-level module a file belongs to and how deep its own module is below the crate root
/// (`x.rs` and `x/mod.rs`: 1; `x/y.rs`: 2). `None` for the crate roots.
fn module_of(rel: &str) -> Option<(String, usize)> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() == 1 && (parts[0] == "lib.rs" || parts[0] == "main.rs") {
        return None;
    }
    let top = parts[0].trim_end_matches(".rs").to_owned();
    let depth = if parts.last() == Some(&"mod.rs") {
        parts.len() - 1
    } else {
        parts.len()
    };
    Some((top, depth))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier starting at byte `at` of `code` (after any whitespace).
fn ident_at(code: &str, at: usize) -> &str {
    let rest = code[at..].trim_start();
    let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
    &rest[..end]
}

/// The leading identifier of each top-level item of the group that opens at `code[open]`
/// (`{a::b, c, d::{e, f}}` → a, c, d).
fn group_heads(code: &str, open: usize) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = open + 1;
    for (offset, c) in code[open..].char_indices() {
        let at = open + offset;
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let head = ident_at(code, item_start);
                if !head.is_empty() {
                    heads.push((item_start, head.to_owned()));
                }
                item_start = at + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads
}

/// Every top-level module `code` refers to, with the byte offset of the reference. `depth` is
/// the file's module depth, for `super::` paths that climb to the crate root.
fn references(code: &str, depth: usize) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let word_starts = |at: usize| at == 0 || !is_ident(bytes[at - 1] as char);
    for (at, _) in code.match_indices("crate") {
        if !word_starts(at) {
            continue;
        }
        let rest = code[at + 5..].trim_start();
        let Some(path) = rest.strip_prefix("::") else {
            continue;
        };
        let path = path.trim_start();
        let path_at = code.len() - path.len();
        if path.starts_with('{') {
            found.extend(group_heads(code, path_at));
        } else {
            found.push((path_at, ident_at(code, path_at).to_owned()));
        }
    }
    // Inline modules (`mod tests { … }`) add a level to the paths written inside them.
    let mut inline = Vec::new();
    let mut braces = 0usize;
    let mut open_mods: Vec<usize> = Vec::new();
    let mut pending_mod = false;
    let mut i = 0;
    while i < code.len() {
        let c = bytes[i] as char;
        if c == '{' {
            braces += 1;
            if pending_mod {
                open_mods.push(braces);
                pending_mod = false;
            }
        } else if c == '}' {
            if open_mods.last() == Some(&braces) {
                open_mods.pop();
            }
            braces = braces.saturating_sub(1);
        } else if c == ';' {
            pending_mod = false;
        } else if word_starts(i) && bytes[i..].starts_with(b"mod") && ident_at(code, i) == "mod" {
            pending_mod = true;
        }
        inline.push(open_mods.len());
        i += 1;
    }
    for (at, _) in code.match_indices("super") {
        if !word_starts(at) || (at > 1 && &bytes[at - 2..at] == b"::") {
            continue;
        }
        let mut climbs = 0;
        let mut rest = &code[at..];
        while let Some(after) = rest.strip_prefix("super") {
            let after = after.trim_start();
            let Some(after) = after.strip_prefix("::") else {
                break;
            };
            climbs += 1;
            rest = after.trim_start();
        }
        if climbs >= depth + inline[at] && climbs > 0 {
            let target_at = code.len() - rest.len();
            let target = if rest.starts_with('{') {
                group_heads(code, target_at)
            } else {
                vec![(target_at, ident_at(code, target_at).to_owned())]
            };
            found.extend(target);
        }
    }
    found
}

fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// Every edge of `files` (path relative to `src`, text) that breaks the direction, as a message
/// naming the file, line and edge.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in files {
        let Some((from, depth)) = module_of(rel) else {
            continue;
        };
        let code = code_only(text);
        let Some(from_layer) = layer_of(&from) else {
            out.push(format!(
                "src/{rel}: module `{from}` is in no layer of LAYERS; place it"
            ));
            continue;
        };
        for (at, to) in references(&code, depth) {
            if to == from || to.is_empty() {
                continue;
            }
            let line = line_of(&code, at);
            let edge = format!("src/{rel}:{line}: `{from}` -> `{to}`");
            match layer_of(&to) {
                None => out.push(format!("{edge}: `{to}` is in no layer of LAYERS")),
                Some(to_layer) if to_layer >= from_layer => out.push(format!(
                    "{edge}: `{from}` ({}) may only use lower layers, `{to}` is in {}",
                    LAYERS[from_layer].0, LAYERS[to_layer].0
                )),
                Some(_) => {}
            }
            for (module, banned, why) in FORBIDDEN {
                if *module == from && banned.contains(&to.as_str()) {
                    out.push(format!("{edge}: forbidden ({why})"));
                }
            }
        }
    }
    out
}

/// The crates `translate` uses outside [`TRANSLATE_CRATES`], as messages naming file and line.
/// `deps` are relayd's dependencies (crate names with `_`).
fn translate_crate_violations(files: &[(String, String)], deps: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in files.iter().filter(|(rel, _)| rel.starts_with("translate")) {
        let code = code_only(text);
        let bytes = code.as_bytes();
        for dep in deps {
            if TRANSLATE_CRATES.contains(&dep.as_str()) {
                continue;
            }
            for (at, _) in code.match_indices(dep.as_str()) {
                let starts = at == 0 || (!is_ident(bytes[at - 1] as char) && bytes[at - 1] != b':');
                let after = code[at + dep.len()..].trim_start();
                if starts && after.starts_with("::") {
                    let line = line_of(&code, at);
                    out.push(format!(
                        "src/{rel}:{line}: `translate` -> crate `{dep}`: translate may use only {TRANSLATE_CRATES:?}"
                    ));
                }
            }
        }
    }
    out
}

/// The dependency names of a Cargo manifest's `[dependencies]` (and dev/build ones), `-` as `_`.
fn manifest_dependencies(manifest: &str, sections: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = sections.iter().any(|s| line == format!("[{s}]"));
            continue;
        }
        if inside && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().split('.').next().unwrap_or_default();
            if !name.is_empty() && !name.starts_with('#') {
                names.push(name.replace('-', "_"));
            }
        }
    }
    names
}

/// What is wrong with relayctl's manifest: it must use `shared` and must not use relayd.
fn relayctl_violations(manifest: &str) -> Vec<String> {
    let deps = manifest_dependencies(
        manifest,
        &["dependencies", "dev-dependencies", "build-dependencies"],
    );
    let mut out = Vec::new();
    if !deps.iter().any(|d| d == "shared") {
        out.push("relayctl/Cargo.toml: relayctl must depend on `shared`".to_owned());
    }
    if deps.iter().any(|d| d == "relayd") {
        out.push(
            "relayctl/Cargo.toml: relayctl -> relayd: the CLI talks to the daemon over HTTP with \
             the `shared` types, never by linking it"
                .to_owned(),
        );
    }
    out
}

fn fail_on(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} dependency-direction problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn relayd_modules_depend_only_downwards() {
    fail_on(&violations(&sources(&src_dir())));
}

#[test]
fn every_layer_module_exists() {
    let present: BTreeSet<String> = sources(&src_dir())
        .iter()
        .filter_map(|(rel, _)| module_of(rel).map(|(top, _)| top))
        .collect();
    let listed: Vec<&str> = LAYERS.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let stale: Vec<&&str> = listed.iter().filter(|m| !present.contains(**m)).collect();
    assert!(stale.is_empty(), "LAYERS lists missing modules: {stale:?}");
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a module is in two layers");
}

#[test]
fn translate_uses_only_its_crates() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest_dependencies(&manifest, &["dependencies"]);
    assert!(
        deps.iter().any(|d| d == "tokio"),
        "read relayd's dependencies: {deps:?}"
    );
    fail_on(&translate_crate_violations(&sources(&src_dir()), &deps));
}

#[test]
fn relayctl_depends_on_shared_not_relayd() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relayctl/Cargo.toml");
    fail_on(&relayctl_violations(
        &std::fs::read_to_string(manifest).unwrap(),
    ));
}

/// The README's module map (the fenced block after "Module map" in "Development") lists the
/// layers top first, one line each, starting with the layer's modules.
#[test]
fn the_readme_map_matches_the_table() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- layers -->")
        .expect("README has a `<!-- layers -->` map");
    let block = readme[start..]
        .split("```")
        .nth(1)
        .expect("the map is a fenced block after the marker");
    let drawn: Vec<Vec<&str>> = block
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('↓'))
        .map(|l| {
            l.split("  ")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect()
        })
        .collect();
    let expected: Vec<Vec<&str>> = LAYERS.iter().rev().map(|(_, m)| m.to_vec()).collect();
    assert_eq!(drawn, expected, "README map and LAYERS disagree");
}

// The checker itself, on inputs that must fail: a check that cannot fail proves nothing.

fn file(rel: &str, text: &str) -> (String, String) {
    (rel.to_owned(), text.to_owned())
}

#[test]
fn the_checker_finds_upward_and_forbidden_edges() {
    let files = [
        file("routing/mod.rs", "use crate::proxy::Thing;\n"),
        file(
            "routing/table.rs",
            "//! crate::state in a comment is fine\nfn f() { let s = \"crate::admin\"; }\nfn g() -> crate::state::AppState { todo() }\n",
        ),
        file(
            "routing/scheduler.rs",
            "use crate::{config::Routing, store::Store};\n",
        ),
        file(
            "coordinator/redis/mod.rs",
            "use crate::accounts::AccountRegistry;\n",
        ),
        file(
            "error.rs",
            "fn f() {}\nmod tests {\n    use super::super::workers::serve;\n}\n",
        ),
        file("config/mod.rs", "use super::cli::Args;\n"),
        file("newthing.rs", "fn f() {}\n"),
        file("lib.rs", "pub mod proxy; use crate::cli::run;\n"),
    ];
    let found = violations(&files);
    let has = |needle: &str| found.iter().any(|v| v.contains(needle));
    assert!(
        has("src/routing/mod.rs:1: `routing` -> `proxy`"),
        "{found:#?}"
    );
    assert!(
        has("src/routing/table.rs:3: `routing` -> `state`"),
        "{found:#?}"
    );
    assert!(
        !has("`routing` -> `admin`"),
        "strings are not code: {found:#?}"
    );
    assert!(
        has("src/routing/scheduler.rs:1: `routing` -> `store`: forbidden"),
        "{found:#?}"
    );
    assert!(
        !has("`routing` -> `config`"),
        "config is below routing: {found:#?}"
    );
    assert!(has("`coordinator` -> `accounts`"), "same layer: {found:#?}");
    assert!(has("src/error.rs:3: `error` -> `workers`"), "{found:#?}");
    assert!(has("src/config/mod.rs:1: `config` -> `cli`"), "{found:#?}");
    assert!(has("module `newthing` is in no layer"), "{found:#?}");
    assert!(!found.iter().any(|v| v.contains("lib.rs")), "{found:#?}");
    assert_eq!(found.len(), 8, "{found:#?}");
}

#[test]
fn the_checker_accepts_downward_edges_and_own_paths() {
    let files = [
        file(
            "routing/mod.rs",
            "use crate::coordinator::Cooldown;\nuse self::table::x;\n",
        ),
        file(
            "routing/table.rs",
            "use super::key_may_use;\nuse crate::routing::x;\n",
        ),
        file(
            "server.rs",
            "use crate::{state::AppState, proxy};\nmod tests { use super::*; }\n",
        ),
        file(
            "cli.rs",
            "fn f<'a>(x: &'a str) -> char { '{' }\nfn g() -> char { '\\'' }\nuse crate::server::serve;\n",
        ),
    ];
    let found = violations(&files);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_checker_finds_foreign_crates_in_translate_and_relayd_in_relayctl() {
    let deps = [
        "tokio".to_owned(),
        "serde_json".to_owned(),
        "axum".to_owned(),
    ];
    let files = [
        file(
            "translate/mod.rs",
            "use serde_json::Value;\nfn f() { tokio::spawn(x); }\n",
        ),
        file(
            "translate/sse.rs",
            "// axum::Router in a comment\nuse std::io;\n",
        ),
        file("proxy/mod.rs", "use axum::Router;\n"),
    ];
    let found = translate_crate_violations(&files, &deps);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("src/translate/mod.rs:2: `translate` -> crate `tokio`"),
        "{found:#?}"
    );

    let good = "[dependencies]\nshared.workspace = true\nserde.workspace = true\n";
    assert!(relayctl_violations(good).is_empty());
    let bad = "[dependencies]\nrelayd = { path = \"../relayd\" }\n";
    let found = relayctl_violations(bad);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found.iter().any(|v| v.contains("relayctl -> relayd")),
        "{found:#?}"
    );
}
