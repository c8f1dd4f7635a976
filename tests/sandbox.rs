//! The Sandbox reconciler against the local control plane. Each test names the behaviour it
//! proves.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::harness::{TestContext, eventually};

fn claims(ctx: &TestContext) -> Api<PersistentVolumeClaim> {
    Api::namespaced(ctx.client.clone(), &ctx.namespace)
}

fn services(ctx: &TestContext) -> Api<Service> {
    Api::namespaced(ctx.client.clone(), &ctx.namespace)
}

async fn set_mode(ctx: &TestContext, name: &str, mode: &str) {
    sandboxes(ctx)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } })),
        )
        .await
        .expect("patch operatingMode");
}

#[tokio::test]
async fn sandbox_gets_pod_service_and_volume() {
    let ctx = TestContext::new("sandbox_gets_pod_service_and_volume").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", true)).await;
    let sandbox = wait_phase(&ctx, "agent", Phase::Running).await;
    let status = sandbox.status.clone().expect("status");
    assert_eq!(
        condition(&sandbox, "Ready"),
        Some(("True".into(), "DependenciesReady".into()))
    );
    assert_eq!(
        status.service_fqdn.as_deref(),
        Some(format!("agent.{}.svc.cluster.local", ctx.namespace).as_str())
    );
    assert_eq!(
        status.selector.as_deref(),
        Some("sandman.dev/sandbox=agent")
    );
    assert!(status.pod_ips.iter().all(|ip| ip.starts_with("127.1.")) && !status.pod_ips.is_empty());
    assert!(status.node_name.is_some());
    let generation = sandbox.metadata.generation;
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == generation)
    );

    let pod = pods(&ctx).get("agent").await.expect("pod");
    assert_eq!(
        pod.labels().get("sandman.dev/sandbox").map(String::as_str),
        Some("agent")
    );
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Sandbox", Some(true))
    );
    let spec = pod.spec.expect("pod spec");
    assert_eq!(spec.hostname.as_deref(), Some("agent"));
    assert_eq!(spec.subdomain.as_deref(), Some("agent"));
    let claim_volume = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "workspace")
        .expect("workspace volume");
    assert_eq!(
        claim_volume
            .persistent_volume_claim
            .map(|c| c.claim_name)
            .as_deref(),
        Some("workspace-agent")
    );
    // Hardened defaults, where the template said nothing.
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(
        spec.security_context
            .and_then(|s| s.seccomp_profile)
            .map(|p| p.type_)
            .as_deref(),
        Some("RuntimeDefault")
    );
    let container = spec.containers[0]
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(container.allow_privilege_escalation, Some(false));
    assert_eq!(
        container.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );

    let service = services(&ctx).get("agent").await.expect("service");
    let service_spec = service.spec.expect("service spec");
    assert_eq!(service_spec.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(
        service_spec.selector,
        Some(labels(&[("sandman.dev/sandbox", "agent")]))
    );

    let claim = eventually("the workspace claim to bind", WAIT, || {
        let api = claims(&ctx);
        async move {
            let claim = api.get("workspace-agent").await.ok()?;
            (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim)
        }
    })
    .await;
    assert!(
        claim.owner_references().is_empty(),
        "Retain: the claim outlives the Sandbox"
    );
    assert_eq!(
        claim
            .labels()
            .get("sandman.dev/sandbox")
            .map(String::as_str),
        Some("agent")
    );
}

#[tokio::test]
async fn suspend_keeps_volume_and_service() {
    let ctx = TestContext::new("suspend_keeps_volume_and_service").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", true)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    let claim_uid = claims(&ctx)
        .get("workspace-agent")
        .await
        .expect("claim")
        .uid();
    let service_uid = services(&ctx).get("agent").await.expect("service").uid();

    set_mode(&ctx, "agent", "Suspended").await;
    let suspended = wait_phase(&ctx, "agent", Phase::Suspended).await;
    assert_eq!(
        condition(&suspended, "Suspended"),
        Some(("True".into(), "PodTerminated".into()))
    );
    assert_eq!(
        condition(&suspended, "Ready"),
        Some(("False".into(), "SandboxSuspended".into()))
    );
    let status = suspended.status.expect("status");
    assert!(status.suspended_at.is_some());
    assert!(status.pod_ips.is_empty());
    assert!(
        pods(&ctx)
            .get_opt("agent")
            .await
            .expect("get pod")
            .is_none(),
        "the pod is gone"
    );
    assert_eq!(
        claims(&ctx)
            .get("workspace-agent")
            .await
            .expect("claim kept")
            .uid(),
        claim_uid
    );
    assert_eq!(
        services(&ctx)
            .get("agent")
            .await
            .expect("service kept")
            .uid(),
        service_uid
    );
}

