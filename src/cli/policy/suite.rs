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
//! abstains. `expect: { settings: { error: "text" } }` expects the case's settings to be refused
//! at load time with that text.
//!
//! `sandbox: { file: agent.yaml }` reads the case's Sandbox from a YAML file beside the suite.
//!
//! Cases are strict: unknown keys are refused everywhere (in the case, `sandbox`, `activity`
//! and `expect`), and an empty `expect` is an error, since it would check nothing. Every case
//! runs at `2026-01-01T00:00:00Z` unless `activity.now` (RFC 3339) says otherwise; the activity
//! keys are `now`, `idleSeconds`, `openConnections`, `runningSeconds` and `suspendedSeconds`.

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

/// The suites a command runs, and what to run them against.
#[derive(Args, Debug)]
pub struct Sources {
    /// Suite files (YAML).
    #[arg(required = true)]
    pub suites: Vec<PathBuf>,
    /// Use this policy instead of the suite's own (`.wasm` or SandboxPolicy YAML).
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// Use this component instead of the manifests' sources (no digest check).
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// The public key (PEM) to check a manifest's `spec.wasm.verify` under; a manifest that
    /// requires a signature does not load without it.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    sources: Sources,
    /// Run only the cases whose name contains this text.
    #[arg(long = "case")]
    case: Option<String>,
    /// `text` (default), `json` (one report) or `junit` (XML for CI systems).
    #[arg(long, default_value = "text", value_parser = ["text", "json", "junit"])]
    output: String,
    /// Run again whenever a suite, a policy, a component or a case's Sandbox file changes,
    /// until interrupted.
    #[arg(long)]
    watch: bool,
}

/// One case's result, for every output form.
#[derive(serde::Serialize, Debug)]
struct CaseReport {
    suite: String,
    policy: String,
    case: String,
    /// The case's line in the suite file.
    line: usize,
    passed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
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

/// What `expect` may name.
const EXPECT_KEYS: [&str; 4] = ["isolation", "resources", "lifecycle", "settings"];

/// Suites run at a fixed instant, so that they mean the same thing every day.
const SUITE_NOW: &str = "2026-01-01T00:00:00Z";

pub fn run(args: TestArgs) -> Result<(), PolicyCliError> {
    if args.watch {
        return super::watch::run(
            || watched_files(&args),
            || {
                if let Err(e) = run_once(&args) {
                    println!("{e}");
                }
            },
        );
    }
    run_once(&args)
}

/// Every file the suites read: the suites, their policies and components, and the cases'
/// Sandbox files. A suite that does not parse is watched alone, so that fixing it reruns.
fn watched_files(args: &TestArgs) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in &args.sources.suites {
        files.push(path.clone());
        let Ok(resolved) = resolve(path, &args.sources.policy, args.sources.wasm.as_deref()) else {
            continue;
        };
        files.extend(resolved.policies);
        files.extend(resolved.wasm);
        files.extend(resolved.sandbox_files);
    }
    files.extend(args.sources.key.clone());
    files
}

fn run_once(args: &TestArgs) -> Result<(), PolicyCliError> {
    let engine = engine()?;
    let mut reports = Vec::new();
    for path in &args.sources.suites {
        reports.extend(run_suite(&engine, path, args)?);
    }
    let failed = reports.iter().filter(|r| !r.passed).count();
    let passed = reports.len() - failed;
    super::report_compiles(&engine);
    match args.output.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "passed": passed, "failed": failed, "cases": reports,
            }))
            .map_err(|e| PolicyCliError::Input(e.to_string()))?
        ),
        "junit" => print!("{}", junit(&reports)),
        _ => {
            for r in &reports {
                let label = format!("{}:{} · {} · {}", r.suite, r.line, r.policy, r.case);
                if r.passed {
                    println!("PASS  {label}");
                } else {
                    println!("FAIL  {label}\n      {}", r.problems.join("\n      "));
                }
            }
            println!("{passed} passed, {failed} failed");
        }
    }
    if failed > 0 {
        return Err(PolicyCliError::TestsFailed {
            failed,
            total: passed + failed,
        });
    }
    Ok(())
}

