//! Claim latency against the local control plane (release build): from creating a
//! SandboxClaim until its Ready condition is True, for a claim that takes a ready member of a
//! SandboxWarmPool (warm) and one that gets a new Sandbox (cold), one claim at a time. kwok
//! nodes: "cold" is the control plane's and the operator's share of a start (Sandbox, pod,
//! Service), without an image pull or a container start. Also the API writes made while each
//! claim was served (from the API server's `apiserver_request_total`), and the time a pool of
//! 100 takes to become Ready.
//!
//! ```sh
//! cargo bench --bench claims
//! SANDMAN_CLAIMS=20 cargo bench --bench claims
//! ```

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use sandman::api::{SandboxClaim, SandboxTemplate, SandboxWarmPool};
use sandman_testenv::apiserver::{self, Counts};
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
    for name in ["warm", "cold", "big"] {
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
    let (mut warm_writes, mut cold_writes) = (Counts::new(), Counts::new());
    for i in 0..claims {
        wait_pool_ready(&pools, "warm", 3).await;
        let (took, writes) = claim(
            &client,
            &api,
            &format!("w{i}"),
            serde_json::json!({ "warmPoolRef": { "name": "warm" } }),
        )
        .await;
        warm.push(took);
        add(&mut warm_writes, writes);
        let (took, writes) = claim(
            &client,
            &api,
            &format!("c{i}"),
            serde_json::json!({ "sandboxTemplateRef": { "name": "cold" } }),
        )
        .await;
        cold.push(took);
        add(&mut cold_writes, writes);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // Nearest rank: with 20 claims, p99 is the slowest.
    let rank = |v: &Vec<Duration>, p: f64| {
        let index = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        ms(v[index])
    };
    warm.sort();
    cold.sort();
    println!("\n## Claim to Ready ({claims} claims of each kind, one at a time)\n");
    println!("| claim | p50 | p99 |\n|---|---|---|");
    for (label, v) in [
        ("warm (a ready pool member)", &warm),
        ("cold (a new Sandbox)", &cold),
    ] {
        println!(
            "| {label} | {:.1} ms | {:.1} ms |",
            rank(v, 0.5),
            rank(v, 0.99)
        );
    }
    println!("\ncold / warm: {:.1}", rank(&cold, 0.5) / rank(&warm, 0.5));
    for (label, writes) in [("warm", &warm_writes), ("cold", &cold_writes)] {
        println!("\n### API writes while a {label} claim was served, per claim\n");
        println!("| verb | resource | subresource | per claim |\n|---|---|---|---|");
        for ((verb, resource, subresource), count) in writes {
            println!(
                "| {verb} | {resource} | {subresource} | {:.2} |",
                count / claims as f64
            );
        }
    }

    // A pool of 100 from nothing.
    let started = Instant::now();
    pools
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxWarmPool",
                "metadata": { "name": "big" },
                "spec": { "replicas": 100, "sandboxTemplateRef": { "name": "big" } },
            })),
        )
        .await
        .expect("pool of 100");
    wait_pool_ready(&pools, "big", 100).await;
    println!(
        "\n## A pool of 100 from nothing to 100 Ready members: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn add(total: &mut Counts, more: Counts) {
    for (key, value) in more {
        *total.entry(key).or_default() += value;
    }
}

async fn wait_pool_ready(pools: &Api<SandboxWarmPool>, name: &str, ready: i32) {
    for _ in 0..30_000 {
        if let Ok(pool) = pools.get(name).await
            && pool.status.is_some_and(|s| s.ready_replicas >= ready)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool never filled");
}

/// Claims, waits until the claim is Ready, and returns how long that took and the API writes
/// made meanwhile (by anyone: the operator, and kwok and the scheduler for a new pod).
async fn claim(
    client: &Client,
    api: &Api<SandboxClaim>,
    name: &str,
    spec: serde_json::Value,
) -> (Duration, Counts) {
    let before = apiserver::write_counts(client).await;
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
            let took = started.elapsed();
            let after = apiserver::write_counts(client).await;
            let writes = after
                .into_iter()
                .filter_map(|(key, value)| {
                    let delta = value - before.get(&key).copied().unwrap_or(0.0);
                    (delta > 0.0).then_some((key, delta))
                })
                .collect();
            return (took, writes);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("claim {name} never became Ready");
}
