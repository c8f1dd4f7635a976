//! How the CLI reaches a Sandbox's runtime: through the gateway, as
//! `/sandboxes/<namespace>/<name>/…` with `E2b-Sandbox-Port: 49983`, carrying the Sandbox's
//! own token in `X-Access-Token`. The token comes from `--token`, or from the Sandbox's token
//! Secret read with the caller's kubeconfig, so the CLI can do no more than its user may.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use sandman_connect::{Envelope, Envelopes, RpcError};

use super::SandboxError;
use crate::api::{RUNTIME_PORT, Sandbox};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Where the gateway is and what opens the Sandbox, as flags or environment give them.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The gateway's URL (plain HTTP), e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "SANDMAN_GATEWAY")]
    pub gateway: String,
    /// The Sandbox's token; by default read from its Secret with the current kubeconfig.
    #[arg(long, env = "SANDMAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// One Sandbox's runtime, ready to be called.
pub struct Runtime {
    http: Client<HttpConnector, Body>,
    base: String,
    token: String,
    pub label: String,
}

/// `namespace/name`, or `name` in the kubeconfig's namespace.
pub fn parse_target(
    target: &str,
    default_namespace: &str,
) -> Result<(String, String), SandboxError> {
    let (namespace, name) = match target.split_once('/') {
        Some((namespace, name)) => (namespace, name),
        None => (default_namespace, target),
    };
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(SandboxError::Usage(format!(
            "{target:?} is not a Sandbox: write namespace/name"
        )));
    }
    Ok((namespace.to_string(), name.to_string()))
}

impl Runtime {
    pub async fn connect(connection: &Connection, target: &str) -> Result<Self, SandboxError> {
        let token = connection.token.clone().filter(|t| !t.is_empty());
        let (namespace, name, token) = match token {
            Some(token) => {
                let default = kube::config::Kubeconfig::read()
                    .ok()
                    .and_then(|k| k.contexts.first()?.context.clone()?.namespace)
                    .unwrap_or_else(|| "default".into());
                let (namespace, name) = parse_target(target, &default)?;
                (namespace, name, token)
            }
            None => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| SandboxError::Token(format!("kubeconfig: {e}")))?;
                let (namespace, name) = parse_target(target, client.default_namespace())?;
                let token = token_from_secret(client, &namespace, &name).await?;
                (namespace, name, token)
            }
        };
        let base = format!(
            "{}/sandboxes/{namespace}/{name}",
            connection.gateway.trim_end_matches('/')
        );
        Ok(Runtime {
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base,
            token,
            label: format!("{namespace}/{name}"),
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Request<Body>, SandboxError> {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("e2b-sandbox-port", RUNTIME_PORT.to_string())
            .header("x-access-token", &self.token)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| SandboxError::Usage(format!("request: {e}")))
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Response<Incoming>, SandboxError> {
        let request = self.request(method, path, content_type, body)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| SandboxError::Gateway(format!("{}: {}", self.label, chain(&e))))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(SandboxError::Refused(format!(
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
    ) -> Result<serde_json::Value, SandboxError> {
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
                Some(error) => SandboxError::Rpc(error),
                None => SandboxError::Gateway(format!(
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
    ) -> Result<Stream, SandboxError> {
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
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| SandboxError::Gateway(format!("{}: {}", self.label, chain(&e))))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(SandboxError::Refused(format!(
                "{}: the gateway or the runtime refused the token",
                self.label
            )));
        }
        if !status.is_success() {
            let bytes = read_all(response).await.unwrap_or_default();
            return Err(SandboxError::Gateway(format!(
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
    pub async fn next(&mut self) -> Result<Option<serde_json::Value>, SandboxError> {
        loop {
            match self.envelopes.take().map_err(SandboxError::Rpc)? {
                Some(Envelope::Message(json)) => {
                    return serde_json::from_slice(&json).map(Some).map_err(|e| {
                        SandboxError::Gateway(format!("a message that is not JSON: {e}"))
                    });
                }
                Some(Envelope::End(json)) => {
                    return sandman_connect::end_result(&json)
                        .map(|()| None)
                        .map_err(SandboxError::Rpc);
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
                    return Err(SandboxError::Gateway(format!("the stream broke: {e}")));
                }
                None => {
                    return Err(SandboxError::Gateway(
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

async fn read_all(response: Response<Incoming>) -> Result<Bytes, SandboxError> {
    http_body_util::Limited::new(response.into_body(), 4 << 20)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| SandboxError::Gateway(format!("read the answer: {e}")))
}

/// The Sandbox's token, from the Secret its status names; reading it takes `get` on that
/// Secret, which is the caller's own right or not.
async fn token_from_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, SandboxError> {
    let sandbox = Api::<Sandbox>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| SandboxError::Token(format!("{namespace}/{name}: {e}")))?;
    let secret = sandbox
        .status
        .and_then(|s| s.gateway_token)
        .map(|t| t.secret)
        .ok_or_else(|| {
            SandboxError::Token(format!(
                "{namespace}/{name} has no token yet (status.gatewayToken)"
            ))
        })?;
    let secret = Api::<Secret>::namespaced(client, namespace)
        .get(&secret)
        .await
        .map_err(|e| SandboxError::Token(format!("Secret {namespace}/{secret}: {e}")))?;
    secret
        .data
        .and_then(|d| {
            d.get("token")
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        })
        .ok_or_else(|| {
            SandboxError::Token(format!(
                "Secret {namespace}/{} has no key token",
                secret.metadata.name.unwrap_or_default()
            ))
        })
}
