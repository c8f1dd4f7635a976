//! The `sandman` command line: one module per subcommand.

mod crds;
mod gateway;
mod mcp;
mod policy;
mod run;
mod sandbox;
pub mod supervise;
mod touch;

use clap::{Parser, Subcommand};

/// sandman runs AI agents in Kubernetes Sandboxes: one pod, a stable identity and persistent
/// volumes each, suspended when idle and resumed when work arrives.
#[derive(Parser, Debug)]
#[command(name = "sandman", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator against the current kubeconfig.
    Run(run::RunArgs),
    /// Evaluate, test, inspect and publish policies, without a cluster.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the gateway: a reverse proxy that wakes Sandboxes for requests.
    Gateway(gateway::GatewayArgs),
    /// Run commands and move files inside a Sandbox, through the gateway.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Serve MCP over stdio: tools to create Sandboxes, run commands, move files, pause and
    /// resume, acting through the gateway's E2B API with the caller's key.
    Mcp(mcp::McpArgs),
    /// Record activity on a Sandbox now, so that it does not count as idle.
    Touch(touch::TouchArgs),
    /// Run an agent under gVisor inside a Sandbox's pod, checkpointing it to the Sandbox's
    /// volume on suspend and restoring it on resume.
    Supervise(supervise::SuperviseArgs),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
    /// Print the version.
    Version,
}

/// Errors a subcommand reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("serialize CRDs: {0}")]
    Crds(#[from] serde_yaml::Error),
    #[error("operator: {0}")]
    Operator(#[from] crate::controller::Error),
    #[error("start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("{0}")]
    Policy(#[from] policy::PolicyCliError),
    #[error("touch {0}")]
    Touch(String),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("supervise: {0}")]
    Supervise(String),
    #[error("mcp: {0}")]
    Mcp(String),
    #[error("{0}")]
    Sandbox(#[from] sandbox::SandboxError),
    /// The command ran and ended with this code, which the CLI passes on.
    #[error("exit code {0}")]
    Exit(i32),
    #[error("telemetry: {0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// Runs `work` with a client for the current kubeconfig, on a multi-threaded runtime.
fn with_client<F, Fut>(work: F) -> Result<(), CliError>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| CliError::Config(e.to_string()))?;
        work(client).await
    })
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Policy(command) => Ok(policy::run(command)?),
        Command::Touch(args) => touch::run(args),
        Command::Sandbox(command) => match sandbox::run(command)? {
            0 => Ok(()),
            code => Err(CliError::Exit(code)),
        },
        Command::Gateway(args) => gateway::run(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Supervise(args) => supervise::run(args),
        Command::Crds => crds::print(),
        Command::Version => {
            println!("sandman {}", crate::VERSION);
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM, so in-flight reconciles finish before exit.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
