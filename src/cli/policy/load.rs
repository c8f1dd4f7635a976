//! Reads what the policy commands work on: a policy (a `.wasm` component or SandboxPolicy YAML,
//! whose url or image source is fetched and checked against its sha256) and a Sandbox.

use std::path::Path;

use crate::api::{PolicyLimits, Sandbox, SandboxPolicy, WasmSource};
use crate::distribution::auth::docker_login;
use crate::distribution::oci::{self, Reference};
use crate::distribution::sha256_hex;
use crate::http_client::HttpClient;
use crate::policy::limits::PolicyLimitBounds;
use crate::policy::loader::{self, Component, Fetcher, LoadError, Prepared, SourceError};
use crate::policy::{Limits, LoadedPolicy, PolicyEngine};

use super::PolicyCliError;

/// A policy as the CLI found it, before loading.
pub struct PolicyFile {
    pub name: String,
    /// The component (or the CEL engine and expressions), read and checked as the operator
    /// does it: `policy::loader`.
    pub prepared: Prepared,
    /// The settings to load it with: the policy's own, or the command line's.
    pub settings: serde_json::Value,
    pub limits: Limits,
    /// The manifest it came from (path and text), to point CEL errors into it.
    pub manifest: Option<(std::path::PathBuf, String)>,
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
        self.prepared
            .compile(engine, &self.name, settings, self.limits)
            .map_err(|e| match (&e, &self.manifest) {
                (LoadError::InvalidExpression(message), Some((path, text))) => {
                    super::manifest::locate_cel_error(message, text, &path.display().to_string())
                }
                _ => e.to_string(),
            })
    }
}

/// Reads components as a user's machine can: URLs, and images with `docker login`'s
/// credentials (not the policy's imagePullSecret). ConfigMaps are in the cluster, which the
/// CLI does not read. A `verify` is checked under the public key given on the command line
/// (the manifest's key is in the cluster too), and without one the load fails: a signature
/// that is required is never skipped quietly.
struct LocalFetcher {
    /// The PEM text of `--key`.
    key: Option<String>,
}

impl Fetcher for LocalFetcher {
    async fn fetch(
        &self,
        source: &WasmSource<'_>,
        _pull_secret: Option<&str>,
    ) -> Result<Vec<u8>, SourceError> {
        let transfer = SourceError::Transfer;
        let http = || HttpClient::new().map_err(|e| transfer(e.to_string()));
        match source {
            WasmSource::Url(url) => Ok(http()?
                .get(url, &[])
                .await
                .map_err(|e| transfer(e.to_string()))?
                .body
                .to_vec()),
            WasmSource::Image(image) => {
                let reference =
                    Reference::parse(image).map_err(|e| SourceError::Missing(e.to_string()))?;
                let credentials = docker_login(&reference.registry).map_err(transfer)?;
                Ok(oci::pull(&http()?, &reference, credentials.as_ref())
                    .await
                    .map_err(|e| transfer(e.to_string()))?
                    .to_vec())
            }
            WasmSource::ConfigMap(source) => Err(SourceError::Unsupported(format!(
                "the component is in ConfigMap {}/{}; the CLI does not read the cluster, so pass --wasm FILE",
                source.namespace, source.name
            ))),
        }
    }

