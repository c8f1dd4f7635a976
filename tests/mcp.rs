//! The MCP Python SDK (`mcp` from PyPI, pinned), as a client nobody here wrote, drives a
//! Sandbox through sandman's MCP server on the real node, over stdio (`sandman mcp`) and over
//! streamable HTTP (the gateway's `/mcp`): it lists the tools, creates a Sandbox from a
//! template, runs a command, writes, reads and lists files, pauses, resumes and deletes it,
//! and gets tool errors that say what went wrong.

mod common;

use common::e2b::{self, account, apply, control_gateway};
use common::real_node::real_node_with_runtime;

#[tokio::test]
async fn mcp_client_drives_a_sandbox() {
    let Some(env) = real_node_with_runtime("mcp_client").await else {
        return;
    };
    let ctx = &env.ctx;
    let gateway = control_gateway(ctx).await;
    let scheduling = env.node.scheduling();
    apply(ctx, &ctx.namespace, e2b::template("shell", &scheduling)).await;
    let key = account(ctx, &ctx.namespace, "agent", true).await;
    let url = format!("http://{}", gateway.addr);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    for transport in ["stdio", "http"] {
        let output = tokio::process::Command::new(sandman_testenv::clients::mcp_python())
            .arg(&script)
            .args([
                transport,
                env!("CARGO_BIN_EXE_sandman"),
                &url,
                "shell",
                &key,
            ])
            .kill_on_drop(true)
            .output()
            .await
            .expect("python");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "ok",
            "{transport}: stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // `delete_sandbox` took the claim with it.
        e2b::no_claims_left(ctx, "the deleted sandbox's claim to go").await;
    }
}
