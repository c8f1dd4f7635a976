//! The MCP server's way to sandman: E2B's API on the gateway, as the E2B SDKs use it. Control
//! calls carry the caller's API key (`X-API-KEY`), so the gateway's reviews and the caller's
//! RBAC decide each of them exactly as for an SDK; in-Sandbox calls carry the Sandbox's
//! token that the control API handed out.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::runtime_client::{Body, RuntimeCallError, RuntimeClient, full};

/// Why a tool's call to sandman failed, in words an agent can act on.
#[derive(Debug, thiserror::Error)]
pub enum E2bError {
    /// The control API refused or failed the call: its status and E2B message.
    #[error("{status}: {message}")]
    Control { status: StatusCode, message: String },
    #[error("{0}")]
    Runtime(#[from] RuntimeCallError),
    #[error("the gateway: {0}")]
    Transport(String),
    #[error("{0}")]
    Usage(String),
}

/// A Sandbox the control API handed out: its id and its runtime token.
pub struct Opened {
    pub sandbox_id: String,
    pub token: String,
}

/// E2B's API at `gateway`.
#[derive(Clone)]
pub struct E2bClient {
    http: Client<HttpConnector, Body>,
    gateway: String,
}

/// The largest answer read from the control API.
const MAX_ANSWER: usize = 1 << 20;

impl E2bClient {
    pub fn new(gateway: &str) -> Self {
        E2bClient {
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            gateway: gateway.trim_end_matches('/').to_string(),
        }
    }

