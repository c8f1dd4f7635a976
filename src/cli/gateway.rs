use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::gateway::{self, Options};
use crate::telemetry::{self, TelemetryArgs};

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SANDMAN_GATEWAY_LISTEN")]
    listen: SocketAddr,
    /// Also route `<sandbox>.<namespace>.<domain>` by host name.
    #[arg(long, env = "SANDMAN_GATEWAY_DOMAIN")]
    domain: Option<String>,
    /// A file holding the bearer token every request must present.
    #[arg(long, env = "SANDMAN_GATEWAY_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Serve only this namespace's Sandboxes.
    #[arg(long, env = "SANDMAN_NAMESPACE")]
    namespace: Option<String>,
    /// Seconds a request may wait for its Sandbox to wake.
    #[arg(long, default_value_t = 30)]
    hold_seconds: u64,
    /// Requests one Sandbox may have held at once; more get 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// At most one activity write per Sandbox per this many seconds.
    #[arg(long, default_value_t = 10)]
    activity_interval_seconds: u64,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10)]
    header_timeout_seconds: u64,
    /// Client connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a pod may take to answer a request's headers.
    #[arg(long, default_value_t = 300)]
    upstream_timeout_seconds: u64,
    /// Where to serve /metrics, /healthz and /readyz; `off` to not serve them.
    #[arg(
        long,
        default_value = "0.0.0.0:8082",
        env = "SANDMAN_GATEWAY_METRICS_LISTEN"
    )]
    metrics_listen: String,
    /// Serve E2B's control API (`/v2/sandboxes`, …) too. A caller's `X-API-KEY` is a
    /// ServiceAccount token: the gateway reviews it (TokenReview, SubjectAccessReview), and
    /// each call acts with it in the ServiceAccount's namespace (docs/e2b.md).
    #[arg(long, env = "SANDMAN_CONTROL")]
    control: bool,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

pub fn run(args: GatewayArgs) -> Result<(), CliError> {
    let token = args
        .token_file
        .as_ref()
        .map(|path| {
            let token = std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| CliError::Gateway(format!("read {}: {e}", path.display())))?;
            // An empty token would let `Authorization: Bearer ` through.
            if token.is_empty() {
                return Err(CliError::Gateway(format!(
                    "the token file {} is empty; refusing to start with an empty token",
                    path.display()
                )));
            }
            Ok(token)
        })
        .transpose()?;
    let mut options = Options {
        listen: args.listen,
        domain: args.domain,
        token,
        namespace: args.namespace,
        hold: Duration::from_secs(args.hold_seconds),
        queue: args.queue,
        activity_interval: Duration::from_secs(args.activity_interval_seconds.max(1)),
        header_timeout: Duration::from_secs(args.header_timeout_seconds.max(1)),
        max_connections: args.max_connections.max(1),
        upstream_timeout: Duration::from_secs(args.upstream_timeout_seconds.max(1)),
        metrics: Default::default(),
        control: None,
    };
    super::with_client(|client| async move {
        let telemetry = telemetry::init(&args.telemetry)?;
        let ready = crate::metrics::Readiness::default();
        if args.metrics_listen != "off" {
            let listen = args
                .metrics_listen
                .parse()
                .map_err(|e| CliError::Config(format!("--metrics-listen: {e}")))?;
            match crate::metrics::serve(listen, ready.clone(), options.metrics.clone()).await {
                Ok(addr) => tracing::info!(%addr, "serving /metrics, /healthz and /readyz"),
                Err(error) => tracing::error!(%listen, %error, "cannot serve metrics"),
            }
        }
        if args.control {
            // The API server's address and CA, without the gateway's own credentials: each
            // control call brings the caller's.
            let mut config = kube::Config::infer()
                .await
                .map_err(|e| CliError::Config(e.to_string()))?;
            config.auth_info = Default::default();
            options.control = Some(gateway::control::Control { config });
        }
        // `start` returns once the Sandbox cache has synced.
        gateway::start(client, options)
            .await
            .map_err(|e| CliError::Gateway(e.to_string()))?;
        ready.set();
        super::shutdown_signal().await;
        telemetry.shutdown().await;
        Ok(())
    })
}
