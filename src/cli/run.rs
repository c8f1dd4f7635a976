use clap::Args;

use super::CliError;
use crate::controller::{self, Options};
use crate::telemetry::{self, LogFormat};

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
    /// How long a Sandbox runs before a lifecycle decision may suspend it again (seconds).
    #[arg(long, default_value_t = 60, env = "SANDMAN_MIN_DWELL_SECONDS")]
    min_dwell_seconds: u64,
    /// Where to serve /metrics, /healthz and /readyz; `off` to not serve them.
    #[arg(long, default_value = "0.0.0.0:8081", env = "SANDMAN_METRICS_LISTEN")]
    metrics_listen: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SANDMAN_LOG_FORMAT")]
    log_format: LogFormat,
}

pub fn run(args: RunArgs) -> Result<(), CliError> {
    telemetry::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| CliError::Config(e.to_string()))?;
        let options =
            Options {
                namespace: args.namespace,
                concurrency: args.concurrency,
                policy_selector: args.policy_selector,
                policy_cache_dir: args.policy_cache_dir,
                min_dwell: std::time::Duration::from_secs(args.min_dwell_seconds),
                metrics_listen: match args.metrics_listen.as_str() {
                    "off" => None,
                    listen => Some(listen.parse().map_err(|e| {
                        CliError::Config(format!("--metrics-listen {listen}: {e}"))
                    })?),
                },
                ..Options::default()
            };
        controller::run(client, options, shutdown_signal())
            .await
            .map_err(CliError::Operator)
    })
}

/// Resolves on SIGINT or SIGTERM, so in-flight reconciles finish before exit.
async fn shutdown_signal() {
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
