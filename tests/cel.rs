//! CEL SandboxPolicies on the local control plane: the same decisions as the Wasm examples,
//! through the CEL engine sandman carries, with load-time errors in the policy's status.

mod common;

use common::*;
use kube::api::{Api, PostParams};
use sandman::api::{OperatingMode, Phase, SandboxPolicy};
use sandman_testenv::harness::{TestContext, eventually, repo_root};

/// `policies/cel/<file>` for this test only: named after the namespace, labelled for the test's
/// operator, matching only the test's namespace.
fn cel_policy(
    ctx: &TestContext,
    file: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> SandboxPolicy {
    let text =
        std::fs::read_to_string(repo_root().join("policies/cel").join(file)).expect("read policy");
    let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    let name = format!(
        "{}-{}",
        ctx.namespace,
        value["metadata"]["name"].as_str().expect("name")
    );
    value["metadata"] = serde_json::json!({
        "name": name,
        "labels": { "sandman.dev/test-namespace": ctx.namespace },
    });
    value["spec"]["match"] = serde_json::json!({
        "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ctx.namespace } }
    });
    // A loaded CI machine must not turn a slow evaluation into a policy failure.
    value["spec"]["cel"]["limits"] = serde_json::json!({ "timeout": "5s" });
    edit(&mut value);
    serde_json::from_value(value).expect("SandboxPolicy")
}

async fn install(ctx: &TestContext, policy: &SandboxPolicy) -> (Api<SandboxPolicy>, String) {
    let api: Api<SandboxPolicy> = Api::all(ctx.client.clone());
    api.create(&PostParams::default(), policy)
        .await
        .expect("create SandboxPolicy");
    (api, policy.metadata.name.clone().expect("name"))
}

#[tokio::test]
async fn cel_policy_selects_gvisor_for_an_untrusted_sandbox() {
    let ctx = TestContext::new("cel_gvisor").await;
    let _operator = Operator::start(&ctx);
    let (api, name) = install(&ctx, &cel_policy(&ctx, "untrusted-to-gvisor.yaml", |_| {})).await;
    let loaded = wait_ready_reason(&api, &name, "Loaded").await;
    assert_eq!(
        loaded.status.expect("status").hooks,
        vec!["isolation".to_string()]
    );

    let mut untrusted = sandbox("untrusted", false);
    untrusted.metadata.labels = Some(labels(&[("sandman.dev/trust", "untrusted")]));
    create(&ctx, &untrusted).await;
    create(&ctx, &sandbox("trusted", false)).await;
    let running = wait_phase(&ctx, "untrusted", Phase::Running).await;
    wait_phase(&ctx, "trusted", Phase::Running).await;
    let pod = pods(&ctx).get("untrusted").await.expect("pod");
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.host_users, Some(false));
    let decision = running
        .status
        .and_then(|s| s.decisions)
        .and_then(|d| d.isolation)
        .expect("recorded");
    assert_eq!(decision.policy, name);
    let trusted = pods(&ctx).get("trusted").await.expect("pod");
    assert_eq!(trusted.spec.and_then(|s| s.runtime_class_name), None);
    api.delete(&name, &Default::default())
        .await
        .expect("clean up");
}

/// Every runtime class any pod of the namespace had, from a watch started now.
async fn record_pod_runtimes(
    ctx: &TestContext,
) -> std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>> {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (synced_tx, synced) = tokio::sync::oneshot::channel();
    let mut events = Box::pin(watcher(pods(ctx), watcher::Config::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut synced_tx = Some(synced_tx);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = synced_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    let runtime = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone());
                    record
                        .lock()
                        .expect("record")
                        .push((kube::ResourceExt::name_any(&pod), runtime));
                }
                _ => {}
            }
        }
    });
    synced.await.expect("the pod watch synced");
    seen
}

