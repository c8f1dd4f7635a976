//! `sandman gateway`: a reverse proxy in front of Sandboxes that opted in. It routes by host or
//! path, wakes a Suspended Sandbox for a request and holds the request until it runs, and records
//! activity in batches. It never connects anywhere but the pod IP and declared port of an
//! opted-in Sandbox; every other route is a 404.

pub mod activity;
pub mod control;
mod ids;
mod proxy;
mod replays;
pub mod route;
pub(crate) mod runtime_health;
mod wake;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::api::{GatewaySpec, Sandbox};
use crate::metrics::Metrics;
use activity::ActivityLog;
use proxy::{Body, text};
use tracing::Instrument;
use wake::{Wait, Waker};

fn unauthorized() -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// Route `<sandbox>.<namespace>.<domain>` by host name as well as by path.
    pub domain: Option<String>,
    /// Require `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Serve only this namespace's Sandboxes.
    pub namespace: Option<String>,
    /// How long a request may wait for its Sandbox to wake.
    pub hold: Duration,
    /// How many requests one Sandbox may have held at once.
    pub queue: usize,
    /// At most one activity write per Sandbox per this interval.
    pub activity_interval: Duration,
    /// How long a client may take to send a request's headers, and the first bytes of a
    /// connection; a slow or silent client is cut off after it.
    pub header_timeout: Duration,
    /// Client connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a pod may take to answer a request's headers (streaming bodies may then go on).
    pub upstream_timeout: Duration,
    /// Where this gateway's counts go.
    pub metrics: Arc<Metrics>,
    /// E2B's control API on the same listener (none: not served).
    pub control: Option<control::Control>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: None,
            token: None,
            namespace: None,
            hold: Duration::from_secs(30),
            queue: 64,
            activity_interval: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            upstream_timeout: Duration::from_secs(300),
            metrics: Arc::default(),
            control: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("the Sandbox cache did not sync: {0}")]
    Cache(String),
}

/// A running gateway: where it listens, and its counters.
pub struct Gateway {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Gateway {
    /// Resumes the gateway asked for.
    pub fn wakes(&self) -> u64 {
        self.state.waker.wakes()
    }

    /// Activity writes the gateway made.
    pub fn activity_writes(&self) -> u64 {
        self.state.activity.writes()
    }

    /// Activity flushes that wrote anything; a Sandbox is written at most once in each.
    pub fn activity_flushes(&self) -> u64 {
        self.state.activity.flushes()
    }
}

struct State {
    options: Options,
    waker: Waker,
    activity: Arc<ActivityLog>,
    upstream: proxy::Upstream,
    replays: replays::Replays,
    /// Where each Sandbox's runtime has answered, so only a pod's first runtime call waits.
    answered: runtime_health::Answered,
    /// Sandboxes by E2B id, for `E2b-Sandbox-Id`.
    ids: Arc<ids::Ids>,
    /// API keys' reviews, when the control API is served.
    reviews: Option<control::identity::Reviews>,
    /// The MCP server at `/mcp`, with the control API.
    mcp: Option<
        rmcp::transport::streamable_http_server::StreamableHttpService<
            crate::mcp::SandboxTools,
            rmcp::transport::streamable_http_server::session::never::NeverSessionManager,
        >,
    >,
}

/// Starts the gateway: a Sandbox cache, the activity writer, and the listener. Runs until the
/// returned tasks are dropped with the runtime.
pub async fn start(client: Client, options: Options) -> Result<Gateway, GatewayError> {
    let api: Api<Sandbox> = match &options.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let (changed, changes) = tokio::sync::watch::channel(());
    let ids = Arc::new(ids::Ids::default());
    let indexed = ids.clone();
    // The reflector has updated the store by the time an event comes out of the stream, so
    // a held request woken by it reads the new state.
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|sandbox| crate::api::cached::trim_metadata(&mut sandbox.metadata))
        .reflect(writer);
    tokio::spawn(stream.for_each(move |event| {
        if let Ok(event) = &event {
            indexed.follow(event);
        }
        changed.send_replace(());
        futures::future::ready(())
    }));
    store
        .wait_until_ready()
        .await
        .map_err(|e| GatewayError::Cache(e.to_string()))?;
    let activity = Arc::new(ActivityLog::default());
    tokio::spawn(
        activity
            .clone()
            .run(client.clone(), options.activity_interval),
    );
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| GatewayError::Listen(options.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| GatewayError::Listen(options.listen, e))?;
    let reviews = options
        .control
        .as_ref()
        .map(|_| control::identity::Reviews::new(client.clone()));
    // The MCP tools call the control API on this listener, as any E2B client would.
    let own = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        _ => addr,
    };
    let mcp = options
        .control
        .as_ref()
        .map(|_| crate::mcp::http_service(&format!("http://{own}")));
    let state = Arc::new(State {
        reviews,
        mcp,
        waker: Waker::new(
            client,
            store,
            options.queue,
            options.hold,
            options.metrics.clone(),
            changes,
        ),
        activity,
        upstream: proxy::upstream(),
        replays: Default::default(),
        answered: Default::default(),
        ids,
        options,
    });
    let listener = crate::listener::Bounded::new(listener, state.options.max_connections);
    tokio::spawn(serve(listener, state.clone()));
    tracing::info!(%addr, "gateway listening");
    Ok(Gateway { addr, state })
}

