//! The shape of the code stays readable: no function over 80 lines (template text aside), no
//! file over 700 lines before its tests, and no module of `controller` (nor of its Sandbox and
//! blueprint controllers) or of `policy` that imports, through another, itself.

#[path = "support/files.rs"]
mod files;
use files::rust_files;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MAX_FUNCTION_LINES: usize = 80;
const MAX_FILE_LINES: usize = 700;
/// Functions that return a new policy project's files: template text, not logic.
const TEMPLATE_TEXT: &str = "src/cli/policy/scaffold/";

fn sources() -> Vec<(String, String)> {
    let mut found = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut found);
    rust_files(&Path::new(ROOT).join("crates"), &mut found);
    found
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "tests"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            let relative = p.strip_prefix(ROOT).expect("under the root");
            (relative.to_string_lossy().replace('\\', "/"), text)
        })
        .collect()
}

/// The lines before the file's `#[cfg(test)]` module.
fn before_tests(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .collect()
}

/// A line without its string and character literals and its comment, so braces count.
fn code_of(line: &str) -> String {
    let mut code = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' if chars.peek().is_some_and(|n| *n == '{' || *n == '}') => {
                chars.next();
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => code.push(c),
        }
    }
    code
}

/// Each function's name, first line and length in lines.
fn functions(lines: &[&str]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let words: Vec<&str> = lines[i].split_whitespace().collect();
        let at = words.iter().position(|w| *w == "fn");
        let Some(name) = at.and_then(|at| words.get(at + 1)).filter(|_| {
            words[..at.unwrap_or(0)]
                .iter()
                .all(|w| w.starts_with("pub") || matches!(*w, "async" | "const" | "unsafe"))
        }) else {
            i += 1;
            continue;
        };
        let name = name
            .split(['(', '<'])
            .next()
            .unwrap_or_default()
            .to_string();
        let (mut depth, mut opened, mut j) = (0i64, false, i);
        while j < lines.len() {
            let code = code_of(lines[j]);
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                break;
            }
            j += 1;
        }
        found.push((name, i + 1, j - i + 1));
        i = if opened { j + 1 } else { i + 1 };
    }
    found
}

#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        if path.starts_with(TEMPLATE_TEXT) {
            continue;
        }
        for (name, line, length) in functions(&before_tests(&text)) {
            if length > MAX_FUNCTION_LINES {
                long.push(format!("{path}:{line} {name} has {length} lines"));
            }
        }
    }
    assert!(long.is_empty(), "split these:\n  {}", long.join("\n  "));
}

#[test]
fn no_file_is_over_700_lines_before_its_tests() {
    let long: Vec<String> = sources()
        .into_iter()
        .map(|(path, text)| (path, before_tests(&text).len()))
        .filter(|(_, lines)| *lines > MAX_FILE_LINES)
        .map(|(path, lines)| format!("{path}: {lines} lines"))
        .collect();
    assert!(long.is_empty(), "split these:\n  {}", long.join("\n  "));
}

/// The modules of `dir` (files and folders) and the siblings each names, in code outside its
/// tests, by `crate::<layer>::<sibling>` or `super::<sibling>`.
fn imports(dir: &str, layer: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(ROOT).join(dir);
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem == "mod" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path.clone());
        }
        let text: String = files
            .iter()
            .map(|f| before_tests(&std::fs::read_to_string(f).expect("read")).join("\n"))
            .collect();
        texts.entry(stem).or_default().push_str(&text);
    }
    let names: Vec<String> = texts.keys().cloned().collect();
    texts
        .iter()
        .map(|(module, text)| {
            let named = names
                .iter()
                .filter(|other| *other != module)
                .filter(|other| {
                    let direct = [
                        format!("crate::{layer}::{other}::"),
                        format!("crate::{layer}::{other};"),
                        format!("super::{other}::"),
                        format!("super::{other};"),
                    ];
                    direct.iter().any(|d| text.contains(d.as_str()))
                        || grouped(text, &format!("crate::{layer}::{{"), other)
                        || grouped(text, "super::{", other)
                })
                .cloned()
                .collect();
            (module.clone(), named)
        })
        .collect()
}

/// Whether a `prefix{…}` group in `text` names `module` as one of its entries.
fn grouped(text: &str, prefix: &str, module: &str) -> bool {
    text.match_indices(prefix).any(|(at, _)| {
        let group = &text[at + prefix.len()..];
        let group = &group[..group.find('}').unwrap_or(group.len())];
        group
            .split(',')
            .map(|entry| entry.trim().split("::").next().unwrap_or_default().trim())
            .any(|entry| entry == module)
    })
}

fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn controller_and_policy_modules_have_no_import_cycle() {
    for (dir, layer) in [
        ("src/controller", "controller"),
        ("src/controller/sandbox", "controller::sandbox"),
        ("src/controller/blueprints", "controller::blueprints"),
        ("src/policy", "policy"),
    ] {
        let graph = imports(dir, layer);
        assert!(
            graph.values().any(|named| !named.is_empty()),
            "{dir}: no imports seen at all; the check would prove nothing"
        );
        for module in graph.keys() {
            if let Some(cycle) = cycle_through(&graph, module) {
                panic!("{dir}: import cycle {}", cycle.join(" -> "));
            }
        }
    }
}

/// The checks must see what they check: a cycle, and a long function, are found.
#[test]
fn the_structure_checks_find_what_they_look_for() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(cycle_through(&graph, "a").is_some());
    let body: Vec<String> = std::iter::once("pub async fn long() {".to_string())
        .chain((0..90).map(|i| format!("    let x{i} = \"{{\";")))
        .chain(std::iter::once("}".to_string()))
        .collect();
    let lines: Vec<&str> = body.iter().map(String::as_str).collect();
    assert_eq!(functions(&lines), vec![("long".to_string(), 1, 92)]);
    assert!(grouped(
        "use super::{api_call, phase::Plan};",
        "super::{",
        "phase"
    ));
}
