//! Reads what the policy commands work on: a policy (a `.wasm` component or SandboxPolicy YAML,
//! whose url or image source is fetched and checked against its sha256) and a Sandbox.

use std::path::Path;

use crate::api::{CelPolicy, PolicyLimits, Sandbox, SandboxPolicy, WasmSource};
use crate::distribution::auth::docker_login;
use crate::distribution::oci::{self, Reference};
use crate::distribution::sha256_hex;
use crate::http_client::HttpClient;
use crate::policy::limits::PolicyLimitBounds;
use crate::policy::{Limits, LoadedPolicy, PolicyEngine, Reuse};

use super::PolicyCliError;

/// A policy as the CLI found it, before loading.
pub struct PolicyFile {
    pub name: String,
    pub wasm: Vec<u8>,
    /// The policy's own settings (what a CEL expression sees as `settings`).
    pub settings: serde_json::Value,
    pub limits: Limits,
    /// For a CEL policy, its expressions; the component is then the CEL engine.
    pub cel: Option<CelPolicy>,
}

impl PolicyFile {
    /// Compiles and checks the policy as the operator would.
    pub fn load(&self, engine: &PolicyEngine) -> Result<LoadedPolicy, PolicyCliError> {
        self.load_with_settings(engine, &self.settings)
            .map_err(|e| PolicyCliError::Load(self.name.clone(), e))
    }

    /// Loads the policy with other settings, as the operator would load it.
    pub fn load_with_settings(
        &self,
        engine: &PolicyEngine,
        settings: &serde_json::Value,
    ) -> Result<LoadedPolicy, String> {
        let loaded = match &self.cel {
            Some(cel) => {
                let cel = CelPolicy {
                    settings: Some(settings.clone()),
                    ..cel.clone()
                };
                engine.load_with(
                    &self.name,
                    &self.wasm,
                    &crate::policy::cel::engine_settings(&cel),
                    self.limits,
                    Reuse::Instances,
                    Some(crate::policy::cel::hooks(&cel)),
                )
            }
            None => engine.load(&self.name, &self.wasm, &settings.to_string(), self.limits),
        };
        loaded.map_err(|e| match e {
            crate::policy::PolicyError::InvalidSettings(message) if self.cel.is_some() => message,
            e => e.to_string(),
        })
    }
}

/// The CLI applies the built-in defaults and maximums, as an operator run without
/// `--policy-default-*` / `--policy-max-*` flags would.
fn limits(path: &Path, configured: &PolicyLimits) -> Result<Limits, PolicyCliError> {
    PolicyLimitBounds::default()
        .apply(configured)
        .map_err(|e| PolicyCliError::Parse(path.to_path_buf(), e))
}

fn read_file(path: &Path) -> Result<Vec<u8>, PolicyCliError> {
    std::fs::read(path).map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))
}

