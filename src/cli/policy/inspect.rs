use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{PolicyCliError, block_on, engine, load};
use crate::policy::{Inspection, cel};

/// The annotations a SandboxPolicy's title, description and author are written in.
pub const TITLE: &str = "sandman.dev/title";
pub const DESCRIPTION: &str = "sandman.dev/description";
pub const AUTHOR: &str = "sandman.dev/author";

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A component (`.wasm`), or a SandboxPolicy manifest: then its title, description,
    /// author, settings schema and hooks as well.
    policy: PathBuf,
    /// For a manifest: the component to inspect instead of fetching its source.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// For a manifest with `spec.wasm.verify`: the public key (PEM) to check it under.
    #[arg(long)]
    key: Option<PathBuf>,
}

/// What `inspect` says of a manifest: what the author wrote about it, then its code.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestReport {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<String>,
    language: &'static str,
    hooks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings_schema: Option<serde_json::Value>,
    settings: serde_json::Value,
    /// For a Wasm policy, the component's own report.
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<Inspection>,
}

pub fn run(args: InspectArgs) -> Result<(), PolicyCliError> {
    let yaml = if args.policy.extension().is_some_and(|e| e == "wasm") {
        to_yaml(&component(&args.policy)?)?
    } else {
        to_yaml(&block_on(manifest(
            &args.policy,
            args.wasm.as_deref(),
            args.key.as_deref(),
        ))?)?
    };
    print!("{yaml}");
    Ok(())
}

fn component(path: &Path) -> Result<Inspection, PolicyCliError> {
    let bytes =
        std::fs::read(path).map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))?;
    engine()?
        .inspect(&bytes)
        .map_err(|e| PolicyCliError::Load(path.display().to_string(), e.to_string()))
}

async fn manifest(
    path: &Path,
    wasm: Option<&Path>,
    key: Option<&Path>,
) -> Result<ManifestReport, PolicyCliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))?;
    let manifest = load::strict_manifest(path, &text)?;
    let annotations: BTreeMap<String, String> =
        manifest.metadata.annotations.clone().unwrap_or_default();
    let file = load::policy(path, wasm, key, None).await?;
    let (language, hooks, component) = match &file.prepared.cel {
        Some(expressions) => (
            "cel",
            cel::hooks(expressions)
                .into_iter()
                .map(|hook| hook.name().to_string())
                .collect(),
            None,
        ),
        None => {
            let inspection = engine()?
                .inspect(&file.prepared.wasm)
                .map_err(|e| PolicyCliError::Load(file.name.clone(), e.to_string()))?;
            ("wasm", inspection.hooks.clone(), Some(inspection))
        }
    };
    Ok(ManifestReport {
        name: file.name.clone(),
        title: annotations.get(TITLE).cloned(),
        description: annotations.get(DESCRIPTION).cloned(),
        author: annotations.get(AUTHOR).cloned(),
        language,
        hooks,
        settings_schema: manifest.spec.settings_schema.clone(),
        settings: file.settings.clone(),
        component,
    })
}

fn to_yaml(report: &impl Serialize) -> Result<String, PolicyCliError> {
    serde_yaml::to_string(report)
        .map_err(|e| PolicyCliError::Input(format!("print the report: {e}")))
}
