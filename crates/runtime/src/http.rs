//! The HTTP side of each call: bodies in and out, with the limits that keep a hostile or slow
//! caller from holding more than its share.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use sandman_connect::{self as connect, Code, Envelope, Envelopes, RpcError};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// How many frames a streamed response holds for a client that has not read them yet. When it
/// is full the producer waits: a slow reader slows its command's output, not the runtime's
/// memory.
pub const STREAM_BUFFER: usize = 16;

pub fn full(status: StatusCode, content_type: &str, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(bytes.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// A unary call's answer.
pub fn unary<T: Serialize>(result: Result<T, RpcError>) -> Response<Body> {
    match result {
        Ok(message) => full(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&message).unwrap_or_else(|_| b"{}".to_vec()),
        ),
        Err(error) => full(
            error.code.http_status(),
            "application/json",
            error.json().to_string(),
        ),
    }
}

/// A JSON error in the shape of envd's plain-HTTP endpoints: `{"code": int, "message": str}`.
pub fn plain_error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::json!({ "code": status.as_u16(), "message": message.to_string() }).to_string(),
    )
}

/// A streamed response whose frames come from `frames`; the producer ends it by dropping the
/// sender after its end-of-stream envelope.
pub fn streaming(content_type: &str, frames: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = tokio_stream(frames).map(|bytes| Ok::<_, std::io::Error>(Frame::data(bytes)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn tokio_stream(mut frames: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| frames.poll_recv(cx))
}

/// A streamed response that is only an error: Connect sends it in the end-of-stream envelope,
/// with status 200.
pub fn stream_error(error: &RpcError) -> Response<Body> {
    full(
        StatusCode::OK,
        "application/connect+json",
        connect::end_of_stream(Some(error)),
    )
}

/// The JSON body of a unary call, at most [`connect::MAX_MESSAGE`] bytes.
pub async fn read_unary<T: DeserializeOwned>(body: Incoming) -> Result<T, RpcError> {
    let bytes = http_body_util::Limited::new(body, connect::MAX_MESSAGE)
        .collect()
        .await
        .map_err(|e| {
            RpcError::new(
                Code::ResourceExhausted,
                format!("the request body could not be read whole: {e}"),
            )
        })?
        .to_bytes();
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    connect::decode(&bytes)
}

/// A request stream: its envelopes, one message at a time.
pub struct RequestStream {
    body: Incoming,
    envelopes: Envelopes,
    ended: bool,
}

impl RequestStream {
    pub fn new(body: Incoming) -> Self {
        RequestStream {
            body,
            envelopes: Envelopes::default(),
            ended: false,
        }
    }

    /// The next message, or `None` once the caller ended its stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RpcError> {
        loop {
            match self.envelopes.take()? {
                Some(Envelope::Message(json)) => return connect::decode(&json).map(Some),
                Some(Envelope::End(_)) => return Ok(None),
                None if self.ended => {
                    if self.envelopes.pending() > 0 {
                        return Err(RpcError::new(
                            Code::InvalidArgument,
                            "the request stream ended inside an envelope",
                        ));
                    }
                    return Ok(None);
                }
                None => {}
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(e)) => {
                    return Err(RpcError::new(
                        Code::InvalidArgument,
                        format!("the request stream: {e}"),
                    ));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.envelopes.push(&data);
                    }
                }
            }
        }
    }

    /// The one message of a server-streaming call.
    pub async fn single<T: DeserializeOwned>(mut self) -> Result<T, RpcError> {
        self.next()
            .await?
            .ok_or_else(|| RpcError::new(Code::InvalidArgument, "the request has no message"))
    }
}

/// How often a stream says it is alive: `Keepalive-Ping-Interval` seconds, as envd's SDKs ask
/// (50), or 50 when the caller does not say.
pub fn keepalive(headers: &HeaderMap) -> std::time::Duration {
    header_text(headers, "keepalive-ping-interval")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(
            std::time::Duration::from_secs(50),
            std::time::Duration::from_secs,
        )
}

/// A header's value as text, when it has one.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
