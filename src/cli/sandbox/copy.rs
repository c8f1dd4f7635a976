//! `sandman sandbox cp`: a file into or out of a Sandbox, streamed both ways, so its size is
//! bounded by the disks, not by memory.

use bytes::Bytes;
use futures::StreamExt;
use http::Method;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SandboxError;
use super::client::Connection;

#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Where from: a local path, or `namespace/name:/path` in a Sandbox.
    source: String,
    /// Where to: a local path, or `namespace/name:/path` in a Sandbox.
    destination: String,
    #[command(flatten)]
    connection: Connection,
}

/// `namespace/name:/path`, split; a local path has no `:` before its first `/`.
fn remote(text: &str) -> Option<(&str, &str)> {
    let (target, path) = text.split_once(':')?;
    target.contains('/').then_some((target, path))
}

fn query(path: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    format!("/files?path={encoded}")
}

pub async fn run(args: CopyArgs) -> Result<i32, SandboxError> {
    match (remote(&args.source), remote(&args.destination)) {
        (None, Some((target, path))) => upload(&args, target, path).await,
        (Some((target, path)), None) => download(&args, target, path).await,
        _ => Err(SandboxError::Usage(
            "one side of cp is local and the other namespace/name:/path".into(),
        )),
    }
}

async fn upload(args: &CopyArgs, target: &str, path: &str) -> Result<i32, SandboxError> {
    let runtime = super::client::connect(&args.connection, target).await?;
    let mut file = tokio::fs::File::open(&args.source)
        .await
        .map_err(|e| SandboxError::Usage(format!("{}: {e}", args.source)))?;
    let (frames, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            match file.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => {
                    if frames
                        .send(Ok(Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = frames.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    let mut receiver = receiver;
    let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
        .map(|chunk| chunk.map(Frame::data));
    let body = BodyExt::boxed(StreamBody::new(stream));
    let response = runtime
        .send(Method::POST, &query(path), "application/octet-stream", body)
        .await?;
    let status = response.status();
    let answer = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if !status.is_success() {
        return Err(SandboxError::Gateway(format!(
            "{}:{path}: HTTP {status}: {}",
            runtime.label,
            String::from_utf8_lossy(&answer).trim()
        )));
    }
    Ok(0)
}

async fn download(args: &CopyArgs, target: &str, path: &str) -> Result<i32, SandboxError> {
    let runtime = super::client::connect(&args.connection, target).await?;
    let response = runtime
        .send(
            Method::GET,
            &query(path),
            "application/octet-stream",
            super::client::full(Bytes::new()),
        )
        .await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let answer = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(SandboxError::Gateway(format!(
            "{}:{path}: HTTP {status}: {}",
            runtime.label,
            String::from_utf8_lossy(&answer).trim()
        )));
    }
    // Written beside the destination and renamed at the end, so a broken download never
    // leaves a partial file under the name asked for.
    let partial = format!("{}.partial", args.destination);
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| SandboxError::Usage(format!("{partial}: {e}")))?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SandboxError::Gateway(format!("the download broke: {e}")))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data)
                .await
                .map_err(|e| SandboxError::Usage(format!("{partial}: {e}")))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| SandboxError::Usage(format!("{partial}: {e}")))?;
    tokio::fs::rename(&partial, &args.destination)
        .await
        .map_err(|e| SandboxError::Usage(format!("{}: {e}", args.destination)))?;
    Ok(0)
}
