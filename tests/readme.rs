//! The README is what a newcomer reads first: it stays short, and its map of the code names
//! every module, in the row of the folder that holds it.

#[path = "support/files.rs"]
mod files;
use files::rust_files;

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MAX_README_LINES: usize = 300;

fn readme() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("read README.md")
}

/// The map's rows: the folders a row's first cell names (`src/controller/`), and the row.
fn map_rows(readme: &str) -> Vec<(Vec<String>, String)> {
    let map = readme
        .split("## Map of the code")
        .nth(1)
        .expect("a \"Map of the code\" section");
    map.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default();
            let folders = first
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|t| t.ends_with('/'))
                .map(str::to_string)
                .collect();
            (folders, row.to_string())
        })
        .collect()
}

/// Each module's path as the map names it: under its crate, without the crate's `src/`.
fn modules() -> Vec<String> {
    let mut found = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut found);
    for krate in std::fs::read_dir(Path::new(ROOT).join("crates")).expect("read crates/") {
        let src = krate.expect("entry").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut found);
        }
    }
    found
        .iter()
        .map(|p| {
            let relative = p.strip_prefix(ROOT).expect("under the root");
            let text = relative.to_string_lossy().replace('\\', "/");
            match text.strip_prefix("crates/") {
                Some(rest) => match rest.split_once("/src/") {
                    Some((krate, path)) => format!("crates/{krate}/{path}"),
                    None => text,
                },
                None => text,
            }
        })
        .collect()
}

#[test]
fn readme_stays_short() {
    let lines = readme().lines().count();
    assert!(
        lines <= MAX_README_LINES,
        "README.md has {lines} lines; at most {MAX_README_LINES}: reference material goes in docs/"
    );
}

#[test]
fn readme_map_names_every_module() {
    let readme = readme();
    let rows = map_rows(&readme);
    let mut missing = Vec::new();
    for module in modules() {
        // The rows of the deepest folder that holds the module, which must name it by its
        // path inside that folder.
        let deepest = rows
            .iter()
            .flat_map(|(folders, _)| folders.iter())
            .filter(|f| module.starts_with(f.as_str()))
            .max_by_key(|f| f.len());
        let Some(folder) = deepest else {
            missing.push(format!("{module} (no row for its folder)"));
            continue;
        };
        let name = format!("`{}`", &module[folder.len()..]);
        let named = rows
            .iter()
            .filter(|(folders, _)| folders.contains(folder))
            .any(|(_, row)| row.contains(&name));
        if !named {
            missing.push(format!("{module} (as {name} in the {folder} row)"));
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's map of the code misses:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn readme_links_resolve() {
    let readme = readme();
    for link in readme.split("](").skip(1) {
        let target = link.split(')').next().unwrap_or_default();
        if target.starts_with("http") {
            continue;
        }
        assert!(
            Path::new(ROOT).join(target).exists(),
            "README.md links to {target}, which does not exist"
        );
    }
}
