//! A client of a Sandbox's in-Sandbox runtime through the gateway: E2B's envd protocol
//! (Connect with JSON), addressed by `E2b-Sandbox-Id` with `E2b-Sandbox-Port: 49983`, and the
//! Sandbox's own token in `X-Access-Token`. `sandman sandbox` and the MCP server both call the
//! runtime through it.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sandman_connect::{Envelope, Envelopes, RpcError};

use crate::api::RUNTIME_PORT;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Why a call to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeCallError {
    /// The gateway or the runtime refused the token.
    #[error("{0}")]
    Refused(String),
    /// The runtime answered with an error.
    #[error("runtime: {0}")]
    Rpc(RpcError),
    /// The gateway could not be reached, or answered with something else than the runtime.
    #[error("gateway: {0}")]
    Transport(String),
}

/// One Sandbox's runtime, ready to be called.
pub struct RuntimeClient {
    http: Client<HttpConnector, Body>,
    base: String,
    sandbox_id: String,
    token: String,
    /// How errors name the Sandbox.
    pub label: String,
}

impl RuntimeClient {
    /// The runtime of `namespace/name` through the gateway at `gateway`, with its `token`.
    pub fn new(gateway: &str, (namespace, name): (&str, &str), token: String) -> Self {
        Self::by_id(gateway, &crate::api::sandbox_id(namespace, name), token)
            .labelled(format!("{namespace}/{name}"))
    }

    /// The runtime of the Sandbox with E2B id `sandbox_id`.
    pub fn by_id(gateway: &str, sandbox_id: &str, token: String) -> Self {
        RuntimeClient {
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: gateway.trim_end_matches('/').to_string(),
            sandbox_id: sandbox_id.to_string(),
            token,
            label: sandbox_id.to_string(),
        }
    }

    fn labelled(mut self, label: String) -> Self {
        self.label = label;
        self
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Request<Body>, RuntimeCallError> {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("e2b-sandbox-port", RUNTIME_PORT.to_string())
            .header("x-access-token", &self.token)
            .header("e2b-sandbox-id", &self.sandbox_id)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| RuntimeCallError::Transport(format!("request: {e}")))
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Response<Incoming>, RuntimeCallError> {
        let request = self.request(method, path, content_type, body)?;
        let response =
            self.http.request(request).await.map_err(|e| {
                RuntimeCallError::Transport(format!("{}: {}", self.label, chain(&e)))
            })?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(RuntimeCallError::Refused(format!(
                "{}: the gateway or the runtime refused the token",
                self.label
            )));
        }
        Ok(response)
    }

    /// A unary call: its answer, or the error the runtime gave.
    pub async fn unary(
        &self,
        rpc: &str,
        message: serde_json::Value,
    ) -> Result<serde_json::Value, RuntimeCallError> {
        let response = self
            .send(
                Method::POST,
                &format!("/{rpc}"),
                "application/json",
                full(message.to_string()),
            )
            .await?;
        let status = response.status();
        let bytes = read_all(response).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            return Err(match RpcError::from_json(&value) {
                Some(error) => RuntimeCallError::Rpc(error),
                None => RuntimeCallError::Transport(format!(
                    "{}: HTTP {status}: {}",
                    self.label,
                    String::from_utf8_lossy(&bytes).trim()
                )),
            });
        }
        Ok(value)
    }

    /// A server-streaming call: its messages as they come.
    pub async fn stream(
        &self,
        rpc: &str,
        message: serde_json::Value,
        timeout_ms: Option<u64>,
    ) -> Result<Stream, RuntimeCallError> {
        let mut request = self.request(
            Method::POST,
            &format!("/{rpc}"),
            "application/connect+json",
            full(sandman_connect::request_envelope(&message)),
        )?;
        if let Some(ms) = timeout_ms
            && let Ok(value) = ms.to_string().parse()
        {
            request.headers_mut().insert("connect-timeout-ms", value);
        }
        let response =
            self.http.request(request).await.map_err(|e| {
                RuntimeCallError::Transport(format!("{}: {}", self.label, chain(&e)))
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(RuntimeCallError::Refused(format!(
                "{}: the gateway or the runtime refused the token",
                self.label
            )));
        }
        if !status.is_success() {
            let bytes = read_all(response).await.unwrap_or_default();
            return Err(RuntimeCallError::Transport(format!(
                "{}: HTTP {status}: {}",
                self.label,
                String::from_utf8_lossy(&bytes).trim()
            )));
        }
        Ok(Stream {
            body: response.into_body(),
            envelopes: Envelopes::default(),
        })
    }
}

/// A response stream of envelopes.
pub struct Stream {
    body: Incoming,
    envelopes: Envelopes,
}

impl Stream {
    /// The next message; `None` once the stream ended well; the error it ended with.
    pub async fn next(&mut self) -> Result<Option<serde_json::Value>, RuntimeCallError> {
        loop {
            match self.envelopes.take().map_err(RuntimeCallError::Rpc)? {
                Some(Envelope::Message(json)) => {
                    return serde_json::from_slice(&json).map(Some).map_err(|e| {
                        RuntimeCallError::Transport(format!("a message that is not JSON: {e}"))
                    });
                }
                Some(Envelope::End(json)) => {
                    return sandman_connect::end_result(&json)
                        .map(|()| None)
                        .map_err(RuntimeCallError::Rpc);
                }
                None => {}
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.envelopes.push(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(RuntimeCallError::Transport(format!(
                        "the stream broke: {e}"
                    )));
                }
                None => {
                    return Err(RuntimeCallError::Transport(
                        "the stream ended without its end-of-stream message".into(),
                    ));
                }
            }
        }
    }
}

/// An error with its causes, as the client's errors keep the useful part in their sources.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn read_all(response: Response<Incoming>) -> Result<Bytes, RuntimeCallError> {
    http_body_util::Limited::new(response.into_body(), 4 << 20)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| RuntimeCallError::Transport(format!("read the answer: {e}")))
}
