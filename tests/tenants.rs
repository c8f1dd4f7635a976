//! Hostile tenants on the local control plane: what a tenant writes into its own Sandboxes,
//! claims and pod metadata never reaches beyond its own Sandbox. Each test is one class of
//! fault from the 2026-12-01 security review, and fails without its fix.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::harness::{TestContext, stays};
use serde_json::json;

/// A Sandbox whose pod template is `sandbox(name)`'s with `edit` applied to its JSON.
fn edited(name: &str, volume: bool, edit: impl FnOnce(&mut serde_json::Value)) -> Sandbox {
    let mut value = serde_json::to_value(sandbox(name, volume)).expect("sandbox JSON");
    edit(&mut value["spec"]);
    serde_json::from_value(value).expect("edited sandbox")
}

async fn wait_refused(ctx: &TestContext, name: &str) -> String {
    let refused = wait_sandbox(ctx, name, &format!("{name} to be refused"), |s| {
        condition(s, "Ready").is_some_and(|(_, reason)| reason == "PodBaselineRefused")
    })
    .await;
    refused
        .status
        .and_then(|s| s.decisions)
        .and_then(|d| d.baseline)
        .and_then(|b| b.message)
        .unwrap_or_default()
}

/// The review's sixteen cases, one Sandbox each, all through explicit template values (or a
/// claim's pod metadata). Each is refused, and no pod is made for any.
#[tokio::test]
async fn restricted_profile_breaches_are_refused() {
    let ctx = TestContext::new("tenants_restricted").await;
    let _operator = Operator::start(&ctx);
    let container = |context: serde_json::Value| {
        move |spec: &mut serde_json::Value| {
            spec["podTemplate"]["spec"]["containers"][0]["securityContext"] = context;
        }
    };
    let pod = |field: &'static str, value: serde_json::Value| {
        move |spec: &mut serde_json::Value| spec["podTemplate"]["spec"][field] = value
    };
    let annotation = |key: &'static str, value: &'static str| {
        move |spec: &mut serde_json::Value| {
            spec["podTemplate"]["metadata"]["annotations"] = json!({ key: value });
        }
    };
    let volume = |volume: serde_json::Value| pod("volumes", json!([volume]));
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "seccomp-field",
            Box::new(container(
                json!({ "seccompProfile": { "type": "Unconfined" } }),
            )),
            "seccomp profile Unconfined",
        ),
        (
            "seccomp-annotation",
            Box::new(annotation(
                "seccomp.security.alpha.kubernetes.io/pod",
                "unconfined",
            )),
            "seccomp.security.alpha.kubernetes.io/pod",
        ),
        (
            "apparmor-field",
            Box::new(container(
                json!({ "appArmorProfile": { "type": "Unconfined" } }),
            )),
            "AppArmor profile Unconfined",
        ),
        (
            "apparmor-annotation",
            Box::new(annotation(
                "container.apparmor.security.beta.kubernetes.io/agent",
                "unconfined",
            )),
            "container.apparmor.security.beta.kubernetes.io/agent",
        ),
        (
            "selinux",
            Box::new(container(json!({ "seLinuxOptions": { "type": "spc_t" } }))),
            "SELinux",
        ),
        (
            "procmount",
            Box::new(container(json!({ "procMount": "Unmasked" }))),
            "procMount",
        ),
        (
            "sysctl",
            Box::new(pod(
                "securityContext",
                json!({ "sysctls": [{ "name": "kernel.msgmax", "value": "65536" }] }),
            )),
            "kernel.msgmax",
        ),
        (
            "drop-nothing",
            Box::new(container(json!({ "capabilities": { "drop": [] } }))),
            "does not drop ALL",
        ),
        (
            "root",
            Box::new(container(json!({ "runAsUser": 0 }))),
            "runAsUser: 0",
        ),
        (
            "escalation",
            Box::new(container(json!({ "allowPrivilegeEscalation": true }))),
            "privilege escalation",
        ),
        (
            "nfs",
            Box::new(volume(
                json!({ "name": "n", "nfs": { "server": "10.0.0.1", "path": "/" } }),
            )),
            "type nfs",
        ),
        (
            "iscsi",
            Box::new(volume(
                json!({ "name": "i", "iscsi": { "targetPortal": "10.0.0.1:3260", "iqn": "iqn.2001-04.com.example:t", "lun": 0 } }),
            )),
            "type iscsi",
        ),
        (
            "gitrepo",
            Box::new(volume(
                json!({ "name": "g", "gitRepo": { "repository": "https://example.invalid/r.git" } }),
            )),
            "type gitRepo",
        ),
        (
            "flexvolume",
            Box::new(volume(
                json!({ "name": "f", "flexVolume": { "driver": "example/driver" } }),
            )),
            "type flexVolume",
        ),
        (
            "nodename",
            Box::new(pod("nodeName", json!("some-node"))),
            "nodeName some-node",
        ),
        (
            "tolerate-all",
            Box::new(pod("tolerations", json!([{ "operator": "Exists" }]))),
            "tolerates every taint",
        ),
        (
            "critical",
            Box::new(pod("priorityClassName", json!("system-node-critical"))),
            "system-node-critical",
        ),
    ];
    let mut expected = Vec::new();
    for (name, edit, what) in cases {
        create(&ctx, &edited(name, false, edit)).await;
        expected.push((name, what));
    }
    // A control: the same template with nothing added runs.
    create(&ctx, &sandbox("control", false)).await;
    wait_phase(&ctx, "control", Phase::Running).await;
    for (name, what) in expected {
        let message = wait_refused(&ctx, name).await;
        assert!(message.contains(what), "{name}: {what:?} in {message:?}");
        assert!(
            pods(&ctx).get_opt(name).await.expect("get pod").is_none(),
            "{name} got a pod"
        );
    }
}

