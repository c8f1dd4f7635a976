//! Shared helpers for sandman's integration tests: run the operator in-process against the
//! shared local control plane, build Sandboxes, and wait for conditions.
#![allow(dead_code)]

pub mod agent;
pub mod cli;
pub mod e2b;
pub mod faults;
pub mod gateway;
pub mod policy;
pub mod real_node;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::harness::{TestContext, eventually};
use tokio::task::JoinHandle;

/// How long any one state change may take on the local control plane before a test gives up.
pub const WAIT: Duration = Duration::from_secs(60);

/// An operator running in this test's runtime, watching this test's namespace only.
pub struct Operator {
    task: JoinHandle<()>,
}

impl Operator {
    pub fn start(ctx: &TestContext) -> Self {
        Self::start_with(ctx, ctx.client.clone())
    }

    pub fn start_with(ctx: &TestContext, client: Client) -> Self {
        Self::start_configured(ctx, client, |_| {})
    }

    /// An operator with the test defaults, then `configure`.
    pub fn start_configured(
        ctx: &TestContext,
        client: Client,
        configure: impl FnOnce(&mut sandman::controller::Options),
    ) -> Self {
        init_logs();
        let mut options = sandman::controller::Options {
            namespace: Some(ctx.namespace.clone()),
            concurrency: 16,
            instance: "test".into(),
            // Each test's operator serves its own test's policies only.
            policy_selector: Some(format!("sandman.dev/test-namespace={}", ctx.namespace)),
            policy_cache_dir: None,
            // Lifecycle tests use idle limits of seconds.
            min_dwell: Duration::from_secs(1),
            metrics_listen: None,
            leader_election: None,
            policy_limits: Default::default(),
            pull_secrets: Default::default(),
            policy_load_grace: Duration::from_secs(10),
            pod_baseline: true,
            runtime_image: None,
            supervisor_image: Some(agent::SUPERVISOR_IMAGE.into()),
            metrics: Default::default(),
            gateway_namespace: "sandman-system".into(),
        };
        configure(&mut options);
        let task = tokio::spawn(async move {
            if let Err(e) = sandman::controller::run(client, options, std::future::pending()).await
            {
                panic!("the operator stopped: {e}");
            }
        });
        Self { task }
    }

    /// Kills the operator mid-flight, as a crash or OOM kill would: no graceful shutdown.
    pub fn kill(self) {
        self.task.abort();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A child process that is killed when dropped, so that a failing test leaves no operator
/// running (holding the test's output pipe open).
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Kills it now (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `sandman run` as a process of its own for this test's namespace, with `args` after the
/// namespace, so that it can be SIGKILLed as a crash or an OOM kill would.
pub fn operator_process(ctx: &TestContext, args: &[&str]) -> KillOnDrop {
    std::process::Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args(["run", "--namespace", &ctx.namespace])
        .args(args)
        .env("KUBECONFIG", ctx.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map(KillOnDrop)
        .expect("start an operator")
}

/// Pod UIDs seen per pod name in the test's namespace, from a watch: a pod made twice shows
/// two.
pub type PodUids =
    std::sync::Arc<std::sync::Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>>;

pub fn record_pod_uids(ctx: &TestContext) -> PodUids {
    use futures::StreamExt;
    use kube::ResourceExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = PodUids::default();
    let sink = seen.clone();
    let stream = watcher(pods(ctx), watcher::Config::default()).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let (Ok(pod), Ok(mut seen)) = (event, sink.lock()) {
                seen.entry(pod.name_any())
                    .or_default()
                    .insert(pod.uid().unwrap_or_default());
            }
        }
    });
    seen
}

/// Operator logs go through the test harness's capture, so they show for failing tests only.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sandman=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A Sandbox running one container, with a `workspace` claim when `volume` is set.
pub fn sandbox(name: &str, volume: bool) -> Sandbox {
    let mut value = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": { "name": name },
        "spec": {
            "podTemplate": {
                "metadata": { "labels": { "app": "agent" } },
                "spec": {
                    "containers": [{
                        "name": "agent",
                        "image": "registry.example/agent:1",
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                    }],
                },
            },
        },
    });
    if volume {
        value["spec"]["podTemplate"]["spec"]["containers"][0]["volumeMounts"] =
            serde_json::json!([{ "name": "workspace", "mountPath": "/workspace" }]);
        value["spec"]["volumeClaimTemplates"] = serde_json::json!([{
            "metadata": { "name": "workspace" },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": "1Gi" } },
            },
        }]);
    }
    serde_json::from_value(value).expect("sandbox fixture")
}

/// The namespace's Events, now.
pub async fn events(ctx: &TestContext) -> Vec<k8s_openapi::api::events::v1::Event> {
    kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&Default::default())
        .await
        .expect("events")
        .items
}

pub async fn create(ctx: &TestContext, sandbox: &Sandbox) -> Sandbox {
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    api.create(&PostParams::default(), sandbox)
        .await
        .expect("create sandbox")
}

pub fn sandboxes(ctx: &TestContext) -> Api<Sandbox> {
    Api::namespaced(ctx.client.clone(), &ctx.namespace)
}

