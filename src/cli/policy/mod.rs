//! `sandman policy`: evaluate, test, inspect and publish policies without a cluster.

mod bench;
mod eval;
mod inspect;
mod load;
mod manifest;
mod outcome;
mod push;
mod scaffold;
mod sign;
mod suite;

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Evaluate a policy's hooks for one Sandbox and print the decisions as YAML.
    Eval(eval::EvalArgs),
    /// Run a test suite (YAML): cases of a Sandbox, its activity and the expected decisions.
    Test(suite::TestArgs),
    /// Show a component's hooks, contract version, size, digest, imports and exports.
    Inspect(inspect::InspectArgs),
    /// Publish a component to an OCI registry as a Wasm artifact.
    Push(push::PushArgs),
    /// Per-hook p50/p99 latency and peak memory over a suite's inputs, against a baseline.
    Bench(bench::BenchArgs),
    /// Sign a pushed component (cosign format, key-based) and push the signature beside it.
    Sign(sign::SignArgs),
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

/// The policy engine the commands share; the operator's, minus the on-disk cache.
fn engine() -> Result<crate::policy::PolicyEngine, PolicyCliError> {
    crate::policy::PolicyEngine::new()
        .map_err(|e| PolicyCliError::Load("engine".into(), e.to_string()))
}

/// `--settings` as JSON (YAML flow syntax works too).
fn parse_settings(text: Option<&str>) -> Result<Option<serde_json::Value>, PolicyCliError> {
    text.map(|t| {
        serde_yaml::from_str(t).map_err(|e| PolicyCliError::Input(format!("--settings: {e}")))
    })
    .transpose()
}
