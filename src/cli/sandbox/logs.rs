//! `sandman sandbox logs`: the recent output of a command running in a Sandbox (one started
//! with `exec -d`), then what it writes, until it ends.

use super::SandboxError;
use super::client::Connection;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The Sandbox, as `namespace/name`.
    sandbox: String,
    #[command(flatten)]
    connection: Connection,
    /// The command, by the pid `exec -d` printed.
    #[arg(long, conflicts_with = "tag", required_unless_present = "tag")]
    pid: Option<u64>,
    /// The command, by the tag it was started with.
    #[arg(long)]
    tag: Option<String>,
}

/// Follows the command and gives its exit code once it ends.
pub async fn run(args: LogsArgs) -> Result<i32, SandboxError> {
    let runtime = super::client::connect(&args.connection, &args.sandbox).await?;
    let selector = match (&args.pid, &args.tag) {
        (Some(pid), _) => serde_json::json!({ "pid": pid }),
        (None, Some(tag)) => serde_json::json!({ "tag": tag }),
        (None, None) => return Err(SandboxError::Usage("name --pid or --tag".into())),
    };
    let mut stream = runtime
        .stream(
            "process.Process/Connect",
            serde_json::json!({ "process": selector }),
            None,
        )
        .await?;
    super::exec::print_output(&mut stream).await
}
