//! `sandman supervise`: the in-pod supervisor that runs the agent under gVisor and keeps its
//! memory across suspend (see `docs/checkpoint.md`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::checkpoint::runsc::{Mount, Runsc};
use crate::checkpoint::signed::TOKEN_ENV;
use crate::checkpoint::supervisor::{Forward, Options, Restore, Supervisor, default_bridge};
use crate::checkpoint::{
    AGENT_ENV_PREFIX, RESTORE_IMAGE_ENV, RESTORE_SHA256_ENV, RESTORE_SIGNATURE_ENV,
    SANDBOX_UID_ENV, SUPERVISOR_PORT, SUSPENSIONS_ENV,
};

/// How often the supervisor looks whether the agent is still there.
const AGENT_CHECK: Duration = Duration::from_secs(5);

#[derive(Args, Debug, Clone)]
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
    /// An environment variable for the agent: `NAME=value`. The supervisor's own variables
    /// under `SANDMAN_AGENT_ENV_` are the agent's too, with the prefix taken off.
    #[arg(long = "env")]
    env: Vec<String>,
    /// The agent's working directory.
    #[arg(long, default_value = "/")]
    cwd: String,
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

/// What the operator said in the pod's environment, and only there: no flag names a restore,
/// the token or whose pod this is, so a command line a template writes cannot either. The
/// environment a template or claim writes can, but only the operator's signature, made with
/// the token, makes a restore happen; and the operator gives a template's variables to the
/// supervisor under [`AGENT_ENV_PREFIX`] only, as the agent's.
pub struct OperatorsWord {
    restore: Option<Restore>,
    sandbox_uid: String,
    token: String,
    suspensions: u64,
    /// The agent's variables, `NAME=value`, the prefix taken off.
    agent_env: Vec<String>,
}

impl OperatorsWord {
    fn from_env() -> Result<Self, CliError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// From a container's environment, `vars` (the supervisor's own, or a played pod's).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, CliError> {
        let var = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let restore = match (var(RESTORE_IMAGE_ENV), var(RESTORE_SHA256_ENV)) {
            (Some(image), Some(sha256)) => Some(Restore {
                image,
                sha256,
                signature: var(RESTORE_SIGNATURE_ENV).unwrap_or_default(),
            }),
            _ => None,
        };
        let suspensions = match var(SUSPENSIONS_ENV) {
            Some(n) => n
                .parse()
                .map_err(|e| CliError::Supervise(format!("{SUSPENSIONS_ENV}={n:?}: {e}")))?,
            None => 0,
        };
        let token = var(TOKEN_ENV).unwrap_or_default();
        if token.is_empty() {
            eprintln!(
                "{TOKEN_ENV} is not set: every control request will be refused and nothing restored"
            );
        }
        let agent_env = vars
            .iter()
            .filter_map(|(name, value)| {
                let name = name.strip_prefix(AGENT_ENV_PREFIX)?;
                (!name.is_empty()).then(|| format!("{name}={value}"))
            })
            .collect();
        Ok(Self {
            restore,
            sandbox_uid: var(SANDBOX_UID_ENV).unwrap_or_default(),
            token,
            suspensions,
            agent_env,
        })
    }
}

/// The supervisor `args` and `word` describe.
pub fn options(args: SuperviseArgs, word: OperatorsWord) -> Options {
    let mut env = word.agent_env;
    env.extend(args.env);
    Options {
        runsc: Runsc {
            binary: args.runsc,
            root: args.runsc_root,
            platform: args.platform,
            checkpoint_flags: args.checkpoint_flags,
            restore_flags: args.restore_flags,
        },
        rootfs: args.rootfs,
        args: args.command,
        env,
        cwd: args.cwd,
        mounts: args.mounts,
        images: args.images,
        control: args.control,
        forwards: args.forwards,
        bridge: if args.bridge.trim().is_empty() {
            default_bridge()
        } else {
            args.bridge.split_whitespace().map(str::to_string).collect()
        },
        restore: word.restore,
        sandbox_uid: word.sandbox_uid,
        token: word.token,
        suspensions: word.suspensions,
        checkpoint_timeout: Duration::from_secs(args.checkpoint_timeout),
        restore_timeout: Duration::from_secs(args.restore_timeout),
    }
}

pub fn run(args: SuperviseArgs) -> Result<(), CliError> {
    let word = OperatorsWord::from_env()?;
    let options = options(args, word);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::sandbox::supervisor::{AGENT_ROOT, inject, plan};
    use clap::Parser;

    /// The command the operator writes into a pod is the one this subcommand takes, and the
    /// environment it writes gives the agent its variables and the supervisor only its own.
    #[test]
    fn the_operators_pod_is_what_supervise_takes() {
        let sandbox: crate::api::Sandbox = serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "agent", "namespace": "team", "uid": "uid-1"},
            "spec": {
                "lifecycle": {"checkpoint": "OnSuspend", "checkpointTimeout": "30m"},
                "volumeClaimTemplates": [{"metadata": {"name": "workspace"},
                    "spec": {"resources": {"requests": {"storage": "1Gi"}}}}],
                "podTemplate": {"spec": {"containers": [{
                    "name": "agent", "image": "registry.local/agent:1",
                    "command": ["python3", "--flag-of-the-agent"], "workingDir": "/app",
                    "ports": [{"containerPort": 8080}],
                    "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                    "env": [{"name": "PATH", "value": "/opt/bin"},
                            {"name": "SANDMAN_RESTORE_IMAGE", "value": "planted"}],
                }]}},
            },
        }))
        .expect("a Sandbox");
        let injection = plan(&sandbox, Some("registry.local/supervisor@sha256:ab"))
            .expect("allowed")
            .expect("wanted");
        let mut spec = sandbox.spec.pod_template.spec.clone();
        inject(&mut spec, &sandbox, &injection, &[]);
        let container = &spec.containers[0];
        let crate::cli::Command::Supervise(args) =
            crate::cli::Cli::try_parse_from(container.command.clone().expect("a command"))
                .expect("it parses")
                .command
        else {
            panic!("not supervise");
        };
        let vars: BTreeMap<String, String> = container
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        let options = options(
            args,
            OperatorsWord::from_vars(&vars).expect("the operator's word"),
        );
        assert_eq!(options.rootfs, std::path::Path::new(AGENT_ROOT));
        assert_eq!(options.args, ["python3", "--flag-of-the-agent"]);
        assert_eq!(options.cwd, "/app");
        assert_eq!(options.sandbox_uid, "uid-1");
        assert!(
            options.checkpoint_timeout >= std::time::Duration::from_secs(30 * 60),
            "the supervisor's ceiling {:?} would cut the Sandbox's checkpointTimeout",
            options.checkpoint_timeout
        );
        assert!(
            options.restore.is_none(),
            "a template's restore is the agent's variable"
        );
        assert!(
            options.env.contains(&"PATH=/opt/bin".to_string()),
            "{:?}",
            options.env
        );
        assert!(
            options
                .env
                .contains(&"SANDMAN_RESTORE_IMAGE=planted".to_string()),
            "{:?}",
            options.env
        );
        assert_eq!(options.forwards[0].port, 8080);
        assert_eq!(options.mounts[0].destination, "/workspace");
        assert_eq!(
            options.images,
            std::path::Path::new("/workspace/.sandman/checkpoints")
        );
    }
}
