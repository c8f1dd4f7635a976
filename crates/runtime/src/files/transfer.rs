//! `GET /files` and `POST /files`: file contents streamed both ways, so a large file never
//! sits in memory whole.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::http::{self as h, Body};
use crate::state::State;
use sandman_connect::{Code, RpcError};

const READ_CHUNK: usize = 256 << 10;

struct Query {
    path: Option<String>,
    username: Option<String>,
}

fn query(uri: &http::Uri) -> Query {
    let mut found = Query {
        path: None,
        username: None,
    };
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "path" => found.path = Some(value.into_owned()),
            "username" => found.username = Some(value.into_owned()),
            _ => {}
        }
    }
    found
}

/// The plain-HTTP error for a failed file call: envd's codes (400, 401, 404, 500, 507).
fn error(e: &RpcError) -> Response<Body> {
    let status = match e.code {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    h::plain_error(status, &e.message)
}

fn home(state: &State, headers: &HeaderMap, query: &Query) -> Result<PathBuf, RpcError> {
    let named = query
        .username
        .clone()
        .or_else(|| crate::users::from_basic_auth(headers));
    Ok(crate::users::resolve(&state.user, named.as_deref())?.home)
}

pub async fn download(state: &State, uri: &http::Uri, headers: &HeaderMap) -> Response<Body> {
    let query = query(uri);
    let home = match home(state, headers, &query) {
        Ok(home) => home,
        Err(e) => return error(&e),
    };
    let path = super::path::resolve(query.path.as_deref().unwrap_or_default(), &home);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => return error(&RpcError::io(&path, &e)),
    };
    let length = match file.metadata().await {
        Ok(m) if m.is_dir() => {
            return error(&RpcError::new(
                Code::InvalidArgument,
                format!("{} is a directory", path.display()),
            ));
        }
        Ok(m) => m.len(),
        Err(e) => return error(&RpcError::io(&path, &e)),
    };
    let (frames, receiver) = mpsc::channel::<Bytes>(h::STREAM_BUFFER);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; READ_CHUNK];
        while let Ok(n) = file.read(&mut buffer).await {
            if n == 0
                || frames
                    .send(Bytes::copy_from_slice(&buffer[..n]))
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    let mut response = h::streaming("application/octet-stream", receiver);
    if let Ok(value) = length.to_string().parse() {
        response.headers_mut().insert(header::CONTENT_LENGTH, value);
    }
    response
}

pub async fn upload(
    state: &State,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Incoming,
) -> Response<Body> {
    let query = query(uri);
    let home = match home(state, headers, &query) {
        Ok(home) => home,
        Err(e) => return error(&e),
    };
    let content_type = h::header_text(headers, "content-type").unwrap_or_default();
    let written = match multer::parse_boundary(content_type) {
        Ok(boundary) => upload_multipart(&home, query.path.as_deref(), boundary, body).await,
        Err(_) => {
            let Some(named) = query.path.as_deref() else {
                return error(&RpcError::new(
                    Code::InvalidArgument,
                    "an octet-stream upload needs ?path=",
                ));
            };
            let path = super::path::resolve(named, &home);
            let stream = body
                .into_data_stream()
                .map(|r| r.map_err(std::io::Error::other));
            write(&path, stream).await.map(|()| vec![path])
        }
    };
    match written {
        Ok(paths) => h::full(
            StatusCode::OK,
            "application/json",
            serde_json::Value::Array(
                paths
                    .iter()
                    .map(|p| super::entry::upload_answer(p))
                    .collect(),
            )
            .to_string(),
        ),
        Err(e) => error(&e),
    }
}

/// Each `file` part goes to `?path=` when one is given (then only one part may come), else to
/// the part's own file name.
async fn upload_multipart(
    home: &Path,
    named: Option<&str>,
    boundary: String,
    body: Incoming,
) -> Result<Vec<PathBuf>, RpcError> {
    let stream = body.into_data_stream();
    let mut form = multer::Multipart::new(stream, boundary);
    let mut written = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("multipart body: {e}")))?
    {
        let target = match (named, field.file_name()) {
            (Some(_), _) if !written.is_empty() => {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    "?path= names one file, and the body has more than one part",
                ));
            }
            (Some(path), _) => super::path::resolve(path, home),
            (None, Some(name)) => super::path::resolve(name, home),
            (None, None) => {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    "a part without a file name, and no ?path=",
                ));
            }
        };
        let stream = field.map(|r| r.map_err(std::io::Error::other));
        write(&target, stream).await?;
        written.push(target);
    }
    Ok(written)
}

async fn write(
    path: &Path,
    mut stream: impl futures::Stream<Item = std::io::Result<Bytes>> + Unpin,
) -> Result<(), RpcError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| RpcError::io(parent, &e))?;
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| RpcError::io(path, &e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RpcError::new(Code::InvalidArgument, format!("the upload stopped: {e}"))
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| RpcError::io(path, &e))?;
    }
    file.flush().await.map_err(|e| RpcError::io(path, &e))
}
