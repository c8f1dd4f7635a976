//! Checks at load time that need no input: every `sandbox.<field>` and `activity.<field>` an
//! expression reads exists, and every map a hook can return (on every branch of its
//! conditionals) has only keys of that hook's decision. Found at load with a position, rather
//! than at run time on the branches a case happens to reach.

use std::collections::{BTreeMap, BTreeSet};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

use crate::compile::{FIELDS, ROOTS};
use crate::spec::Hook;

/// 1-based line and column of the first `needle` in `source` that is not part of a longer
/// identifier.
pub fn position(source: &str, needle: &str) -> Option<(usize, usize)> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(found) = source[from..].find(needle) {
        let start = from + found;
        let end = start + needle.len();
        let before = source[..start].chars().next_back();
        let after = source[end..].chars().next();
        let glued_before = needle.starts_with(is_ident) && before.is_some_and(is_ident);
        let glued_after = needle.ends_with(is_ident) && after.is_some_and(is_ident);
        let whole = !glued_before && !glued_after;
        if whole {
            let line = source[..start].matches('\n').count() + 1;
            let column = start - source[..start].rfind('\n').map_or(0, |i| i + 1) + 1;
            return Some((line, column));
        }
        from = end;
    }
    None
}

/// `<field>, line L column C` when the needle is found, else `<field>`.
pub fn at(field: &str, source: &str, needle: &str) -> String {
    match position(source, needle) {
        Some((line, column)) => format!("{field}, line {line} column {column}"),
        None => field.to_string(),
    }
}

/// Fields read of the inputs that have a fixed set of fields.
pub fn check_fields(
    field: &str,
    source: &str,
    fields: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), String> {
    for (i, known) in FIELDS.iter().enumerate() {
        let root = ROOTS[i];
        let Some(read) = fields.get(root) else {
            continue;
        };
        if let Some(unknown) = read.iter().find(|f| !known.contains(&f.as_str())) {
            return Err(format!(
                "{}: {root}.{unknown} is not a field of {root} (its fields: {})",
                at(field, source, &format!(".{unknown}")),
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// The keys a decision map may have, per hook; and of the maps inside them.
fn decision_keys(hook: Hook) -> &'static [&'static str] {
    match hook {
        Hook::Isolation => &[
            "runtimeClassName",
            "security",
            "nodeSelector",
            "tolerations",
            "network",
            "reason",
        ],
        Hook::Resources => &["containers", "reason"],
        Hook::Lifecycle => &["action", "reason", "requeueAfterSeconds", "checkpoint"],
    }
}

const SECURITY_KEYS: &[&str] = &[
    "runAsNonRoot",
    "runAsUser",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "hostUsers",
    "seccompProfile",
];
const TOLERATION_KEYS: &[&str] = &["key", "operator", "value", "effect"];
const CONTAINER_KEYS: &[&str] = &["container", "defaults", "caps"];
const QUANTITY_KEYS: &[&str] = &["cpu", "memory", "ephemeralStorage"];

/// The expressions a hook can return: through conditionals, every branch.
fn results<'a>(expr: &'a IdedExpr, out: &mut Vec<&'a IdedExpr>) {
    match &expr.expr {
        Expr::Call(call) if call.func_name == "_?_:_" && call.args.len() == 3 => {
            results(&call.args[1], out);
            results(&call.args[2], out);
        }
        _ => out.push(expr),
    }
}

/// A map literal's string keys, with their values.
fn literal_entries(expr: &IdedExpr) -> Option<Vec<(String, &IdedExpr)>> {
    let Expr::Map(map) = &expr.expr else {
        return None;
    };
    Some(
        map.entries
            .iter()
            .filter_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) => match &entry.key.expr {
                    Expr::Literal(LiteralValue::String(key)) => {
                        Some((key.inner().to_string(), &entry.value))
                    }
                    _ => None,
                },
                EntryExpr::StructField(_) => None,
            })
            .collect(),
    )
}

/// The map a key's value must be (what it is called, its keys, whether a list of them).
type Nested = Option<(&'static str, &'static [&'static str], bool)>;

fn check_map(
    field: &str,
    source: &str,
    what: &str,
    expr: &IdedExpr,
    allowed: &[&str],
    nested: &dyn Fn(&str) -> Nested,
) -> Result<(), String> {
    let Some(entries) = literal_entries(expr) else {
        return Ok(());
    };
    for (key, value) in entries {
        if !allowed.contains(&key.as_str()) {
            let quoted = [format!("\"{key}\""), format!("'{key}'")];
            let place = quoted
                .iter()
                .find(|q| position(source, q).is_some())
                .map_or_else(|| field.to_string(), |q| at(field, source, q));
            return Err(format!(
                "{place}: {key:?} is not a key of {what} (its keys: {})",
                allowed.join(", ")
            ));
        }
        if let Some((inner_what, inner_keys, is_list)) = nested(&key) {
            let mut items = Vec::new();
            match (&value.expr, is_list) {
                (Expr::List(list), true) => items.extend(list.elements.iter()),
                (_, false) => items.push(value),
                _ => {}
            }
            for item in items {
                let deeper = |k: &str| match (inner_what, k) {
                    ("a container entry", "defaults" | "caps") => {
                        Some(("defaults or caps", QUANTITY_KEYS, false))
                    }
                    _ => None,
                };
                check_map(field, source, inner_what, item, inner_keys, &deeper)?;
            }
        }
    }
    Ok(())
}

/// Every map literal the hook can return has only its decision's keys.
pub fn check_result(field: &str, source: &str, hook: Hook, expr: &IdedExpr) -> Result<(), String> {
    let mut candidates = Vec::new();
    results(expr, &mut candidates);
    let what = match hook {
        Hook::Isolation => "an isolation decision",
        Hook::Resources => "a resources decision",
        Hook::Lifecycle => "a lifecycle decision",
    };
    let nested = |key: &str| match key {
        "security" => Some(("security", SECURITY_KEYS, false)),
        "tolerations" => Some(("a toleration", TOLERATION_KEYS, true)),
        "containers" => Some(("a container entry", CONTAINER_KEYS, true)),
        _ => None,
    };
    for candidate in candidates {
        check_map(field, source, what, candidate, decision_keys(hook), &nested)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_lines_and_columns_of_whole_words() {
        let source = "activity.idleSecondsX > 1 ||\n  activity.idleSecs > 2";
        assert_eq!(position(source, ".idleSecs"), Some((2, 11)));
        assert_eq!(position(source, "missing"), None);
    }

    #[test]
    fn every_branch_is_checked() {
        let source =
            "activity.idleSeconds > 60\n  ? {\"action\": \"suspend\"}\n  : {\"actoin\": \"keep\"}";
        let program = cel::Program::compile(source).expect("parse");
        let error = check_result(
            "spec.cel.lifecycle",
            source,
            Hook::Lifecycle,
            program.expression(),
        )
        .expect_err("the else branch is wrong");
        assert!(
            error.contains("line 3 column 6") && error.contains("\"actoin\""),
            "{error}"
        );
        let nested = "{\"containers\": [{\"defaults\": {\"cpu\": \"1\", \"gpu\": \"1\"}}]}";
        let program = cel::Program::compile(nested).expect("parse");
        let error = check_result(
            "spec.cel.resources",
            nested,
            Hook::Resources,
            program.expression(),
        )
        .expect_err("gpu");
        assert!(error.contains("\"gpu\""), "{error}");
    }
}
