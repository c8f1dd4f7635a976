//! The E2B SDK (`e2b` from PyPI, pinned), unmodified, drives sandman through the gateway's
//! control API and the in-Sandbox runtime, on the real node: `Sandbox.create` claims a
//! template, commands and files run inside, `connect` and `get_info` find it, `kill` ends the
//! claim; every call acts with the caller's Kubernetes token, so RBAC decides.

mod common;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use sandman::api::SandboxClaim;
use sandman::gateway;
use sandman_testenv::harness::{TestContext, eventually};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use common::WAIT;
use common::real_node::real_node_with_runtime;

async fn apply(ctx: &TestContext, value: serde_json::Value) {
    let object: kube::api::DynamicObject = serde_json::from_value(value).expect("an object");
    let gvk = kube::api::GroupVersionKind::try_from(object.types.as_ref().expect("types"))
        .expect("a kind");
    let (resource, _) = kube::discovery::pinned_kind(&ctx.client, &gvk)
        .await
        .expect("discovery");
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource);
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
}

/// A ServiceAccount's token; with `rights`, a Role and RoleBinding that let it claim
/// templates, read and resume Sandboxes and read their tokens.
async fn account(ctx: &TestContext, name: &str, rights: bool) -> String {
    apply(
        ctx,
        serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name },
        }),
    )
    .await;
    if rights {
        apply(ctx, serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": name },
            "rules": [
                { "apiGroups": ["sandman.dev"], "resources": ["sandboxclaims"], "verbs": ["create", "get", "delete"] },
                { "apiGroups": ["sandman.dev"], "resources": ["sandboxes"], "verbs": ["get", "patch"] },
                { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] },
            ],
        }))
        .await;
        apply(ctx, serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ctx.namespace }],
        }))
        .await;
    }
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({ "spec": { "audiences": [] } }))
            .expect("a token request");
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

#[tokio::test]
async fn the_e2b_sdk_creates_runs_and_kills_through_the_control_api() {
    let Some(env) = real_node_with_runtime("e2b_control").await else {
        return;
    };
    let ctx = &env.ctx;
    let kubeconfig = kube::config::Kubeconfig::read_from(ctx.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = Default::default();
    let mut options = common::gateway::options(ctx);
    options.control = Some(gateway::control::Control {
        config,
        namespace: ctx.namespace.clone(),
    });
    let gateway = gateway::start(ctx.client.clone(), options)
        .await
        .expect("gateway");
    let scheduling = env.node.scheduling();
    apply(ctx, serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxTemplate",
        "metadata": { "name": "shell" },
        "spec": {
            "runtime": { "enabled": true },
            "podTemplate": { "spec": {
                "nodeSelector": scheduling["nodeSelector"],
                "tolerations": scheduling["tolerations"],
                "containers": [{ "name": "agent", "image": "busybox", "command": ["sleep", "100000"] }],
            }},
        },
    }))
    .await;
    let allowed = account(ctx, "framework", true).await;
    let refused = account(ctx, "stranger", false).await;
    let url = format!("http://{}", gateway.addr);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/control.py");
    let mut child = tokio::process::Command::new(sandman_testenv::e2b_sdk::python())
        .arg(script)
        .args(["shell", &allowed, &refused])
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let Ok(Some(id)) = stdout.next_line().await else {
        let output = child.wait_with_output().await.expect("python");
        panic!(
            "the SDK made no sandbox:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    // The SDK's sandbox is a claim anyone may see with `kubectl get sbxc`.
    let claims: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let listed = claims.list(&Default::default()).await.expect("claims");
    assert_eq!(listed.items.len(), 1);
    let bound = listed.items[0]
        .status
        .as_ref()
        .and_then(|s| s.sandbox.as_ref())
        .expect("a bound Sandbox");
    assert_eq!(id, sandman::api::sandbox_id(&ctx.namespace, &bound.name));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"\n").await.expect("go on");
    drop(stdin);
    let rest = stdout.next_line().await.expect("stdout");
    let output = child.wait_with_output().await.expect("python");
    assert_eq!(
        rest.as_deref(),
        Some("ok"),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually("the killed sandbox's claim to go", WAIT, || async {
        claims
            .list(&Default::default())
            .await
            .ok()
            .filter(|l| l.items.is_empty())
    })
    .await;
}
