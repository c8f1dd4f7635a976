//! `sandman policy`: evaluate, test, inspect and publish policies without a cluster.

mod bench;
mod eval;
mod inspect;
mod load;
mod manifest;
mod outcome;
mod pin;
mod pull;
mod push;
mod scaffold;
mod sign;
mod suite;
mod verify;
mod watch;

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Evaluate a policy's hooks for one Sandbox and print the decisions as YAML.
    Eval(eval::EvalArgs),
    /// Run a test suite (YAML): cases of a Sandbox, its activity and the expected decisions.
    Test(suite::TestArgs),
    /// Show a component's hooks, contract version, size, digest, imports and exports; for a
    /// manifest, also its title, description, author and settings schema.
    Inspect(inspect::InspectArgs),
    /// Publish a component to an OCI registry as a Wasm artifact.
    Push(push::PushArgs),
    /// Per-hook p50/p99 latency and peak memory over a suite's inputs, against a baseline.
    Bench(bench::BenchArgs),
    /// Sign a pushed component (cosign format, key-based) and push the signature beside it.
    Sign(sign::SignArgs),
    /// Write a component's real sha256 into a SandboxPolicy manifest (`spec.wasm.sha256`).
    Pin(pin::PinArgs),
    /// Check a pushed component's signature under a public key, as `spec.wasm.verify` does.
    Verify(verify::VerifyArgs),
    /// Download a pushed component into a file (after checking its signature, with --key).
    Pull(pull::PullArgs),
    /// Write a new policy project (Rust, Python or JavaScript) that builds with one command
    /// and passes its own example suite.
    New(scaffold::NewArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyCliError {
    #[error("read {0}: {1}")]
    Read(PathBuf, String),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("fetch policy {0}: {1}")]
    Fetch(String, String),
    #[error("policy {policy}: the component's sha256 is {actual}, but the policy pins {pinned}")]
    DigestMismatch {
        policy: String,
        actual: String,
        pinned: String,
    },
    #[error("load policy {0}: {1}")]
    Load(String, String),
    #[error("{0}")]
    Input(String),
    #[error("push: {0}")]
    Push(String),
    #[error("{0}: {1}")]
    SignatureInvalid(String, String),
    #[error("{0} regression(s) past the baseline")]
    Regressed(usize),
    #[error("{failed} of {total} cases failed")]
    TestsFailed { failed: usize, total: usize },
    #[error("start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

pub fn run(command: PolicyCommand) -> Result<(), PolicyCliError> {
    // A policy's log calls and what it prints go to stderr; decisions go to stdout.
    crate::telemetry::init_logs(crate::telemetry::LogFormat::Text);
    match command {
        PolicyCommand::Eval(args) => eval::run(args),
        PolicyCommand::Test(args) => suite::run(args),
        PolicyCommand::Bench(args) => bench::run(args),
        PolicyCommand::Sign(args) => block_on(sign::run(args)),
        PolicyCommand::Inspect(args) => inspect::run(args),
        PolicyCommand::Push(args) => block_on(push::run(args)),
        PolicyCommand::New(args) => scaffold::run(args),
        PolicyCommand::Pin(args) => pin::run(args),
        PolicyCommand::Verify(args) => block_on(verify::run(args)),
        PolicyCommand::Pull(args) => block_on(pull::run(args)),
    }
}

/// Runs network I/O to completion. Policies are evaluated outside it: a guest's WASI calls
/// block on a runtime of their own, which tokio refuses inside an async context.
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, PolicyCliError>>,
) -> Result<T, PolicyCliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// The policy engine the commands share: the operator's, with the same on-disk cache of
/// compiled components (keyed by sha256 and the engine's compatibility hash), so that a second
/// run of an unchanged component compiles nothing. A cache that cannot be opened safely is
/// said once and skipped: it costs a compile, never a wrong result.
fn engine() -> Result<crate::policy::PolicyEngine, PolicyCliError> {
    let failed =
        |e: crate::policy::PolicyError| PolicyCliError::Load("engine".into(), e.to_string());
    let Some(dir) = cache_dir() else {
        return crate::policy::PolicyEngine::new().map_err(failed);
    };
    match crate::policy::PolicyEngine::with_cache_dir(&dir) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            eprintln!("note: not caching compiled policies: {error}");
            crate::policy::PolicyEngine::new().map_err(failed)
        }
    }
}

/// Where compiled components are kept: `$SANDMAN_POLICY_CACHE` (`off` for nowhere), else
/// `$XDG_CACHE_HOME/sandman/policies`, else `~/.cache/sandman/policies`.
fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("SANDMAN_POLICY_CACHE") {
        return (dir != "off").then(|| PathBuf::from(dir));
    }
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("sandman").join("policies"))
}

/// One line on stderr: how many components this run compiled and read from the cache.
fn report_compiles(engine: &crate::policy::PolicyEngine) {
    let counts = engine.compile_counts();
    match engine.cache_dir() {
        Some(dir) => eprintln!(
            "machine code: {} compiled, {} from the cache in {}",
            counts.compiled(),
            counts.read_from_cache(),
            dir.display()
        ),
        None => eprintln!("machine code: {} compiled (no cache)", counts.compiled()),
    }
}

/// `--settings` as JSON (YAML flow syntax works too).
fn parse_settings(text: Option<&str>) -> Result<Option<serde_json::Value>, PolicyCliError> {
    text.map(|t| {
        serde_yaml::from_str(t).map_err(|e| PolicyCliError::Input(format!("--settings: {e}")))
    })
    .transpose()
}
