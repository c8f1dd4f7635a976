//! The MCP Python SDK (`mcp` from PyPI, pinned), as a client nobody here wrote, drives a
//! Sandbox through sandman's MCP server on the real node, over stdio (`sandman mcp`) and over
//! streamable HTTP (the gateway's `/mcp`): it lists the tools, creates a Sandbox from a
//! template, runs a command, writes, reads and lists files, pauses, resumes and deletes it,
//! and gets tool errors that say what went wrong.

mod common;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use sandman::api::SandboxClaim;
use sandman::gateway;
use sandman_testenv::harness::{TestContext, eventually};

use common::WAIT;
use common::real_node::real_node_with_runtime;

async fn apply(ctx: &TestContext, value: serde_json::Value) {
    let object: kube::api::DynamicObject = serde_json::from_value(value).expect("an object");
    let gvk = kube::api::GroupVersionKind::try_from(object.types.as_ref().expect("types"))
        .expect("a kind");
    let (resource, _) = kube::discovery::pinned_kind(&ctx.client, &gvk)
        .await
        .expect("discovery");
    Api::<kube::api::DynamicObject>::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource)
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
}

/// A ServiceAccount with the rules docs/e2b.md gives, and its token.
async fn key(ctx: &TestContext) -> String {
    apply(
        ctx,
        serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "agent" },
        }),
    )
    .await;
    apply(ctx, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "agent" },
        "rules": [
            { "apiGroups": ["sandman.dev"], "resources": ["sandboxclaims"],
              "verbs": ["create", "get", "list", "patch", "delete"] },
            { "apiGroups": ["sandman.dev"], "resources": ["sandboxes"], "verbs": ["get", "patch"] },
            { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] },
        ],
    }))
    .await;
    apply(ctx, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "agent" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent" },
        "subjects": [{ "kind": "ServiceAccount", "name": "agent", "namespace": ctx.namespace }],
    }))
    .await;
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({ "spec": { "audiences": [] } }))
            .expect("a token request");
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create_token_request("agent", &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

#[tokio::test]
async fn mcp_client_drives_a_sandbox() {
    let Some(env) = real_node_with_runtime("mcp_client").await else {
        return;
    };
    let ctx = &env.ctx;
    let kubeconfig = kube::config::Kubeconfig::read_from(ctx.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = Default::default();
    let mut options = common::gateway::options(ctx);
    options.control = Some(gateway::control::Control { config });
    let gateway = gateway::start(ctx.client.clone(), options)
        .await
        .expect("gateway");
    let scheduling = env.node.scheduling();
    apply(
        ctx,
        serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxTemplate",
            "metadata": { "name": "shell" },
            "spec": {
                "runtime": { "enabled": true },
                "podTemplate": { "spec": {
                    "nodeSelector": scheduling["nodeSelector"],
                    "tolerations": scheduling["tolerations"],
                    "containers": [{
                        "name": "agent", "image": "busybox", "command": ["sleep", "100000"],
                        "volumeMounts": [{ "name": "workspace", "mountPath": "/workspace" }],
                    }],
                }},
                "volumeClaimTemplates": [{
                    "metadata": { "name": "workspace" },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": { "requests": { "storage": "1Gi" } },
                    },
                }],
            },
        }),
    )
    .await;
    let key = key(ctx).await;
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
        let claims: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        eventually("the deleted sandbox's claim to go", WAIT, || async {
            claims
                .list(&Default::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
        })
        .await;
    }
}
