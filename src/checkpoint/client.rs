//! The operator's side of the supervisor protocol: ask for a checkpoint, ask how the agent
//! started. Plain HTTP to the pod's IP, as the gateway reaches pods.

use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::{CheckpointError, CheckpointRecord, CheckpointRequest, StartReport};
use crate::http_client::HttpClient;

/// The supervisor of the pod at `ip`.
#[derive(Clone)]
pub struct SupervisorClient {
    http: HttpClient,
}

impl SupervisorClient {
    pub fn new(http: HttpClient) -> Self {
        Self { http }
    }

    fn address(ip: &str, port: u16) -> String {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    }

    /// Asks the supervisor at `ip:port` to checkpoint the agent; waits at most `timeout`.
    pub async fn checkpoint(
        &self,
        ip: &str,
        port: u16,
        request: &CheckpointRequest,
        timeout: Duration,
    ) -> Result<CheckpointRecord, CheckpointError> {
        let address = Self::address(ip, port);
        let failed = |message: String| CheckpointError::Supervisor {
            address: address.clone(),
            message,
        };
        let body = serde_json::to_vec(request).map_err(|e| failed(e.to_string()))?;
        let response = tokio::time::timeout(
            timeout,
            self.http.send(
                Method::POST,
                &format!("http://{address}/checkpoint"),
                &[
                    (http::header::CONTENT_TYPE, "application/json"),
                    // Never a pooled connection: pod IPs are reused, and a connection to the
                    // last pod at this IP must not answer for the next.
                    (http::header::CONNECTION, "close"),
                ],
                Bytes::from(body),
            ),
        )
        .await
        .map_err(|_| failed(format!("no checkpoint within {timeout:?}")))?
        .map_err(|e| failed(e.to_string()))?;
        if !response.status.is_success() {
            return Err(failed(refusal(&response.body, response.status)));
        }
        serde_json::from_slice(&response.body).map_err(|e| failed(format!("answer: {e}")))
    }

    /// How the supervisor at `ip:port` started the agent.
    pub async fn start_report(&self, ip: &str, port: u16) -> Result<StartReport, CheckpointError> {
        let address = Self::address(ip, port);
        let failed = |message: String| CheckpointError::Supervisor {
            address: address.clone(),
            message,
        };
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            self.http.get(
                &format!("http://{address}/status"),
                &[(http::header::CONNECTION, "close")],
            ),
        )
        .await
        .map_err(|_| failed("no answer within 5s".into()))?
        .map_err(|e| failed(e.to_string()))?;
        serde_json::from_slice(&response.body).map_err(|e| failed(format!("answer: {e}")))
    }
}

/// The supervisor's own words for a refusal, else the status.
fn refusal(body: &[u8], status: http::StatusCode) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {status}"))
}