#[tokio::test]
async fn resume_reuses_volume_and_identity() {
    let ctx = TestContext::new("resume_reuses_volume_and_identity").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", true)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    let first_pod = pods(&ctx).get("agent").await.expect("pod");
    let claim_uid = claims(&ctx)
        .get("workspace-agent")
        .await
        .expect("claim")
        .uid();

    set_mode(&ctx, "agent", "Suspended").await;
    wait_phase(&ctx, "agent", Phase::Suspended).await;
    set_mode(&ctx, "agent", "Running").await;
    let resumed = wait_sandbox(
        &ctx,
        "agent",
        "the Sandbox to run again after a resume",
        |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.phase == Some(Phase::Running) && st.resumed_at.is_some())
        },
    )
    .await;
    assert_eq!(
        condition(&resumed, "Suspended"),
        Some(("False".into(), "NotSuspended".into()))
    );

    let second_pod = pods(&ctx).get("agent").await.expect("pod");
    assert_ne!(second_pod.uid(), first_pod.uid(), "a new pod");
    let spec = second_pod.spec.expect("spec");
    assert_eq!(spec.hostname.as_deref(), Some("agent"));
    assert_eq!(spec.subdomain.as_deref(), Some("agent"));
    let claim_name = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find_map(|v| v.persistent_volume_claim)
        .map(|c| c.claim_name);
    assert_eq!(claim_name.as_deref(), Some("workspace-agent"));
    assert_eq!(
        claims(&ctx)
            .get("workspace-agent")
            .await
            .expect("claim")
            .uid(),
        claim_uid,
        "the same volume"
    );
}

#[tokio::test]
async fn never_two_pods() {
    let ctx = TestContext::new("never_two_pods").await;
    let seen = record_pod_uids(&ctx);

    // Two operators racing on the same Sandboxes (as during a botched rollout).
    let first = Operator::start(&ctx);
    let second = Operator::start(&ctx);
    let names: Vec<String> = (0..6).map(|i| format!("race-{i}")).collect();
    for name in &names {
        create(&ctx, &sandbox(name, true)).await;
    }
    for name in &names {
        wait_phase(&ctx, name, Phase::Running).await;
    }
    first.kill();
    second.kill();

    // An operator killed in the middle of a create, then started again.
    let operator = Operator::start(&ctx);
    create(&ctx, &sandbox("crash", true)).await;
    eventually("the pod of the crash Sandbox", WAIT, || {
        let pods = pods(&ctx);
        async move { pods.get_opt("crash").await.ok().flatten() }
    })
    .await;
    operator.kill();
    let _restarted = Operator::start(&ctx);
    wait_phase(&ctx, "crash", Phase::Running).await;
    for name in &names {
        wait_phase(&ctx, name, Phase::Running).await;
    }
    let pods_api = pods(&ctx);
    let expected = names.len() + 1;
    sandman_testenv::harness::stays("one pod per Sandbox", Duration::from_secs(2), || {
        let pods_api = pods_api.clone();
        async move {
            pods_api
                .list(&Default::default())
                .await
                .is_ok_and(|l| l.items.len() == expected)
        }
    })
    .await;
    let seen = seen.lock().expect("seen").clone();
    for (name, uids) in &seen {
        assert_eq!(
            uids.len(),
            1,
            "pod {name} was created more than once: {uids:?}"
        );
    }
}

async fn fail_pod(ctx: &TestContext, name: &str) -> String {
    let pod = pods(ctx).get(name).await.expect("pod");
    pods(ctx)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({ "status": { "phase": "Failed", "reason": "Evicted" } }),
            ),
        )
        .await
        .expect("mark the pod Failed");
    pod.uid().unwrap_or_default()
}

