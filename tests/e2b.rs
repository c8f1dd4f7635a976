//! The E2B SDK (`e2b` from PyPI, pinned), unmodified, drives sandman through the gateway's
//! control API and the in-Sandbox runtime: `Sandbox.create` claims a template (from a warm
//! pool or not), commands and files run inside, pause and connect keep the files, `list`
//! filters by metadata, `kill` ends the claim. An API key is a ServiceAccount token: the
//! gateway reviews it, its namespace is the only one it reaches, and RBAC decides the rest.

mod common;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use sandman::api::SandboxClaim;
use sandman::gateway::Gateway;
use sandman_testenv::harness::{TestContext, eventually};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use common::WAIT;
use common::e2b::{self, account, apply, control_gateway};
use common::real_node::real_node_with_runtime;

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/e2b/{name}"))
}

fn sdk(gateway: &Gateway, script_name: &str, args: &[&str]) -> tokio::process::Command {
    let url = format!("http://{}", gateway.addr);
    let mut command = tokio::process::Command::new(sandman_testenv::clients::e2b_python());
    command
        .arg(script(script_name))
        .args(args)
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .kill_on_drop(true);
    command
}

/// Runs `script_name` to its end; it prints "ok" when all it checked held. `more` is said
/// beside its stderr when it did not.
async fn passes(
    gateway: &Gateway,
    script_name: &str,
    args: &[&str],
    more: impl FnOnce() -> String,
) {
    let output = sdk(gateway, script_name, args)
        .output()
        .await
        .expect("python");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok",
        "stderr:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        more()
    );
}

/// Runs a refusal case of `refusals.py`: the SDK was refused as it should be.
async fn refused(gateway: &Gateway, args: &[&str]) {
    passes(gateway, "refusals.py", args, String::new).await;
}

/// The JavaScript SDK's scenario, copied beside the pinned SDK so that `import 'e2b'` finds it.
fn node_sdk(gateway: &Gateway, args: &[&str]) -> tokio::process::Command {
    let project = script("js");
    let dir = sandman_testenv::clients::e2b_js_project(&project);
    std::fs::copy(project.join("scenario.mjs"), dir.join("scenario.mjs")).expect("the scenario");
    let url = format!("http://{}", gateway.addr);
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("scenario.mjs"))
        .args(args)
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn e2b_python_sdk_scenario_passes() {
    scenario("e2b_python", |gateway, args| {
        sdk(gateway, "scenario.py", args)
    })
    .await;
}

#[tokio::test]
async fn e2b_js_sdk_scenario_passes() {
    scenario("e2b_js", node_sdk).await;
}

/// Templates `shell` and `pooled` (with a warm pool of one) on the real node.
async fn templates(env: &common::real_node::Node) {
    let ctx = &env.ctx;
    let scheduling = env.node.scheduling();
    for name in ["shell", "pooled"] {
        apply(ctx, &ctx.namespace, e2b::template(name, &scheduling)).await;
    }
    let pool = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxWarmPool",
        "metadata": { "name": "pooled" },
        "spec": { "replicas": 1, "sandboxTemplateRef": { "name": "pooled" } },
    });
    apply(ctx, &ctx.namespace, pool).await;
}

/// One SDK's scenario on the real node: two templates (one with a warm pool), a key with the
/// E2B rules; the claim the SDK made is looked at while it waits, and is gone after `kill`.
async fn scenario(test: &str, sdk: impl FnOnce(&Gateway, &[&str]) -> tokio::process::Command) {
    let Some(env) = real_node_with_runtime(test).await else {
        return;
    };
    let ctx = &env.ctx;
    let gateway = control_gateway(ctx).await;
    templates(&env).await;
    let key = account(ctx, &ctx.namespace, "framework", true).await;
    let mut child = sdk(&gateway, &["shell", "pooled", &key])
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
    // The SDK's sandbox is a claim anyone may see with `kubectl get sbxc`, and the warm one
    // it killed before is gone.
    let claims: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let listed = eventually("only the second claim", WAIT, || async {
        claims
            .list(&Default::default())
            .await
            .ok()
            .filter(|l| l.items.len() == 1)
    })
    .await;
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
    e2b::no_claims_left(ctx, "the killed sandbox's claim to go").await;
    // The first sandbox, made from the pooled template by its name alone, was the pool's.
    let bound = common::agent::event_notes(ctx, "Bound").await;
    assert!(
        bound.iter().any(|n| n.ends_with("from pool pooled")),
        "no claim took the warm member: {bound:?}"
    );
}

#[tokio::test]
async fn invalid_api_key_is_refused() {
    let ctx = TestContext::new("e2b_invalid_key").await;
    let gateway = control_gateway(&ctx).await;
    refused(&gateway, &["invalid", "not-a-kubernetes-token"]).await;
}

#[tokio::test]
async fn a_key_without_rbac_for_claims_is_refused() {
    let ctx = TestContext::new("e2b_forbidden").await;
    let gateway = control_gateway(&ctx).await;
    let key = account(&ctx, &ctx.namespace, "stranger", false).await;
    refused(&gateway, &["forbidden", &key]).await;
}

#[tokio::test]
async fn e2b_sdk_cannot_reach_another_namespaces_sandbox() {
    let ctx = TestContext::new("e2b_foreign").await;
    let _operator = common::Operator::start(&ctx);
    let gateway = control_gateway(&ctx).await;
    // A Sandbox of this namespace; a tenant of another namespace, with every right there.
    common::create(&ctx, &common::sandbox("theirs", false)).await;
    let theirs = sandman::api::sandbox_id(&ctx.namespace, "theirs");
    let other = format!("{}-other", ctx.namespace);
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": other } }))
            .expect("a namespace");
    Api::<Namespace>::all(ctx.client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("the other namespace");
    eventually("the other namespace's default account", WAIT, || async {
        Api::<ServiceAccount>::namespaced(ctx.client.clone(), &other)
            .get_opt("default")
            .await
            .ok()
            .flatten()
    })
    .await;
    let key = account(&ctx, &other, "tenant", true).await;
    // The owner finds it first (so the gateway knows the id): the 404s are refusals.
    let owner = account(&ctx, &ctx.namespace, "owner", true).await;
    refused(&gateway, &["foreign", &key, &theirs, &owner]).await;
    let still: Api<sandman::api::Sandbox> = common::sandboxes(&ctx);
    assert!(
        still.get_opt("theirs").await.expect("get").is_some(),
        "the other tenant's kill reached it"
    );
}

#[tokio::test]
async fn e2b_pause_keeps_memory_where_the_template_checkpoints() {
    let Some(env) = common::real_node::node_that_checkpoints("e2b_memory", true).await else {
        return;
    };
    let ctx = &env.ctx;
    let gateway = control_gateway(ctx).await;
    let mut template = e2b::template("keeper", &env.node.scheduling());
    template["spec"]["lifecycle"] = serde_json::json!({ "checkpoint": "OnSuspend" });
    apply(ctx, &ctx.namespace, template).await;
    let key = account(ctx, &ctx.namespace, "framework", true).await;
    passes(&gateway, "memory.py", &["keeper", &key], || {
        env.container_logs()
    })
    .await;
    e2b::no_claims_left(ctx, "the killed sandbox's claim to go").await;
}