/// The reports as JUnit XML: one testsuite per suite file and policy.
fn junit(reports: &[CaseReport]) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut groups: BTreeMap<(String, String), Vec<&CaseReport>> = BTreeMap::new();
    for r in reports {
        groups
            .entry((r.suite.clone(), r.policy.clone()))
            .or_default()
            .push(r);
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for ((suite, policy), cases) in groups {
        let failures = cases.iter().filter(|c| !c.passed).count();
        xml.push_str(&format!(
            "  <testsuite name=\"{} · {}\" tests=\"{}\" failures=\"{failures}\">\n",
            escape(&suite),
            escape(&policy),
            cases.len()
        ));
        for case in cases {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" line=\"{}\"",
                escape(&policy),
                escape(&case.case),
                escape(&suite),
                case.line
            ));
            if case.passed {
                xml.push_str("/>\n");
            } else {
                xml.push_str(&format!(
                    ">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                    escape(&case.problems.join("; "))
                ));
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The line of the case named `name` in the suite's text (1-based; 0 when not found).
fn case_line(text: &str, name: &str) -> usize {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ").trim_start();
            line.strip_prefix("name:")
                .map(|rest| rest.trim().trim_matches(|c| c == '"' || c == '\''))
                .is_some_and(|found| found == name)
        })
        .map_or(0, |i| i + 1)
}

