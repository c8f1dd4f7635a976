//! E2B's control API on the gateway's listener, so the E2B SDKs create, find, pause, resume,
//! list and kill Sandboxes unchanged. The caller's `X-API-KEY` is a ServiceAccount's token:
//! - the gateway reviews it ([`identity`]): whose it is, which namespace that makes the
//!   caller's, and whether its RBAC lets it act on `SandboxClaims` there;
//! - every call is then made to the API server **with the caller's token**, so the API
//!   server checks each object again, and the gateway gains no rights over claims, Sandboxes
//!   or Secrets: only the right to ask for reviews.
//!
//! A Sandbox in another namespace is answered exactly as one that does not exist (404).
//! A control call carries `X-API-KEY`; in-Sandbox calls do not, so the two never collide.

mod create;
pub mod identity;
mod lifecycle;
mod listing;
mod ready;
mod sandboxes;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::State;
use super::proxy::Body;

/// Where control calls go: the API server (its URL and CA, without credentials: each call
/// brings its own).
#[derive(Clone)]
pub struct Control {
    pub config: kube::Config,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("cluster", &self.config.cluster_url)
            .finish()
    }
}

/// A reviewed caller's reach: a client that acts with its token, in its namespace.
pub(super) struct Scope {
    client: kube::Client,
    namespace: String,
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
    let query = request.uri().query().unwrap_or_default().to_string();
    let method = request.method().clone();
    let Some(call) = classify(&method, &path) else {
        return Err(request);
    };
    Ok(match scope(state, control, &key, &call).await {
        Ok(scope) => match read_body(request).await {
            Ok(body) => dispatch(state, &scope, call, &body, &query).await,
            Err(e) => e.response(),
        },
        Err(e) => e.response(),
    })
}

/// The caller's scope, once the reviews say it may make `call`.
async fn scope(
    state: &State,
    control: &Control,
    key: &str,
    call: &Call,
) -> Result<Scope, ControlError> {
    let Some(reviews) = &state.reviews else {
        return Err(ControlError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this gateway does not serve the control API",
        ));
    };
    if key.is_empty() {
        return Err(ControlError::new(
            StatusCode::UNAUTHORIZED,
            "X-API-KEY is empty",
        ));
    }
    let caller = reviews.identify(key).await?;
    if let Some(verb) = call.verb() {
        reviews.authorize(&caller, verb).await?;
    }
    Ok(Scope {
        client: caller_client(control, key)?,
        namespace: caller.namespace,
    })
}

async fn dispatch(
    state: &State,
    scope: &Scope,
    call: Call,
    body: &[u8],
    query: &str,
) -> Response<Body> {
    match call {
        Call::Create => create::create(state, scope, body).await,
        Call::Connect(id) => lifecycle::connect(state, scope, &id, body).await,
        Call::Pause(id) => lifecycle::pause(state, scope, &id).await,
        Call::Timeout(id) => lifecycle::timeout(state, scope, &id, body).await,
        Call::Kill(id) => lifecycle::kill(state, scope, &id).await,
        Call::Get(id) => sandboxes::get(state, scope, &id).await,
        Call::Metrics(id) => sandboxes::metrics(state, scope, &id).await,
        Call::List => listing::list(state, scope, query).await,
        Call::Unsupported(what) => error(
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not served by sandman yet"),
        ),
    }
}

/// Why a control call failed, as E2B's SDKs read it: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    let id = |id: &&str| id.to_string();
    Some(match (method.clone(), parts.as_slice()) {
        (Method::POST, ["v2", "sandboxes"]) => Call::Create,
        (Method::GET, ["v2", "sandboxes"]) => Call::List,
        (Method::POST, ["v2", "sandboxes", sandbox, "connect"]) => Call::Connect(id(sandbox)),
        (Method::GET, ["sandboxes", sandbox]) => Call::Get(id(sandbox)),
        (Method::DELETE, ["sandboxes", sandbox]) => Call::Kill(id(sandbox)),
        (Method::POST, ["sandboxes", sandbox, "pause"]) => Call::Pause(id(sandbox)),
        (Method::POST, ["sandboxes", sandbox, "timeout"]) => Call::Timeout(id(sandbox)),
        (Method::GET, ["sandboxes", sandbox, "metrics"]) => Call::Metrics(id(sandbox)),
        // The rest of E2B's API; other paths under /sandboxes are in-Sandbox routes.
        (_, ["v2", ..] | ["sandboxes"] | ["sandboxes", _])
        | (
            _,
            [
                "sandboxes",
                _,
                "pause" | "timeout" | "metrics" | "refreshes" | "logs" | "resume" | "fork"
                | "snapshots" | "network",
            ],
        ) => Call::Unsupported(format!("{method} {path}")),
        _ => return None,
    })
}

#[derive(Debug, PartialEq)]
enum Call {
    Create,
    List,
    Connect(String),
    Get(String),
    Kill(String),
    Pause(String),
    Timeout(String),
    Metrics(String),
    Unsupported(String),
}

impl Call {
    /// The RBAC verb on `SandboxClaims` the call needs (none for a call not served).
    fn verb(&self) -> Option<identity::Verb> {
        use identity::Verb;
        Some(match self {
            Call::Create => Verb::Create,
            Call::List => Verb::List,
            Call::Get(_) | Call::Metrics(_) => Verb::Get,
            Call::Connect(_) | Call::Pause(_) | Call::Timeout(_) => Verb::Patch,
            Call::Kill(_) => Verb::Delete,
            Call::Unsupported(_) => return None,
        })
    }
}

/// A client that acts as the caller: the API server's address, the caller's token.
fn caller_client(control: &Control, key: &str) -> Result<kube::Client, ControlError> {
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
            Some(Call::Pause("abc".into()))
        );
        assert_eq!(
            classify(&Method::POST, "/sandboxes/abc/timeout"),
            Some(Call::Timeout("abc".into()))
        );
        assert_eq!(
            classify(&Method::GET, "/sandboxes/abc/metrics"),
            Some(Call::Metrics("abc".into()))
        );
        assert_eq!(classify(&Method::GET, "/v2/sandboxes"), Some(Call::List));
        assert_eq!(
            classify(&Method::POST, "/sandboxes/abc/fork"),
            Some(Call::Unsupported("POST /sandboxes/abc/fork".into()))
        );
        assert_eq!(
            classify(&Method::GET, "/v2/sandboxes/abc/logs"),
            Some(Call::Unsupported("GET /v2/sandboxes/abc/logs".into()))
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