/// The pods sandman makes from a template that says nothing pass the API server's own
/// `restricted` Pod Security admission: hardening and the baseline agree with the profile.
#[tokio::test]
async fn hardened_pods_pass_restricted_admission() {
    let ctx = TestContext::new("tenants_admission").await;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    namespaces
        .patch(
            &ctx.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            } } })),
        )
        .await
        .expect("label the namespace restricted");
    // The oracle: the API server does refuse a pod that breaks the profile here.
    let raw: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": { "name": "raw" },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] },
    }))
    .expect("pod");
    let refused = pods(&ctx).create(&PostParams::default(), &raw).await;
    assert!(
        refused.is_err(),
        "restricted admission is not enforced here"
    );

    let _operator = Operator::start(&ctx);
    create(&ctx, &sandbox("plain", true)).await;
    let running = wait_phase(&ctx, "plain", Phase::Running).await;
    assert_eq!(
        condition(&running, "Ready").map(|(status, _)| status),
        Some("True".into())
    );
    assert!(pods(&ctx).get_opt("plain").await.expect("get").is_some());
}

/// Hardening fills only what a template leaves unset, so an explicit root user was once kept.
/// Now it is judged, and refused.
#[tokio::test]
async fn explicit_root_user_is_refused() {
    let ctx = TestContext::new("tenants_root").await;
    let _operator = Operator::start(&ctx);
    let root = edited("root", false, |spec| {
        spec["podTemplate"]["spec"]["containers"][0]["securityContext"] =
            json!({ "runAsNonRoot": false, "runAsUser": 0 });
    });
    create(&ctx, &root).await;
    let message = wait_refused(&ctx, "root").await;
    assert!(
        message.contains("runAsUser: 0") && message.contains("runAsNonRoot: false"),
        "{message}"
    );
    stays(
        "no pod for the root Sandbox",
        Duration::from_secs(3),
        || {
            let pods = pods(&ctx);
            async move { pods.get_opt("root").await.expect("get").is_none() }
        },
    )
    .await;
}

/// A legacy token Secret, made by the tenant for a ServiceAccount of its namespace, gets
/// round the refusal of projected tokens unless the baseline looks at what a Secret is.
#[tokio::test]
async fn legacy_token_secret_is_refused() {
    let ctx = TestContext::new("tenants_legacy_token").await;
    let _operator = Operator::start(&ctx);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for (name, token) in [("legacy", true), ("api-keys", false)] {
        let mut secret = json!({ "metadata": { "name": name }, "stringData": { "k": "v" } });
        if token {
            secret["type"] = json!("kubernetes.io/service-account-token");
            secret["metadata"]["annotations"] =
                json!({ "kubernetes.io/service-account.name": "default" });
        }
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).expect("secret"),
            )
            .await
            .expect("create secret");
    }
    let mounting = |name: &str, secret: &str| {
        let secret = secret.to_string();
        edited(name, false, move |spec| {
            spec["podTemplate"]["spec"]["volumes"] =
                json!([{ "name": "s", "secret": { "secretName": secret } }]);
        })
    };
    create(&ctx, &mounting("token", "legacy")).await;
    create(&ctx, &mounting("keys", "api-keys")).await;
    let via_env = edited("env", false, |spec| {
        spec["podTemplate"]["spec"]["containers"][0]["env"] = json!([{ "name": "T",
            "valueFrom": { "secretKeyRef": { "name": "legacy", "key": "token" } } }]);
    });
    create(&ctx, &via_env).await;
    for name in ["token", "env"] {
        let message = wait_refused(&ctx, name).await;
        assert!(
            message.contains("Secret legacy is a ServiceAccount token"),
            "{message}"
        );
    }
    wait_phase(&ctx, "keys", Phase::Running).await;
}

