//! Memory kept on a real node: the operator makes the supervisor's pod, the node agent runs it
//! as a real runc container in a user namespace of its own (`hostUsers: false`), with the
//! capabilities the operator grants and nothing else, and the supervisor inside runs the agent
//! under the pinned runsc, checkpointing to the directory that is the Sandbox's PVC. Needs what
//! `tests/real_nodes.rs` needs, and the pinned runsc (`tools/runsc`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::agent::{AGENT, checkpointed, parse_count};
use common::gateway::{get, options};
use common::real_node::{Node, real_node_with};
use common::*;
use sandman::api::{CheckpointOutcome, OperatingMode, Phase};
use sandman::controller::sandbox::supervisor::{RUNSC_BINARY, SANDMAN_BINARY};
use sandman_testenv::supervisor_image::{REFERENCE, supervisor_image};

/// A real node whose operator makes supervisors from the supervisor image laid out for it, and
/// whose `busybox` image is the node's root file system (the agent's image).
async fn node_that_checkpoints(test: &str) -> Option<Node> {
    let env = real_node_with(test, |options| {
        options.supervisor_image = Some(REFERENCE.into());
    })
    .await?;
    let image = supervisor_image(
        Path::new(env!("CARGO_BIN_EXE_sandman")),
        SANDMAN_BINARY,
        RUNSC_BINARY,
        &env.dir.path().join("supervisor-image"),
    )
    .expect("the supervisor image");
    env.node.load_image(REFERENCE, &image);
    env.node
        .load_image("busybox", &env.dir.path().join("rootfs"));
    Some(env)
}

#[tokio::test]
async fn memory_is_kept_across_suspend_on_a_real_node() {
    let Some(env) = node_that_checkpoints("real_ckpt").await else {
        return;
    };
    let gateway = sandman::gateway::start(env.ctx.client.clone(), options(&env.ctx))
        .await
        .expect("gateway");
    let mut sandbox = env.sandbox("mem", AGENT);
    let ours = checkpointed("mem");
    sandbox.spec.lifecycle = ours.spec.lifecycle;
    sandbox.spec.gateway = Some(sandman::api::GatewaySpec {
        enabled: true,
        ..Default::default()
    });
    create(&env.ctx, &sandbox).await;
    wait_phase(&env.ctx, "mem", Phase::Running).await;
    let path = format!("/sandboxes/{}/mem/", env.ctx.namespace);
    for expected in 1..=3 {
        let (status, _, body) = get(&gateway, &path, None).await;
        assert_eq!(
            (status, parse_count(&body)),
            (200, Some(expected)),
            "{body}\n{}",
            env.container_logs()
        );
    }
    // The supervisor's pod is the one the operator made: its own user namespace, so the
    // volume it wrote belongs to ids that are no one's on the host.
    let volume = env.node.volume_dir(&env.ctx.namespace, "workspace-mem");
    let owner = std::fs::metadata(volume.join("agent.log"))
        .expect("the agent's log on its volume")
        .uid();
    assert!(
        owner >= 1 << 20,
        "the agent's files belong to host uid {owner}"
    );

    env.set_mode("mem", OperatingMode::Suspended).await;
    let sandbox = wait_phase(&env.ctx, "mem", Phase::Suspended).await;
    let taken = sandbox
        .status
        .and_then(|s| s.checkpoint)
        .expect("a checkpoint status");
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    assert!(
        volume
            .join(".sandman/checkpoints")
            .join(&taken.image)
            .is_dir(),
        "the image is on the Sandbox's volume"
    );

    // A request wakes it; the new pod restores, and the counter goes on.
    let (status, _, body) = get(&gateway, &path, None).await;
    assert_eq!(status, 200, "{body}\n{}", env.container_logs());
    let count = parse_count(&body).expect("a count");
    assert!(
        count > 3,
        "the woken agent counts on from 3, it said {count}"
    );
    wait_sandbox(&env.ctx, "mem", "the restore recorded", |s| {
        s.status
            .as_ref()
            .and_then(|s| s.checkpoint.as_ref())
            .is_some_and(|c| c.outcome == CheckpointOutcome::Restored)
    })
    .await;
    assert_eq!(gateway.wakes(), 1);
}
