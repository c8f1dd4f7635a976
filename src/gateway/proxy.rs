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

use super::activity::{ActivityLog, Key};

pub type Body = BoxBody<Bytes, hyper::Error>;
pub type Upstream = Client<HttpConnector, Incoming>;

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
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // The gateway's credentials are for the gateway; the Sandbox never sees them.
    headers.remove(header::AUTHORIZATION);
    if keep_upgrade && let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

pub async fn forward(
    upstream: &Upstream,
    activity: &Arc<ActivityLog>,
    key: &Key,
    mut request: Request<Incoming>,
    addr: SocketAddr,
    path: &str,
) -> Response<Body> {
    let upgrade = is_upgrade(request.headers());
    let uri = match format!("http://{addr}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad path"),
    };
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    parts.uri = uri;
    // Pods are spoken to in HTTP/1.1, whatever the client spoke to the gateway.
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let connection = activity.open(key);
    let response = match upstream.request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%addr, %error, "upstream failed");
            return text(StatusCode::BAD_GATEWAY, "the Sandbox did not answer");
        }
    };
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
        return Response::from_parts(
            parts,
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    drop(connection);
    Response::from_parts(parts, body.boxed())
}
