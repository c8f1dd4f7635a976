//! The operator's RBAC, as the chart renders it (`deploy/manifests/sandman.yaml`), is enough for a full Sandbox cycle and
//! no more: the operator runs as that ServiceAccount (by impersonation), and a write it does not
//! need is refused.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandman::api::Phase;
use sandman_testenv::harness::{TestContext, repo_root};

/// The operator's identity, from the checked-in rendering.
async fn as_operator(ctx: &TestContext) -> Client {
    let text = std::fs::read_to_string(repo_root().join("deploy/manifests/sandman.yaml"))
        .expect("read deploy/manifests/sandman.yaml");
    acting_as(ctx, &text, "sandman").await
}

#[tokio::test]
async fn rbac_is_sufficient_for_full_cycle() {
    let ctx = TestContext::new("rbac_sufficient").await;
    let client = as_operator(&ctx).await;
    // With leader election, as the chart runs it: the Lease is in the operator's namespace.
    let _operator = Operator::start_configured(&ctx, client, |options| {
        options.leader_election = Some(sandman::controller::leader::Election {
            namespace: ctx.namespace.clone(),
            name: "sandman".into(),
            identity: "rbac-test".into(),
            lease_duration: std::time::Duration::from_secs(15),
            retry: std::time::Duration::from_secs(1),
        });
    });
    create(&ctx, &sandbox("agent", true)).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    // Events are written with the operator's identity too.
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.client.clone(), &ctx.namespace);
    sandman_testenv::harness::eventually("a Ready event from the operator", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Ready"))
                .then_some(())
        }
    })
    .await;
    let suspend = serde_json::json!({ "spec": { "operatingMode": "Suspended" } });
    sandboxes(&ctx)
        .patch("agent", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .expect("suspend");
    wait_phase(&ctx, "agent", Phase::Suspended).await;
    let resume = serde_json::json!({ "spec": { "operatingMode": "Running" } });
    sandboxes(&ctx)
        .patch("agent", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("resume");
    wait_phase(&ctx, "agent", Phase::Running).await;
    // A Secret a pod names is looked at (metadata), and a Sandbox's own token Secret made.
    Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "keys" }, "stringData": { "k": "v" },
            }))
            .expect("secret"),
        )
        .await
        .expect("an admin creates a Secret");
    let mut keyed = serde_json::to_value(sandbox("keyed", false)).expect("json");
    keyed["spec"]["podTemplate"]["spec"]["volumes"] =
        serde_json::json!([{ "name": "keys", "secret": { "secretName": "keys" } }]);
    keyed["spec"]["podTemplate"]["spec"]["containers"][0]["ports"] =
        serde_json::json!([{ "containerPort": 8080 }]);
    keyed["spec"]["gateway"] = serde_json::json!({ "enabled": true, "generateToken": true });
    create(&ctx, &serde_json::from_value(keyed).expect("sandbox")).await;
    let keyed = wait_phase(&ctx, "keyed", Phase::Running).await;
    assert!(
        keyed.status.and_then(|s| s.gateway_token).is_some(),
        "its token is made"
    );
    // Expiry makes the operator delete the Sandbox itself, with its own permissions.
    let expire = serde_json::json!({ "spec": {
        "shutdownTime": "2020-01-01T00:00:00Z", "shutdownPolicy": "Delete",
    } });
    sandboxes(&ctx)
        .patch("agent", &PatchParams::default(), &Patch::Merge(&expire))
        .await
        .expect("expire");
    wait_gone(&sandboxes(&ctx), "agent").await;
}

#[tokio::test]
async fn rbac_refuses_unneeded_write() {
    let ctx = TestContext::new("rbac_refuses").await;
    let client = as_operator(&ctx).await;
    // Secrets: the operator makes a Sandbox's token Secret once and reads Secrets' metadata;
    // it may not change, delete or list any.
    let victim: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "victim" }, "stringData": { "k": "v" },
    }))
    .expect("secret");
    let secrets_as_admin = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace);
    secrets_as_admin
        .create(&PostParams::default(), &victim)
        .await
        .expect("an admin creates a Secret");
    let secrets = Api::<Secret>::namespaced(client.clone(), &ctx.namespace);
    for error in [
        secrets
            .patch(
                "victim",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({ "stringData": { "k": "stolen" } })),
            )
            .await
            .expect_err("the operator may not change Secrets"),
        secrets
            .delete("victim", &Default::default())
            .await
            .expect_err("nor delete them"),
    ] {
        assert!(
            matches!(error, kube::Error::Api(ref e) if e.code == 403),
            "{error}"
        );
    }
    // sandman never deletes a PVC itself (the garbage collector does, through an owner
    // reference), so its account cannot: a bug can never delete someone's volume.
    let error = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
        client.clone(),
        &ctx.namespace,
    )
    .delete("anything", &Default::default())
    .await
    .expect_err("the operator may not delete PVCs");
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 403),
        "{error}"
    );
    // Pull secrets are read by name (in the operator's namespace; SandboxPolicies name no other).
    let pull_secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "pull" }, "stringData": { ".dockerconfigjson": "{}" },
    }))
    .expect("secret");
    let name = format!("pull-{}", ctx.namespace);
    let mut secret = pull_secret.clone();
    secret.metadata.name = Some(name.clone());
    secrets_as_admin
        .create(&PostParams::default(), &secret)
        .await
        .expect("an admin creates the secret");
    Api::<Secret>::namespaced(client.clone(), &ctx.namespace)
        .get(&name)
        .await
        .expect("the operator reads a pull secret in its own namespace");
    // No Secret is listed or watched: nothing could be cached, or found without its name.
    let error = Api::<Secret>::namespaced(client.clone(), &ctx.namespace)
        .list(&Default::default())
        .await
        .expect_err("the operator may not list Secrets");
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 403),
        "{error}"
    );
    let error = Api::<Namespace>::all(client.clone())
        .delete(&ctx.namespace, &Default::default())
        .await
        .expect_err("nor delete namespaces");
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 403),
        "{error}"
    );
    let error = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, &ctx.namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "x" } }))
                .expect("configmap"),
        )
        .await
        .expect_err("nor write the ConfigMaps it reads policies from");
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 403),
        "{error}"
    );
}
