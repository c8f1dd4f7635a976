//! Real containers on the local cluster's real node (`sandman_testenv::real_node`: runc and
//! gVisor, driven through the API), release build:
//!
//! - wake to first byte through the gateway, for a Sandbox under runc and one under gVisor,
//!   against a cold pod of the same image created straight through the API (what `kubectl run`
//!   does) until its first byte;
//! - what a user namespace (`hostUsers: false`) costs a cold runc pod at start;
//! - create → Ready of 20 Sandboxes on the one node, per runtime.
//!
//! Needs root, `runc`, `runsc` and `busybox-static`.
//!
//! ```sh
//! cargo bench --bench real_node
//! SANDMAN_REAL_WAKES=5 SANDMAN_REAL_SANDBOXES=10 cargo bench --bench real_node
//! ```

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::ControlPlane;
use sandman_testenv::real_node::RealNode;

const NAMESPACE: &str = "real-node-bench";
const SERVE: &str = "mkdir -p /tmp/www; echo hello > /tmp/www/index.html; \
    exec httpd -f -p $POD_IP:8080 -h /tmp/www";

fn main() {
    let wakes = common::setting("SANDMAN_REAL_WAKES", 10);
    let sandboxes = common::setting("SANDMAN_REAL_SANDBOXES", 20);
    common::on_control_plane("real-node", |plane, dir| async move {
        run(&plane, &dir, wakes, sandboxes).await;
        plane
    });
}

fn percentiles(mut values: Vec<Duration>) -> String {
    values.sort();
    let at = |p: f64| {
        let index = ((values.len() as f64 - 1.0) * p).round() as usize;
        values[index].as_secs_f64() * 1000.0
    };
    format!("{:.0} ms | {:.0} ms | {:.0} ms", at(0.5), at(0.9), at(1.0))
}

fn pod_spec(node: &RealNode, runtime: &str, script: &str) -> serde_json::Value {
    let scheduling = node.scheduling();
    serde_json::json!({
        "runtimeClassName": runtime,
        "nodeSelector": scheduling["nodeSelector"],
        "tolerations": scheduling["tolerations"],
        "containers": [{
            "name": "agent", "image": "busybox",
            "command": ["/bin/sh", "-c", script],
            "ports": [{ "containerPort": 8080 }],
        }],
    })
}