#[tokio::test]
async fn sandboxes_wait_for_policies_at_start() {
    let ctx = TestContext::new("cel_start_order").await;
    // The policy and the Sandbox exist before the operator starts. Compiling the CEL engine
    // takes seconds on first load; a Sandbox reconcile that did not wait would beat it and give
    // the untrusted Sandbox a runc pod.
    let (api, name) = install(&ctx, &cel_policy(&ctx, "untrusted-to-gvisor.yaml", |_| {})).await;
    let mut untrusted = sandbox("untrusted", false);
    untrusted.metadata.labels = Some(labels(&[("sandman.dev/trust", "untrusted")]));
    create(&ctx, &untrusted).await;
    let seen = record_pod_runtimes(&ctx).await;

    let _operator = Operator::start(&ctx);
    wait_phase(&ctx, "untrusted", Phase::Running).await;
    let seen = seen.lock().expect("record").clone();
    assert!(!seen.is_empty(), "the watch saw the pod");
    assert!(
        seen.iter()
            .all(|(_, runtime)| runtime.as_deref() == Some("gvisor")),
        "every version of every pod ran gVisor: {seen:?}"
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up");
}

/// A lifecycle policy suspends a Sandbox idle past its limit: the mode, the phase, and an Event
/// that names the policy. `file` is the policy; `edit` sets a 2-second limit.
async fn idle_sandbox_is_suspended(ctx: &TestContext, policy: SandboxPolicy) {
    let _operator = Operator::start(ctx);
    let (api, name) = install(ctx, &policy).await;
    wait_ready_reason(&api, &name, "Loaded").await;
    let idle = sandbox("idle", true);
    create(ctx, &idle).await;
    wait_phase(ctx, "idle", Phase::Running).await;
    let suspended = wait_phase(ctx, "idle", Phase::Suspended).await;
    assert_eq!(
        suspended.spec.operating_mode,
        OperatingMode::Running,
        "the suspend is in status; the spec stays the user's"
    );
    assert_eq!(suspended.effective_mode(), OperatingMode::Suspended);
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.client.clone(), &ctx.namespace);
    let note = eventually("a PolicySuspended event", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("PolicySuspended"))
                .and_then(|e| e.note)
        }
    })
    .await;
    assert!(note.contains(&name) && note.contains("idle for"), "{note}");
    // Suspension keeps the identity and the volume.
    let claims = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
        ctx.client.clone(),
        &ctx.namespace,
    );
    assert_eq!(
        claims
            .list(&Default::default())
            .await
            .expect("PVCs")
            .items
            .len(),
        1
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up");
}

#[tokio::test]
async fn idle_sandbox_is_suspended_by_cel_policy() {
    let ctx = TestContext::new("cel_idle_suspend").await;
    let policy = cel_policy(&ctx, "idle-suspend.yaml", |v| {
        v["spec"]["cel"]["settings"] = serde_json::json!({ "idleSeconds": 2 });
    });
    idle_sandbox_is_suspended(&ctx, policy).await;
}

#[tokio::test]
async fn idle_sandbox_is_suspended_by_wasm_policy() {
    let ctx = TestContext::new("wasm_idle_suspend").await;
    let wasm = sandman_testenv::policies::policy_wasm("idle_suspend");
    let digest = sandman::distribution::sha256_hex(&wasm);
    let config_map = k8s_openapi::api::core::v1::ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("idle-suspend".into()),
            ..Default::default()
        },
        binary_data: Some([("policy.wasm".to_string(), k8s_openapi::ByteString(wasm))].into()),
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("ConfigMap");
    let policy = cel_policy(&ctx, "idle-suspend.yaml", |v| {
        v["spec"]["cel"] = serde_json::Value::Null;
        v["spec"]["wasm"] = serde_json::json!({
            "configMap": { "namespace": ctx.namespace, "name": "idle-suspend", "key": "policy.wasm" },
            "sha256": digest,
            "settings": { "idleSeconds": 2 },
            "limits": { "timeout": "5s" },
        });
        if let Some(spec) = v["spec"].as_object_mut() {
            spec.remove("cel");
        }
    });
    idle_sandbox_is_suspended(&ctx, policy).await;
}