    async fn verify(
        &self,
        image: &str,
        _pull_secret: Option<&str>,
        _verify: &crate::api::VerifySpec,
    ) -> Result<(), String> {
        let Some(key) = &self.key else {
            return Err("the policy requires a signature (spec.wasm.verify), whose key is in the cluster, which the CLI does not read: pass --key cosign.pub to check it here, or --wasm FILE to test a component without it".into());
        };
        let reference = Reference::parse(image).map_err(|e| e.to_string())?;
        match super::verify::verified_digest(&reference, key).await {
            Ok(_) => Ok(()),
            Err(super::verify::Failure::Fetch(e)) => Err(format!("read {image}: {e}")),
            Err(super::verify::Failure::Signature(e)) => Err(format!("signature of {image}: {e}")),
        }
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

/// The SandboxPolicy manifest `text` (read from `path`). The CRD refuses keys it does not
/// know; so does the CLI, instead of ignoring them.
pub(super) fn strict_manifest(path: &Path, text: &str) -> Result<SandboxPolicy, PolicyCliError> {
    let parse = |e: String| PolicyCliError::Parse(path.to_path_buf(), e);
    let manifest: SandboxPolicy = serde_yaml::from_str(text).map_err(|e| parse(e.to_string()))?;
    let given: serde_json::Value = serde_yaml::from_str(text).map_err(|e| parse(e.to_string()))?;
    let known = serde_json::to_value(&manifest).map_err(|e| parse(e.to_string()))?;
    let unknown = super::manifest::unknown_keys(
        given.get("spec").unwrap_or(&serde_json::Value::Null),
        known.get("spec").unwrap_or(&serde_json::Value::Null),
        "spec",
    );
    if !unknown.is_empty() {
        return Err(parse(format!("unknown field(s) {}", unknown.join(", "))));
    }
    Ok(manifest)
}

/// Reads `path`: a component (`*.wasm`), or a SandboxPolicy manifest. `wasm` replaces the
/// manifest's source (needed for a configMap source; the CLI does not read the cluster) and
/// skips its digest check, so authors can test a fresh build against the manifest they ship.
pub async fn policy(
    path: &Path,
    wasm: Option<&Path>,
    key: Option<&Path>,
    settings: Option<serde_json::Value>,
) -> Result<PolicyFile, PolicyCliError> {
    if path.extension().is_some_and(|e| e == "wasm") {
        let bytes = read_file(path)?;
        return Ok(PolicyFile {
            name: path
                .file_stem()
                .map_or_else(|| "policy".into(), |s| s.to_string_lossy().into_owned()),
            prepared: Prepared {
                digest: sha256_hex(&bytes),
                wasm: bytes,
                cel: None,
                settings: serde_json::json!({}),
                settings_schema: None,
            },
            settings: settings.unwrap_or_else(|| serde_json::json!({})),
            limits: Limits::default(),
            manifest: None,
        });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))?;
    let manifest = strict_manifest(path, &text)?;
    let name = manifest
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "policy".into());
    let spec = &manifest.spec;
    let component = match (wasm, &spec.wasm) {
        (Some(file), Some(pinned)) => {
            let bytes = read_file(file)?;
            let digest = sha256_hex(&bytes);
            if digest != pinned.sha256 {
                eprintln!(
                    "note: {} has sha256 {digest}; {} pins {} (not checked with --wasm; `sandman policy pin {} --wasm {}` writes it)",
                    file.display(),
                    path.display(),
                    pinned.sha256,
                    path.display(),
                    file.display(),
                );
            }
            Component::Given(bytes)
        }
        _ => Component::FromSource,
    };
    let key = key
        .map(|k| {
            std::fs::read_to_string(k)
                .map_err(|e| PolicyCliError::Read(k.to_path_buf(), e.to_string()))
        })
        .transpose()?;
    let prepared = loader::prepare(spec, &LocalFetcher { key }, component)
        .await
        .map_err(|e| match e {
            LoadError::DigestMismatch { actual, pinned } => PolicyCliError::DigestMismatch {
                policy: name.clone(),
                actual,
                pinned,
            },
            LoadError::Fetch(e) => PolicyCliError::Fetch(name.clone(), e.to_string()),
            e => PolicyCliError::Parse(path.to_path_buf(), e.to_string()),
        })?;
    Ok(PolicyFile {
        limits: limits(path, &spec.limits())?,
        settings: settings.unwrap_or_else(|| prepared.settings.clone()),
        prepared,
        name,
        manifest: Some((path.to_path_buf(), text)),
    })
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
