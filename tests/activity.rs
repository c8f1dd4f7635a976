//! Activity and the lifecycle loop on the local control plane: the last-activity annotation and
//! `sandman touch` keep a Sandbox awake, and `spec.lifecycle.idleTimeout` suspends it without
//! any policy.

mod common;

use std::time::Duration;

use common::*;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandman::api::{Phase, SandboxPolicy};
use sandman_testenv::harness::{TestContext, eventually, repo_root, stays};

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
        ..Default::default()
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
fn touch(ctx: &TestContext, name: &str, extra: &[&str]) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandman"))
        .arg("touch")
        .arg(format!("{}/{name}", ctx.namespace))
        .args(extra)
        .env("KUBECONFIG", ctx.kubeconfig())
        .output()
        .expect("run sandman touch");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The idle-suspend CEL example, matching this test's namespace, suspending after `idle`
/// seconds.
async fn idle_policy(ctx: &TestContext, idle: u64) -> (Api<SandboxPolicy>, String) {
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
    value["spec"]["cel"]["settings"] = serde_json::json!({ "idleSeconds": idle });
    value["spec"]["cel"]["limits"] = serde_json::json!({ "timeout": "5s" });
    let policy: SandboxPolicy = serde_json::from_value(value).expect("policy");
    let policies: Api<SandboxPolicy> = Api::all(ctx.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    wait_ready_reason(&policies, &name, "Loaded").await;
    (policies, name)
}

/// A touch restarts the idle clock: the policy suspends no sooner than its idle limit after
/// the touch, and `touch --wake` resumes what it suspended. Causal, not timed: the policy is
/// installed after the touch, so however slow the machine, the suspension is measured from it.
#[tokio::test]
async fn touch_restarts_the_idle_clock_and_wakes() {
    let ctx = TestContext::new("touch_idle_clock").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", false)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    touch(&ctx, "agent", &[]);
    let touched = sandboxes(&ctx)
        .get("agent")
        .await
        .expect("sandbox")
        .annotations()
        .get("sandman.dev/last-activity")
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .expect("touch wrote the annotation");
    let (policies, name) = idle_policy(&ctx, 4).await;

    let suspended = wait_phase(&ctx, "agent", Phase::Suspended).await;
    let status = suspended.status.clone().expect("status");
    let at = status.suspended_at.expect("suspendedAt").0;
    assert!(
        at.as_second() >= touched.as_second() + 4,
        "suspended at {at}, less than the idle limit after the touch at {touched}"
    );
    assert_eq!(
        status
            .activity
            .and_then(|a| a.last_activity_time)
            .map(|t| t.0.as_second()),
        Some(touched.as_second()),
        "the idle clock ran from the touch"
    );
    let note = event_note(&ctx, "PolicySuspended").await;
    assert!(note.contains(&name), "{note}");

    // The policy would suspend again at once; delete it so that the wake holds.
    policies
        .delete(&name, &Default::default())
        .await
        .expect("clean up");
    touch(&ctx, "agent", &["--wake"]);
    let resumed = wait_phase(&ctx, "agent", Phase::Running).await;
    assert_eq!(
        resumed.spec.operating_mode,
        sandman::api::OperatingMode::Running,
        "neither the suspend nor the wake wrote the spec"
    );
    assert_eq!(resumed.status.and_then(|s| s.mode_override), None);
}

/// A GitOps tool owns the manifest and re-applies it (server-side apply, its own field
/// manager) while the idle timeout suspends the Sandbox. sandman keeps its automatic state in
/// status, so the re-applies change nothing and nothing flip-flops.
#[tokio::test]
async fn gitops_reapply_does_not_fight_auto_suspend() {
    let ctx = TestContext::new("gitops_reapply").await;
    let _operator = Operator::start(&ctx);
    let mut manifest = sandbox("agent", false);
    manifest.spec.lifecycle = Some(sandman::api::LifecycleSpec {
        idle_timeout: Some("2s".into()),
        ..Default::default()
    });
    manifest.metadata.namespace = Some(ctx.namespace.clone());
    let mut applied = serde_json::to_value(&manifest).expect("manifest");
    applied["apiVersion"] = "sandman.dev/v1alpha1".into();
    applied["kind"] = "Sandbox".into();
    let gitops = PatchParams::apply("argocd-controller").force();
    let api = sandboxes(&ctx);
    let reapply = || {
        let (api, applied, gitops) = (api.clone(), applied.clone(), gitops.clone());
        async move {
            api.patch("agent", &gitops, &Patch::Apply(&applied))
                .await
                .expect("GitOps apply")
        }
    };
    reapply().await;
    // Re-applied over and over while the Sandbox starts, idles and is suspended.
    let suspended = eventually("an automatic suspend despite the re-applies", WAIT, || {
        let (api, reapply) = (api.clone(), reapply);
        async move {
            reapply().await;
            let sandbox = api.get("agent").await.ok()?;
            (sandbox.status.as_ref()?.phase == Some(Phase::Suspended)).then_some(sandbox)
        }
    })
    .await;
    assert_eq!(
        suspended.spec.operating_mode,
        sandman::api::OperatingMode::Running,
        "the user's spec is the user's"
    );
    let held = suspended
        .status
        .as_ref()
        .and_then(|s| s.mode_override.clone())
        .expect("the automatic suspend is in status");
    assert_eq!(held.by, "builtin");
    let suspensions = suspended.status.as_ref().map(|s| s.suspensions);
    let generation = suspended.metadata.generation;

    stays(
        "Suspended through the re-applies, with no second suspension",
        Duration::from_secs(5),
        || {
            let (api, reapply) = (api.clone(), reapply);
            async move {
                reapply().await;
                let Ok(sandbox) = api.get("agent").await else {
                    return false;
                };
                let status = sandbox.status.clone().unwrap_or_default();
                status.phase == Some(Phase::Suspended)
                    && Some(status.suspensions) == suspensions
                    && sandbox.metadata.generation == generation
            }
        },
    )
    .await;
    // sandman manages no field of the spec: only the user's tool does.
    let current = api.get("agent").await.expect("sandbox");
    for entry in current.metadata.managed_fields.unwrap_or_default() {
        if entry.manager.as_deref() == Some(sandman::FIELD_MANAGER)
            && entry.subresource.as_deref() != Some("status")
        {
            let fields = serde_json::to_string(&entry.fields_v1).expect("fields");
            assert!(
                !fields.contains("f:spec"),
                "sandman owns spec fields: {fields}"
            );
        }
    }
    let resumes =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.client.clone(), &ctx.namespace)
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Resuming"))
            .count();
    assert_eq!(resumes, 0, "nothing resumed the Sandbox");
}
