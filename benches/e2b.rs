//! The E2B Python SDK (`e2b` from PyPI, pinned) against sandman on the local cluster's real
//! node under runc, through the gateway's control API (release build):
//!
//! - `Sandbox.create()` to the first command's output, from a warm pool and cold;
//! - `pause()`, and `connect()` to the first command's output: files kept on a plain
//!   template, memory restored on one whose pods checkpoint;
//! - `commands.run("true")` through the SDK;
//! - the API key's reviews (TokenReview and SubjectAccessReview), cached and not.
//!
//! Needs what `tests/e2b.rs` needs.
//!
//! ```sh
//! cargo bench --bench e2b
//! SANDMAN_E2B_ROUNDS=20 cargo bench --bench e2b
//! ```

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use sandman::api::SandboxWarmPool;
use sandman::gateway::control::identity::{Reviews, Verb};
use sandman_testenv::real_node::RealNode;

const NAMESPACE: &str = "e2b-bench";

fn main() {
    // `RUST_LOG=sandman::gateway=debug` shows each create's steps, timed.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rounds = common::setting("SANDMAN_E2B_ROUNDS", 10);
    common::on_control_plane("e2b", |plane, dir| async move {
        let client = sandman_testenv::client_from_kubeconfig(plane.kubeconfig())
            .await
            .expect("client");
        run(client, plane.kubeconfig(), &dir, rounds).await;
        plane
    });
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

async fn apply(client: &kube::Client, value: serde_json::Value) {
    let object: kube::api::DynamicObject = serde_json::from_value(value).expect("an object");
    let gvk = kube::api::GroupVersionKind::try_from(object.types.as_ref().expect("types"))
        .expect("a kind");
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .expect("discovery");
    Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &resource)
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
}

/// The operator, two templates (`pooled` with a warm pool of `pool`), and a ServiceAccount
/// with the E2B rules; its token.
async fn set_up(client: &kube::Client, node: &RealNode, pool: usize) -> String {
    let operator_client = client.clone();
    tokio::spawn(async move {
        let options = sandman::controller::Options {
            namespace: Some(NAMESPACE.into()),
            min_dwell: Duration::ZERO,
            runtime_image: Some(sandman_testenv::runtime_image::REFERENCE.into()),
            supervisor_image: Some(sandman_testenv::supervisor_image::REFERENCE.into()),
            ..sandman::controller::Options::default()
        };
        let _ = sandman::controller::run(operator_client, options, std::future::pending()).await;
    });
    let scheduling = node.scheduling();
    apply(client, serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxTemplate",
        "metadata": { "name": "keeper" },
        "spec": {
            "runtime": { "enabled": true },
            "lifecycle": { "checkpoint": "OnSuspend" },
            "podTemplate": { "spec": {
                "nodeSelector": scheduling["nodeSelector"],
                "tolerations": scheduling["tolerations"],
                "containers": [{ "name": "agent", "image": "busybox", "command": ["sleep", "100000"],
                    "volumeMounts": [{ "name": "workspace", "mountPath": "/workspace" }] }],
            }},
            "volumeClaimTemplates": [{
                "metadata": { "name": "workspace" },
                "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
            }],
        },
    }))
    .await;
    for template in ["shell", "pooled"] {
        apply(client, serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxTemplate",
            "metadata": { "name": template },
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
    }
    apply(
        client,
        serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxWarmPool",
            "metadata": { "name": "pooled" },
            "spec": { "replicas": pool, "sandboxTemplateRef": { "name": "pooled" } },
        }),
    )
    .await;
    apply(client, serde_json::json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "framework" } })).await;
    apply(client, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "e2b" },
        "rules": [
            { "apiGroups": ["sandman.dev"], "resources": ["sandboxclaims"], "verbs": ["create", "get", "list", "patch", "delete"] },
            { "apiGroups": ["sandman.dev"], "resources": ["sandboxes"], "verbs": ["get", "patch"] },
            { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] },
        ],
    }))
    .await;
    apply(client, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "e2b" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "e2b" },
        "subjects": [{ "kind": "ServiceAccount", "name": "framework", "namespace": NAMESPACE }],
    }))
    .await;
    token(client).await
}