/// Accepts connections for as long as the gateway runs, each served on its own task.
async fn serve(listener: crate::listener::Bounded, state: Arc<State>) {
    loop {
        let accepted = listener.accept().await;
        tokio::spawn(serve_connection(accepted, state.clone()));
    }
}

/// One client connection: HTTP/1.1 (with upgrades, for WebSockets) or HTTP/2, told apart by
/// preface, within the header timeout.
async fn serve_connection(accepted: crate::listener::Accepted, state: Arc<State>) {
    let _slot = accepted.slot;
    let header_timeout = state.options.header_timeout;
    // A client that connects and says nothing holds a slot; it gets the header time to start
    // (HTTP/2's preface included), as HTTP/1 gets it per request.
    let mut first = [0u8; 1];
    match tokio::time::timeout(header_timeout, accepted.stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let peer = accepted.peer;
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, request, peer).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(accepted.stream), service)
        .await;
}

async fn handle(state: &State, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    // Field names follow OpenTelemetry's HTTP conventions, so that trace backends show them.
    // Debug level, like `policy.evaluate`: plain logging does not pay for a span per request.
    let span = tracing::debug_span!(
        "gateway.request",
        http.request.method = %request.method(),
        namespace = tracing::field::Empty,
        sandbox = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let response = answer(state, request, peer).instrument(span.clone()).await;
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    state
        .options
        .metrics
        .gateway_requests
        .get_or_create(&crate::metrics::CodeLabel {
            code: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// The token a request presents: `Authorization: Bearer`, or `X-Access-Token` as E2B's SDKs
/// send a Sandbox's runtime token.
fn bearer(request: &Request<Incoming>) -> Option<String> {
    let headers = request.headers();
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| {
            headers
                .get(RUNTIME_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
        })
        .map(str::to_string)
}

/// Runtime calls open at once through the gateway, per Sandbox.
const MAX_RUNTIME_CALLS: usize = 64;

/// The header E2B's SDKs carry a Sandbox's runtime token in; the runtime checks it again.
const RUNTIME_TOKEN_HEADER: &str = "x-access-token";
/// The header E2B's SDKs name the Sandbox's port in.
const PORT_HEADER: &str = "e2b-sandbox-port";

/// Which of the Sandbox's ports a request is for: the one `E2b-Sandbox-Port` names (the
/// runtime's, when the Sandbox has it, or a declared one), else the gateway's port. `None`:
/// a port the Sandbox does not serve, answered as an unknown route.
fn port_for(sandbox: &Sandbox, request: &Request<Incoming>) -> Option<Target> {
    let Some(named) = request.headers().get(PORT_HEADER) else {
        return GatewaySpec::target_port(sandbox).map(Target::Declared);
    };
    let named: u16 = named.to_str().ok()?.trim().parse().ok()?;
    if named == crate::api::RUNTIME_PORT && crate::api::RuntimeSpec::wanted(sandbox) {
        return Some(Target::Runtime);
    }
    sandbox.spec.gateway.as_ref().filter(|g| g.enabled)?;
    GatewaySpec::declared_ports(sandbox)
        .any(|p| p == i32::from(named))
        .then_some(Target::Declared(named))
}

/// Where in the pod a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A port the pod template declares, under `spec.gateway`.
    Declared(u16),
    /// The in-Sandbox runtime, which only the Sandbox's own token opens.
    Runtime,
}

impl Target {
    fn port(self) -> u16 {
        match self {
            Self::Declared(port) => port,
            Self::Runtime => crate::api::RUNTIME_PORT,
        }
    }
}

/// The header E2B's SDKs name the Sandbox in.
const ID_HEADER: &str = "e2b-sandbox-id";

/// Which Sandbox, and which path in it, a request is for: by its Host, its path, or (E2B's
/// SDKs, whose sandbox URL has no path) its `E2b-Sandbox-Id`.
fn route_of(state: &State, request: &Request<Incoming>) -> Option<route::Route> {
    if let Some(route) = route_of_address(request, state.options.domain.as_deref()) {
        return Some(route);
    }
    let id = request.headers().get(ID_HEADER)?.to_str().ok()?;
    let (namespace, name) = state.ids.get(id.trim())?;
    Some(route::Route {
        namespace,
        name,
        path: request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
    })
}

fn route_of_address(request: &Request<Incoming>, domain: Option<&str>) -> Option<route::Route> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    route::resolve(host.as_deref(), path, domain)
}

/// Why a request does not reach a Sandbox, answered without a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    Unauthorized,
    /// A host-network pod's IP is its node's: proxying there reaches the node's own
    /// services (the operator's /metrics, a kubelet), not the Sandbox.
    HostNetwork,
    /// An expired Sandbox never wakes: said at once instead of holding the request.
    Expired,
}

impl Refusal {
    fn response(self) -> Response<Body> {
        match self {
            Self::NotFound => text(StatusCode::NOT_FOUND, "no such Sandbox"),
            Self::Unauthorized => unauthorized(),
            Self::HostNetwork => text(
                StatusCode::FORBIDDEN,
                "the Sandbox uses the host's network; the gateway does not proxy to it",
            ),
            Self::Expired => text(StatusCode::GONE, "the Sandbox has expired"),
        }
    }
}

/// The route and Sandbox a request is for, once it may reach it: a known, opted-in Sandbox
/// with a port, the right token, not on the host's network, not expired. Otherwise the
/// answer, given without a connection attempt.
fn admit(
    state: &State,
    request: &Request<Incoming>,
) -> Result<(route::Route, Arc<Sandbox>, Target), Refusal> {
    let presented = bearer(request);
    let gateway_token_ok = state
        .options
        .token
        .as_ref()
        .is_some_and(|token| presented.as_deref().is_some_and(|p| same(p, token)));
    // Without the gateway's token, say nothing about which Sandboxes exist.
    let not_found = || {
        if state.options.token.is_some() && !gateway_token_ok {
            Refusal::Unauthorized
        } else {
            Refusal::NotFound
        }
    };
    let Some(route) = route_of(state, request) else {
        return Err(not_found());
    };
    let key = (route.namespace.clone(), route.name.clone());
    let span = tracing::Span::current();
    span.record("namespace", route.namespace.as_str());
    span.record("sandbox", route.name.as_str());
    // Unknown, not opted in, or no declared port: the same answer, and no connection attempt.
    let Some(sandbox) = state.waker.sandbox(&key) else {
        return Err(not_found());
    };
    let Some(target) = port_for(&sandbox, request) else {
        return Err(not_found());
    };
    // The Sandbox's tokens: one its spec names, and the one the operator made for it
    // (`generateToken`), whose hash only the operator writes, in status.
    let named = sandbox
        .spec
        .gateway
        .as_ref()
        .and_then(|g| g.token_sha256.as_deref());
    let made = sandbox
        .status
        .as_ref()
        .and_then(|s| s.gateway_token.as_ref())
        .map(|t| t.sha256.as_str());
    let wants_made = sandbox
        .spec
        .gateway
        .as_ref()
        .is_some_and(|g| g.generate_token)
        || crate::api::RuntimeSpec::wanted(&sandbox);
    let presented_hash = presented
        .as_deref()
        .map(|p| crate::distribution::sha256_hex(p.as_bytes()));
    let sandbox_token_ok = presented_hash
        .as_deref()
        .is_some_and(|p| named.is_some_and(|h| same(p, h)) || made.is_some_and(|h| same(p, h)));
    // A Sandbox waiting for its token is not open meanwhile.
    let open = state.options.token.is_none() && named.is_none() && !wants_made;
    if !(open || gateway_token_ok || sandbox_token_ok) {
        return Err(Refusal::Unauthorized);
    }
    // A host-network pod's IP is its node's: proxying there reaches the node's own services
    // (the operator's /metrics, a kubelet), not the Sandbox.
    if sandbox.spec.pod_template.spec.host_network == Some(true) {
        return Err(Refusal::HostNetwork);
    }
    // An expired Sandbox never wakes: say so at once instead of holding the request.
    if sandbox.status.as_ref().and_then(|s| s.phase) == Some(crate::api::Phase::Expired)
        || sandbox
            .spec
            .shutdown_time
            .as_ref()
            .is_some_and(|t| t.0 <= k8s_openapi::jiff::Timestamp::now())
    {
        return Err(Refusal::Expired);
    }
    Ok((route, sandbox, target))
}

async fn answer(state: &State, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if let Some(mcp) = &state.mcp
        && request.uri().path() == crate::mcp::PATH
    {
        return mcp
            .handle(request)
            .await
            .map(|body| body.map_err(|never| match never {}).boxed());
    }
    let request = match &state.options.control {
        Some(control) => match control::answer(state, control, request).await {
            Ok(response) => return response,
            Err(request) => request,
        },
        None => request,
    };
    let (route, _sandbox, target) = match admit(state, &request) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.response(),
    };
    let key = (route.namespace.clone(), route.name.clone());
    let port = target.port();
    // Runtime calls hold streams (commands, watches, PTYs): one Sandbox's callers may not take
    // the gateway's connections from everyone else's.
    if target == Target::Runtime && state.activity.open_now(&key) >= MAX_RUNTIME_CALLS {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "this Sandbox has as many runtime calls open as it may; close one",
        );
    }
    state.activity.touch(&key);
    match state.waker.ready(&key, port).await {
        Wait::Ready(addr)
            if target == Target::Runtime && !runtime_answers(state, &key, addr).await =>
        {
            waking(state)
        }
        Wait::Ready(addr) => {
            let response = proxy::forward(
                &state.upstream,
                &state.activity,
                &key,
                request,
                proxy::Hop {
                    addr,
                    path: &route.path,
                    peer,
                    timeout: state.options.upstream_timeout,
                    replays: &state.replays,
                },
            )
            .await;
            // A runtime that stopped answering (its container restarted at the same address)
            // is waited for again on the next call.
            if target == Target::Runtime && response.status() == StatusCode::BAD_GATEWAY {
                state.answered.forget(&key);
            }
            response
        }
        Wait::Overflow | Wait::TimedOut => waking(state),
        Wait::Gone => text(StatusCode::NOT_FOUND, "no such Sandbox"),
    }
}

/// Whether the runtime at `addr` answers yet, waiting for it within the hold time: a pod's
/// first runtime call must not be the one that finds it still starting, since a call with a
/// body is never sent twice.
async fn runtime_answers(state: &State, key: &activity::Key, addr: SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + state.options.hold;
    state
        .answered
        .wait(&state.upstream, key, addr, deadline)
        .await
}

/// A 503 that says when to try again.
fn waking(state: &State) -> Response<Body> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the Sandbox is waking up; try again",
    );
    let retry = state.options.hold.as_secs().clamp(1, 30).to_string();
    if let Ok(value) = HeaderValue::from_str(&retry) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
