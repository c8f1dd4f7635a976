//! The runtime's HTTP/1.1 listener: `/health` for anyone, everything else only with the
//! Sandbox's token in `X-Access-Token`.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http::{self as h, Body};
use crate::state::State;
use sandman_connect::{Code, RpcError};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// A client that has not sent its request head by then is cut off.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The envd version the runtime speaks: the SDKs turn features on by it (0.4.0 and later
/// streams stdin; 0.5.7 and later uploads octet-stream bodies).
pub const ENVD_VERSION: &str = "0.5.7";

pub async fn serve(listener: TcpListener, state: Arc<State>) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or a connection reset before accept: keep serving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move {
                    let mut response = route(state, request).await;
                    // These answers leave the request body unread, so the connection cannot
                    // carry another request; say so rather than let the client find out.
                    if matches!(response.status().as_u16(), 401 | 413 | 429) {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 << 10)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

async fn route(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path == "/health" {
        let mut response = h::empty(StatusCode::NO_CONTENT);
        response.headers_mut().insert(
            "e2b-envd-version",
            http::HeaderValue::from_static(ENVD_VERSION),
        );
        return response;
    }
    let token = h::header_text(request.headers(), "x-access-token").unwrap_or_default();
    if !same(token.as_bytes(), state.token.as_bytes()) {
        let error = RpcError::new(
            Code::Unauthenticated,
            "this Sandbox's runtime needs its access token in X-Access-Token",
        );
        return if path.starts_with("/files") {
            h::plain_error(StatusCode::UNAUTHORIZED, &error.message)
        } else {
            h::unary::<()>(Err(error))
        };
    }
    let (parts, body) = request.into_parts();
    if path == "/files" {
        return match parts.method {
            Method::GET => {
                crate::files::transfer::download(&state, &parts.uri, &parts.headers).await
            }
            Method::POST => {
                crate::files::transfer::upload(&state, &parts.uri, &parts.headers, body).await
            }
            _ => h::plain_error(StatusCode::METHOD_NOT_ALLOWED, "GET or POST /files"),
        };
    }
    if parts.method != Method::POST {
        return h::plain_error(StatusCode::NOT_FOUND, format!("no route {path}"));
    }
    if let Some(method) = path.strip_prefix("/process.Process/") {
        crate::process::call(state, method, &parts.headers, body).await
    } else if let Some(method) = path.strip_prefix("/filesystem.Filesystem/") {
        crate::files::call(state, method, &parts.headers, body).await
    } else {
        h::plain_error(StatusCode::NOT_FOUND, format!("no route {path}"))
    }
}

/// Compares the token in time that does not depend on where the first difference is.
fn same(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
        && !expected.is_empty()
}
