//! Activity and the lifecycle loop on the local control plane: the last-activity annotation and
//! `sandman touch` keep a Sandbox awake, and `spec.lifecycle.idleTimeout` suspends it without
//! any policy.

mod common;

use std::time::Duration;

use common::*;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandman::api::{Phase, SandboxPolicy};
use sandman_testenv::harness::{TestContext, eventually, repo_root};

async fn event_note(ctx: &TestContext, reason: &str) -> String {
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.client.clone(), &ctx.namespace);
    eventually(&format!("a {reason} event"), WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
                .and_then(|e| e.note)
        }
    })
    .await
}

#[tokio::test]
async fn idle_timeout_suspends_without_a_policy() {
    let ctx = TestContext::new("idle_timeout_builtin").await;
    let _operator = Operator::start(&ctx);
    let mut idle = sandbox("idle", true);
    idle.spec.lifecycle = Some(sandman::api::LifecycleSpec {
        idle_timeout: Some("2s".into()),
    });
    create(&ctx, &idle).await;
    wait_phase(&ctx, "idle", Phase::Running).await;
    wait_phase(&ctx, "idle", Phase::Suspended).await;
    let note = event_note(&ctx, "IdleSuspended").await;
    assert!(
        note.contains("idleTimeout") && note.contains("idle for"),
        "{note}"
    );
}

#[tokio::test]
async fn activity_annotation_is_reported_in_status() {
    let ctx = TestContext::new("activity_annotation").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("busy", false)).await;
    wait_phase(&ctx, "busy", Phase::Running).await;
    let later =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
    let later =
        k8s_openapi::jiff::Timestamp::from_second(later.as_second()).expect("whole seconds");
    let patch = serde_json::json!({ "metadata": { "annotations": {
        "sandman.dev/last-activity": later.to_string(),
    } } });
    sandboxes(&ctx)
        .patch("busy", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    eventually("status.activity to show the annotation", WAIT, || {
        let api = sandboxes(&ctx);
        async move {
            let sandbox = api.get("busy").await.ok()?;
            let activity = sandbox.status?.activity?;
            (activity.last_activity_time?.0 == later && activity.idle_since?.0 == later)
                .then_some(())
        }
    })
    .await;
}

/// `sandman touch` as a user runs it, against the test's control plane.
fn touch(ctx: &TestContext, name: &str) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args(["touch", &format!("{}/{name}", ctx.namespace)])
        .env("KUBECONFIG", ctx.kubeconfig())
        .output()
        .expect("run sandman touch");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn touch_prevents_suspension() {
    let ctx = TestContext::new("touch_prevents_suspension").await;
    let _operator = Operator::start(&ctx);
    let text = std::fs::read_to_string(repo_root().join("policies/cel/idle-suspend.yaml"))
        .expect("read policy");
    let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    let name = format!("{}-idle", ctx.namespace);
    value["metadata"] = serde_json::json!({
        "name": name,
        "labels": { "sandman.dev/test-namespace": ctx.namespace },
    });
    value["spec"]["match"] = serde_json::json!({
        "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ctx.namespace } }
    });
    value["spec"]["cel"]["settings"] = serde_json::json!({ "idleSeconds": 4 });
    value["spec"]["cel"]["limits"] = serde_json::json!({ "timeout": "5s" });
    let policy: SandboxPolicy = serde_json::from_value(value).expect("policy");
    let policies: Api<SandboxPolicy> = Api::all(ctx.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    wait_ready_reason(&policies, &name, "Loaded").await;

    create(&ctx, &sandbox("agent", false)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    // Touch every second for three idle limits: the Sandbox never goes idle long enough.
    for _ in 0..12 {
        touch(&ctx, "agent");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let agent = sandboxes(&ctx).get("agent").await.expect("sandbox");
    assert_eq!(
        agent.spec.operating_mode,
        sandman::api::OperatingMode::Running,
        "touched every second, the Sandbox stays awake"
    );
    // Left alone, it is suspended.
    wait_phase(&ctx, "agent", Phase::Suspended).await;
    let note = event_note(&ctx, "PolicySuspended").await;
    assert!(note.contains(&name), "{note}");
    policies
        .delete(&name, &Default::default())
        .await
        .expect("clean up");
}
