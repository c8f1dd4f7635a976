//! What the CLI checks of the files authors write, beyond what serde does: keys a type does
//! not have (a misspelled `lifecyle:` is refused, as the CRD refuses it), and where in the
//! manifest a CEL expression's error is.

/// Keys of `given` that a round trip through the typed value (`known`) dropped: fields it
/// does not have. A key whose value is empty or zero may have been dropped as a default, so it
/// is not reported.
pub fn unknown_keys(given: &serde_json::Value, known: &serde_json::Value, at: &str) -> Vec<String> {
    let (Some(given), Some(known)) = (given.as_object(), known.as_object()) else {
        return Vec::new();
    };
    let empty = |v: &serde_json::Value| match v {
        serde_json::Value::Null => true,
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
    };
    let mut unknown = Vec::new();
    for (key, value) in given {
        let path = format!("{at}.{key}");
        match known.get(key) {
            Some(inner) => unknown.extend(unknown_keys(value, inner, &path)),
            None if !empty(value) => unknown.push(path),
            None => {}
        }
    }
    unknown
}

/// Adds the manifest's own `file:line:column` to a CEL error that names an expression's line
/// and column (`spec.cel.lifecycle, line 3 column 12: …`).
pub fn locate_cel_error(message: &str, manifest: &str, file: &str) -> String {
    let Some((field, line, column)) = parse_place(message) else {
        return message.to_string();
    };
    match expression_start(manifest, &field) {
        Some(start) => {
            let (manifest_line, manifest_column) = match start {
                Start::Block {
                    line: first,
                    indent,
                } => (first + line - 1, indent + column),
                Start::Inline {
                    line: at,
                    column: from,
                } => (at, from + column - 1),
            };
            format!("{file}:{manifest_line}:{manifest_column}: {message}")
        }
        None => message.to_string(),
    }
}

/// `(field, line, column)` of a message starting `spec.cel.<…>, line L column C`.
fn parse_place(message: &str) -> Option<(String, usize, usize)> {
    let (field, rest) = message.split_once(", line ")?;
    let (line, rest) = rest.split_once(" column ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((field.to_string(), line.parse().ok()?, column.parse().ok()?))
}

enum Start {
    /// A block scalar: the expression's first line is manifest line `line`, indented `indent`.
    Block { line: usize, indent: usize },
    /// On the key's own line, from `column` (1-based, inside any quote).
    Inline { line: usize, column: usize },
}

/// Where the expression of `field` begins in the manifest.
fn expression_start(manifest: &str, field: &str) -> Option<Start> {
    let lines: Vec<&str> = manifest.lines().collect();
    // `spec.cel.variables[i] (name)`: the `expression:` after `name: <name>`; a hook: its key.
    let (from, key) = match field.split_once(" (") {
        Some((_, name)) => {
            let name = name.trim_end_matches(')');
            let at = lines.iter().position(|l| {
                let l = l.trim_start().trim_start_matches("- ").trim();
                l == format!("name: {name}")
            })?;
            (at, "expression")
        }
        None => (0, field.rsplit('.').next()?),
    };
    let (index, text) = lines.iter().enumerate().skip(from).find(|(_, l)| {
        l.trim_start()
            .trim_start_matches("- ")
            .starts_with(&format!("{key}:"))
    })?;
    let after = text.split_once(':')?.1;
    let value = after.trim();
    if value.starts_with('|') || value.starts_with('>') || value.is_empty() {
        let first = lines.get(index + 1)?;
        let indent = first.len() - first.trim_start().len();
        return Some(Start::Block {
            line: index + 2,
            indent,
        });
    }
    let offset = text.len() - after.len() + (after.len() - after.trim_start().len());
    let quoted = usize::from(value.starts_with('"') || value.starts_with('\''));
    Some(Start::Inline {
        line: index + 1,
        column: offset + quoted + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "spec:\n  cel:\n    variables:\n      - name: idle\n        expression: activity.idleSecs\n    lifecycle: |\n      variables.idle > 1\n        ? {\"actoin\": \"suspend\"}\n        : null\n";

    #[test]
    fn block_and_inline_expressions_are_found_in_the_manifest() {
        let located = locate_cel_error(
            "spec.cel.lifecycle, line 2 column 12: \"actoin\" is not a key",
            MANIFEST,
            "p.yaml",
        );
        assert!(located.starts_with("p.yaml:8:18: "), "{located}");
        let located = locate_cel_error(
            "spec.cel.variables[0] (idle), line 1 column 9: activity.idleSecs is not a field",
            MANIFEST,
            "p.yaml",
        );
        assert!(located.starts_with("p.yaml:5:29: "), "{located}");
    }
}
