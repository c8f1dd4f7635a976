//! agent-sandbox's controller (kubernetes-sigs/agent-sandbox, the upstream reference) under the
//! same harness, so that its figures sit beside sandman's from one machine and one control
//! plane. Built from the Go module proxy with `go install`, once, into
//! `~/.cache/sandman/agent-sandbox/<version>`; its CRDs come from the same module.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

pub const MODULE: &str = "sigs.k8s.io/agent-sandbox";
/// The version measured (the newest the module proxy served on 2026-12-04).
pub const VERSION: &str = "v1.0.1";
/// The name its Sandbox controller posts Events as (`mgr.GetEventRecorder`).
pub const REPORTER: &str = "sandbox-controller";

pub struct Installed {
    pub binary: PathBuf,
    pub crds: PathBuf,
}

/// Builds the controller unless it is built already, and finds the module's CRDs.
pub fn install() -> Installed {
    let home = std::env::var("HOME").expect("HOME");
    let bin_dir = PathBuf::from(home).join(format!(".cache/sandman/agent-sandbox/{VERSION}"));
    let binary = bin_dir.join("agent-sandbox-controller");
    if !binary.exists() {
        eprintln!("building agent-sandbox's controller {VERSION} with go install");
        let status = Command::new("go")
            .args([
                "install",
                &format!("{MODULE}/cmd/agent-sandbox-controller@{VERSION}"),
            ])
            .env("GOBIN", &bin_dir)
            .env("CGO_ENABLED", "0")
            .status()
            .expect("run go install");
        assert!(status.success(), "go install of agent-sandbox failed");
    }
    let download = Command::new("go")
        .args(["mod", "download", "-json", &format!("{MODULE}@{VERSION}")])
        .output()
        .expect("run go mod download");
    assert!(
        download.status.success(),
        "go mod download of agent-sandbox failed"
    );
    let module: serde_json::Value =
        serde_json::from_slice(&download.stdout).expect("go mod download's JSON");
    let dir = module["Dir"].as_str().expect("the module's directory");
    Installed {
        binary,
        crds: PathBuf::from(dir).join("k8s/crds"),
    }
}

/// Its controller as its own deployment runs it, minus leader election (one replica) and its
/// metrics and probe servers (nothing here reads them).
pub fn start(installed: &Installed, kubeconfig: &std::path::Path) -> Child {
    Command::new(&installed.binary)
        .args([
            "--leader-elect=false",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
        ])
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent-sandbox's controller")
}

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("agents.x-k8s.io", "v1beta1", "Sandbox"),
        "sandboxes",
    )
}

/// The same agent as sandman's Sandboxes in this harness: one container, no volume.
pub fn sandbox(name: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "agents.x-k8s.io/v1beta1",
        "kind": "Sandbox",
        "metadata": { "name": name },
        "spec": { "podTemplate": { "spec": { "containers": [{
            "name": "agent", "image": "registry.example/agent:1"
        }] } } }
    }))
    .expect("an agent-sandbox Sandbox")
}

/// Ready as agent-sandbox says it: its `Ready` condition is True.
pub fn ready(sandbox: &DynamicObject) -> bool {
    sandbox.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Writes only its controller makes here: the harness only creates Sandboxes (POST), the
/// scheduler binds pods and kwok writes pods/status.
pub fn is_write(verb: &str, resource: &str, subresource: &str) -> bool {
    matches!(
        (verb, resource, subresource),
        ("PUT" | "PATCH" | "APPLY", "sandboxes", "" | "status")
            | (
                "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE",
                "pods" | "services",
                ""
            )
            | ("POST" | "PATCH", "persistentvolumeclaims", "")
    )
}