/// `rounds` bare pods of [`pod_spec`], one after the other, each from its creation until its
/// first byte; `host_users` set on the pod when given.
async fn cold_pods(
    pods: &Api<Pod>,
    node: &RealNode,
    http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    runtime: &str,
    host_users: Option<bool>,
    rounds: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for round in 0..rounds {
        let pod_name = format!(
            "cold-{runtime}-{}-{round}",
            match host_users {
                Some(false) => "userns",
                _ => "host",
            }
        );
        let mut spec = pod_spec(node, runtime, SERVE);
        if let Some(host_users) = host_users {
            spec["hostUsers"] = host_users.into();
        }
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": pod_name },
            "spec": spec,
        }))
        .expect("pod");
        let started = Instant::now();
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        let ip = loop {
            if let Ok(pod) = pods.get(&pod_name).await
                && let Some(ip) = pod.status.and_then(|s| s.pod_ip)
            {
                break ip;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let url = format!("http://{ip}:8080/");
        loop {
            if let Ok(response) = http.get(url.parse().expect("uri")).await {
                let _ = response.into_body().collect().await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(started.elapsed());
        pods.delete(&pod_name, &DeleteParams::default())
            .await
            .expect("delete");
        while pods.get_opt(&pod_name).await.ok().flatten().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    latencies
}

async fn wait_sandbox(api: &Api<Sandbox>, name: &str, phase: Phase) {
    loop {
        if let Ok(sandbox) = api.get(name).await
            && sandbox.status.and_then(|s| s.phase) == Some(phase)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(plane: &ControlPlane, dir: &Path, wakes: usize, count: usize) {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox (busybox-static)");
    for applet in ["sh", "httpd", "mkdir", "echo", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
    }
    let client = sandman_testenv::client_from_kubeconfig(plane.kubeconfig())
        .await
        .expect("client");
    common::namespace(&client, NAMESPACE).await;
    let node = RealNode::start(client.clone(), 0, &dir.join("node"), &rootfs)
        .await
        .expect("real node");
    common::spawn_operator(&client, NAMESPACE);
    let gateway = common::gateway(&client, NAMESPACE).await;
    let http: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);

    println!("\n## Wake to first byte ({wakes} each)\n");
    println!("| what | p50 | p90 | max |\n|---|---|---|---|");
    for runtime in ["runc", "gvisor"] {
        let name = format!("wake-{runtime}");
        let sandbox: Sandbox = serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
            "metadata": { "name": name },
            "spec": {
                "podTemplate": { "spec": pod_spec(&node, runtime, SERVE) },
                "gateway": { "enabled": true },
            },
        }))
        .expect("sandbox");
        sandboxes
            .create(&PostParams::default(), &sandbox)
            .await
            .expect("create");
        wait_sandbox(&sandboxes, &name, Phase::Running).await;
        let url = format!("http://{}/sandboxes/{NAMESPACE}/{name}/", gateway.addr);
        let mut latencies = Vec::new();
        let mut failed = 0;
        for _ in 0..wakes {
            for mode in ["Running", "Suspended"] {
                sandboxes
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } })),
                    )
                    .await
                    .expect("suspend");
                // The last wake's override ends once the spec says Running and the operator
                // has seen it; only then does Suspended suspend again.
                while mode == "Running"
                    && sandboxes
                        .get(&name)
                        .await
                        .ok()
                        .and_then(|s| s.status)
                        .is_some_and(|s| s.mode_override.is_some())
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            wait_sandbox(&sandboxes, &name, Phase::Suspended).await;
            while node.containers_of(NAMESPACE, &name).await > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let started = Instant::now();
            // A failed first answer is counted and asked again: the time to the first good
            // byte includes it.
            loop {
                let response = http.get(url.parse().expect("uri")).await.expect("response");
                let ok = response.status() == 200;
                let _ = response.into_body().collect().await;
                if ok {
                    break;
                }
                failed += 1;
            }
            latencies.push(started.elapsed());
            wait_sandbox(&sandboxes, &name, Phase::Running).await;
        }
        println!(
            "| Sandbox under {runtime}, woken through the gateway ({failed} first answers failed) | {} |",
            percentiles(latencies)
        );

        // The same image and command as a bare pod, created cold, until its first byte.
        let latencies = cold_pods(&pods, &node, &http, runtime, None, wakes).await;
        println!(
            "| cold pod under {runtime} (create → first byte) | {} |",
            percentiles(latencies)
        );
    }

    println!("\n## What a user namespace costs at pod start ({wakes} each, runc)\n");
    println!("| pod | p50 | p90 | max |\n|---|---|---|---|");
    for host_users in [true, false] {
        let latencies = cold_pods(&pods, &node, &http, "runc", Some(host_users), wakes).await;
        println!(
            "| cold pod, hostUsers: {host_users} (create → first byte) | {} |",
            percentiles(latencies)
        );
    }

    println!("\n## {count} Sandboxes, create → all Ready, on one real node\n");
    println!("| runtime | all Ready after |\n|---|---|");
    for runtime in ["runc", "gvisor"] {
        let started = Instant::now();
        for i in 0..count {
            let sandbox: Sandbox = serde_json::from_value(serde_json::json!({
                "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
                "metadata": { "name": format!("many-{runtime}-{i}") },
                "spec": { "podTemplate": { "spec": pod_spec(&node, runtime, "exec sleep 100000") } },
            }))
            .expect("sandbox");
            sandboxes
                .create(&PostParams::default(), &sandbox)
                .await
                .expect("create");
        }
        for i in 0..count {
            wait_sandbox(&sandboxes, &format!("many-{runtime}-{i}"), Phase::Running).await;
        }
        println!("| {runtime} | {:.2} s |", started.elapsed().as_secs_f64());
        for i in 0..count {
            let _ = sandboxes
                .delete(&format!("many-{runtime}-{i}"), &DeleteParams::default())
                .await;
        }
        for i in 0..count {
            let name = format!("many-{runtime}-{i}");
            while node.containers_of(NAMESPACE, &name).await > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(node);
}
