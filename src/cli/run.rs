use clap::Args;

use super::CliError;
use crate::controller::{self, Options};
use crate::policy::Limits;
use crate::policy::limits::{PolicyLimitBounds, parse_duration, parse_memory};
use crate::telemetry::{self, TelemetryArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SANDMAN_NAMESPACE")]
    namespace: Option<String>,
    /// Sandboxes reconciled at once.
    #[arg(long, default_value_t = 32)]
    concurrency: u16,
    /// Load only the SandboxPolicies matching this label selector (default: all).
    #[arg(long, env = "SANDMAN_POLICY_SELECTOR")]
    policy_selector: Option<String>,
    /// Keep compiled policies here, so that a restart does not recompile them.
    #[arg(long, env = "SANDMAN_POLICY_CACHE_DIR")]
    policy_cache_dir: Option<std::path::PathBuf>,
    /// The time one policy evaluation gets when its SandboxPolicy sets none (a Go duration).
    #[arg(long, default_value = "100ms", env = "SANDMAN_POLICY_DEFAULT_TIMEOUT")]
    policy_default_timeout: String,
    /// The memory one policy evaluation gets when its SandboxPolicy sets none (a quantity).
    #[arg(long, default_value = "32Mi", env = "SANDMAN_POLICY_DEFAULT_MEMORY")]
    policy_default_memory: String,
    /// The most time a SandboxPolicy may ask for; one asking for more is refused.
    #[arg(long, default_value = "5s", env = "SANDMAN_POLICY_MAX_TIMEOUT")]
    policy_max_timeout: String,
    /// The most memory a SandboxPolicy may ask for; one asking for more is refused.
    #[arg(long, default_value = "256Mi", env = "SANDMAN_POLICY_MAX_MEMORY")]
    policy_max_memory: String,
    /// How long Sandboxes wait at start for the SandboxPolicies present then to load (seconds);
    /// one still loading after that holds or passes its Sandboxes by its failurePolicy.
    #[arg(long, default_value_t = 10)]
    policy_load_grace_seconds: u64,
    /// How long a Sandbox runs before a lifecycle decision may suspend it again (seconds).
    #[arg(long, default_value_t = 60, env = "SANDMAN_MIN_DWELL_SECONDS")]
    min_dwell_seconds: u64,
    /// `enforce` (default) refuses Sandbox pods that use host namespaces, hostPath, host
    /// ports, privilege, added capabilities or ServiceAccount tokens unless the isolation
    /// policy that decides them allows it; `off` leaves that to Pod Security Admission.
    #[arg(long, default_value = "enforce", value_parser = ["enforce", "off"])]
    pod_baseline: String,
    /// Where to serve /metrics, /healthz and /readyz; `off` to not serve them.
    #[arg(long, default_value = "0.0.0.0:8081", env = "SANDMAN_METRICS_LISTEN")]
    metrics_listen: String,
    /// Reconcile only while holding a coordination Lease, so that of several replicas one
    /// works at a time.
    #[arg(long, env = "SANDMAN_LEADER_ELECT")]
    leader_elect: bool,
    /// Where SandboxPolicies' `imagePullSecret`s are read (default: the pod's namespace).
    #[arg(long, env = "SANDMAN_POD_NAMESPACE", default_value = "default")]
    pull_secret_namespace: String,
    /// The Lease's namespace (default: the pod's, from SANDMAN_POD_NAMESPACE, else `default`).
    #[arg(long, env = "SANDMAN_POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "sandman")]
    lease_name: String,
    /// Where `sandman gateway` runs (default: the operator's namespace): SandboxTemplates'
    /// NetworkPolicies let the gateway's pods there reach their Sandboxes.
    #[arg(long, env = "SANDMAN_POD_NAMESPACE", default_value = "default")]
    gateway_namespace: String,
    /// This replica's identity in the Lease (default: the host name).
    #[arg(long, env = "HOSTNAME", default_value = "sandman")]
    leader_identity: String,
    /// How long a Lease lasts without renewal; a new leader takes over after about this long.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// The image holding the in-Sandbox runtime (`/sandman-runtime`), mounted into the pods
    /// of Sandboxes with `spec.runtime.enabled`; pin it by digest. Without it such Sandboxes
    /// are held, and say why.
    #[arg(long, env = "SANDMAN_RUNTIME_IMAGE")]
    runtime_image: Option<String>,
    /// The checkpoint supervisor's image (`/usr/local/bin/sandman` and
    /// `/usr/local/bin/runsc`, `hack/image.sh supervisor`), which sandman runs in the pods of
    /// Sandboxes that keep their memory across suspend; pin it by digest. Without it such
    /// Sandboxes are held, and say why.
    #[arg(long, env = "SANDMAN_SUPERVISOR_IMAGE")]
    supervisor_image: Option<String>,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// The policy limits the flags describe.
fn policy_limits(args: &RunArgs) -> Result<PolicyLimitBounds, CliError> {
    let duration = |flag: &str, text: &str| {
        parse_duration(text).map_err(|e| CliError::Config(format!("--{flag} {text}: {e}")))
    };
    let memory = |flag: &str, text: &str| {
        parse_memory(text).map_err(|e| CliError::Config(format!("--{flag} {text}: {e}")))
    };
    let bounds = PolicyLimitBounds {
        default: Limits {
            timeout: duration("policy-default-timeout", &args.policy_default_timeout)?,
            memory_bytes: memory("policy-default-memory", &args.policy_default_memory)?,
            ..Limits::default()
        },
        max: Limits {
            timeout: duration("policy-max-timeout", &args.policy_max_timeout)?,
            memory_bytes: memory("policy-max-memory", &args.policy_max_memory)?,
            ..Limits::default()
        },
    };
    bounds.validate().map_err(CliError::Config)?;
    Ok(bounds)
}

pub fn run(args: RunArgs) -> Result<(), CliError> {
    let policy_limits = policy_limits(&args)?;
    super::with_client(|client| async move {
        let telemetry = telemetry::init(&args.telemetry)?;
        let options = Options {
            namespace: args.namespace,
            concurrency: args.concurrency,
            policy_selector: args.policy_selector,
            policy_cache_dir: args.policy_cache_dir,
            min_dwell: std::time::Duration::from_secs(args.min_dwell_seconds),
            pod_baseline: args.pod_baseline == "enforce",
            runtime_image: args.runtime_image.clone(),
            supervisor_image: args.supervisor_image.clone(),
            gateway_namespace: args.gateway_namespace.clone(),
            policy_limits,
            policy_load_grace: std::time::Duration::from_secs(args.policy_load_grace_seconds),
            pull_secrets: controller::policies::fetch::PullSecrets {
                namespace: args.pull_secret_namespace.clone(),
            },
            leader_election: args.leader_elect.then(|| controller::leader::Election {
                namespace: args.lease_namespace.clone(),
                name: args.lease_name.clone(),
                identity: args.leader_identity.clone(),
                lease_duration: std::time::Duration::from_secs(args.lease_duration_seconds.max(2)),
                retry: std::time::Duration::from_secs(
                    (args.lease_duration_seconds / 4).clamp(1, 5),
                ),
            }),
            metrics_listen: match args.metrics_listen.as_str() {
                "off" => None,
                listen => Some(
                    listen
                        .parse()
                        .map_err(|e| CliError::Config(format!("--metrics-listen {listen}: {e}")))?,
                ),
            },
            ..Options::default()
        };
        let outcome = controller::run(client, options, super::shutdown_signal())
            .await
            .map_err(CliError::Operator);
        telemetry.shutdown().await;
        outcome
    })
}
