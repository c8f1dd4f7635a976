//! sandman's MCP server, for agents that speak the Model Context Protocol: tools to create a
//! Sandbox, run commands in it, move files and pause, resume or delete it. It is served over
//! stdio (`sandman mcp`) and over streamable HTTP on the gateway (`/mcp`), built on `rmcp`,
//! the protocol's Rust SDK.
//!
//! Its tools are a client of E2B's API on the gateway ([`e2b`]), so the identity model is
//! the control API's: the caller's key is a ServiceAccount token, reviewed by the gateway, and
//! reaches its own namespace only.

pub mod e2b;
mod tools;

use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

pub use tools::SandboxTools;

/// Why the stdio server stopped.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP session: {0}")]
    Session(String),
}

/// The path MCP clients reach the gateway's server at.
pub const PATH: &str = "/mcp";
/// The largest MCP request body the gateway reads.
const MAX_REQUEST: usize = 4 << 20;

/// The API key a request carries: `Authorization: Bearer` (what MCP clients send), else
/// E2B's `X-API-KEY`.
pub fn key_of(headers: &http::HeaderMap) -> Option<String> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string());
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|k| k.trim().to_string())
    })
}

/// Serves MCP over stdin and stdout until the client closes them, with `key` for every call.
pub async fn serve_stdio(gateway: &str, key: String) -> Result<(), McpError> {
    let tools = SandboxTools::new(e2b::E2bClient::new(gateway), Some(key));
    let running = tools
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Session(e.to_string()))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| McpError::Session(e.to_string()))
}

/// The streamable HTTP server the gateway mounts at [`PATH`]: stateless (each request is
/// answered on its own, with its own key), JSON answers, whatever `Host` the gateway is
/// reached by (the key, not the host, is what is checked).
pub fn http_service(gateway: &str) -> StreamableHttpService<SandboxTools, NeverSessionManager> {
    let client = e2b::E2bClient::new(gateway);
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MAX_REQUEST);
    StreamableHttpService::new(
        move || Ok(SandboxTools::new(client.clone(), None)),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_bearer_token_or_e2bs_header() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(key_of(&headers), None);
        headers.insert("x-api-key", "e2b".parse().expect("a header"));
        assert_eq!(key_of(&headers).as_deref(), Some("e2b"));
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer token".parse().expect("a header"),
        );
        assert_eq!(key_of(&headers).as_deref(), Some("token"));
    }
}
