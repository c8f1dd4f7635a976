//! The objects a fresh control plane needs before a test can use it: fake nodes, a default
//! StorageClass and sandman's CRDs.

use std::future::Future;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;

use crate::Error;

/// The field manager for everything testenv applies.
const MANAGER: &str = "sandman-testenv";

/// Runs `future` to completion on a runtime of its own, on a thread of its own, so callers may be
/// plain threads or async tasks alike.
pub(crate) fn run<T: Send>(
    future: impl Future<Output = Result<T, Error>> + Send,
) -> Result<T, Error> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::io("start a tokio runtime"))?
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|_| Err(Error::State("bootstrap thread panicked".into())))
    })
}

pub(crate) async fn api_ready(kubeconfig: &Path) -> Result<bool, Error> {
    let client = crate::client_from_kubeconfig(kubeconfig).await?;
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| Error::Kube(e.to_string()))?;
    Ok(client
        .request_text(request)
        .await
        .is_ok_and(|body| body.trim() == "ok"))
}

pub(crate) struct Setup {
    pub kubeconfig: PathBuf,
    pub nodes: usize,
    pub crds_dir: Option<PathBuf>,
}

/// Applies nodes, the StorageClass and CRDs, idempotently so it can be retried. This runs
/// before kube-controller-manager starts, so that its garbage collector discovers the CRDs at
/// once instead of at its next 30-second discovery resync.
pub(crate) async fn apply_objects(setup: &Setup) -> Result<(), Error> {
    let client = crate::client_from_kubeconfig(&setup.kubeconfig).await?;
    let params = PatchParams::apply(MANAGER).force();
    let kube_err = |what: &str| {
        let what = what.to_string();
        move |e: kube::Error| Error::Kube(format!("{what}: {e}"))
    };

    let nodes: Api<Node> = Api::all(client.clone());
    for index in 0..setup.nodes {
        let name = format!("kwok-node-{index}");
        nodes
            .patch(&name, &params, &Patch::Apply(fake_node(&name, index)))
            .await
            .map_err(kube_err(&format!("apply node {name}")))?;
    }

    let classes: Api<StorageClass> = Api::all(client.clone());
    classes
        .patch("standard", &params, &Patch::Apply(storage_class()))
        .await
        .map_err(kube_err("apply StorageClass standard"))?;

    // Pods may name these runtimes (policies pick them); kwok runs no containers, a real node
    // (`real_node.rs`) runs `runc` and `runsc`.
    let runtimes: Api<RuntimeClass> = Api::all(client.clone());
    for (name, handler) in [("runc", "runc"), ("gvisor", "runsc"), ("kata", "kata")] {
        let runtime = serde_json::json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": { "name": name }, "handler": handler,
        });
        runtimes
            .patch(name, &params, &Patch::Apply(runtime))
            .await
            .map_err(kube_err(&format!("apply RuntimeClass {name}")))?;
    }

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd_names = Vec::new();
    if let Some(dir) = &setup.crds_dir {
        for crd in read_crds(dir)? {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(&name, &params, &Patch::Apply(&crd))
                .await
                .map_err(kube_err(&format!("apply CRD {name}")))?;
            crd_names.push(name);
        }
    }

    for name in &crd_names {
        let crd = crds.get(name).await.map_err(kube_err("get CRD"))?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if !established {
            return Err(Error::Kube(format!("CRD {name} is not Established yet")));
        }
    }
    Ok(())
}

/// Waits until nodes are Ready (kwok runs) and the controller manager has made the `default`
/// ServiceAccount.
pub(crate) async fn wait_settled(setup: &Setup) -> Result<(), Error> {
    let client = crate::client_from_kubeconfig(&setup.kubeconfig).await?;
    let kube_err = |what: &str| {
        let what = what.to_string();
        move |e: kube::Error| Error::Kube(format!("{what}: {e}"))
    };
    let nodes: Api<Node> = Api::all(client.clone());
    for index in 0..setup.nodes {
        let name = format!("kwok-node-{index}");
        let node = nodes.get(&name).await.map_err(kube_err("get node"))?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return Err(Error::Kube(format!("node {name} is not Ready yet")));
        }
    }
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    service_accounts.get("default").await.map_err(kube_err(
        "the controller manager has not made ServiceAccount default/default",
    ))?;
    Ok(())
}

/// Every CRD in the `*.yaml` files of `dir` (multi-document files allowed).
pub(crate) fn read_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(format!("read {}", dir.display())))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    let mut crds = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(Error::io(format!("read {}", path.display())))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| Error::State(format!("{}: {e}", path.display())))?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .map_err(|e| Error::State(format!("{}: not a CRD: {e}", path.display())))?;
            crds.push(crd);
        }
    }
    Ok(crds)
}

/// A node that kwok manages. Each node gets its own /20 of the loopback pod range, so pod IPs
/// never collide across nodes.
fn fake_node(name: &str, index: usize) -> serde_json::Value {
    let cidr = format!("127.1.{}.0/20", index * 16);
    let resources = serde_json::json!({
        "cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "1Ti"
    });
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": { "podCIDR": cidr, "podCIDRs": [cidr] },
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
            },
        },
    })
}

/// The default StorageClass: kube-controller-manager's in-tree hostPath provisioner
/// (`--enable-hostpath-provisioner`) makes a PV under /tmp/hostpath_pv for every claim, and the
/// real PV binder binds it. `Delete` removes the directory when the claim goes.
fn storage_class() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "standard",
            "annotations": { "storageclass.kubernetes.io/is-default-class": "true" },
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    })
}
