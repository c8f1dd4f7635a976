//! The one way a SandboxPolicy becomes a loaded policy, for the operator and the CLI alike:
//! pick the source (a component, or the CEL engine with expressions), fetch and check the
//! component's sha256, then compile with the policy's settings, limits and hooks. Only the
//! fetching differs (the operator reads the cluster, the CLI reads files and `docker login`),
//! so each side brings a [`Fetcher`] and nothing else: the two cannot disagree.

use std::future::Future;

use crate::api::{CelPolicy, SandboxPolicySpec, VerifySpec, WasmSource};
use crate::distribution::sha256_hex;
use crate::policy::{
    HookMask, Limits, LoadedPolicy, PolicyEngine, PolicyError, Reuse, cel, settings_schema,
};

/// Reads a component's bytes from its source.
pub trait Fetcher {
    /// The bytes at `source`; `pull_secret` is the policy's `imagePullSecret`, if it names one.
    fn fetch(
        &self,
        source: &WasmSource<'_>,
        pull_secret: Option<&str>,
    ) -> impl Future<Output = Result<Vec<u8>, SourceError>> + Send;

    /// Checks that `image` carries a signature under the key `verify` names; the error says
    /// why not.
    fn verify(
        &self,
        image: &str,
        pull_secret: Option<&str>,
        verify: &VerifySpec,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Why a component could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The object that should hold it is missing, or lacks the key.
    #[error("{0}")]
    Missing(String),
    /// The API server, a registry or a web server did not hand it over.
    #[error("{0}")]
    Transfer(String),
    /// This side cannot read that kind of source (the CLI and ConfigMaps).
    #[error("{0}")]
    Unsupported(String),
}

/// Why a SandboxPolicy did not load. Callers branch on the variant: each is a status reason.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the policy has neither spec.wasm nor spec.cel")]
    NoSource,
    #[error("spec.wasm names no source: give configMap, url or image")]
    NoWasmSource,
    #[error("{0}")]
    Fetch(#[from] SourceError),
    #[error("the component's sha256 is {actual}, but the policy pins {pinned}")]
    DigestMismatch { actual: String, pinned: String },
    /// `spec.wasm.verify` asks for a signature, and none verifies.
    #[error("signature: {0}")]
    SignatureInvalid(String),
    /// A CEL expression does not parse, names something unknown, or has the wrong shape; the
    /// CEL engine's message names the expression.
    #[error("{0}")]
    InvalidExpression(String),
    /// The settings do not meet `spec.settingsSchema`, or the schema is not a schema.
    #[error("{0}")]
    SettingsSchema(String),
    #[error(transparent)]
    Policy(PolicyError),
}

/// A policy's source, read and checked, before it is compiled.
#[derive(Clone)]
pub struct Prepared {
    /// The component: the policy's own, or the CEL engine.
    pub wasm: Vec<u8>,
    /// Its sha256.
    pub digest: String,
    /// For a CEL policy, its expressions.
    pub cel: Option<CelPolicy>,
    /// The policy's own settings (for CEL, what the expressions see as `settings`).
    pub settings: serde_json::Value,
    /// `spec.settingsSchema`, which every settings it loads with must meet.
    pub settings_schema: Option<serde_json::Value>,
}

/// How the component is chosen: from the spec's source, or given (the CLI's `--wasm`, whose
/// digest the author is still changing, so it is not checked).
pub enum Component {
    FromSource,
    Given(Vec<u8>),
}

/// Reads the component of `spec` (or the CEL engine) and checks its pinned sha256.
pub async fn prepare(
    spec: &SandboxPolicySpec,
    fetcher: &impl Fetcher,
    component: Component,
) -> Result<Prepared, LoadError> {
    match (&spec.wasm, &spec.cel) {
        (Some(wasm), _) => {
            let bytes = match component {
                Component::Given(bytes) => bytes,
                Component::FromSource => {
                    let source = wasm.source().ok_or(LoadError::NoWasmSource)?;
                    let bytes = fetcher
                        .fetch(&source, wasm.image_pull_secret.as_deref())
                        .await?;
                    let actual = sha256_hex(&bytes);
                    if actual != wasm.sha256 {
                        return Err(LoadError::DigestMismatch {
                            actual,
                            pinned: wasm.sha256.clone(),
                        });
                    }
                    if let Some(verify) = &wasm.verify {
                        let WasmSource::Image(image) = source else {
                            return Err(LoadError::SignatureInvalid(
                                "verify goes with an image source".into(),
                            ));
                        };
                        fetcher
                            .verify(image, wasm.image_pull_secret.as_deref(), verify)
                            .await
                            .map_err(LoadError::SignatureInvalid)?;
                    }
                    bytes
                }
            };
            Ok(Prepared {
                digest: sha256_hex(&bytes),
                wasm: bytes,
                cel: None,
                settings_schema: spec.settings_schema.clone(),
                settings: wasm
                    .settings
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({})),
            })
        }
        (None, Some(cel)) => Ok(Prepared {
            wasm: cel::CEL_ENGINE.to_vec(),
            digest: cel::engine_digest().to_string(),
            settings: cel
                .settings
                .clone()
                .unwrap_or_else(|| serde_json::json!({})),
            cel: Some(cel.clone()),
            settings_schema: spec.settings_schema.clone(),
        }),
        (None, None) => Err(LoadError::NoSource),
    }
}