/// A PVC template's `volumeName` would bind a PV left Available for someone else.
#[tokio::test]
async fn pvc_template_cannot_bind_a_foreign_volume() {
    let ctx = TestContext::new("tenants_foreign_pv").await;
    let _operator = Operator::start(&ctx);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv_name = format!("{}-theirs", ctx.namespace);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": pv_name },
        "spec": {
            "capacity": { "storage": "1Gi" },
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": { "path": "/tmp/theirs" },
        },
    }))
    .expect("pv");
    volumes
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    let name = pv_name.clone();
    let taking = edited("taker", true, move |spec| {
        spec["volumeClaimTemplates"][0]["spec"]["volumeName"] = json!(name);
    });
    create(&ctx, &taking).await;
    let cloning = edited("cloner", true, |spec| {
        spec["volumeClaimTemplates"][0]["spec"]["dataSource"] =
            json!({ "kind": "PersistentVolumeClaim", "name": "workspace-victim" });
    });
    create(&ctx, &cloning).await;
    for (sandbox, what) in [("taker", "names volume"), ("cloner", "cloned from")] {
        let message = wait_refused(&ctx, sandbox).await;
        assert!(message.contains(what), "{message}");
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    stays(
        "no claim is made, and the PV stays unbound",
        Duration::from_secs(3),
        || {
            let (claims, volumes, pv_name) = (claims.clone(), volumes.clone(), pv_name.clone());
            async move {
                let none = claims
                    .list(&Default::default())
                    .await
                    .expect("list")
                    .items
                    .is_empty();
                let pv = volumes.get(&pv_name).await.expect("pv");
                none && pv.spec.and_then(|s| s.claim_ref).is_none()
            }
        },
    )
    .await;
    volumes
        .delete(&pv_name, &Default::default())
        .await
        .expect("clean up");
}

/// An unlabelled NetworkPolicy with the name of a Sandbox's own once made the operator retry a
/// 409 apply conflict in a loop while the Sandbox said Ready with its network profile never
/// applied. Now it is a conflict: Ready says `ChildConflict`, an Event names it, no pod runs
/// without its network, and the stranger's object is left as it was.
#[tokio::test]
async fn network_policy_name_collision_is_a_conflict_not_a_loop() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ctx = TestContext::new("tenants_netpol_collision").await;
    let _operator = Operator::start(&ctx);
    common::policy::install_loaded_cel(
        &ctx,
        "locked",
        "Enforce",
        json!({ "isolation": "{'network': {'ingressPorts': [9000]}, 'reason': 'locked down'}" }),
    )
    .await;
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let stranger: NetworkPolicy = serde_json::from_value(json!({
        "metadata": { "name": "sandman-sandbox-agent" },
        "spec": { "podSelector": {}, "policyTypes": ["Ingress"],
                  "ingress": [{ "from": [{ "ipBlock": { "cidr": "0.0.0.0/0" } }] }] },
    }))
    .expect("network policy");
    let made = policies
        .create(&PostParams::default(), &stranger)
        .await
        .expect("create the stranger's policy");
    create(&ctx, &sandbox("agent", false)).await;
    let held = wait_sandbox(&ctx, "agent", "a ChildConflict", |s| {
        condition(s, "Ready").is_some_and(|(_, reason)| reason == "ChildConflict")
    })
    .await;
    assert_ne!(held.status.and_then(|s| s.phase), Some(Phase::Running));
    let notes = common::agent::event_notes(&ctx, "ChildConflict").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("NetworkPolicy sandman-sandbox-agent")),
        "{notes:?}"
    );
    stays(
        "no pod, and the stranger's policy untouched",
        Duration::from_secs(5),
        || {
            let (pods, policies) = (pods(&ctx), policies.clone());
            let version = made.metadata.resource_version.clone();
            async move {
                let untouched = policies
                    .get("sandman-sandbox-agent")
                    .await
                    .is_ok_and(|p| p.metadata.resource_version == version);
                untouched && pods.get_opt("agent").await.expect("get").is_none()
            }
        },
    )
    .await;
}