#[tokio::test]
async fn failed_pod_is_recreated_with_backoff() {
    let ctx = TestContext::new("failed_pod_is_recreated_with_backoff").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", false)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;

    let first_uid = fail_pod(&ctx, "agent").await;
    let once = wait_sandbox(&ctx, "agent", "a restart after the first failure", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.restarts == 1 && st.phase == Some(Phase::Running))
    })
    .await;
    let second_uid = pods(&ctx)
        .get("agent")
        .await
        .expect("pod")
        .uid()
        .unwrap_or_default();
    assert_ne!(first_uid, second_uid, "the failed pod was replaced");

    fail_pod(&ctx, "agent").await;
    let twice = wait_sandbox(&ctx, "agent", "a restart after the second failure", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.restarts == 2 && st.phase == Some(Phase::Running))
    })
    .await;
    let restart_time = |s: &Sandbox| {
        s.status
            .as_ref()
            .and_then(|st| st.last_restart_time.clone())
            .map(|Time(t)| t)
            .expect("lastRestartTime")
    };
    let gap = restart_time(&twice).duration_since(restart_time(&once));
    assert!(
        gap.as_secs_f64() >= 1.0,
        "the second restart waited for its backoff; gap was {gap:?}"
    );

    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(
        ctx.client.clone(),
        &ctx.namespace,
    )
    .list(&Default::default())
    .await
    .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PodRestarted")),
        "a PodRestarted event explains the restart"
    );
}

#[tokio::test]
async fn expiry_retain_and_delete() {
    let ctx = TestContext::new("expiry_retain_and_delete").await;
    let _operator = Operator::start(&ctx);
    let soon =
        Time(k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(4));
    let mut retained = sandbox("retained", true);
    retained.spec.shutdown_time = Some(soon.clone());
    let mut deleted = sandbox("deleted", false);
    deleted.spec.shutdown_time = Some(soon);
    deleted.spec.shutdown_policy = sandman::api::ShutdownPolicy::Delete;
    create(&ctx, &retained).await;
    create(&ctx, &deleted).await;
    wait_phase(&ctx, "retained", Phase::Running).await;

    let expired = wait_phase(&ctx, "retained", Phase::Expired).await;
    assert_eq!(
        condition(&expired, "Finished"),
        Some(("True".into(), "SandboxExpired".into()))
    );
    assert_eq!(
        condition(&expired, "Ready"),
        Some(("False".into(), "SandboxExpired".into()))
    );
    wait_gone(&pods(&ctx), "retained").await;
    wait_gone(&services(&ctx), "retained").await;
    assert!(
        claims(&ctx)
            .get_opt("workspace-retained")
            .await
            .expect("get claim")
            .is_some(),
        "the volume stays"
    );

    wait_gone(&sandboxes(&ctx), "deleted").await;
    wait_gone(&pods(&ctx), "deleted").await;
}

