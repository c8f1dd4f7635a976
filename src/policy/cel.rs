//! CEL policies: the CEL engine component built from `policies/cel-engine` and carried in this
//! binary, and the settings it is given for a SandboxPolicy's `spec.cel`.

use crate::api::CelPolicy;

use super::Hook;

/// The CEL engine component.
pub static CEL_ENGINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cel_engine.wasm"));

/// The engine's sha256, reported as the digest of every CEL policy.
pub fn engine_digest() -> &'static str {
    static DIGEST: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| crate::distribution::sha256_hex(CEL_ENGINE));
    &DIGEST
}

/// What the engine receives as settings: the expressions and the policy's own settings.
pub fn engine_settings(cel: &CelPolicy) -> String {
    serde_json::json!({
        "variables": cel.variables,
        "isolation": cel.isolation,
        "resources": cel.resources,
        "lifecycle": cel.lifecycle,
        "settings": cel.settings.clone().unwrap_or_else(|| serde_json::json!({})),
        "settingsValidations": cel.settings_validations,
    })
    .to_string()
}

/// The hooks a CEL policy decides: those it has an expression for.
pub fn hooks(cel: &CelPolicy) -> Vec<Hook> {
    [
        (Hook::Isolation, cel.isolation.is_some()),
        (Hook::Resources, cel.resources.is_some()),
        (Hook::Lifecycle, cel.lifecycle.is_some()),
    ]
    .into_iter()
    .filter_map(|(hook, present)| present.then_some(hook))
    .collect()
}
