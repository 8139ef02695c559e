//! Tidy checks over the whole workspace, run as a normal test: every Rust file opens with a
//! `//!` doc saying why it exists, and no file ignores tests, expects panics, leaves `todo!`
//! or `dbg!` behind, or silences a lint with `allow` instead of `expect`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name.starts_with("target-") {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loop-engine sits in the workspace")
        .to_path_buf();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 50,
        "found the workspace's files: {}",
        files.len()
    );
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<_> = workspace_files()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` opening doc: {missing:#?}"
    );
}

#[test]
fn no_ignored_tests_stubs_or_silenced_lints() {
    // Built from pieces so this file does not trip its own check.
    let banned = [
        ["#[", "ignore"].concat(),
        ["should", "_panic"].concat(),
        ["todo", "!("].concat(),
        ["unimplemented", "!("].concat(),
        ["dbg", "!("].concat(),
        ["#[", "allow("].concat(),
        ["#![", "allow("].concat(),
    ];
    let mut hits = Vec::new();
    for f in workspace_files() {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            for b in &banned {
                if line.contains(b.as_str()) {
                    hits.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(hits.is_empty(), "banned constructs: {hits:#?}");
}

/// README's configuration table is generated from the key declarations
/// (`loop_engine::config::markdown_table`); this keeps it current. With `UPDATE_README=1` the
/// table is rewritten in place instead.
#[test]
fn readme_config_table_matches_the_declarations() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loop-engine sits in the workspace")
        .join("README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md is readable");
    let start_tag = "<!-- config-keys:start";
    let end_tag = "<!-- config-keys:end -->";
    let start = text
        .find(start_tag)
        .expect("README has the config-keys:start marker");
    let table_start = start + text[start..].find("-->\n").expect("the marker is closed") + 4;
    let end = text
        .find(end_tag)
        .expect("README has the config-keys:end marker");
    let want = loop_engine::config::markdown_table();
    if text[table_start..end] == want {
        return;
    }
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{want}{}", &text[..table_start], &text[end..]);
        std::fs::write(&readme, updated).expect("README.md is writable");
        return;
    }
    panic!(
        "README.md's config table is out of date; run `UPDATE_README=1 cargo test -p loop-engine --test main readme_config_table` to regenerate it:\n{want}"
    );
}
