//! `sandman sandbox`: commands and files inside a Sandbox, through the gateway and the
//! Sandbox's in-Sandbox runtime.

mod client;
mod copy;
mod exec;
mod logs;

use clap::Subcommand;

/// Why a `sandman sandbox` command failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Usage(String),
    #[error("token: {0}")]
    Token(String),
    #[error("{0}")]
    Refused(String),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("runtime: {0}")]
    Rpc(sandman_connect::RpcError),
}

impl From<crate::runtime_client::RuntimeCallError> for SandboxError {
    fn from(e: crate::runtime_client::RuntimeCallError) -> Self {
        use crate::runtime_client::RuntimeCallError;
        match e {
            RuntimeCallError::Refused(m) => SandboxError::Refused(m),
            RuntimeCallError::Rpc(e) => SandboxError::Rpc(e),
            RuntimeCallError::Transport(m) => SandboxError::Gateway(m),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Run a command in a Sandbox (waking it), streaming its output; exits with its code.
    Exec(exec::ExecArgs),
    /// Copy a file into or out of a Sandbox: `cp local ns/name:/path`, `cp ns/name:/path local`.
    Cp(copy::CopyArgs),
    /// Follow a command started with `exec -d`: its recent output, then what comes, to its end.
    Logs(logs::LogsArgs),
}

/// Runs the command and gives the exit code the CLI should end with.
pub fn run(command: SandboxCommand) -> Result<i32, super::CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        match command {
            SandboxCommand::Exec(args) => exec::run(args).await,
            SandboxCommand::Cp(args) => copy::run(args).await,
            SandboxCommand::Logs(args) => logs::run(args).await,
        }
    });
    // Whatever still reads stdin for the command must not hold the CLI open after it ended.
    runtime.shutdown_background();
    result.map_err(super::CliError::Sandbox)
}
