//! Claim latency against the local control plane (release build): from creating a
//! SandboxClaim until its Ready condition is True, for a claim that takes a ready member of a
//! SandboxWarmPool (warm) and one that gets a new Sandbox (cold), one claim at a time. kwok
//! nodes: "cold" is the control plane's and the operator's share of a start (Sandbox, pod,
//! Service), without an image pull or a container start.
//!
//! ```sh
//! cargo bench --bench claims
//! SANDMAN_CLAIMS=20 cargo bench --bench claims
//! ```

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use sandman::api::{SandboxClaim, SandboxTemplate, SandboxWarmPool};
use sandman_testenv::{ControlPlane, Options};

const NAMESPACE: &str = "claims-bench";

fn main() {
    let claims: usize = std::env::var("SANDMAN_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("sandman-claims-bench-{}", std::process::id()));
    let mut options = Options::new(&dir);
    options.crds_dir = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"));
    let mut plane = ControlPlane::start(&options).expect("start the local control plane");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(&plane, claims));
    plane.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("fixture")
}

async fn run(plane: &ControlPlane, claims: usize) {
    let client = sandman_testenv::client_from_kubeconfig(plane.kubeconfig())
        .await
        .expect("client");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(serde_json::json!({ "metadata": { "name": NAMESPACE } })),
        )
        .await
        .expect("create namespace");
    let operator_client = client.clone();
    tokio::spawn(async move {
        let options = sandman::controller::Options {
            namespace: Some(NAMESPACE.into()),
            ..sandman::controller::Options::default()
        };
        let _ = sandman::controller::run(operator_client, options, std::future::pending()).await;
    });
    let templates: Api<SandboxTemplate> = Api::namespaced(client.clone(), NAMESPACE);
    for name in ["warm", "cold"] {
        templates
            .create(
                &PostParams::default(),
                &object(serde_json::json!({
                    "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxTemplate",
                    "metadata": { "name": name },
                    "spec": { "podTemplate": { "spec": { "containers": [{
                        "name": "agent", "image": "registry.example/agent:1",
                    }] } } },
                })),
            )
            .await
            .expect("template");
    }
    let pools: Api<SandboxWarmPool> = Api::namespaced(client.clone(), NAMESPACE);
    pools
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxWarmPool",
                "metadata": { "name": "warm" },
                "spec": { "replicas": 3, "sandboxTemplateRef": { "name": "warm" } },
            })),
        )
        .await
        .expect("pool");
    let api: Api<SandboxClaim> = Api::namespaced(client.clone(), NAMESPACE);
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for i in 0..claims {
        wait_pool_ready(&pools, 3).await;
        warm.push(
            claim(
                &api,
                &format!("w{i}"),
                serde_json::json!({ "warmPoolRef": { "name": "warm" } }),
            )
            .await,
        );
        cold.push(
            claim(
                &api,
                &format!("c{i}"),
                serde_json::json!({ "sandboxTemplateRef": { "name": "cold" } }),
            )
            .await,
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let p90 = |v: &Vec<Duration>| v[(v.len() * 9) / 10 - 1].as_secs_f64() * 1000.0;
    let (warm_median, cold_median) = (median(&mut warm), median(&mut cold));
    println!("\n## Claim to Ready ({claims} claims of each kind, one at a time)\n");
    println!("| claim | p50 | p90 |\n|---|---|---|");
    println!(
        "| warm (a ready pool member) | {warm_median:.1} ms | {:.1} ms |",
        p90(&warm)
    );
    println!(
        "| cold (a new Sandbox) | {cold_median:.1} ms | {:.1} ms |",
        p90(&cold)
    );
    println!("\ncold / warm: {:.1}", cold_median / warm_median);
}

async fn wait_pool_ready(pools: &Api<SandboxWarmPool>, ready: i32) {
    for _ in 0..30_000 {
        if let Ok(pool) = pools.get("warm").await
            && pool.status.is_some_and(|s| s.ready_replicas >= ready)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool never filled");
}

async fn claim(api: &Api<SandboxClaim>, name: &str, spec: serde_json::Value) -> Duration {
    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &object(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxClaim",
            "metadata": { "name": name }, "spec": spec,
        })),
    )
    .await
    .expect("claim");
    // Polled every 2 ms: fine enough against latencies of tens of milliseconds.
    for _ in 0..150_000 {
        if let Ok(claim) = api.get(name).await
            && claim.status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("claim {name} never became Ready");
}
