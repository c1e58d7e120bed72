//! The crate's modules import one way: each may use only modules of a
//! lower layer. This test reads the sources and fails on an import that
//! goes up or sideways, naming the file and the module it reaches.
//!
//! ```text
//! layer 0  vocabulary      error  entrypoint  trace  sync
//! layer 1                  payload  arguments  context  metrics
//! layer 2                  config
//! layer 3  core            transport
//! layer 4                  dependency
//! layer 5                  service
//! layer 6  entrypoint      container  client  events  inject  health
//!          families        registry
//! layer 7  plug-in seam    extension (what a runner shares with its plug-ins)
//! layer 8  plug-ins        http  otlp  logging
//! layer 9  process         runner
//! layer 10 tools           cli  testing
//! ```
//!
//! `lib.rs` re-exports everything and is not checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("entrypoint", 0),
    ("trace", 0),
    ("sync", 0),
    ("metrics", 1),
    ("payload", 1),
    ("arguments", 1),
    ("context", 1),
    ("config", 2),
    ("transport", 3),
    ("dependency", 4),
    ("service", 5),
    ("container", 6),
    ("client", 6),
    ("events", 6),
    ("inject", 6),
    ("health", 6),
    ("registry", 6),
    ("extension", 7),
    ("http", 8),
    ("otlp", 8),
    ("logging", 8),
    ("runner", 9),
    ("cli", 10),
    ("testing", 10),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a source file without its comments (doc links name
/// modules without importing them).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::name` the code mentions.
fn references(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let before = rest[..i].chars().last();
        // `$crate::` in a macro is the crate itself, as `crate::` is.
        if before.map_or(true, |c| !c.is_alphanumeric() && c != '_') || before == Some('$') {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
        rest = after;
    }
    found
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap_or(file);
        let first = relative
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let Some(own) = layer(&module) else {
            panic!(
                "{}: module `{module}` has no layer: add it to LAYERS in tests/layers.rs",
                relative.display()
            );
        };
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for used in references(&code(&text)) {
            if used == module {
                continue;
            }
            match layer(&used) {
                Some(l) if l < own => {}
                Some(l) => wrong
                    .entry(relative.display().to_string())
                    .or_default()
                    .push(format!(
                        "`{used}` (layer {l}) from `{module}` (layer {own})"
                    )),
                // Items of the crate root (macros, re-exports) are fine.
                None => {}
            }
        }
    }
    for list in wrong.values_mut() {
        list.sort();
        list.dedup();
    }
    assert!(
        wrong.is_empty(),
        "imports that go up or sideways:\n{}",
        wrong
            .iter()
            .map(|(file, uses)| format!("  {file}: {}", uses.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    let code = code("use crate::runner::ServiceRunner; // crate::cli in a comment\n");
    assert_eq!(references(&code), vec!["runner".to_string()]);
}
