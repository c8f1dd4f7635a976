//! Forwarding one request to a Sandbox's pod, and, for an upgrade (WebSocket), joining the two
//! connections for as long as both stay open.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use super::activity::{ActivityLog, Key, OpenConnection};
use super::replays::{self, Replays};

pub type Body = BoxBody<Bytes, hyper::Error>;
pub type Upstream = Client<HttpConnector, Body>;

/// The pause before a request that may be repeated is sent again after the pod closed the
/// connection without answering; it doubles each time, up to the most. Three replays after
/// 150, 300 and 600 ms cover the second a fresh server under gVisor may take.
const REPLAY_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(150);
const REPLAY_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);
/// How long, from the first try, a request may still be sent again.
const REPLAY_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// How long connecting to a pod may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The client for pods: plain HTTP/1.1 with a connect timeout.
pub fn upstream() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // A small request or stream frame is sent at once, not held for the pod's delayed ACK
    // (which added 40 ms to every runtime call through the gateway: BENCHMARKS.md).
    connector.set_nodelay(true);
    // No idle connection is kept for reuse: a pod's address is reused by the next pod on its
    // node (a pooled connection to the old one then meets a reset, not an answer, and a
    // request with a body cannot be sent again), and a runtime closes a keep-alive connection
    // idle past its header timeout. A new connection to a pod costs a handshake on the node's
    // network per request; the runtime's gateway figures in BENCHMARKS.md were taken with
    // idle connections kept.
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// Where one request goes, and on whose behalf.
pub struct Hop<'a> {
    pub addr: SocketAddr,
    pub path: &'a str,
    /// The client's address, for `X-Forwarded-For`.
    pub peer: SocketAddr,
    /// How long the pod may take to answer with headers.
    pub timeout: std::time::Duration,
    /// The replay budgets of every Sandbox.
    pub replays: &'a Replays,
}

pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    // Headers the sender named in `Connection` are for this hop too (RFC 9110 §7.6.1).
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // The gateway's credentials are for the gateway; the Sandbox never sees them. Basic
    // credentials name the user a runtime call runs as (envd's way) and go on.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.starts_with("Basic "));
    if bearer {
        headers.remove(header::AUTHORIZATION);
    }
    if keep_upgrade && let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What the client says about where a request came from is not believed: the gateway's own
/// `X-Forwarded-*` replace whatever the client sent, so a pod can trust them.
fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: Option<HeaderValue>) {
    for name in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    ] {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
}

pub async fn forward(
    upstream: &Upstream,
    activity: &Arc<ActivityLog>,
    key: &Key,
    mut request: Request<Incoming>,
    hop: Hop<'_>,
) -> Response<Body> {
    let Hop {
        addr,
        path,
        peer,
        timeout,
        replays,
    } = hop;
    let upgrade = is_upgrade(request.headers());
    let uri = match format!("http://{addr}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad path"),
    };
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    // HTTP/2 requests carry the host in the URI, not in a Host header.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    parts.uri = uri;
    // Pods are spoken to in HTTP/1.1, whatever the client spoke to the gateway.
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    set_forwarded(&mut parts.headers, peer, host);
    let connection = activity.open(key);
    let sent = send_replaying(upstream, parts, body, (key, addr), timeout, replays).await;
    let response = match sent {
        Ok(response) => response,
        Err(Failed::Unanswered(error) | Failed::Other(error)) => {
            // Debug, not Display: the cause (a reset, a close before the answer) is in the source.
            tracing::debug!(%addr, ?error, "upstream failed");
            return text(StatusCode::BAD_GATEWAY, "the Sandbox did not answer");
        }
        Err(Failed::TimedOut) => {
            tracing::debug!(%addr, ?timeout, "upstream timed out");
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "the Sandbox did not answer in time",
            );
        }
    };
    relay(response, client_upgrade, connection)
}