#[tokio::test]
async fn deleting_sandbox_retains_volumes_by_default() {
    let ctx = TestContext::new("deleting_sandbox_retains_volumes_by_default").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", true)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    let claim_uid = claims(&ctx)
        .get("workspace-agent")
        .await
        .expect("claim")
        .uid();

    sandboxes(&ctx)
        .delete("agent", &DeleteParams::default())
        .await
        .expect("delete sandbox");
    wait_gone(&sandboxes(&ctx), "agent").await;
    wait_gone(&pods(&ctx), "agent").await;
    wait_gone(&services(&ctx), "agent").await;
    let kept = claims(&ctx)
        .get("workspace-agent")
        .await
        .expect("the claim is retained");
    assert_eq!(kept.uid(), claim_uid);
    assert!(kept.metadata.deletion_timestamp.is_none());

    // A new Sandbox of the same name finds its volume again.
    create(&ctx, &sandbox("agent", true)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    assert_eq!(
        claims(&ctx)
            .get("workspace-agent")
            .await
            .expect("claim")
            .uid(),
        claim_uid,
        "re-attached"
    );
}

#[tokio::test]
async fn volume_reclaim_delete_removes_volumes() {
    let ctx = TestContext::new("volume_reclaim_delete_removes_volumes").await;
    let _operator = Operator::start(&ctx);
    let mut doomed = sandbox("agent", true);
    doomed.spec.volume_reclaim_policy = sandman::api::VolumeReclaimPolicy::Delete;
    create(&ctx, &doomed).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    let claim = claims(&ctx).get("workspace-agent").await.expect("claim");
    assert_eq!(claim.owner_references().len(), 1, "owned by the Sandbox");
    // PVC protection: the claim cannot go while a pod uses it.
    assert!(
        claim
            .finalizers()
            .iter()
            .any(|f| f == "kubernetes.io/pvc-protection")
    );

    sandboxes(&ctx)
        .delete("agent", &DeleteParams::default())
        .await
        .expect("delete sandbox");
    wait_gone(&pods(&ctx), "agent").await;
    wait_gone(&claims(&ctx), "workspace-agent").await;
}

#[tokio::test]
async fn reserved_labels_are_stripped() {
    let ctx = TestContext::new("reserved_labels_are_stripped").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("victim", false)).await;
    let mut hijacker = sandbox("hijacker", false);
    let metadata = hijacker
        .spec
        .pod_template
        .metadata
        .get_or_insert_with(Default::default);
    metadata
        .labels
        .insert("sandman.dev/sandbox".into(), "victim".into());
    metadata
        .labels
        .insert("sandman.dev/tier".into(), "gold".into());
    metadata
        .annotations
        .insert("sandman.dev/template-hash".into(), "forged".into());
    create(&ctx, &hijacker).await;
    wait_phase(&ctx, "victim", Phase::Running).await;
    wait_phase(&ctx, "hijacker", Phase::Running).await;

    let pod = pods(&ctx).get("hijacker").await.expect("pod");
    assert_eq!(
        pod.labels().get("sandman.dev/sandbox").map(String::as_str),
        Some("hijacker")
    );
    assert!(!pod.labels().contains_key("sandman.dev/tier"));
    assert_ne!(
        pod.annotations()
            .get("sandman.dev/template-hash")
            .map(String::as_str),
        Some("forged")
    );
    let selected = pods(&ctx)
        .list(&kube::api::ListParams::default().labels("sandman.dev/sandbox=victim"))
        .await
        .expect("list");
    let names: Vec<String> = selected.items.iter().map(|p| p.name_any()).collect();
    assert_eq!(
        names,
        vec!["victim".to_string()],
        "the victim's selector matches only its own pod"
    );
}

/// The API server's message for a refused write.
fn rejected<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            e.message
        }
        other => panic!("expected a 422 rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_sandbox_is_rejected() {
    let ctx = TestContext::new("invalid_sandbox_is_rejected").await;
    let api = sandboxes(&ctx);
    let mut unknown_mode = serde_json::to_value(sandbox("bad-mode", false)).expect("json");
    unknown_mode["spec"]["operatingMode"] = "Paused".into();
    let dynamic: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ctx.namespace,
        &ApiResource::erase::<Sandbox>(&()),
    );
    let object: DynamicObject = serde_json::from_value(unknown_mode).expect("dynamic object");
    let message = rejected(dynamic.create(&PostParams::default(), &object).await);
    assert!(
        message.contains("operatingMode") && message.contains("Unsupported value"),
        "{message}"
    );

    // Names a Service or pod hostname cannot take were once accepted and retried forever.
    for name in [&"a".repeat(64), "dotted.name"] {
        let message = rejected(
            api.create(&PostParams::default(), &sandbox(name, false))
                .await,
        );
        assert!(message.contains("pod's hostname"), "{name}: {message}");
    }
    // So was a claim template that can never become a PVC.
    let mut empty_claim = serde_json::to_value(sandbox("empty-claim", true)).expect("json");
    empty_claim["spec"]["volumeClaimTemplates"][0]["spec"] = serde_json::json!({});
    let object: DynamicObject = serde_json::from_value(empty_claim).expect("dynamic object");
    let message = rejected(dynamic.create(&PostParams::default(), &object).await);
    assert!(message.contains("spec.accessModes"), "{message}");

    let mut bad_timeout = sandbox("bad-timeout", false);
    bad_timeout.spec.lifecycle = Some(sandman::api::LifecycleSpec {
        idle_timeout: Some("soon".into()),
        ..Default::default()
    });
    let message = rejected(api.create(&PostParams::default(), &bad_timeout).await);
    assert!(message.contains("idleTimeout"), "{message}");

    let mut bad_checkpoint = sandbox("bad-checkpoint", false);
    bad_checkpoint.spec.lifecycle = Some(sandman::api::LifecycleSpec {
        checkpoint_timeout: Some("2h".into()),
        keep_checkpoints: Some(40),
        ..Default::default()
    });
    let message = rejected(api.create(&PostParams::default(), &bad_checkpoint).await);
    assert!(message.contains("checkpointTimeout"), "{message}");
    assert!(message.contains("keepCheckpoints"), "{message}");

    // Changing the templates, and adding templates to a Sandbox made without them.
    for (name, volume, size) in [
        ("with-volume", true, "5Gi"),
        ("without-volume", false, "1Gi"),
    ] {
        create(&ctx, &sandbox(name, volume)).await;
        let templates = serde_json::json!({ "spec": { "volumeClaimTemplates": [{
            "metadata": { "name": "workspace" },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": size } } }
        }] } });
        let message = rejected(
            api.patch(name, &PatchParams::default(), &Patch::Merge(templates))
                .await,
        );
        assert!(
            message.contains("volumeClaimTemplates is immutable"),
            "{name}: {message}"
        );
    }
}