/// Reads `path`: a component (`*.wasm`), or a SandboxPolicy manifest. `wasm` replaces the
/// manifest's source (needed for a configMap source; the CLI does not read the cluster) and
/// skips its digest check, so authors can test a fresh build against the manifest they ship.
pub async fn policy(
    path: &Path,
    wasm: Option<&Path>,
    settings: Option<serde_json::Value>,
) -> Result<PolicyFile, PolicyCliError> {
    if path.extension().is_some_and(|e| e == "wasm") {
        return Ok(PolicyFile {
            name: path
                .file_stem()
                .map_or_else(|| "policy".into(), |s| s.to_string_lossy().into_owned()),
            wasm: read_file(path)?,
            settings: settings.unwrap_or_else(|| serde_json::json!({})),
            limits: Limits::default(),
            cel: None,
        });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))?;
    let manifest: SandboxPolicy = serde_yaml::from_str(&text)
        .map_err(|e| PolicyCliError::Parse(path.to_path_buf(), e.to_string()))?;
    let name = manifest
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "policy".into());
    if let Some(cel) = &manifest.spec.cel {
        return Ok(PolicyFile {
            limits: limits(path, &cel.limits)?,
            settings: settings
                .or_else(|| cel.settings.clone())
                .unwrap_or_else(|| serde_json::json!({})),
            wasm: crate::policy::cel::CEL_ENGINE.to_vec(),
            cel: Some(cel.clone()),
            name,
        });
    }
    let spec = manifest.spec.wasm.as_ref().ok_or_else(|| {
        PolicyCliError::Parse(
            path.to_path_buf(),
            "the policy has neither spec.wasm nor spec.cel".into(),
        )
    })?;
    let bytes = match wasm {
        Some(file) => {
            let bytes = read_file(file)?;
            let digest = sha256_hex(&bytes);
            if digest != spec.sha256 {
                eprintln!(
                    "note: {} has sha256 {digest}; {} pins {} (not checked with --wasm)",
                    file.display(),
                    path.display(),
                    spec.sha256
                );
            }
            bytes
        }
        None => {
            let bytes = fetch(&name, spec.source()).await?;
            let digest = sha256_hex(&bytes);
            if digest != spec.sha256 {
                return Err(PolicyCliError::DigestMismatch {
                    policy: name,
                    actual: digest,
                    pinned: spec.sha256.clone(),
                });
            }
            bytes
        }
    };
    Ok(PolicyFile {
        limits: limits(path, &spec.limits)?,
        settings: settings
            .or_else(|| spec.settings.clone())
            .unwrap_or_else(|| serde_json::json!({})),
        wasm: bytes,
        name,
        cel: None,
    })
}

async fn fetch(name: &str, source: Option<WasmSource<'_>>) -> Result<Vec<u8>, PolicyCliError> {
    let fetch_failed = |e: String| PolicyCliError::Fetch(name.to_string(), e);
    let http = || HttpClient::new().map_err(|e| fetch_failed(e.to_string()));
    match source {
        Some(WasmSource::Url(url)) => Ok(http()?
            .get(url, &[])
            .await
            .map_err(|e| fetch_failed(e.to_string()))?
            .body
            .to_vec()),
        Some(WasmSource::Image(image)) => {
            let reference = Reference::parse(image).map_err(|e| fetch_failed(e.to_string()))?;
            // The CLI uses `docker login`'s credentials, not the policy's imagePullSecret.
            let credentials = docker_login(&reference.registry).map_err(fetch_failed)?;
            Ok(oci::pull(&http()?, &reference, credentials.as_ref())
                .await
                .map_err(|e| fetch_failed(e.to_string()))?
                .to_vec())
        }
        Some(WasmSource::ConfigMap(source)) => Err(fetch_failed(format!(
            "the component is in ConfigMap {}/{}; the CLI does not read the cluster, so pass --wasm FILE",
            source.namespace, source.name
        ))),
        None => Err(fetch_failed("spec.wasm names no source".into())),
    }
}

/// A Sandbox from YAML or JSON, where everything but what the policy looks at may be left out:
/// the name defaults to `agent`, the namespace to `default`, and the pod template to one
/// container.
pub fn sandbox(value: serde_json::Value, origin: &str) -> Result<Sandbox, PolicyCliError> {
    let mut full = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": { "name": "agent", "namespace": "default" },
        "spec": { "podTemplate": { "spec": { "containers": [{ "name": "agent", "image": "agent" }] } } },
    });
    if !value.is_null() {
        merge(&mut full, value);
    }
    serde_json::from_value(full)
        .map_err(|e| PolicyCliError::Input(format!("{origin}: not a Sandbox: {e}")))
}

/// Reads a Sandbox manifest from a file.
pub fn sandbox_file(path: &Path) -> Result<Sandbox, PolicyCliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))?;
    let value: serde_json::Value = serde_yaml::from_str(&text)
        .map_err(|e| PolicyCliError::Parse(path.to_path_buf(), e.to_string()))?;
    sandbox(value, &path.display().to_string())
}

/// JSON merge patch semantics, minus deletion: objects merge by key, the rest replaces.
fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, patch) => *base = patch,
    }
}
