//! Faults, against the local control plane: the operator killed mid-launch, and a watch that
//! expires across an API server restart. sandman held all of these by
//! hand (200 Sandboxes, 2026-12-01); these tests keep it so. They restart shared components,
//! so they run one at a time, in a test binary of their own.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::faults::*;
use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PatchParams, WatchParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::harness::{TestContext, control_plane, eventually, stays};

/// One fault at a time: they share the control plane.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The operator as a process of its own, to be SIGKILLed.
fn operator(ctx: &TestContext) -> KillOnDrop {
    operator_process(
        ctx,
        &[
            "--min-dwell-seconds",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
}

#[tokio::test]
async fn operator_killed_mid_launch_leaves_no_duplicates() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("fault_killed_mid_launch").await;
    let seen = record_pod_uids(&ctx);
    let names: Vec<String> = (0..200).map(|i| format!("launch-{i}")).collect();
    for name in &names {
        create(&ctx, &sandbox(name, true)).await;
    }
    let mut first = operator(&ctx);
    let pods_api: Api<Pod> = pods(&ctx);
    // Killed in the thick of it: some pods made, most not.
    eventually("the launch to be under way", LONG, || {
        let pods_api = pods_api.clone();
        async move { (count(&pods_api).await >= 20).then_some(()) }
    })
    .await;
    first.kill();
    let made_before = count(&pods_api).await;
    assert!(
        made_before < names.len(),
        "the kill came too late to test anything"
    );
    let _second = operator(&ctx);
    wait_all(&ctx, &names, Phase::Running).await;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    stays(
        "one pod and one claim per Sandbox",
        Duration::from_secs(3),
        || {
            let (pods_api, claims) = (pods_api.clone(), claims.clone());
            async move { count(&pods_api).await == 200 && count(&claims).await == 200 }
        },
    )
    .await;
    let sandboxes = sandboxes(&ctx)
        .list(&ListParams::default())
        .await
        .expect("list");
    let claim_names: BTreeSet<String> = claims
        .list(&ListParams::default())
        .await
        .expect("list claims")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    for sandbox in &sandboxes.items {
        let name = sandbox.name_any();
        assert!(
            claim_names.contains(&format!("workspace-{name}")),
            "{name} lost its claim"
        );
        let pod = pods_api.get(&name).await.expect("pod");
        assert_eq!(
            pod.owner_references().first().map(|o| o.uid.clone()),
            sandbox.uid(),
            "{name}'s pod is its own"
        );
    }
    let seen = seen.lock().expect("seen").clone();
    let twice: Vec<_> = seen.iter().filter(|(_, uids)| uids.len() > 1).collect();
    assert!(twice.is_empty(), "pods made twice: {twice:?}");
}

/// The `LIST` requests the API server has served for Sandboxes, from its metrics.
async fn sandbox_lists(ctx: &TestContext) -> f64 {
    let text = ctx
        .client
        .request_text(
            http::Request::get("/metrics")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"sandboxes\"") && l.contains("verb=\"LIST\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A watch whose resourceVersion the API server no longer holds (410 Gone) relists once and
/// goes on; it does not relist in a loop. The API server is restarted while the operator
/// watches, and Sandboxes change meanwhile; the test checks first that a watch from the
/// operator's last resourceVersion is indeed refused as expired.
#[tokio::test]
async fn expired_watch_relists_without_a_storm() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("fault_expired_watch").await;
    let _operator = Operator::start(&ctx);
    let names: Vec<String> = (0..10).map(|i| format!("watched-{i}")).collect();
    for name in &names {
        create(&ctx, &sandbox(name, false)).await;
    }
    wait_all(&ctx, &names, Phase::Running).await;
    let api = sandboxes(&ctx);
    let old_version = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("a resourceVersion");
    // A write after the list moves etcd's revision past `old_version` (it is global to every
    // resource). Without one, the restarted API server's watch cache could start at
    // `old_version` itself, and a watch from there would be served, not expired.
    let marker: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "moves-the-revision" } }))
            .expect("a ConfigMap");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&Default::default(), &marker)
        .await
        .expect("create a ConfigMap");

    // The operator's watches break; the API server's watch cache starts again at a newer
    // resourceVersion, and the changes below are made before the operator sees them.
    control_plane()
        .restart("kube-apiserver")
        .expect("restart the API server");
    api_answers(&ctx).await;
    for name in &names[..5] {
        api.patch(name, &PatchParams::default(), &set_mode_patch("Suspended"))
            .await
            .expect("suspend");
    }
    // Compact etcd's history so that the old resourceVersion is gone for good.
    compact().await;
    let expired = async {
        let stream = api
            .watch(&WatchParams::default().timeout(5), &old_version)
            .await;
        match stream {
            Err(kube::Error::Api(e)) => e.code == 410,
            Err(_) => false,
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                matches!(
                    stream.next().await,
                    Some(Ok(kube::api::WatchEvent::Error(e))) if e.code == 410
                )
            }
        }
    }
    .await;
    assert!(
        expired,
        "a watch from {old_version} is not expired: the test proves nothing"
    );

    // The operator saw the changes made while its watch was gone: it relisted. (The test's
    // own polling lists too, so the count starts after it.)
    wait_all(&ctx, &names[..5], Phase::Suspended).await;
    let before = sandbox_lists(&ctx).await;
    stays("no relist storm", Duration::from_secs(10), || async {
        sandbox_lists(&ctx).await - before < 20.0
    })
    .await;
    let api_check: Api<Sandbox> = sandboxes(&ctx);
    assert_eq!(count(&api_check).await, names.len());
}

/// Compacts etcd's history up to its current revision, through etcd's own v3 JSON gateway:
/// every older resourceVersion is then gone, as hours of churn would make it.
async fn compact() {
    let etcd = control_plane().etcd().to_string();
    let client = etcd_json(&etcd);
    let range = client("/v3/kv/range", serde_json::json!({ "key": "Lw==" })).await;
    let revision = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse::<i64>().ok())
        .expect("etcd's revision");
    let compacted = client(
        "/v3/kv/compaction",
        serde_json::json!({ "revision": revision, "physical": true }),
    )
    .await;
    assert!(compacted.get("header").is_some(), "{compacted}");
}

/// A POST of JSON to etcd's gateway, answered with JSON.
fn etcd_json(
    base: &str,
) -> impl Fn(&str, serde_json::Value) -> futures::future::BoxFuture<'static, serde_json::Value> {
    let base = base.to_string();
    move |path, body| {
        let uri = format!("{base}{path}");
        Box::pin(async move {
            use http_body_util::BodyExt;
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let request = http::Request::post(uri)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_string(),
                )))
                .expect("request");
            let response = client.request(request).await.expect("etcd answers");
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            serde_json::from_slice(&bytes).expect("JSON from etcd")
        })
    }
}
