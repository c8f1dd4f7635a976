//! The MCP tools: create a Sandbox from a template, run a command, read, write and list files,
//! pause, resume and delete. Each acts with the caller's API key, through E2B's API on the
//! gateway, so the same reviews and RBAC decide as for the E2B SDKs. A failure is a tool
//! error (`isError`) whose text says what went wrong, never a protocol error.

use bytes::Bytes;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, schemars, tool, tool_router};
use serde::Deserialize;

use super::e2b::{self, E2bClient, E2bError};

/// The MCP server's state: where sandman's gateway is, and the key stdio callers use.
#[derive(Clone)]
pub struct SandboxTools {
    e2b: E2bClient,
    /// The key of a stdio server; over HTTP each request brings its own.
    key: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct CreateArgs {
    /// The SandboxTemplate to make the Sandbox from, in the key's namespace.
    pub template: String,
    /// Seconds until the Sandbox is deleted (default 300, at most 86400).
    pub timeout_seconds: Option<u64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct SandboxArgs {
    /// The Sandbox's id, as `create_sandbox` gave it.
    pub sandbox_id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct RunArgs {
    pub sandbox_id: String,
    /// A shell command, run with `/bin/sh -c`.
    pub command: String,
    /// Seconds the command may run (default 60).
    pub timeout_seconds: Option<u64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct PathArgs {
    pub sandbox_id: String,
    /// An absolute path in the Sandbox.
    pub path: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct WriteArgs {
    pub sandbox_id: String,
    /// An absolute path in the Sandbox; missing directories are made.
    pub path: String,
    /// The file's new content (text).
    pub content: String,
}

/// A command's default time limit.
const DEFAULT_COMMAND_SECONDS: u64 = 60;

fn failed(what: &str, e: &E2bError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("{what}: {e}"))])
}

fn json(value: &serde_json::Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(value.to_string())])
}

impl SandboxTools {
    pub fn new(e2b: E2bClient, key: Option<String>) -> Self {
        SandboxTools { e2b, key }
    }

    /// The caller's key: over HTTP its `Authorization: Bearer` or `X-API-KEY`, else the
    /// stdio server's.
    fn key(&self, context: &RequestContext<RoleServer>) -> Result<String, E2bError> {
        let from_http = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| super::key_of(&parts.headers));
        from_http
            .or_else(|| self.key.clone())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                E2bError::Usage(
                    "no API key: send `Authorization: Bearer <ServiceAccount token>` \
                     (or set E2B_API_KEY for `sandman mcp`)"
                        .into(),
                )
            })
    }

    /// The running Sandbox `id`'s runtime (resumed if it sleeps).
    async fn opened(
        &self,
        context: &RequestContext<RoleServer>,
        id: &str,
    ) -> Result<crate::runtime_client::RuntimeClient, E2bError> {
        let key = self.key(context)?;
        let opened = self.e2b.open(&key, id).await?;
        Ok(self.e2b.runtime(&opened))
    }
}

#[tool_router(server_handler)]
impl SandboxTools {
    #[tool(
        description = "Create a Sandbox from a SandboxTemplate; answers its sandbox_id once it runs"
    )]
    async fn create_sandbox(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<CreateArgs>,
    ) -> CallToolResult {
        let created = async {
            let key = self.key(&context)?;
            let timeout = args.timeout_seconds.unwrap_or(300);
            self.e2b.create(&key, &args.template, timeout).await
        };
        match created.await {
            Ok(opened) => json(&serde_json::json!({ "sandbox_id": opened.sandbox_id })),
            Err(e) => failed(&format!("create a Sandbox of {}", args.template), &e),
        }
    }

    #[tool(
        description = "Run a shell command in a Sandbox (resuming it if paused); answers stdout, stderr and exit_code"
    )]
    async fn run_command(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<RunArgs>,
    ) -> CallToolResult {
        let ran = async {
            let runtime = self.opened(&context, &args.sandbox_id).await?;
            let seconds = args.timeout_seconds.unwrap_or(DEFAULT_COMMAND_SECONDS);
            e2b::run(&runtime, &args.command, Some(seconds.saturating_mul(1000))).await
        };
        match ran.await {
            Ok(ran) => json(&serde_json::json!(ran)),
            Err(e) => failed(&format!("run {:?}", args.command), &e),
        }
    }

    #[tool(description = "Read a text file in a Sandbox (at most 1 MiB)")]
    async fn read_file(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<PathArgs>,
    ) -> CallToolResult {
        let read = async {
            let runtime = self.opened(&context, &args.sandbox_id).await?;
            e2b::read_file(&runtime, &args.path).await
        };
        match read.await {
            Ok(bytes) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
                Err(_) => CallToolResult::error(vec![ContentBlock::text(format!(
                    "read {}: it is not UTF-8 text ({} bytes)",
                    args.path,
                    bytes.len()
                ))]),
            },
            Err(e) => failed(&format!("read {}", args.path), &e),
        }
    }

    #[tool(description = "Write a text file in a Sandbox, making missing directories")]
    async fn write_file(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<WriteArgs>,
    ) -> CallToolResult {
        let written = async {
            let runtime = self.opened(&context, &args.sandbox_id).await?;
            e2b::write_file(&runtime, &args.path, Bytes::from(args.content.clone())).await
        };
        match written.await {
            Ok(()) => {
                json(&serde_json::json!({ "written": args.path, "bytes": args.content.len() }))
            }
            Err(e) => failed(&format!("write {}", args.path), &e),
        }
    }

    #[tool(description = "List a directory in a Sandbox: each entry's name, type and size")]
    async fn list_files(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<PathArgs>,
    ) -> CallToolResult {
        let listed = async {
            let runtime = self.opened(&context, &args.sandbox_id).await?;
            e2b::list_files(&runtime, &args.path).await
        };
        match listed.await {
            Ok(entries) => json(&serde_json::json!({ "entries": entries })),
            Err(e) => failed(&format!("list {}", args.path), &e),
        }
    }

    #[tool(
        description = "Pause (suspend) a Sandbox: its pod goes, its volumes stay; answers what was kept"
    )]
    async fn pause_sandbox(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> CallToolResult {
        let paused = async {
            let key = self.key(&context)?;
            self.e2b.pause(&key, &args.sandbox_id).await
        };
        match paused.await {
            Ok(kept) => json(&serde_json::json!({ "paused": args.sandbox_id, "kept": kept })),
            Err(e) => failed(&format!("pause {}", args.sandbox_id), &e),
        }
    }

    #[tool(description = "Resume a paused Sandbox; answers once it runs")]
    async fn resume_sandbox(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> CallToolResult {
        match self.opened(&context, &args.sandbox_id).await {
            Ok(_) => json(&serde_json::json!({ "running": args.sandbox_id })),
            Err(e) => failed(&format!("resume {}", args.sandbox_id), &e),
        }
    }

    #[tool(description = "Delete a Sandbox and its claim")]
    async fn delete_sandbox(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> CallToolResult {
        let deleted = async {
            let key = self.key(&context)?;
            self.e2b.kill(&key, &args.sandbox_id).await
        };
        match deleted.await {
            Ok(()) => json(&serde_json::json!({ "deleted": args.sandbox_id })),
            Err(e) => failed(&format!("delete {}", args.sandbox_id), &e),
        }
    }
}