pub fn pods(ctx: &TestContext) -> Api<Pod> {
    Api::namespaced(ctx.client.clone(), &ctx.namespace)
}

/// Waits until the Sandbox reports `phase`, and returns it.
pub async fn wait_phase(ctx: &TestContext, name: &str, phase: Phase) -> Sandbox {
    let api = sandboxes(ctx);
    eventually(&format!("sandbox {name} to reach {phase:?}"), WAIT, || {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(phase))
        }
    })
    .await
}

/// Waits until `check` holds for the Sandbox, and returns it.
pub async fn wait_sandbox(
    ctx: &TestContext,
    name: &str,
    what: &str,
    check: impl Fn(&Sandbox) -> bool,
) -> Sandbox {
    let api = sandboxes(ctx);
    eventually(what, WAIT, || {
        let api = api.clone();
        let found = async move { api.get_opt(name).await.ok().flatten() };
        let check = &check;
        async move { found.await.filter(|s| check(s)) }
    })
    .await
}

/// Waits until the named object of kind `K` is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} to be gone"), WAIT, || {
        let api = api.clone();
        async move {
            match api.get_opt(name).await {
                Ok(None) => Some(()),
                _ => None,
            }
        }
    })
    .await
}

pub fn condition(sandbox: &Sandbox, type_: &str) -> Option<(String, String)> {
    sandbox
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The Sandbox held by a failing policy (Ready=False, reason PolicyFailed), and its message.
pub async fn wait_held(ctx: &TestContext, name: &str) -> String {
    let held = wait_sandbox(ctx, name, "the Sandbox to be held by its policy", |s| {
        condition(s, "Ready").is_some_and(|(_, reason)| reason == "PolicyFailed")
    })
    .await;
    held.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until SandboxPolicy `name` reports `reason` in its Ready condition.
pub async fn wait_ready_reason(
    api: &Api<sandman::api::SandboxPolicy>,
    name: &str,
    reason: &str,
) -> sandman::api::SandboxPolicy {
    eventually(&format!("policy {name} to report {reason}"), WAIT, || {
        let api = api.clone();
        async move {
            api.get(name).await.ok().filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.reason == reason)
            })
        }
    })
    .await
}

/// The message of a SandboxPolicy's Ready condition.
pub fn ready_message(policy: &sandman::api::SandboxPolicy) -> String {
    policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Applies the RBAC objects of rendered chart manifests (`text`) for the test's namespace, and
/// returns a client that acts as the ServiceAccount `account` there (by impersonation).
pub async fn acting_as(ctx: &TestContext, text: &str, account: &str) -> Client {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use kube::api::{Patch, PatchParams};
    use serde::Deserialize;
    let text = text.replace("sandman-system", &ctx.namespace);
    let suffix = ctx.namespace.clone();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let mut value =
            serde_json::to_value(serde_yaml::Value::deserialize(document).expect("YAML document"))
                .expect("JSON");
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        if !matches!(
            kind.as_str(),
            "ServiceAccount"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "Role"
                | "RoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        ) {
            continue;
        }
        // Cluster-scoped objects get the test's name, so tests never share them.
        if kind.starts_with("Cluster") || kind.starts_with("ValidatingAdmissionPolicy") {
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            value["metadata"]["name"] = serde_json::json!(format!("{name}-{suffix}"));
        }
        if kind == "ValidatingAdmissionPolicyBinding" {
            let policy = value["spec"]["policyName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            value["spec"]["policyName"] = serde_json::json!(format!("{policy}-{suffix}"));
        }
        if kind == "ClusterRoleBinding" {
            let role = value["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            value["roleRef"]["name"] = serde_json::json!(format!("{role}-{suffix}"));
        }
        let params = PatchParams::apply("rbac-test").force();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "ServiceAccount" => {
                Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
                    ctx.client.clone(),
                    &ctx.namespace,
                )
                .patch(&name, &params, &Patch::Apply(&value))
                .await
                .expect("apply ServiceAccount");
            }
            "ClusterRole" => {
                Api::<ClusterRole>::all(ctx.client.clone())
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .expect("apply ClusterRole");
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(ctx.client.clone())
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .expect("apply ClusterRoleBinding");
            }
            "Role" => {
                Api::<Role>::namespaced(ctx.client.clone(), &ctx.namespace)
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .expect("apply Role");
            }
            "RoleBinding" => {
                Api::<RoleBinding>::namespaced(ctx.client.clone(), &ctx.namespace)
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .expect("apply RoleBinding");
            }
            "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" => {
                use k8s_openapi::api::admissionregistration::v1::{
                    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
                };
                if kind == "ValidatingAdmissionPolicy" {
                    Api::<ValidatingAdmissionPolicy>::all(ctx.client.clone())
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .expect("apply ValidatingAdmissionPolicy");
                } else {
                    Api::<ValidatingAdmissionPolicyBinding>::all(ctx.client.clone())
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .expect("apply ValidatingAdmissionPolicyBinding");
                }
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(ctx.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info.impersonate =
        Some(format!("system:serviceaccount:{}:{account}", ctx.namespace));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{}", ctx.namespace),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).expect("impersonating client")
}
