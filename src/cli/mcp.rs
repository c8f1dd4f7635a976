//! `sandman mcp`: the MCP server over stdio, for an MCP client that starts it as a process.
//! It calls E2B's API on the gateway with the caller's key, as the gateway's own `/mcp` does.

use clap::Args;

use super::CliError;

#[derive(Args, Debug)]
pub struct McpArgs {
    /// The gateway's URL (plain HTTP) with the control API (`sandman gateway --control`).
    #[arg(long, env = "SANDMAN_GATEWAY")]
    gateway: String,
    /// A ServiceAccount token: the identity every tool acts with.
    #[arg(long, env = "E2B_API_KEY", hide_env_values = true)]
    api_key: String,
}

pub fn run(args: McpArgs) -> Result<(), CliError> {
    if args.api_key.trim().is_empty() {
        return Err(CliError::Mcp("the API key is empty".into()));
    }
    // stdout is the protocol's: the runtime logs nothing there.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(crate::mcp::serve_stdio(&args.gateway, args.api_key))
        .map_err(|e| CliError::Mcp(e.to_string()))
}
