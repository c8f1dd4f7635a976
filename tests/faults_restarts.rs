//! Faults during suspends and resumes, against a control plane of this binary's own: an API
//! server restart, an etcd restart and a frozen API server. A binary of its own, because the
//! restarts change what the API server's watch cache holds, which the expired-watch test in
//! `faults.rs` relies on.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::faults::*;
use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PatchParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::harness::{TestContext, control_plane, eventually, stays};

/// Suspends and resumes asked while the API server restarts, while etcd restarts, and while
/// the API server is frozen for 20 s all converge: each Sandbox ends in the mode asked, with a
/// pod exactly when it runs, each pod made once, and the state then holds.
#[tokio::test]
async fn apiserver_and_etcd_restarts_converge() {
    let ctx = TestContext::new("fault_restarts").await;
    let seen = record_pod_uids(&ctx);
    // The operator in this process. A `sandman run` process, given the same faults while this
    // test shared the faults binary's control plane, stalled in three of four runs on
    // 2026-12-02 (alive, but neither retrying nor seeing later changes after the API server
    // restart). In this binary of its own, three runs the same day with a `sandman run`
    // process passed (208 s, 128 s, 132 s; with debug and with warn logs): not reproduced,
    // and not explained.
    let _operator = Operator::start(&ctx);
    let names: Vec<String> = (0..30).map(|i| format!("steady-{i}")).collect();
    for name in &names {
        create(&ctx, &sandbox(name, true)).await;
    }
    wait_all(&ctx, &names, Phase::Running).await;
    let api = sandboxes(&ctx);
    let (first, rest) = names.split_at(10);
    let (second, third) = rest.split_at(10);

    // Each fault strikes right after a batch of suspends is asked, before the operator acts.
    ask(&api, first, "Suspended").await;
    control_plane()
        .restart("kube-apiserver")
        .expect("restart the API server");
    api_answers(&ctx).await;
    ask(&api, second, "Suspended").await;
    control_plane().restart("etcd").expect("restart etcd");
    api_answers(&ctx).await;
    ask(&api, third, "Suspended").await;
    ask(&api, &first[..5], "Running").await;
    {
        let _frozen = control_plane()
            .freeze("kube-apiserver")
            .expect("freeze the API server");
        // The fault lasts a bounded window, and the window checks it is one: a stopped API
        // server answers nothing (each try gives up after a second).
        let api = sandboxes(&ctx);
        stays(
            "the API server to stay frozen",
            Duration::from_secs(20),
            || {
                let api = api.clone();
                async move {
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        api.list(&ListParams::default().limit(1)),
                    )
                    .await
                    .is_err()
                }
            },
        )
        .await;
    }
    api_answers(&ctx).await;

    let (woken, asleep) = (&first[..5], names[5..].to_vec());
    wait_all(&ctx, woken, Phase::Running).await;
    wait_all(&ctx, &asleep, Phase::Suspended).await;
    let pods_api: Api<Pod> = pods(&ctx);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let (expected, all) = (
        woken.iter().cloned().collect::<BTreeSet<String>>(),
        names.len(),
    );
    stays(
        "a pod for each running Sandbox only, and every claim kept",
        Duration::from_secs(5),
        || {
            let (pods_api, claims, expected) = (pods_api.clone(), claims.clone(), expected.clone());
            async move {
                let running: BTreeSet<String> = pods_api
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items.iter().map(|p| p.name_any()).collect())
                    .unwrap_or_default();
                running == expected && count(&claims).await == all
            }
        },
    )
    .await;
    // A woken Sandbox has had two pods (before its suspend and after); any other, one.
    let seen = seen.lock().expect("seen").clone();
    let unexpected: Vec<(String, usize)> = seen
        .iter()
        .map(|(name, uids)| (name.clone(), uids.len()))
        .filter(|(name, made)| *made > if woken.contains(name) { 2 } else { 1 })
        .collect();
    assert!(
        unexpected.is_empty(),
        "pods made more than asked: {unexpected:?}"
    );
}

/// Sets the operating mode of each of `names`, retrying while the API server is away.
async fn ask(api: &Api<Sandbox>, names: &[String], mode: &str) {
    for name in names {
        eventually(&format!("{name} asked to be {mode}"), LONG, || async {
            api.patch(name, &PatchParams::default(), &set_mode_patch(mode))
                .await
                .ok()
        })
        .await;
    }
}