#[tokio::test]
async fn foreign_pod_is_reported_not_adopted() {
    let ctx = TestContext::new("foreign_pod_is_reported_not_adopted").await;
    let foreign: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "agent", "labels": { "owner": "someone-else" } },
        "spec": { "containers": [{ "name": "main", "image": "registry.example/other:1" }] }
    }))
    .expect("pod");
    let foreign = pods(&ctx)
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create foreign pod");
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", false)).await;
    let conflicted = wait_sandbox(&ctx, "agent", "the conflict to be reported", |s| {
        condition(s, "Ready").is_some_and(|(_, reason)| reason == "PodNameConflict")
    })
    .await;
    assert_eq!(conflicted.status.and_then(|s| s.phase), Some(Phase::Failed));
    let still = pods(&ctx)
        .get("agent")
        .await
        .expect("the foreign pod is untouched");
    assert_eq!(still.uid(), foreign.uid());
    assert!(still.owner_references().is_empty(), "not adopted");
}

#[tokio::test]
async fn deleted_pod_is_recreated() {
    let ctx = TestContext::new("deleted_pod_is_recreated").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", true)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    let first = pods(&ctx).get("agent").await.expect("pod").uid();
    pods(&ctx)
        .delete("agent", &DeleteParams::default())
        .await
        .expect("delete the pod behind sandman's back");
    let healed = wait_sandbox(&ctx, "agent", "the pod to be recreated", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.restarts == 1 && st.phase == Some(Phase::Running))
    })
    .await;
    assert_ne!(pods(&ctx).get("agent").await.expect("pod").uid(), first);
    assert!(healed.status.and_then(|s| s.last_restart_time).is_some());
}

#[tokio::test]
async fn pod_template_changes_follow_update_strategy() {
    let ctx = TestContext::new("pod_template_changes_follow_update_strategy").await;
    let _operator = Operator::start(&ctx);
    let mut recreate = sandbox("recreate", false);
    recreate.spec.update_strategy = sandman::api::UpdateStrategy::Recreate;
    create(&ctx, &recreate).await;
    create(&ctx, &sandbox("on-resume", false)).await;
    wait_phase(&ctx, "recreate", Phase::Running).await;
    wait_phase(&ctx, "on-resume", Phase::Running).await;
    let uid = |name: &'static str| {
        let pods = pods(&ctx);
        async move { pods.get(name).await.expect("pod").uid() }
    };
    let (recreate_uid, on_resume_uid) = (uid("recreate").await, uid("on-resume").await);
    let new_image = serde_json::json!({ "spec": { "podTemplate": { "spec": { "containers": [{ "name": "agent", "image": "registry.example/agent:2" }] } } } });
    for name in ["recreate", "on-resume"] {
        sandboxes(&ctx)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(new_image.clone()),
            )
            .await
            .expect("change the template");
    }
    let image = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone())
            .unwrap_or_default()
    };
    let replaced = eventually("Recreate to replace the pod", WAIT, || {
        let pods = pods(&ctx);
        let old = recreate_uid.clone();
        async move {
            pods.get_opt("recreate")
                .await
                .ok()
                .flatten()
                .filter(|p| p.uid() != old)
        }
    })
    .await;
    assert_eq!(image(&replaced), "registry.example/agent:2");
    wait_phase(&ctx, "recreate", Phase::Running).await;

    let kept = pods(&ctx).get("on-resume").await.expect("pod");
    assert_eq!(
        kept.uid(),
        on_resume_uid,
        "OnResume leaves the running pod alone"
    );
    assert_eq!(image(&kept), "registry.example/agent:1");
    set_mode(&ctx, "on-resume", "Suspended").await;
    wait_phase(&ctx, "on-resume", Phase::Suspended).await;
    set_mode(&ctx, "on-resume", "Running").await;
    wait_phase(&ctx, "on-resume", Phase::Running).await;
    assert_eq!(
        image(&pods(&ctx).get("on-resume").await.expect("pod")),
        "registry.example/agent:2",
        "the change took effect at resume"
    );
}