#[tokio::test]
async fn invalid_cel_is_reported_with_the_expression_and_position() {
    let ctx = TestContext::new("cel_invalid").await;
    let _operator = Operator::start(&ctx);
    let policy = cel_policy(&ctx, "idle-suspend.yaml", |v| {
        v["spec"]["cel"]["lifecycle"] = serde_json::json!("activity.idleSeconds >");
    });
    let (api, name) = install(&ctx, &policy).await;
    let refused = wait_ready_reason(&api, &name, "InvalidExpression").await;
    let message = ready_message(&refused);
    assert!(
        message.contains("spec.cel.lifecycle") && message.contains("line 1, column"),
        "{message}"
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up");
}

/// `spec.settingsSchema` holds in the cluster as in a suite: settings that do not meet it fail
/// the load with the schema's words, and the policy decides nothing.
#[tokio::test]
async fn settings_that_miss_the_schema_are_refused_by_the_operator() {
    let ctx = TestContext::new("cel_settings_schema").await;
    let _operator = Operator::start(&ctx);
    let policy = cel_policy(&ctx, "idle-suspend.yaml", |v| {
        v["spec"]["settingsSchema"] = serde_json::json!({
            "type": "object",
            "properties": { "idleSeconds": { "type": "integer" } },
        });
        v["spec"]["cel"]["settings"] = serde_json::json!({ "idleSeconds": "soon" });
    });
    let (api, name) = install(&ctx, &policy).await;
    let refused = wait_ready_reason(&api, &name, "InvalidSettings").await;
    let message = ready_message(&refused);
    assert!(
        message.contains("spec.settingsSchema") && message.contains("at /idleSeconds"),
        "{message}"
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up");
}

#[tokio::test]
async fn cel_and_wasm_together_are_refused_by_the_api_server() {
    let ctx = TestContext::new("cel_and_wasm").await;
    let policy = cel_policy(&ctx, "idle-suspend.yaml", |v| {
        v["spec"]["wasm"] =
            serde_json::json!({ "url": "http://127.0.0.1:9/p.wasm", "sha256": "0".repeat(64) });
    });
    let error = Api::<SandboxPolicy>::all(ctx.client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect_err("both forms");
    assert!(
        error.to_string().contains("exactly one of wasm or cel"),
        "{error}"
    );
}

/// Under the gVisor policy a Sandbox once still got hostPath `/` and SYS_ADMIN: the pod
/// template was copied wholesale. The pod baseline refuses both until the isolation policy
/// that decides the Sandbox allows them, and status records either outcome.
#[tokio::test]
async fn pod_baseline_refuses_host_access_unless_the_isolation_policy_allows_it() {
    let ctx = TestContext::new("cel_pod_baseline").await;
    let _operator = Operator::start(&ctx);
    let (api, name) = install(&ctx, &cel_policy(&ctx, "untrusted-to-gvisor.yaml", |_| {})).await;
    wait_ready_reason(&api, &name, "Loaded").await;

    let mut greedy = sandbox("greedy", false);
    greedy.metadata.labels = Some(labels(&[("sandman.dev/trust", "untrusted")]));
    let mut template = serde_json::to_value(&greedy.spec.pod_template.spec).expect("spec");
    template["volumes"] = serde_json::json!([{ "name": "root", "hostPath": { "path": "/" } }]);
    template["containers"][0]["securityContext"] =
        serde_json::json!({ "capabilities": { "add": ["SYS_ADMIN"] } });
    greedy.spec.pod_template.spec = serde_json::from_value(template).expect("spec");
    create(&ctx, &greedy).await;

    let refused = wait_sandbox(&ctx, "greedy", "the pod to be refused", |s| {
        condition(s, "Ready").is_some_and(|(_, reason)| reason == "PodBaselineRefused")
    })
    .await;
    let baseline = refused
        .status
        .and_then(|s| s.decisions)
        .and_then(|d| d.baseline)
        .expect("the refusal is recorded");
    assert_eq!(baseline.outcome, "refused");
    let what = baseline.message.unwrap_or_default();
    assert!(
        what.contains("hostPath /") && what.contains("SYS_ADMIN"),
        "{what}"
    );
    assert!(pods(&ctx).get_opt("greedy").await.expect("get").is_none());

    api.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "spec": { "podSecurity": {
            "allow": ["HostPath"], "capabilities": ["SYS_ADMIN"]
        } } })),
    )
    .await
    .expect("allow host access");
    let running = wait_phase(&ctx, "greedy", Phase::Running).await;
    let baseline = running
        .status
        .and_then(|s| s.decisions)
        .and_then(|d| d.baseline)
        .expect("the exemption is recorded");
    assert_eq!(
        (baseline.policy.as_str(), baseline.outcome.as_str()),
        (name.as_str(), "exempted")
    );
    let pod = pods(&ctx).get("greedy").await.expect("pod");
    assert_eq!(
        pod.spec.and_then(|s| s.runtime_class_name).as_deref(),
        Some("gvisor")
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up");
}
