use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::outcome::{self, Outcome};
use super::{PolicyCliError, block_on, engine, load, parse_settings};
use crate::policy::Hook;
use crate::policy::input::{self, ActivityFacts};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A component (`.wasm`) or a SandboxPolicy manifest (YAML).
    #[arg(long)]
    policy: PathBuf,
    /// The Sandbox manifest (YAML); omitted fields take defaults.
    #[arg(long)]
    sandbox: PathBuf,
    /// Use this component instead of the manifest's source (no digest check).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The public key (PEM) to check the manifest's `spec.wasm.verify` under.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Settings as JSON, replacing the manifest's.
    #[arg(long)]
    settings: Option<String>,
    /// Labels of the Sandbox's namespace, `key=value`, repeatable.
    #[arg(long = "namespace-label", value_parser = parse_pair)]
    namespace_labels: Vec<(String, String)>,
    /// Activity as YAML or JSON, e.g. `{idleSeconds: 3600, openConnections: 0}`.
    #[arg(long)]
    activity: Option<String>,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    policy: String,
    sha256: String,
    decisions: BTreeMap<&'static str, Outcome>,
}

pub fn run(args: EvalArgs) -> Result<(), PolicyCliError> {
    let file = block_on(load::policy(
        &args.policy,
        args.wasm.as_deref(),
        args.key.as_deref(),
        parse_settings(args.settings.as_deref())?,
    ))?;
    let engine = engine()?;
    let policy = file.load(&engine)?;
    let sandbox = load::sandbox_file(&args.sandbox)?;
    let activity: ActivityFacts = match &args.activity {
        Some(text) => serde_yaml::from_str(text)
            .map_err(|e| PolicyCliError::Input(format!("--activity: {e}")))?,
        None => ActivityFacts::default(),
    };
    let now = activity
        .now_or(Timestamp::now())
        .map_err(PolicyCliError::Input)?;
    let namespace_labels = args.namespace_labels.into_iter().collect();
    let mut input = input::build(&sandbox, &namespace_labels, now, policy.settings());
    activity.apply(&mut input);
    let report = Report {
        policy: file.name.clone(),
        sha256: file.prepared.digest.clone(),
        // The Sandbox hooks the component exports; `pool` decides from a pool, not a Sandbox.
        decisions: policy
            .hooks()
            .into_iter()
            .filter(|hook| *hook != Hook::Pool)
            .map(|hook| (hook.name(), outcome::evaluate(&policy, hook, &input)))
            .collect(),
    };
    let yaml = serde_yaml::to_string(&report)
        .map_err(|e| PolicyCliError::Input(format!("print the report: {e}")))?;
    print!("{yaml}");
    Ok(())
}