#[tokio::test]
async fn service_false_means_no_service() {
    let ctx = TestContext::new("service_false_means_no_service").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", false)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    assert!(
        services(&ctx)
            .get_opt("agent")
            .await
            .expect("get")
            .is_some()
    );
    sandboxes(&ctx)
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "service": false } })),
        )
        .await
        .expect("turn the service off");
    wait_gone(&services(&ctx), "agent").await;
    let sandbox = wait_sandbox(&ctx, "agent", "serviceFQDN to be cleared", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.service_fqdn.is_none())
    })
    .await;
    assert_eq!(sandbox.status.and_then(|s| s.phase), Some(Phase::Running));
}

/// The Ready reason and message of a Sandbox.
fn ready(sandbox: &Sandbox) -> (String, String) {
    sandbox
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

async fn wait_reason(ctx: &TestContext, name: &str, reason: &str) -> Sandbox {
    wait_sandbox(ctx, name, &format!("{name} to report {reason}"), |s| {
        ready(s).0 == reason
    })
    .await
}

/// A Sandbox named so that its claim is `postgres-data`, an administrator's PVC, once got
/// `controller: true` on it, and deleting the Sandbox deleted the PVC. A Sandbox named like an
/// existing Service replaced its selector.
#[tokio::test]
async fn sandbox_never_takes_over_a_claim_or_service_it_did_not_make() {
    let ctx = TestContext::new("sandbox_no_takeover").await;
    let _operator = Operator::start(&ctx);
    let admin_claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "postgres-data", "labels": { "app": "postgres" } },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": { "requests": { "storage": "1Gi" } },
        },
    }))
    .expect("claim");
    claims(&ctx)
        .create(&PostParams::default(), &admin_claim)
        .await
        .expect("create the administrator's claim");
    let admin_service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "db" }, "ports": [{ "port": 5432 }] },
    }))
    .expect("service");
    services(&ctx)
        .create(&PostParams::default(), &admin_service)
        .await
        .expect("create the administrator's Service");

    let mut data = sandbox("data", true);
    data.spec.volume_claim_templates[0].metadata = Some(kube::api::ObjectMeta {
        name: Some("postgres".into()),
        ..Default::default()
    });
    if let Some(mounts) = data.spec.pod_template.spec.containers[0]
        .volume_mounts
        .as_mut()
    {
        mounts[0].name = "postgres".into();
    }
    create(&ctx, &data).await;
    create(&ctx, &sandbox("web", false)).await;

    let held = wait_reason(&ctx, "data", "ChildConflict").await;
    assert!(
        ready(&held)
            .1
            .contains("PersistentVolumeClaim postgres-data exists"),
        "{}",
        ready(&held).1
    );
    let held = wait_reason(&ctx, "web", "ChildConflict").await;
    assert!(
        ready(&held).1.contains("Service web exists"),
        "{}",
        ready(&held).1
    );

    let untouched = |claim: &PersistentVolumeClaim| {
        claim.owner_references().is_empty()
            && !claim.labels().keys().any(|k| k.starts_with("sandman.dev/"))
    };
    let claim = claims(&ctx).get("postgres-data").await.expect("claim");
    assert!(untouched(&claim), "{:?}", claim.metadata);
    let service = services(&ctx).get("web").await.expect("service");
    assert_eq!(
        service.spec.and_then(|s| s.selector),
        Some(BTreeMap::from([("app".to_string(), "db".to_string())]))
    );
    assert!(service.metadata.owner_references.is_none());
    for name in ["data", "web"] {
        assert!(
            pods(&ctx).get_opt(name).await.expect("get pod").is_none(),
            "no pod is made while {name} conflicts: it would mount or answer for a stranger's object"
        );
    }

    sandboxes(&ctx)
        .delete("data", &DeleteParams::default())
        .await
        .expect("delete the Sandbox");
    wait_gone(&sandboxes(&ctx), "data").await;
    let api = claims(&ctx);
    sandman_testenv::harness::stays(
        "the administrator's claim outlives the Sandbox",
        Duration::from_secs(3),
        || {
            let api = api.clone();
            async move {
                api.get_opt("postgres-data")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|c| c.metadata.deletion_timestamp.is_none())
            }
        },
    )
    .await;
}

