//! Connect's wire format, JSON codec only, for both ends of a call: unary calls are one JSON body each way; streams are
//! envelopes (one flag byte, a 4-byte big-endian length, the JSON message), and a stream ends
//! with an end-of-stream envelope (flag 0x02) that carries `{}` or `{"error": …}`.
//! <https://connectrpc.com/docs/protocol>

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest message the runtime reads, enveloped or not. Connect's own default is 4 MiB;
/// stdin chunks and RPC arguments are far smaller, and file contents go through `/files`.
pub const MAX_MESSAGE: usize = 4 << 20;

const END_STREAM: u8 = 0x02;
const COMPRESSED: u8 = 0x01;

/// A Connect error code, as the protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unauthenticated,
    DeadlineExceeded,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unauthenticated => "unauthenticated",
            Code::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// The code a name stands for; an unknown name is `unknown`'s nearest, `internal`.
    pub fn parse(name: &str) -> Code {
        [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
            Code::DeadlineExceeded,
        ]
        .into_iter()
        .find(|c| c.name() == name)
        .unwrap_or(Code::Internal)
    }

    /// The HTTP status of a unary error with this code (the protocol's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// An RPC's failure, as the caller sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// The error a file-system call gets from an I/O error on `path`.
    pub fn io(path: &std::path::Path, error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let code = match error.kind() {
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::InvalidInput | ErrorKind::InvalidFilename => Code::InvalidArgument,
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        RpcError::new(code, format!("{}: {error}", path.display()))
    }

    /// The error a caller reads out of `{"code": …, "message": …}`, if that is one.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let code = value.get("code")?.as_str()?;
        Some(RpcError::new(
            Code::parse(code),
            value
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default(),
        ))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.name(), "message": self.message })
    }
}

/// One message of a request stream, parsed.
pub fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(json)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("the request message: {e}")))
}

/// `message` as one envelope.
pub fn envelope<T: Serialize>(message: &T) -> Bytes {
    frame(
        0,
        &serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// The end-of-stream envelope: success, or the error that ended the stream.
pub fn end_of_stream(error: Option<&RpcError>) -> Bytes {
    let body = match error {
        None => serde_json::json!({}),
        Some(error) => serde_json::json!({ "error": error.json() }),
    };
    frame(END_STREAM, body.to_string().as_bytes())
}

fn frame(flags: u8, json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + json.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(json.len()).unwrap_or(u32::MAX));
    out.put_slice(json);
    out.freeze()
}

/// Encodes a request message as one envelope (what a streaming call sends).
pub fn request_envelope(message: &serde_json::Value) -> Bytes {
    frame(0, message.to_string().as_bytes())
}

/// What an end-of-stream message says: the stream ended well, or with this error.
pub fn end_result(json: &[u8]) -> Result<(), RpcError> {
    let value: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    match value.get("error").and_then(RpcError::from_json) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Reads envelopes out of a byte stream as it arrives: push bytes in, take whole messages out.
#[derive(Default)]
pub struct Envelopes {
    buffer: BytesMut,
}

/// What the next envelope in the buffer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Envelope {
    Message(Bytes),
    /// The end of the stream, with its JSON (`{}` or `{"error": …}`).
    End(Bytes),
}

impl Envelopes {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole envelope, `None` until one has arrived. A compressed or oversized
    /// envelope is an error: it is refused before its body is read.
    pub fn take(&mut self) -> Result<Option<Envelope>, RpcError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let flags = self.buffer[0];
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if flags & COMPRESSED != 0 {
            return Err(RpcError::new(
                Code::Unimplemented,
                "compressed messages are not accepted; send identity",
            ));
        }
        if length > MAX_MESSAGE {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("a message of {length} bytes is over the limit of {MAX_MESSAGE}"),
            ));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        self.buffer.advance(5);
        let body = self.buffer.split_to(length).freeze();
        if flags & END_STREAM != 0 {
            return Ok(Some(Envelope::End(body)));
        }
        Ok(Some(Envelope::Message(body)))
    }

    /// Bytes that arrived after the last whole envelope.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_split_across_pushes_are_reassembled() {
        let one = envelope(&serde_json::json!({"a": 1}));
        let two = end_of_stream(None);
        let mut all = one.to_vec();
        all.extend_from_slice(&two);
        let mut reader = Envelopes::default();
        for byte in &all[..7] {
            reader.push(&[*byte]);
            assert_eq!(reader.take().unwrap(), None);
        }
        reader.push(&all[7..]);
        assert_eq!(
            reader.take().unwrap(),
            Some(Envelope::Message(Bytes::from_static(b"{\"a\":1}")))
        );
        assert_eq!(
            reader.take().unwrap(),
            Some(Envelope::End(Bytes::from_static(b"{}")))
        );
        assert_eq!(end_result(b"{}").map_err(|e| e.code), Ok(()));
        let failed = end_result(br#"{"error":{"code":"not_found","message":"x"}}"#);
        assert_eq!(failed.map_err(|e| e.code), Err(Code::NotFound));
        assert_eq!(reader.pending(), 0);
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused_before_their_body() {
        let mut reader = Envelopes::default();
        reader.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(reader.take().unwrap_err().code, Code::ResourceExhausted);
        let mut reader = Envelopes::default();
        reader.push(&[1, 0, 0, 0, 2, b'{', b'}']);
        assert_eq!(reader.take().unwrap_err().code, Code::Unimplemented);
    }
}
