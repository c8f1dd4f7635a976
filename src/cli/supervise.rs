//! `sandman supervise`: the in-pod supervisor that runs the agent under gVisor and keeps its
//! memory across suspend (see `docs/checkpoint.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::checkpoint::runsc::{Mount, Runsc};
use crate::checkpoint::supervisor::{Forward, Options, Restore, Supervisor, default_bridge};
use crate::checkpoint::{RESTORE_IMAGE_ENV, RESTORE_SHA256_ENV, SANDBOX_UID_ENV, SUPERVISOR_PORT};

/// How often the supervisor looks whether the agent is still there.
const AGENT_CHECK: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct SuperviseArgs {
    /// The agent's root file system.
    #[arg(long)]
    rootfs: PathBuf,
    /// Where checkpoint images go: a directory on the Sandbox's volume.
    #[arg(long)]
    images: PathBuf,
    /// The operator's port: `GET /status`, `POST /checkpoint`.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], SUPERVISOR_PORT)))]
    control: SocketAddr,
    /// Forward a pod port to the agent: `PORT`, or `ADDRESS:PORT=AGENT_PORT`.
    #[arg(long = "forward", value_parser = parse_forward)]
    forwards: Vec<Forward>,
    /// A volume bound into the agent: `SOURCE:DESTINATION`.
    #[arg(long = "mount")]
    mounts: Vec<Mount>,
    /// An environment variable for the agent: `NAME=value`.
    #[arg(long = "env")]
    env: Vec<String>,
    /// The command, inside the sandbox, that carries a forwarded connection (split on
    /// spaces); `{port}` is the agent's port. Default: `nc` to the port, tried again for up to
    /// 5 s while it refuses.
    #[arg(long, default_value = "")]
    bridge: String,
    #[arg(long, default_value = "runsc")]
    runsc: PathBuf,
    /// runsc's state directory (live containers; not on the volume).
    #[arg(long, default_value = "/run/sandman/runsc")]
    runsc_root: PathBuf,
    /// gVisor's platform: `ptrace` works everywhere.
    #[arg(long, default_value = "ptrace")]
    platform: String,
    /// A flag for `runsc checkpoint` (repeatable), such as `--compression=none` with a
    /// current runsc.
    #[arg(long = "checkpoint-flag", allow_hyphen_values = true)]
    checkpoint_flags: Vec<String>,
    /// A flag for `runsc restore` (repeatable), such as `--background` with a current runsc.
    #[arg(long = "restore-flag", allow_hyphen_values = true)]
    restore_flags: Vec<String>,
    /// The longest a checkpoint may take, in seconds.
    #[arg(long, default_value_t = 120)]
    checkpoint_timeout: u64,
    /// The longest a restore may take before the agent starts afresh, in seconds.
    #[arg(long, default_value_t = 60)]
    restore_timeout: u64,
    /// The image to restore (the operator sets this in the pod's environment).
    #[arg(long, env = RESTORE_IMAGE_ENV)]
    restore_image: Option<String>,
    /// The sha256 the operator recorded for that image.
    #[arg(long, env = RESTORE_SHA256_ENV)]
    restore_sha256: Option<String>,
    /// The Sandbox's UID (the operator sets it).
    #[arg(long, env = SANDBOX_UID_ENV, default_value = "")]
    sandbox_uid: String,
    /// The agent's command.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_forward(s: &str) -> Result<Forward, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Forward {
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
            port,
        });
    }
    let (listen, port) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PORT or ADDRESS:PORT=AGENT_PORT"))?;
    Ok(Forward {
        listen: listen.parse().map_err(|e| format!("{listen:?}: {e}"))?,
        port: port.parse().map_err(|e| format!("{port:?}: {e}"))?,
    })
}

pub fn run(args: SuperviseArgs) -> Result<(), CliError> {
    let restore = match (args.restore_image, args.restore_sha256) {
        (Some(image), Some(sha256)) if !image.is_empty() => Some(Restore { image, sha256 }),
        _ => None,
    };
    let options = Options {
        runsc: Runsc {
            binary: args.runsc,
            root: args.runsc_root,
            platform: args.platform,
            checkpoint_flags: args.checkpoint_flags,
            restore_flags: args.restore_flags,
        },
        rootfs: args.rootfs,
        args: args.command,
        env: args.env,
        mounts: args.mounts,
        images: args.images,
        control: args.control,
        forwards: args.forwards,
        bridge: if args.bridge.trim().is_empty() {
            default_bridge()
        } else {
            args.bridge.split_whitespace().map(str::to_string).collect()
        },
        restore,
        sandbox_uid: args.sandbox_uid,
        checkpoint_timeout: Duration::from_secs(args.checkpoint_timeout),
        restore_timeout: Duration::from_secs(args.restore_timeout),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let supervisor = Supervisor::start(options)
            .await
            .map_err(|e| CliError::Supervise(e.to_string()))?;
        let report = supervisor.start_report();
        println!(
            "agent {:?} in {} ms{}",
            report.start,
            report.took_ms,
            report
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        let shutdown = super::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(AGENT_CHECK) => {
                    if supervisor.agent_exited().await {
                        // The pod ends with its agent, so that its restart policy applies.
                        return Err(CliError::Supervise("the agent exited".into()));
                    }
                }
            }
        }
    })
}
