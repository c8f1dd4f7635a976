//! The local control plane behaves like a real cluster where sandman depends on it: pods are
//! scheduled and run on kwok nodes with loopback IPs, PVCs bind, and owner references are
//! garbage-collected.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use sandman_testenv::harness::{TestContext, eventually};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn control_plane_smoke() {
    let ctx = TestContext::new("control_plane_smoke").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);

    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
    }))
    .expect("claim");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "worker" },
        "spec": {
            "containers": [{ "name": "main", "image": "registry.example/worker:1",
                             "volumeMounts": [{ "name": "data", "mountPath": "/data" }] }],
            "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": "data" } }]
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    let running = eventually("the pod to run on a kwok node", WAIT, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("worker").await.ok()?;
            let status = pod.status.clone()?;
            (status.phase.as_deref() == Some("Running") && status.pod_ip.is_some()).then_some(pod)
        }
    })
    .await;
    let ip = running.status.and_then(|s| s.pod_ip).expect("pod IP");
    assert!(
        ip.starts_with("127.1."),
        "pod IP {ip} is not in the loopback pod range"
    );
    let node = running.spec.and_then(|s| s.node_name).expect("scheduled");
    assert!(node.starts_with("kwok-node-"), "scheduled to {node}");
    // A test can play the pod's container: its IP is bindable on this machine.
    let listener = std::net::TcpListener::bind((ip.as_str(), 0)).expect("bind the pod IP");
    drop(listener);

    let bound = eventually("the PVC to bind", WAIT, || {
        let claims = claims.clone();
        async move {
            let claim = claims.get("data").await.ok()?;
            (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim)
        }
    })
    .await;
    assert!(bound.spec.and_then(|s| s.volume_name).is_some());

    let owner = config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "owner" } }))
                .expect("owner"),
        )
        .await
        .expect("create owner");
    let dependent: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().expect("uid") }]
        }
    }))
    .expect("dependent");
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");
    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    eventually(
        "the garbage collector to delete the dependent",
        WAIT,
        || {
            let config_maps = config_maps.clone();
            async move {
                config_maps
                    .get_opt("dependent")
                    .await
                    .ok()
                    .and_then(|d| d.is_none().then_some(()))
            }
        },
    )
    .await;
}
