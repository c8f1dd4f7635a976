//! `sandman policy test`: a suite is YAML with the policies under test and cases, each a
//! Sandbox, its namespace's labels, activity, optional settings, and what each hook must return:
//!
//! ```yaml
//! policies: [untrusted-to-gvisor.yaml]     # relative to the suite; .wasm or SandboxPolicy
//! cases:
//!   - name: untrusted Sandboxes get gVisor
//!     sandbox: { metadata: { labels: { sandman.dev/trust: untrusted } } }
//!     expect:
//!       isolation: { runtimeClassName: gvisor }   # the fields that matter
//!   - name: others are left alone
//!     expect: { isolation: null }                 # null: abstain
//! ```
//!
//! `{error: "text"}` expects an error containing the text. A hook the policy does not export
//! abstains.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use clap::Args;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use super::load::{self, PolicyFile};
use super::outcome::{self, Outcome};
use super::{PolicyCliError, block_on, engine};
use crate::policy::input::{self, ActivityFacts};
use crate::policy::{Hook, LoadedPolicy, PolicyEngine};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Suite files (YAML).
    #[arg(required = true)]
    suites: Vec<PathBuf>,
    /// Test this policy instead of the suite's own (`.wasm` or SandboxPolicy YAML).
    #[arg(long)]
    policy: Vec<PathBuf>,
    /// Use this component instead of the manifests' sources (no digest check).
    #[arg(long)]
    wasm: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Suite {
    #[serde(default)]
    policy: Option<PathBuf>,
    #[serde(default)]
    policies: Vec<PathBuf>,
    #[serde(default)]
    wasm: Option<PathBuf>,
    /// Settings for every case, unless a case gives its own.
    #[serde(default)]
    settings: Option<serde_json::Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    sandbox: serde_json::Value,
    #[serde(default)]
    namespace_labels: BTreeMap<String, String>,
    #[serde(default)]
    activity: ActivityFacts,
    #[serde(default)]
    settings: Option<serde_json::Value>,
    expect: BTreeMap<String, serde_json::Value>,
}

/// Suites run at a fixed instant, so that they mean the same thing every day.
const SUITE_NOW: &str = "2026-01-01T00:00:00Z";

pub fn run(args: TestArgs) -> Result<(), PolicyCliError> {
    let engine = engine()?;
    let (mut passed, mut failed) = (0, 0);
    for path in &args.suites {
        let (p, f) = run_suite(&engine, path, &args)?;
        passed += p;
        failed += f;
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        return Err(PolicyCliError::TestsFailed {
            failed,
            total: passed + failed,
        });
    }
    Ok(())
}

fn run_suite(
    engine: &PolicyEngine,
    path: &Path,
    args: &TestArgs,
) -> Result<(usize, usize), PolicyCliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))?;
    let suite: Suite = serde_yaml::from_str(&text)
        .map_err(|e| PolicyCliError::Parse(path.to_path_buf(), e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let policies: Vec<PathBuf> = if args.policy.is_empty() {
        suite
            .policy
            .iter()
            .chain(&suite.policies)
            .map(|p| dir.join(p))
            .collect()
    } else {
        args.policy.clone()
    };
    if policies.is_empty() {
        return Err(PolicyCliError::Parse(
            path.to_path_buf(),
            "name the policy under test (policy: or policies:, or --policy)".into(),
        ));
    }
    let wasm = args.wasm.clone().or(suite.wasm.map(|w| dir.join(w)));
    let (mut passed, mut failed) = (0, 0);
    for policy_path in &policies {
        let file = block_on(load::policy(policy_path, wasm.as_deref(), None))?;
        let mut loaded: HashMap<String, LoadedPolicy> = HashMap::new();
        for case in &suite.cases {
            let settings = case
                .settings
                .clone()
                .or_else(|| suite.settings.clone())
                .unwrap_or_else(|| file.settings.clone());
            let result = run_case(engine, &file, &mut loaded, &settings, case);
            let label = format!("{} · {} · {}", path.display(), file.name, case.name);
            match result {
                Ok(()) => {
                    passed += 1;
                    println!("PASS  {label}");
                }
                Err(why) => {
                    failed += 1;
                    println!("FAIL  {label}\n      {why}");
                }
            }
        }
    }
    Ok((passed, failed))
}

fn run_case(
    engine: &PolicyEngine,
    file: &PolicyFile,
    loaded: &mut HashMap<String, LoadedPolicy>,
    settings: &serde_json::Value,
    case: &Case,
) -> Result<(), String> {
    let key = settings.to_string();
    if !loaded.contains_key(&key) {
        let policy = file
            .load_with_settings(engine, settings)
            .map_err(|e| format!("load with settings {key}: {e}"))?;
        loaded.insert(key.clone(), policy);
    }
    let policy = loaded
        .get(&key)
        .ok_or_else(|| "the loaded policy went missing".to_string())?;
    let sandbox = load::sandbox(case.sandbox.clone(), "sandbox").map_err(|e| e.to_string())?;
    let default_now: Timestamp = SUITE_NOW
        .parse()
        .map_err(|e| format!("the suite's fixed time: {e}"))?;
    let now = case.activity.now_or(default_now)?;
    let mut input = input::build(&sandbox, &case.namespace_labels, now, policy.settings());
    case.activity.apply(&mut input);
    let mut problems = Vec::new();
    for (hook_name, expected) in &case.expect {
        let hook = match hook_name.as_str() {
            "isolation" => Hook::Isolation,
            "resources" => Hook::Resources,
            "lifecycle" => Hook::Lifecycle,
            other => {
                problems.push(format!("unknown hook {other:?} in expect"));
                continue;
            }
        };
        let outcome = if policy.hooks().contains(&hook) {
            outcome::evaluate(policy, hook, &input)
        } else {
            Outcome::Abstain
        };
        if !outcome::matches(&outcome, expected) {
            let want = if expected.is_null() {
                "abstain".to_string()
            } else {
                expected.to_string()
            };
            problems.push(format!("{hook_name}: expected {want}, got {outcome}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n      "))
    }
}
