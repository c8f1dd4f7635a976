//! OTLP/HTTP trace export, sent by sandman's own HTTP client (rustls, system roots) on the
//! process's tokio runtime.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Registry;

use super::TelemetryError;
use crate::http_client::HttpClient;

/// The running exporter.
pub struct Traces {
    provider: SdkTracerProvider,
}

/// How long shutting down may take to send what is buffered.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Traces {
    /// Starts exporting to `<endpoint>/v1/traces`; returns the layer that feeds it.
    pub fn start(
        endpoint: &str,
    ) -> Result<
        (
            Self,
            tracing_opentelemetry::OpenTelemetryLayer<Registry, opentelemetry_sdk::trace::Tracer>,
        ),
        TelemetryError,
    > {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TelemetryError::Exporter("traces must be started on the async runtime".into())
        })?;
        let client = HttpClient::new().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime { client, runtime })
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name("sandman")
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("sandman"));
        tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
        Ok((Self { provider }, layer))
    }

    pub async fn shutdown(self) {
        let provider = self.provider;
        // The batch processor's thread waits on requests this runtime sends.
        let stopped =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "traces not flushed");
        }
    }
}

/// The exporter's HTTP client: the batch processor calls it from its own thread, so each
/// request is sent as a task on the runtime and awaited from there.
#[derive(Clone)]
struct OnRuntime {
    client: HttpClient,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for OnRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRuntime")
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let headers: Vec<(http::HeaderName, String)> = parts
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    value.to_str().ok().map(|v| (name.clone(), v.to_string()))
                })
                .collect();
            let headers: Vec<(http::HeaderName, &str)> = headers
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str()))
                .collect();
            client
                .send(parts.method, &parts.uri.to_string(), &headers, body)
                .await
        });
        let response = sent.await??;
        let mut answer = http::Response::new(response.body);
        *answer.status_mut() = response.status;
        *answer.headers_mut() = response.headers;
        Ok(answer)
    }
}
