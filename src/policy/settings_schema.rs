//! A policy's `spec.settingsSchema`: the JSON Schema its settings must meet before it loads.
//! The operator and the CLI check it in the same place (the loader), so a suite case and a
//! cluster refuse the same settings with the same words.

/// At most this many of the schema's complaints are reported; the rest are counted.
const REPORTED: usize = 5;

/// Checks `settings` against `schema`; the error names each failing location and why.
/// References the schema makes outside itself are never fetched (no file or HTTP resolver is
/// built in), so a policy cannot make its loader reach anywhere.
pub fn check(schema: &serde_json::Value, settings: &serde_json::Value) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("spec.settingsSchema is not a usable JSON Schema: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(settings)
        .map(|error| {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("at {at}: {error}")
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = format!(
        "the settings do not meet spec.settingsSchema: {}",
        problems[..problems.len().min(REPORTED)].join("; ")
    );
    if problems.len() > REPORTED {
        message.push_str(&format!("; and {} more", problems.len() - REPORTED));
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "runtime": {"enum": ["gvisor", "runc"]},
                "idleSeconds": {"type": "integer", "minimum": 60}
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn settings_that_meet_the_schema_pass() {
        check(&schema(), &json!({"runtime": "gvisor", "idleSeconds": 600})).expect("meets it");
    }

    #[test]
    fn each_failing_location_is_named() {
        let message = check(&schema(), &json!({"runtime": "kata", "idleSeconds": 5}))
            .expect_err("two problems");
        assert!(message.contains("at /runtime:"), "{message}");
        assert!(message.contains("kata"), "{message}");
        assert!(message.contains("at /idleSeconds:"), "{message}");
        let extra = check(&schema(), &json!({"colour": "red"})).expect_err("unknown key");
        assert!(extra.contains("at /:"), "{extra}");
        assert!(extra.contains("colour"), "{extra}");
    }

    #[test]
    fn a_broken_schema_is_its_own_error() {
        let message = check(&json!({"type": "no-such-type"}), &json!({})).expect_err("broken");
        assert!(message.contains("not a usable JSON Schema"), "{message}");
    }

    #[test]
    fn remote_references_are_not_fetched() {
        let message = check(
            &json!({"$ref": "http://127.0.0.1:9/schema.json"}),
            &json!({}),
        )
        .expect_err("no resolver");
        assert!(message.contains("not a usable JSON Schema"), "{message}");
    }
}
