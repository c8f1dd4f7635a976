//! A Sandbox suspended and woken through the gateway, round after round. In a binary of its
//! own: each resume may give the pod another loopback IP, and in a control plane shared with
//! other tests that IP may be one another test's container still listens on.

mod common;

use common::gateway::*;
use common::*;
use sandman::api::{OperatingMode, Phase};
use sandman::gateway;
use sandman_testenv::harness::{TestContext, eventually};

/// A Running Sandbox suspended by its spec wakes for a request, and again after the user
/// suspends it once more (spec back to Running, then Suspended: the user's new word).
#[tokio::test]
async fn repeated_suspends_and_wakes_each_serve_the_request() {
    let ctx = TestContext::new("gateway_rewake").await;
    let _operator = Operator::start(&ctx);
    // The gateway starts first: it learns of the Sandbox from its watch, not its first list.
    let gateway = gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    create(&ctx, &reachable("again", OperatingMode::Running)).await;
    running_pod_ip(&sandboxes(&ctx), "again").await;
    let path = format!("/sandboxes/{}/again/", ctx.namespace);
    for round in 0..2 {
        for mode in ["Running", "Suspended"] {
            sandboxes(&ctx)
                .patch(
                    "again",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(
                        serde_json::json!({ "spec": { "operatingMode": mode } }),
                    ),
                )
                .await
                .expect("set the mode");
            // The last wake's override ends once the operator has seen the spec say Running;
            // only then is Suspended a new suspend.
            if mode == "Running" {
                eventually("the wake's override to end", WAIT, || async {
                    let sandbox = sandboxes(&ctx).get("again").await.ok()?;
                    sandbox
                        .status
                        .is_none_or(|s| s.mode_override.is_none())
                        .then_some(())
                })
                .await;
            }
        }
        wait_phase(&ctx, "again", Phase::Suspended).await;
        // Each resumed pod may get another IP: the container listens on the new one, and stops
        // before the next suspend, so that no other test's pod that reuses the IP reaches it.
        let container = play_container(&ctx, "again");
        let (status, _, body) = get(&gateway, &path, None).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "hello from again"),
            "round {round}"
        );
        drop(container.await.expect("the container listened"));
    }
    assert_eq!(gateway.wakes(), 2);
}
