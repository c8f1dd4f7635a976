//! Logs and traces: structured lines in text or JSON, filtered by `RUST_LOG` (default `info`),
//! and, with the `otel` cargo feature, the same spans exported over OTLP/HTTP.

#[cfg(feature = "otel")]
mod otlp;

use clap::Args;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How a long-running command reports what it does.
#[derive(Args, Debug, Clone, Default)]
pub struct TelemetryArgs {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SANDMAN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Export traces to this OTLP/HTTP collector (`http://collector:4318`; `/v1/traces` is
    /// appended). Needs a build with the `otel` feature.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--otlp-endpoint needs a sandman built with the `otel` cargo feature")]
    NotBuiltWithOtel,
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// What must outlive the process's work so that buffered spans are sent.
#[must_use = "shut it down so that buffered spans are sent"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    traces: Option<otlp::Traces>,
}

impl Telemetry {
    /// Sends what is buffered. Blocks a pool thread, not the runtime.
    pub async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(traces) = self.traces {
            traces.shutdown().await;
        }
    }
}

/// Installs the logger only (short-lived commands).
pub fn init_logs(format: LogFormat) {
    let _ = Registry::default().with(vec![fmt_layer(format)]).try_init();
}

/// Installs the global subscriber once (later calls, in tests, are ignored); with an OTLP
/// endpoint, spans are exported too. Call it on the runtime that will run the work: the
/// exporter sends from there.
pub fn init(args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut layers = vec![fmt_layer(args.log_format)];
    let telemetry = match &args.otlp_endpoint {
        None => Telemetry {
            #[cfg(feature = "otel")]
            traces: None,
        },
        #[cfg(feature = "otel")]
        Some(endpoint) => {
            let (traces, layer) = otlp::Traces::start(endpoint)?;
            layers.push(layer.with_filter(trace_filter()).boxed());
            Telemetry {
                traces: Some(traces),
            }
        }
        #[cfg(not(feature = "otel"))]
        Some(_) => return Err(TelemetryError::NotBuiltWithOtel),
    };
    let _ = Registry::default().with(layers).try_init();
    Ok(telemetry)
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// What is exported as traces: what is logged, plus the per-evaluation policy spans and the
/// per-request gateway spans, which are at debug level so that plain logging does not pay for them.
#[cfg(feature = "otel")]
fn trace_filter() -> EnvFilter {
    [
        format!("{}=debug", crate::policy::EVALUATION_TARGET),
        "sandman::gateway=debug".to_string(),
    ]
    .iter()
    .filter_map(|directive| directive.parse().ok())
    .fold(filter(), EnvFilter::add_directive)
}

fn fmt_layer(format: LogFormat) -> BoxedLayer {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.with_filter(filter()).boxed(),
        LogFormat::Json => layer.json().with_filter(filter()).boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "otel"))]
    #[test]
    fn an_endpoint_without_the_feature_is_a_clear_error() {
        let args = TelemetryArgs {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..TelemetryArgs::default()
        };
        let error = init(&args).err().expect("refused");
        assert!(
            error.to_string().contains("`otel` cargo feature"),
            "{error}"
        );
    }

    #[cfg(feature = "otel")]
    #[test]
    fn traces_need_the_runtime_they_send_from() {
        let args = TelemetryArgs {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..TelemetryArgs::default()
        };
        let error = init(&args).err().expect("refused outside a runtime");
        assert!(error.to_string().contains("async runtime"), "{error}");
    }
}
