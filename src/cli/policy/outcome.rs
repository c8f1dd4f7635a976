//! One hook's result in the form the CLI prints and test suites expect: a decision in camelCase,
//! `abstain`, or an error.

use serde::Serialize;

use crate::policy::types::Input;
use crate::policy::{Hook, LoadedPolicy, wire};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Decision(serde_json::Value),
    Abstain,
    Error(String),
}

/// Printed the way a suite writes expectations: the decision itself, `abstain`, or
/// `{error: …}`.
impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Outcome::Decision(value) => value.serialize(serializer),
            Outcome::Abstain => serializer.serialize_str("abstain"),
            Outcome::Error(message) => {
                serde_json::json!({ "error": message }).serialize(serializer)
            }
        }
    }
}

pub fn evaluate(policy: &LoadedPolicy, hook: Hook, input: &Input) -> Outcome {
    let decided = match hook {
        Hook::Isolation => policy
            .isolation(input)
            .map(|d| d.map(|d| serde_json::to_value(wire::IsolationDecision::from(d)))),
        Hook::Resources => policy
            .resources(input)
            .map(|d| d.map(|d| serde_json::to_value(wire::ResourcesDecision::from(d)))),
        Hook::Lifecycle => policy
            .lifecycle(input)
            .map(|d| d.map(|d| serde_json::to_value(wire::LifecycleDecision::from(d)))),
        Hook::Pool => {
            return Outcome::Error(
                "the pool hook decides a warm pool's size from a pool, not from a Sandbox".into(),
            );
        }
    };
    match decided {
        Ok(None) => Outcome::Abstain,
        Ok(Some(Ok(value))) => Outcome::Decision(value),
        Ok(Some(Err(e))) => Outcome::Error(format!("serialize the decision: {e}")),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// What a suite may expect of a hook: `null` (abstain), `{error: "part of the message"}`, or
/// the parts of a decision that matter.
pub fn matches(outcome: &Outcome, expected: &serde_json::Value) -> bool {
    match (outcome, expected) {
        (Outcome::Abstain, serde_json::Value::Null) => true,
        (Outcome::Error(message), serde_json::Value::Object(want)) if want.len() == 1 => want
            .get("error")
            .and_then(|e| e.as_str())
            .is_some_and(|part| message.contains(part)),
        (Outcome::Decision(decision), want) if !want.is_null() && want.get("error").is_none() => {
            wire::contains(decision, want)
        }
        _ => false,
    }
}

/// Why `outcome` does not match `expected`, naming the first differing field; `None` when it
/// matches.
pub fn mismatch(outcome: &Outcome, expected: &serde_json::Value) -> Option<String> {
    if matches(outcome, expected) {
        return None;
    }
    let want = if expected.is_null() {
        "abstain".to_string()
    } else {
        expected.to_string()
    };
    if let (Outcome::Decision(decision), false) = (outcome, expected.is_null())
        && expected.get("error").is_none()
        && let Some((path, wanted, found)) = wire::difference(decision, expected)
    {
        let found = found.map_or_else(|| "nothing".to_string(), |v| v.to_string());
        let at = if path.is_empty() {
            "the decision".to_string()
        } else {
            path
        };
        return Some(format!(
            "{at}: expected {wanted}, got {found} (expected {want}, got {outcome})"
        ));
    }
    Some(format!("expected {want}, got {outcome}"))
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Decision(value) => write!(f, "{value}"),
            Outcome::Abstain => write!(f, "abstain"),
            Outcome::Error(message) => write!(f, "error: {message}"),
        }
    }
}