impl Prepared {
    /// Compiles and checks the policy with `settings` (its own, or a suite case's).
    pub fn compile(
        &self,
        engine: &PolicyEngine,
        name: &str,
        settings: &serde_json::Value,
        limits: Limits,
    ) -> Result<LoadedPolicy, LoadError> {
        if let Some(schema) = &self.settings_schema {
            settings_schema::check(schema, settings).map_err(LoadError::SettingsSchema)?;
        }
        let (settings_json, reuse, mask): (String, Reuse, HookMask) = match &self.cel {
            Some(cel) => {
                let cel = CelPolicy {
                    settings: Some(settings.clone()),
                    ..cel.clone()
                };
                // The engine is sandman's own code and keeps only compiled programs, so its
                // instances are reused; a CEL policy uses the hooks it has expressions for.
                (
                    cel::engine_settings(&cel),
                    Reuse::Instances,
                    Some(cel::hooks(&cel)),
                )
            }
            None => (settings.to_string(), Reuse::Fresh, None),
        };
        engine
            .load_with(name, &self.wasm, &settings_json, limits, reuse, mask)
            .map_err(|e| match e {
                PolicyError::InvalidSettings(message) if self.cel.is_some() => {
                    LoadError::InvalidExpression(message)
                }
                e => LoadError::Policy(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Serves(Vec<u8>);

    impl Fetcher for Serves {
        async fn fetch(&self, _: &WasmSource<'_>, _: Option<&str>) -> Result<Vec<u8>, SourceError> {
            Ok(self.0.clone())
        }

        async fn verify(&self, _: &str, _: Option<&str>, _: &VerifySpec) -> Result<(), String> {
            Err("no signature here".into())
        }
    }

    fn wasm_spec(sha256: &str) -> SandboxPolicySpec {
        serde_json::from_value(serde_json::json!({
            "wasm": { "url": "http://127.0.0.1:9/p.wasm", "sha256": sha256 }
        }))
        .expect("spec")
    }

    #[tokio::test]
    async fn a_fetched_component_must_match_its_pin() {
        let bytes = b"\0asm".to_vec();
        let pinned = sha256_hex(&bytes);
        let ok = prepare(
            &wasm_spec(&pinned),
            &Serves(bytes.clone()),
            Component::FromSource,
        )
        .await
        .expect("pinned bytes");
        assert_eq!(ok.digest, pinned);
        let wrong = prepare(
            &wasm_spec(&"0".repeat(64)),
            &Serves(bytes.clone()),
            Component::FromSource,
        )
        .await;
        assert!(matches!(wrong, Err(LoadError::DigestMismatch { .. })));
        // A given component is the author's fresh build: not held to the pin.
        let given = prepare(
            &wasm_spec(&"0".repeat(64)),
            &Serves(vec![]),
            Component::Given(bytes),
        )
        .await
        .expect("given");
        assert_eq!(given.digest, pinned);
    }

    #[tokio::test]
    async fn a_spec_without_a_source_is_refused_by_name() {
        let empty = SandboxPolicySpec::default();
        assert!(matches!(
            prepare(&empty, &Serves(vec![]), Component::FromSource).await,
            Err(LoadError::NoSource)
        ));
    }
}