/// Sends the request to the pod. A server that has just started can close its first
/// connections before answering (seen with agents under gVisor, for up to about a second): a
/// request without a body and with a method that may be repeated is sent again, with growing
/// pauses, within the time budget, at most [`replays::PER_REQUEST`] times, and only while the
/// Sandbox's shared replay budget lasts; anything else gets the failure, since it may have had
/// effects.
async fn send_replaying(
    upstream: &Upstream,
    parts: http::request::Parts,
    body: Incoming,
    (key, addr): (&Key, SocketAddr),
    timeout: std::time::Duration,
    replays: &Replays,
) -> Result<Response<Incoming>, Failed> {
    let replay = replayable(&parts, &body).then(|| (parts.method.clone(), parts.headers.clone()));
    let uri = parts.uri.clone();
    // No try of this request starts after this: the pod's time to answer, and no more than
    // the replay budget.
    let deadline = tokio::time::Instant::now() + timeout.min(REPLAY_BUDGET);
    let mut sent = send(upstream, Request::from_parts(parts, body.boxed()), timeout).await;
    let Some((method, headers)) = replay else {
        return sent;
    };
    let mut pause = REPLAY_FIRST_PAUSE;
    let mut replayed = 0;
    while let Err(Failed::Unanswered(error)) = &sent {
        if replayed >= replays::PER_REQUEST
            || tokio::time::Instant::now() + pause >= deadline
            || !replays.take(key)
        {
            break;
        }
        replayed += 1;
        tracing::debug!(%addr, ?error, ?pause, "upstream closed before answering; sending again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(REPLAY_MAX_PAUSE);
        let mut again = Request::new(empty());
        *again.method_mut() = method.clone();
        *again.uri_mut() = uri.clone();
        *again.headers_mut() = headers.clone();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        sent = send(upstream, again, left).await;
    }
    sent
}

/// The pod's answer, as the client gets it: an upgraded connection bridged both ways, or the
/// response with its body, counted as activity while either lasts.
fn relay(
    response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    connection: OpenConnection,
) -> Response<Body> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let (mut parts, body) = response.into_parts();
        let server_upgrade = hyper::upgrade::on(Response::from_parts(parts.clone(), body));
        tokio::spawn(async move {
            // The connection counts as activity until either side closes it.
            let _open = connection;
            let (Ok(client), Ok(server)) = (client_upgrade.await, server_upgrade.await) else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut server = TokioIo::new(server);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return Response::from_parts(parts, empty());
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // The connection stays open, and counts as activity, until the body has been sent: a
    // streamed answer (SSE, tokens) can last minutes after its headers.
    Response::from_parts(
        parts,
        Guarded {
            body: body.boxed(),
            _open: connection,
        }
        .boxed(),
    )
}

/// Why a request to a pod got no response.
enum Failed {
    /// The pod accepted the connection, then closed or reset it before any answer.
    Unanswered(hyper_util::client::legacy::Error),
    Other(hyper_util::client::legacy::Error),
    TimedOut,
}

async fn send(
    upstream: &Upstream,
    request: Request<Body>,
    timeout: std::time::Duration,
) -> Result<Response<Incoming>, Failed> {
    match tokio::time::timeout(timeout, upstream.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) if unanswered(&error) => Err(Failed::Unanswered(error)),
        Ok(Err(error)) => Err(Failed::Other(error)),
        Err(_) => Err(Failed::TimedOut),
    }
}

/// True when the pod accepted the connection and then reset or closed it before a response's
/// first byte. (A refused connection is not: the waker already waits for a woken pod to
/// accept, and a running pod that refuses gets its 502 at once.)
fn unanswered(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && hyper.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// True for a request the gateway may send twice: a method that RFC 9110 (§9.2.2) calls
/// idempotent and safe to repeat without a body, and no body, and not an upgrade.
fn replayable(parts: &http::request::Parts, body: &Incoming) -> bool {
    use hyper::body::Body as _;
    let method = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    method && body.is_end_stream() && !parts.headers.contains_key(header::UPGRADE)
}

pub(super) fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A response body that holds its Sandbox's open-connection mark until it ends.
struct Guarded {
    body: Body,
    _open: super::activity::OpenConnection,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