async fn token(client: &kube::Client) -> String {
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({ "spec": { "audiences": [] } }))
            .expect("a token request");
    Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .create_token_request("framework", &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

/// Waits until the pool has `want` Sandboxes ready to be claimed.
async fn pool_ready(client: &kube::Client, want: usize) {
    let pools: Api<SandboxWarmPool> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = pools
            .get("pooled")
            .await
            .ok()
            .and_then(|p| p.status)
            .map_or(0, |s| s.ready_replicas);
        if usize::try_from(ready).unwrap_or(0) >= want {
            return;
        }
        assert!(Instant::now() < deadline, "the pool did not fill");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Milliseconds of one identify-and-authorize, with fresh caches (`fresh`) or warm ones.
async fn reviews(client: &kube::Client, key: &str, calls: usize) -> (Vec<f64>, Vec<f64>) {
    let mut uncached = Vec::new();
    for _ in 0..calls {
        let reviews = Reviews::new(client.clone());
        let started = Instant::now();
        let caller = reviews.identify(key).await.expect("a caller");
        reviews
            .authorize(&caller, Verb::Get)
            .await
            .expect("allowed");
        uncached.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let reviews = Reviews::new(client.clone());
    let caller = reviews.identify(key).await.expect("a caller");
    reviews
        .authorize(&caller, Verb::Get)
        .await
        .expect("allowed");
    let mut cached = Vec::new();
    for _ in 0..calls {
        let started = Instant::now();
        let caller = reviews.identify(key).await.expect("a caller");
        reviews
            .authorize(&caller, Verb::Get)
            .await
            .expect("allowed");
        cached.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    (uncached, cached)
}

async fn run(
    client: kube::Client,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    rounds: usize,
) {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox (busybox-static)");
    for applet in ["sh", "true", "sleep", "cat", "echo", "nc", "mkdir"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
    }
    // E2B's SDKs run commands with `/bin/bash -l -c`: Debian's static bash (bash-static).
    std::fs::copy("/bin/bash-static", bin.join("bash")).expect("bash (bash-static)");
    common::namespace(&client, NAMESPACE).await;
    let node = RealNode::start(client.clone(), 0, &dir.join("node"), &rootfs)
        .await
        .expect("real node");
    node.load_image(
        sandman_testenv::runtime_image::REFERENCE,
        sandman_testenv::runtime_image::runtime_image(),
    );
    common::load_supervisor(&node, dir, &rootfs, env!("CARGO_BIN_EXE_sandman"));
    let key = set_up(&client, &node, rounds).await;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = Default::default();
    let gateway = sandman::gateway::start(
        client.clone(),
        sandman::gateway::Options {
            listen: "127.0.0.1:0".parse().expect("address"),
            namespace: Some(NAMESPACE.into()),
            control: Some(sandman::gateway::control::Control { config }),
            ..sandman::gateway::Options::default()
        },
    )
    .await
    .expect("gateway");
    pool_ready(&client, rounds).await;
    let url = format!("http://{}", gateway.addr);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/bench.py");
    let output = tokio::process::Command::new(sandman_testenv::clients::e2b_python())
        .arg(script)
        .args(["shell", "pooled", "keeper", &key, &rounds.to_string()])
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .output()
        .await
        .expect("python");
    assert!(
        output.status.success(),
        "the SDK's run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("a timing");
        times
            .entry(value["what"].as_str().expect("what").to_string())
            .or_default()
            .push(value["ms"].as_f64().expect("ms"));
    }
    let (uncached, cached) = reviews(&client, &key, rounds * 10).await;
    times.insert("reviews_uncached".into(), uncached);
    times.insert("reviews_cached".into(), cached);
    println!("\n## The E2B SDK through sandman (runc, {rounds} rounds)\n");
    println!("| what | p50 | p99 | n |\n|---|---|---|---|");
    for (what, label) in [
        (
            "create_warm",
            "`Sandbox.create()` to the first output, from a warm pool",
        ),
        (
            "create_cold",
            "`Sandbox.create()` to the first output, cold",
        ),
        (
            "create_warm_answer",
            "`Sandbox.create()` answered, from a warm pool",
        ),
        ("create_cold_answer", "`Sandbox.create()` answered, cold"),
        ("pause", "`pause()`"),
        ("connect", "`connect()` to the first output (files kept)"),
        (
            "pause_memory",
            "`pause()` on a template that checkpoints (memory kept)",
        ),
        (
            "connect_memory",
            "`connect()` to the first output, memory restored",
        ),
        ("run_true", "`commands.run(\"true\")`"),
        (
            "reviews_uncached",
            "the key's reviews, not cached (TokenReview + SubjectAccessReview)",
        ),
        ("reviews_cached", "the key's reviews, cached"),
    ] {
        let values = times.get_mut(what).expect(what);
        let n = values.len();
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {n} |",
            percentile(values, 0.5),
            percentile(values, 0.99)
        );
    }
}