/// The case's own mistakes, before anything runs: unknown `expect` keys, an empty `expect`,
/// `settings` mixed with hooks, and `sandbox` keys a Sandbox does not have.
fn check_case(case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    if case.expect.is_empty() {
        problems.push("expect is empty, so the case would check nothing".to_string());
    }
    for key in case.expect.keys() {
        if !EXPECT_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "unknown key {key:?} in expect (known: {})",
                EXPECT_KEYS.join(", ")
            ));
        }
    }
    if case.expect.contains_key("settings") && case.expect.len() > 1 {
        problems.push(
            "expect.settings checks that the settings are refused, so no hook can run: give it a case of its own".into(),
        );
    }
    if let Some(refusal) = case.expect.get("settings")
        && refusal.get("error").and_then(|e| e.as_str()).is_none()
    {
        problems.push("expect.settings must be {error: \"part of the message\"}".into());
    }
    if !case.sandbox.is_null() {
        match load::sandbox(case.sandbox.clone(), "sandbox") {
            Ok(sandbox) => {
                let known = serde_json::to_value(&sandbox).unwrap_or_default();
                for path in super::manifest::unknown_keys(&case.sandbox, &known, "sandbox") {
                    problems.push(format!("{path} is not a field of a Sandbox"));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems
}

/// A suite file read, with the policies it tests and the component to use for them.
struct Resolved {
    text: String,
    suite: Suite,
    policies: Vec<PathBuf>,
    wasm: Option<PathBuf>,
    /// The files that cases' `sandbox: {file: …}` read.
    sandbox_files: Vec<PathBuf>,
}

fn resolve(
    path: &Path,
    policy: &[PathBuf],
    wasm: Option<&Path>,
) -> Result<Resolved, PolicyCliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyCliError::Read(path.to_path_buf(), e.to_string()))?;
    let mut suite: Suite = serde_yaml::from_str(&text)
        .map_err(|e| PolicyCliError::Parse(path.to_path_buf(), e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut sandbox_files = Vec::new();
    for case in &mut suite.cases {
        sandbox_files.extend(read_sandbox_file(&mut case.sandbox, dir)?);
    }
    let policies: Vec<PathBuf> = if policy.is_empty() {
        suite
            .policy
            .iter()
            .chain(&suite.policies)
            .map(|p| dir.join(p))
            .collect()
    } else {
        policy.to_vec()
    };
    if policies.is_empty() {
        return Err(PolicyCliError::Parse(
            path.to_path_buf(),
            "name the policy under test (policy: or policies:, or --policy)".into(),
        ));
    }
    let wasm = wasm
        .map(Path::to_path_buf)
        .or(suite.wasm.as_ref().map(|w| dir.join(w)));
    Ok(Resolved {
        text,
        suite,
        policies,
        wasm,
        sandbox_files,
    })
}

/// `sandbox: {file: path}` is the Sandbox in that YAML file (relative to the suite), read here
/// so that every check of a case's Sandbox sees the file's content; the file read, if any.
fn read_sandbox_file(
    sandbox: &mut serde_json::Value,
    dir: &Path,
) -> Result<Option<PathBuf>, PolicyCliError> {
    let Some(fields) = sandbox.as_object() else {
        return Ok(None);
    };
    let Some(file) = fields.get("file").filter(|_| fields.len() == 1) else {
        return Ok(None);
    };
    let Some(file) = file.as_str() else {
        return Err(PolicyCliError::Input("sandbox.file must be a path".into()));
    };
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PolicyCliError::Read(path.clone(), e.to_string()))?;
    *sandbox = serde_yaml::from_str(&text)
        .map_err(|e| PolicyCliError::Parse(path.clone(), e.to_string()))?;
    Ok(Some(path))
}

/// A policy of a suite, loaded with the suite's settings, and the input of every case that
/// runs a hook: what `sandman policy bench` measures.
pub(super) struct Workload {
    pub policy: LoadedPolicy,
    pub inputs: Vec<crate::policy::types::Input>,
}

pub(super) fn workloads(
    engine: &PolicyEngine,
    path: &Path,
    policy: &[PathBuf],
    wasm: Option<&Path>,
    key: Option<&Path>,
) -> Result<Vec<Workload>, PolicyCliError> {
    let resolved = resolve(path, policy, wasm)?;
    let mut workloads = Vec::new();
    for policy_path in &resolved.policies {
        let file = block_on(load::policy(
            policy_path,
            resolved.wasm.as_deref(),
            key,
            None,
        ))?;
        let settings = resolved
            .suite
            .settings
            .clone()
            .unwrap_or_else(|| file.settings.clone());
        let policy = file
            .load_with_settings(engine, &settings)
            .map_err(|e| PolicyCliError::Load(file.name.clone(), e))?;
        let default_now: Timestamp = SUITE_NOW
            .parse()
            .map_err(|e| PolicyCliError::Input(format!("the suite's fixed time: {e}")))?;
        let mut inputs = Vec::new();
        for case in &resolved.suite.cases {
            // Cases of other settings, or of a refusal, measure something else.
            if case.settings.is_some() || case.expect.contains_key("settings") {
                continue;
            }
            let sandbox = load::sandbox(case.sandbox.clone(), "sandbox")?;
            let now = case
                .activity
                .now_or(default_now)
                .map_err(PolicyCliError::Input)?;
            let mut input = input::build(&sandbox, &case.namespace_labels, now, policy.settings());
            case.activity.apply(&mut input);
            inputs.push(input);
        }
        workloads.push(Workload { policy, inputs });
    }
    Ok(workloads)
}

fn run_suite(
    engine: &PolicyEngine,
    path: &Path,
    args: &TestArgs,
) -> Result<Vec<CaseReport>, PolicyCliError> {
    let Resolved {
        text,
        suite,
        policies,
        wasm,
        ..
    } = resolve(path, &args.sources.policy, args.sources.wasm.as_deref())?;
    let cases: Vec<&Case> = suite
        .cases
        .iter()
        .filter(|c| {
            args.case
                .as_ref()
                .is_none_or(|part| c.name.contains(part.as_str()))
        })
        .collect();
    let mut reports = Vec::new();
    for policy_path in &policies {
        let file = block_on(load::policy(
            policy_path,
            wasm.as_deref(),
            args.sources.key.as_deref(),
            None,
        ))?;
        let mut loaded: HashMap<String, LoadedPolicy> = HashMap::new();
        for case in &cases {
            let settings = case
                .settings
                .clone()
                .or_else(|| suite.settings.clone())
                .unwrap_or_else(|| file.settings.clone());
            let mut problems = check_case(case);
            if problems.is_empty()
                && let Err(why) = run_case(engine, &file, &mut loaded, &settings, case)
            {
                problems.push(why);
            }
            reports.push(CaseReport {
                suite: path.display().to_string(),
                policy: file.name.clone(),
                case: case.name.clone(),
                line: case_line(&text, &case.name),
                passed: problems.is_empty(),
                problems,
            });
        }
    }
    Ok(reports)
}

fn run_case(
    engine: &PolicyEngine,
    file: &PolicyFile,
    loaded: &mut HashMap<String, LoadedPolicy>,
    settings: &serde_json::Value,
    case: &Case,
) -> Result<(), String> {
    let key = settings.to_string();
    if let Some(refusal) = case.expect.get("settings") {
        let part = refusal
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or_default();
        return match file.load_with_settings(engine, settings) {
            Ok(_) => Err(format!(
                "settings: expected a refusal containing {part:?}, but {key} loaded"
            )),
            Err(message) if message.contains(part) => Ok(()),
            Err(message) => Err(format!(
                "settings: expected a refusal containing {part:?}, got {message:?}"
            )),
        };
    }
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
            // Checked by `check_case`.
            _ => continue,
        };
        let outcome = if policy.hooks().contains(&hook) {
            outcome::evaluate(policy, hook, &input)
        } else {
            Outcome::Abstain
        };
        if let Some(why) = outcome::mismatch(&outcome, expected) {
            // A field's path continues the hook's name; a whole-outcome mismatch follows it.
            let separator = if why.starts_with("expected") {
                ": "
            } else {
                "."
            };
            problems.push(format!("{hook_name}{separator}{why}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n      "))
    }
}
