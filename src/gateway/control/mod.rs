//! E2B's control API on the gateway's listener, so the E2B SDKs create, find, resume and kill
//! Sandboxes unchanged. The caller's `X-API-KEY` is a Kubernetes bearer token, and every call
//! is made to the API server **with it**: the caller can do through the API what its RBAC lets
//! it do in the cluster, and nothing more; the gateway itself gains no rights.
//!
//! A control call carries `X-API-KEY`; in-Sandbox calls do not, so the two never collide.

mod create;
mod sandboxes;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::State;
use super::proxy::Body;

/// Where control calls go: the API server (its URL and CA, without credentials: each call
/// brings its own) and the namespace a template name without one is looked up in.
#[derive(Clone)]
pub struct Control {
    pub config: kube::Config,
    pub namespace: String,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("cluster", &self.config.cluster_url)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The header E2B's SDKs send their API key in.
const API_KEY: &str = "x-api-key";
/// The largest control request body (E2B's are a few hundred bytes).
const MAX_BODY: usize = 64 << 10;

/// The control call `request` makes, answered; the request back when it is not one.
pub(super) async fn answer(
    state: &State,
    control: &Control,
    request: Request<Incoming>,
) -> Result<Response<Body>, Request<Incoming>> {
    let Some(key) = request
        .headers()
        .get(API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return Err(request);
    };
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let Some(call) = classify(&method, &path) else {
        return Err(request);
    };
    let client = match caller(control, &key) {
        Ok(client) => client,
        Err(e) => return Ok(e.response()),
    };
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(e) => return Ok(e.response()),
    };
    Ok(match call {
        Call::Create => create::create(state, control, client, &body).await,
        Call::Connect(id) => sandboxes::connect(state, client, &id).await,
        Call::Get(id) => sandboxes::get(state, client, &id).await,
        Call::Kill(id) => sandboxes::kill(state, client, &id).await,
        Call::Unsupported => error(
            StatusCode::NOT_IMPLEMENTED,
            format!("{method} {path} is not served by sandman yet"),
        ),
    })
}

/// Why a control call failed, as E2B's SDKs read it: an HTTP status and a message.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ControlError {
    status: StatusCode,
    message: String,
}

impl ControlError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ControlError {
            status,
            message: message.into(),
        }
    }

    fn response(&self) -> Response<Body> {
        error(self.status, self.message.clone())
    }
}

/// Which control call `method path` is, if it is one.
fn classify(method: &Method, path: &str) -> Option<Call> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match (method.clone(), parts.as_slice()) {
        (Method::POST, ["v2", "sandboxes"]) => Call::Create,
        (Method::POST, ["v2", "sandboxes", id, "connect"]) => Call::Connect(id.to_string()),
        (Method::GET, ["sandboxes", id]) => Call::Get(id.to_string()),
        (Method::DELETE, ["sandboxes", id]) => Call::Kill(id.to_string()),
        // The rest of E2B's API; other paths under /sandboxes are in-Sandbox routes.
        (_, ["v2", ..] | ["sandboxes"] | ["sandboxes", _])
        | (
            _,
            [
                "sandboxes",
                _,
                "pause" | "timeout" | "metrics" | "refreshes" | "logs",
            ],
        ) => Call::Unsupported,
        _ => return None,
    })
}

#[derive(Debug, PartialEq)]
enum Call {
    Create,
    Connect(String),
    Get(String),
    Kill(String),
    Unsupported,
}

/// A client that acts as the caller: the API server's address, the caller's token.
fn caller(control: &Control, key: &str) -> Result<kube::Client, ControlError> {
    if key.is_empty() {
        return Err(ControlError::new(
            StatusCode::UNAUTHORIZED,
            "X-API-KEY is empty",
        ));
    }
    let mut config = control.config.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(key.to_string().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).map_err(|e| {
        ControlError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("API client: {e}"),
        )
    })
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ControlError> {
    http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            ControlError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body: {e}"),
            )
        })
}

/// An answer in E2B's JSON.
fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error in E2B's shape: `{"code": int, "message": str}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "code": status.as_u16(), "message": message.into() }),
    )
}

/// The answer for a failed call to the API server: its status where it gave one (403 for
/// RBAC, 404, 409), else 502.
fn api_error(what: &str, e: &kube::Error) -> Response<Body> {
    match e {
        kube::Error::Api(status) => error(
            StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY),
            format!("{what}: {}", status.message),
        ),
        kube::Error::Auth(_) => error(StatusCode::UNAUTHORIZED, format!("{what}: {e}")),
        other => error(StatusCode::BAD_GATEWAY, format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_paths_are_told_from_in_sandbox_paths() {
        assert_eq!(classify(&Method::POST, "/v2/sandboxes"), Some(Call::Create));
        assert_eq!(
            classify(&Method::POST, "/v2/sandboxes/abc/connect"),
            Some(Call::Connect("abc".into()))
        );
        assert_eq!(
            classify(&Method::GET, "/sandboxes/abc"),
            Some(Call::Get("abc".into()))
        );
        assert_eq!(
            classify(&Method::DELETE, "/sandboxes/abc"),
            Some(Call::Kill("abc".into()))
        );
        assert_eq!(
            classify(&Method::POST, "/sandboxes/abc/pause"),
            Some(Call::Unsupported)
        );
        assert_eq!(
            classify(&Method::GET, "/v2/sandboxes"),
            Some(Call::Unsupported)
        );
        // In-Sandbox routes stay the proxy's, whatever headers they carry.
        assert_eq!(
            classify(&Method::POST, "/sandboxes/team/agent/process.Process/Start"),
            None
        );
        assert_eq!(classify(&Method::GET, "/sandboxes/team/agent"), None);
        assert_eq!(classify(&Method::POST, "/process.Process/Start"), None);
    }
}