/// The applied-hash annotation once skipped the apply whenever it matched, so a selector
/// edited by hand stayed for good.
#[tokio::test]
async fn hand_edited_service_selector_is_put_back() {
    let ctx = TestContext::new("sandbox_service_drift").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("agent", false)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    services(&ctx)
        .patch(
            "agent",
            &PatchParams::apply("someone-by-hand").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": "agent" },
                "spec": { "selector": { "sandman.dev/sandbox": "victim", "app": "db" } },
            })),
        )
        .await
        .expect("edit the selector");
    let api = services(&ctx);
    eventually("the selector to be put back", WAIT, || {
        let api = api.clone();
        async move {
            let selector = api.get("agent").await.ok()?.spec?.selector?;
            (selector == BTreeMap::from([("sandman.dev/sandbox".to_string(), "agent".to_string())]))
                .then_some(())
        }
    })
    .await;
}

/// A pod the API server refuses once left PHASE and READY empty, and a Rust debug dump in an
/// Event, retried every 5 s.
#[tokio::test]
async fn refused_pod_is_reported_in_status() {
    let ctx = TestContext::new("sandbox_refused_pod").await;
    let _operator = Operator::start(&ctx);
    let mut refused = sandbox("refused", false);
    refused.spec.pod_template.spec.containers[0].name = "Not_A_Valid_Name".into();
    create(&ctx, &refused).await;
    let held = wait_reason(&ctx, "refused", "PodRejected").await;
    let (_, message) = ready(&held);
    assert!(
        message.starts_with("the API server refused the pod: ")
            && message.contains("Not_A_Valid_Name")
            && !message.contains("Status {"),
        "{message}"
    );
    assert_eq!(
        held.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let event = eventually("a PodRejected Event", WAIT, || {
        let events = events.clone();
        async move {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("PodRejected"))
        }
    })
    .await;
    assert_eq!(
        event.note.as_deref(),
        Some(message.as_str()),
        "the same words"
    );

    // Fixing the template lets the pod be made.
    sandboxes(&ctx)
        .patch(
            "refused",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "podTemplate": { "spec": {
                "containers": [{ "name": "agent", "image": "registry.example/agent:1" }]
            } } } })),
        )
        .await
        .expect("fix the template");
    wait_phase(&ctx, "refused", Phase::Running).await;
}

#[tokio::test]
async fn a_repeated_event_is_one_series() {
    let ctx = TestContext::new("event_series").await;
    let made = create(&ctx, &sandbox("noisy", false)).await;
    let reference = kube::Resource::object_ref(&made, &());
    let recorder = sandman::controller::recorder::Recorder::new(
        ctx.client.clone(),
        "sandman".into(),
        "test".into(),
    );
    let event = |note: &str| kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "ReconcilerError".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    for note in [
        "the same failure",
        "the same failure",
        "the same failure",
        "another",
    ] {
        recorder
            .publish(&event(note), &reference)
            .await
            .expect("publish");
    }
    let events = events(&ctx).await;
    let mut counts: Vec<(String, i32)> = events
        .iter()
        .map(|e| {
            (
                e.note.clone().unwrap_or_default(),
                e.series.as_ref().map_or(1, |s| s.count),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [("another".into(), 1), ("the same failure".into(), 3)],
        "{events:?}"
    );
}
