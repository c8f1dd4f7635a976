//! The node as the API server knows it: its Node object with capacity and a taint, and the
//! heartbeat that keeps it Ready and its Lease renewed.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

use super::{Agent, HEARTBEAT, REAL_NODE_LABEL, apply, kube_err};
use crate::Error;

pub(super) async fn register(agent: &Agent) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let resources = serde_json::json!({ "cpu": "2", "memory": "8Gi", "pods": "110" });
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": agent.name,
            "labels": {
                REAL_NODE_LABEL: "true",
                "kubernetes.io/hostname": agent.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": { "taints": [{ "key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule" }] },
    });
    apply(&nodes, &agent.name, node)
        .await
        .map_err(kube_err("register the node"))?;
    let status = serde_json::json!({ "status": {
        "capacity": resources, "allocatable": resources,
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }],
        "nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.36.3",
            "containerRuntimeVersion": "runc+runsc://local", "kernelVersion": "",
            "osImage": "", "machineID": "", "systemUUID": "", "bootID": "",
            "kubeProxyVersion": "",
        },
    }});
    nodes
        .patch_status(&agent.name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(kube_err("node status"))?;
    report_ready(agent).await
}

async fn report_ready(agent: &Agent) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let now = Timestamp::now().to_string();
    let status = serde_json::json!({ "status": { "conditions": [{
        "type": "Ready", "status": "True", "reason": "RealNodeReady",
        "message": "the node agent runs pods", "lastHeartbeatTime": now, "lastTransitionTime": now,
    }] } });
    nodes
        .patch_status(
            &agent.name,
            &PatchParams::default(),
            &Patch::Strategic(status),
        )
        .await
        .map_err(kube_err("node Ready"))?;
    let leases: Api<Lease> = Api::namespaced(agent.client.clone(), "kube-node-lease");
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": agent.name },
        "spec": {
            "holderIdentity": agent.name, "leaseDurationSeconds": 40,
            "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now()),
        },
    });
    apply(&leases, &agent.name, lease)
        .await
        .map_err(kube_err("node Lease"))?;
    Ok(())
}

pub(super) async fn heartbeat(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if let Err(e) = report_ready(&agent).await {
            eprintln!("real node {}: heartbeat: {e}", agent.name);
        }
    }
}