    /// One request to the control API with the caller's key: its status, headers and body.
    async fn send(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), E2bError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.gateway))
            .header("x-api-key", key)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(full(body.map(|b| b.to_string()).unwrap_or_default()))
            .map_err(|e| E2bError::Usage(format!("request: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| E2bError::Transport(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let bytes = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| E2bError::Transport(format!("read the answer: {e}")))?;
        Ok((parts.status, parts.headers, bytes))
    }

    /// One control call: its JSON answer (`null` for none), or E2B's error.
    async fn control(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, E2bError> {
        let (status, _, bytes) = self.send(key, method, path, body).await?;
        if !status.is_success() {
            return Err(control_error(status, &bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    fn opened(value: &serde_json::Value) -> Result<Opened, E2bError> {
        match (
            value["sandboxID"].as_str(),
            value["envdAccessToken"].as_str(),
        ) {
            (Some(id), Some(token)) => Ok(Opened {
                sandbox_id: id.to_string(),
                token: token.to_string(),
            }),
            _ => Err(E2bError::Transport(format!(
                "the control API's answer has no sandbox id or token: {value}"
            ))),
        }
    }

    /// A new Sandbox of `template`, ending `timeout` seconds from now.
    pub async fn create(
        &self,
        key: &str,
        template: &str,
        timeout: u64,
    ) -> Result<Opened, E2bError> {
        let body = serde_json::json!({ "templateID": template, "timeout": timeout });
        let value = self
            .control(key, Method::POST, "/v2/sandboxes", Some(body))
            .await?;
        Self::opened(&value)
    }

    /// Resumes `id` if it sleeps and answers once its runtime does.
    pub async fn open(&self, key: &str, id: &str) -> Result<Opened, E2bError> {
        let path = format!("/v2/sandboxes/{id}/connect");
        let value = self
            .control(key, Method::POST, &path, Some(serde_json::json!({})))
            .await?;
        Self::opened(&value)
    }

    /// Pauses `id`: what it kept (`filesystem` or `memory`), or that it was paused already.
    pub async fn pause(&self, key: &str, id: &str) -> Result<String, E2bError> {
        let path = format!("/sandboxes/{id}/pause");
        let (status, headers, bytes) = self
            .send(key, Method::POST, &path, Some(serde_json::json!({})))
            .await?;
        match status {
            StatusCode::CONFLICT => return Ok("already paused".into()),
            status if !status.is_success() => return Err(control_error(status, &bytes)),
            _ => {}
        }
        Ok(headers
            .get(crate::api::PAUSE_KEPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("filesystem")
            .to_string())
    }

    /// Deletes `id` (its claim).
    pub async fn kill(&self, key: &str, id: &str) -> Result<(), E2bError> {
        self.control(key, Method::DELETE, &format!("/sandboxes/{id}"), None)
            .await
            .map(|_| ())
    }

    /// The runtime of a Sandbox the control API opened.
    pub fn runtime(&self, opened: &Opened) -> RuntimeClient {
        RuntimeClient::by_id(&self.gateway, &opened.sandbox_id, opened.token.clone())
    }
}

/// E2B's error answer as an [`E2bError`]: its status and message.
fn control_error(status: StatusCode, bytes: &[u8]) -> E2bError {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let message = value["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_string());
    E2bError::Control { status, message }
}

/// What a command did: its output and exit code.
#[derive(Debug, Default, serde::Serialize)]
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i64,
}

/// The most output a command's result keeps per stream; the rest is cut, and said so.
pub const MAX_OUTPUT: usize = 1 << 20;

/// Runs `command` with `/bin/sh -c` to its end (or `timeout_ms`), collecting its output.
pub async fn run(
    runtime: &RuntimeClient,
    command: &str,
    timeout_ms: Option<u64>,
) -> Result<Ran, E2bError> {
    let start = serde_json::json!({
        "process": { "cmd": "/bin/sh", "args": ["-c", command] },
        "stdin": false,
    });
    let mut stream = runtime
        .stream("process.Process/Start", start, timeout_ms)
        .await?;
    let mut ran = Ran::default();
    let mut exited = false;
    while let Some(message) = stream.next().await? {
        let event = &message["event"];
        for (field, out) in [("stdout", &mut ran.stdout), ("stderr", &mut ran.stderr)] {
            if let Some(data) = event["data"][field].as_str() {
                append(out, data);
            }
        }
        if let Some(end) = event.get("end") {
            ran.exit_code = end["exitCode"].as_i64().unwrap_or(0);
            exited = end["exited"].as_bool().unwrap_or(false);
        }
    }
    if !exited {
        return Err(E2bError::Usage(format!(
            "the command did not finish: it was stopped{}",
            timeout_ms.map_or(String::new(), |ms| format!(" after {ms} ms"))
        )));
    }
    Ok(ran)
}

/// Adds a base64 chunk of output to `out`, up to [`MAX_OUTPUT`].
fn append(out: &mut String, data: &str) {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
        return;
    };
    if out.len() >= MAX_OUTPUT {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    let room = MAX_OUTPUT - out.len();
    if text.len() > room {
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&text[..cut]);
        out.push_str("\n[output cut at 1 MiB]");
    } else {
        out.push_str(&text);
    }
}

/// The bytes of `path` in the Sandbox (`GET /files`).
pub async fn read_file(runtime: &RuntimeClient, path: &str) -> Result<Bytes, E2bError> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("path", path)
        .finish();
    let response = runtime
        .send(
            Method::GET,
            &format!("/files?{query}"),
            "application/octet-stream",
            full(Bytes::new()),
        )
        .await?;
    let status = response.status();
    let bytes = http_body_util::Limited::new(response.into_body(), MAX_OUTPUT)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            E2bError::Usage(format!("{path}: {e} (files over 1 MiB are not read here)"))
        })?;
    if !status.is_success() {
        return Err(E2bError::Usage(format!(
            "{path}: {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        )));
    }
    Ok(bytes)
}

/// Writes `content` to `path` in the Sandbox (`POST /files`, the body as it is).
pub async fn write_file(
    runtime: &RuntimeClient,
    path: &str,
    content: Bytes,
) -> Result<(), E2bError> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("path", path)
        .finish();
    let response = runtime
        .send(
            Method::POST,
            &format!("/files?{query}"),
            "application/octet-stream",
            full(content),
        )
        .await?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Err(E2bError::Usage(format!(
        "{path}: {status}: {}",
        String::from_utf8_lossy(&bytes).trim()
    )))
}

/// The entries of directory `path`: name, type and size.
pub async fn list_files(
    runtime: &RuntimeClient,
    path: &str,
) -> Result<Vec<serde_json::Value>, E2bError> {
    let listed = runtime
        .unary(
            "filesystem.Filesystem/ListDir",
            serde_json::json!({ "path": path, "depth": 1 }),
        )
        .await?;
    Ok(listed["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "name": e["name"],
                "type": e["type"],
                "size": e["size"],
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_at_its_limit_on_a_character() {
        use base64::Engine;
        let mut out = "x".repeat(MAX_OUTPUT - 1);
        append(
            &mut out,
            &base64::engine::general_purpose::STANDARD.encode("éé"),
        );
        assert!(
            out.ends_with("[output cut at 1 MiB]"),
            "{}",
            &out[out.len() - 30..]
        );
        assert!(out.len() <= MAX_OUTPUT + 32);
        let before = out.len();
        append(
            &mut out,
            &base64::engine::general_purpose::STANDARD.encode("more"),
        );
        assert_eq!(out.len(), before, "nothing is added past the limit");
    }
}
