//! Memory kept on a real node: the operator makes the supervisor's pod, the node agent runs it
//! as a real runc container in a user namespace of its own (`hostUsers: false`), with the
//! capabilities the operator grants and nothing else, and the supervisor inside runs the agent
//! under the pinned runsc, checkpointing to the directory that is the Sandbox's PVC. Needs what
//! `tests/real_nodes.rs` needs, and the pinned runsc (`tools/runsc`).

mod common;

use std::os::unix::fs::MetadataExt;

use common::agent::{AGENT, checkpointed, parse_count};
use common::cli::{describe, sandbox_command};
use common::gateway::{get, options};
use common::real_node::{Node, node_that_checkpoints};
use common::*;
use sandman::api::{CheckpointOutcome, OperatingMode, Phase, RuntimeSpec};
use sandman::controller::sandbox::supervisor::{RUNSC_BINARY, SANDMAN_BINARY};
use sandman_testenv::supervisor_image::{RUNSC_AT, SANDMAN_AT};

/// The agent's next count through the gateway, asked again while the pod's supervisor is not
/// up yet (the gateway answers 502 then, and the agent counted nothing).
async fn next_count(gateway: &sandman::gateway::Gateway, path: &str) -> u64 {
    sandman_testenv::harness::eventually(&format!("{path} to answer"), WAIT, || async {
        let (status, _, body) = get(gateway, path, None).await;
        if status == 200 {
            parse_count(&body)
        } else {
            None
        }
    })
    .await
}

/// Counts `n` times; each count is above the one before.
async fn counts(gateway: &sandman::gateway::Gateway, path: &str, n: usize) -> u64 {
    let mut last = 0;
    for _ in 0..n {
        let count = next_count(gateway, path).await;
        assert!(count > last, "the agent counted {count} after {last}");
        last = count;
    }
    last
}

#[test]
fn the_supervisor_image_holds_what_the_operators_command_names() {
    assert_eq!(SANDMAN_AT, SANDMAN_BINARY);
    assert_eq!(RUNSC_AT, RUNSC_BINARY);
}

/// A Sandbox on the node whose container runs `script`, checkpointed on suspend, reached
/// through the gateway.
fn sandbox_that_checkpoints(env: &Node, name: &str, script: &str) -> sandman::api::Sandbox {
    let mut sandbox = env.sandbox(name, script);
    sandbox.spec.lifecycle = checkpointed(name).spec.lifecycle;
    sandbox.spec.gateway = Some(sandman::api::GatewaySpec {
        enabled: true,
        ..Default::default()
    });
    sandbox
}

async fn gateway(env: &Node) -> sandman::gateway::Gateway {
    sandman::gateway::start(env.ctx.client.clone(), options(&env.ctx))
        .await
        .expect("gateway")
}

/// Waits until Sandbox `name`'s status says its pod restored a checkpoint.
async fn restored(env: &Node, name: &str) {
    wait_sandbox(&env.ctx, name, "the restore recorded", |s| {
        s.status
            .as_ref()
            .and_then(|s| s.checkpoint.as_ref())
            .is_some_and(|c| c.outcome == CheckpointOutcome::Restored)
    })
    .await;
}

#[tokio::test]
async fn memory_is_kept_across_suspend_on_a_real_node() {
    let Some(env) = node_that_checkpoints("real_ckpt", false).await else {
        return;
    };
    let gateway = gateway(&env).await;
    create(&env.ctx, &sandbox_that_checkpoints(&env, "mem", AGENT)).await;
    wait_phase(&env.ctx, "mem", Phase::Running).await;
    let path = format!("/sandboxes/{}/mem/", env.ctx.namespace);
    let before = counts(&gateway, &path, 3).await;
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
    let count = next_count(&gateway, &path).await;
    assert!(
        count > before,
        "the woken agent counts on from {before}, it said {count}\n{}",
        env.container_logs()
    );
    restored(&env, "mem").await;
    assert_eq!(gateway.wakes(), 1);
}

/// The agent, on its first start only, replaces the image store with a link to a directory of
/// its own; then it serves the counter.
const PLANTING_AGENT: &str = "if [ ! -e /workspace/planted ]; then \
    mkdir -p /workspace/.sandman /workspace/elsewhere; \
    ln -s /workspace/elsewhere /workspace/.sandman/checkpoints; touch /workspace/planted; fi; ";

/// Suspends Sandbox `name`, also when a gateway wake ended its last suspension (its spec says
/// Suspended then, and only a change of it is a new suspend).
async fn suspend(env: &Node, name: &str) -> sandman::api::Sandbox {
    env.set_mode(name, OperatingMode::Running).await;
    env.set_mode(name, OperatingMode::Suspended).await;
    wait_phase(&env.ctx, name, Phase::Suspended).await
}

/// Runs `script` in a bare pod on the node that mounts the Sandbox's claim by name, as a second
/// pod of the same tenant can, until it has written `done` on the volume.
async fn second_pod(env: &Node, sandbox: &str, script: &str) {
    static PODS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "{sandbox}-second-{}",
        PODS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let done = env
        .node
        .volume_dir(&env.ctx.namespace, &format!("workspace-{sandbox}"))
        .join("done");
    let _ = std::fs::remove_file(&done);
    let scheduling = env.node.scheduling();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "nodeSelector": scheduling["nodeSelector"],
            "tolerations": scheduling["tolerations"],
            "volumes": [{ "name": "w", "persistentVolumeClaim": {
                "claimName": format!("workspace-{sandbox}") } }],
            "containers": [{ "name": "c", "image": "busybox",
                "command": ["/bin/sh", "-c", format!("{script}; echo done > /workspace/done; exec sleep 100000")],
                "volumeMounts": [{ "name": "w", "mountPath": "/workspace" }] }],
        },
    }))
    .expect("a pod");
    let pods = pods(&env.ctx);
    pods.create(&Default::default(), &pod)
        .await
        .expect("create the second pod");
    env.file(sandbox, "done").await;
    pods.delete(&name, &Default::default())
        .await
        .expect("delete the second pod");
}

#[tokio::test]
async fn checkpoint_survives_a_hostile_volume() {
    let Some(env) = node_that_checkpoints("real_hostile", false).await else {
        return;
    };
    let gateway = gateway(&env).await;
    let script = format!("{PLANTING_AGENT}{AGENT}");
    create(&env.ctx, &sandbox_that_checkpoints(&env, "hv", &script)).await;
    let path = format!("/sandboxes/{}/hv/", env.ctx.namespace);
    let volume = env.node.volume_dir(&env.ctx.namespace, "workspace-hv");
    let before = counts(&gateway, &path, 5).await;

    // The agent's link: the supervisor takes no image through it, so the suspend goes on
    // without one, and nothing lands where the link points.
    let suspended = suspend(&env, "hv").await;
    let taken = suspended
        .status
        .and_then(|s| s.checkpoint)
        .expect("a checkpoint status");
    assert_eq!(taken.outcome, CheckpointOutcome::Failed, "{taken:?}");
    let elsewhere = std::fs::read_dir(volume.join("elsewhere"))
        .expect("the agent's directory")
        .count();
    assert_eq!(elsewhere, 0, "an image went through the agent's link");
    assert!(
        std::fs::symlink_metadata(volume.join(".sandman/checkpoints"))
            .expect("the link")
            .file_type()
            .is_symlink(),
        "the supervisor removed nothing of the agent's"
    );

    // Woken, the agent starts afresh with its files; a second pod mends the store, and the
    // next suspend checkpoints.
    let fresh = next_count(&gateway, &path).await;
    assert!(
        fresh < before,
        "no memory was kept, so the count starts again: {fresh} after {before}"
    );
    suspend(&env, "hv").await;
    second_pod(&env, "hv", "rm /workspace/.sandman/checkpoints").await;
    env.set_mode("hv", OperatingMode::Running).await;
    let before = counts(&gateway, &path, 3).await;
    env.set_mode("hv", OperatingMode::Suspended).await;
    let taken = wait_sandbox(&env.ctx, "hv", "a checkpoint taken", |s| {
        s.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::Suspended)
                && s.checkpoint
                    .as_ref()
                    .is_some_and(|c| c.outcome == CheckpointOutcome::Checkpointed)
        })
    })
    .await
    .status
    .and_then(|s| s.checkpoint)
    .expect("a checkpoint status");

    // While it sleeps, a second pod plants a `restored` link into the image, aimed at a file
    // the supervisor would create. The restore writes nothing through it.
    second_pod(
        &env,
        "hv",
        &format!(
            "ln -s /workspace/victim /workspace/.sandman/checkpoints/{}/restored",
            taken.image
        ),
    )
    .await;
    let count = next_count(&gateway, &path).await;
    assert!(
        count > before,
        "the restored agent counts on: {count} after {before}"
    );
    assert!(
        std::fs::symlink_metadata(volume.join("victim")).is_err(),
        "the supervisor wrote through a planted link"
    );
}

/// A counter that an exec leaves running: its count in the shell's memory, written each tenth
/// of a second to the root's `/tmp`, which under gVisor is memory too (`--overlay2=root:memory`).
const COUNTER: &str =
    "mkdir -p /tmp; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done";

/// What the counter last wrote, read by a command through the gateway (which wakes the
/// Sandbox when it sleeps); `None` while there is no count.
async fn exec_count(gateway: &sandman::gateway::Gateway, env: &Node, target: &str) -> Option<u64> {
    let output = sandbox_command(
        gateway,
        &env.ctx,
        &["exec", target, "--", "cat", "/tmp/count"],
        None,
    )
    .await;
    if !output.status.success() {
        eprintln!("no count yet: {}", describe(&output));
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

#[tokio::test]
async fn exec_in_a_checkpointed_sandbox_sees_the_restored_agent() {
    let Some(env) = node_that_checkpoints("real_ckpt_exec", true).await else {
        return;
    };
    let gateway = gateway(&env).await;
    let mut sandbox = sandbox_that_checkpoints(&env, "rx", "exec sleep 100000");
    sandbox.spec.runtime = Some(RuntimeSpec { enabled: true });
    create(&env.ctx, &sandbox).await;
    wait_phase(&env.ctx, "rx", Phase::Running).await;
    let target = format!("{}/rx", env.ctx.namespace);

    let started = sandbox_command(
        &gateway,
        &env.ctx,
        &[
            "exec", "-d", "--tag", "counter", &target, "--", "sh", "-c", COUNTER,
        ],
        None,
    )
    .await;
    assert!(started.status.success(), "{}", describe(&started));
    let before = sandman_testenv::harness::eventually("the counter to count", WAIT, || async {
        exec_count(&gateway, &env, &target).await.filter(|c| *c > 1)
    })
    .await;

    env.set_mode("rx", OperatingMode::Suspended).await;
    let suspended = wait_phase(&env.ctx, "rx", Phase::Suspended).await;
    let taken = suspended
        .status
        .and_then(|s| s.checkpoint)
        .expect("a checkpoint status");
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");

    // The command wakes it. A fresh agent would have no count at all: the one it reads is
    // the restored counter's, which goes on from where it was.
    let woken = exec_count(&gateway, &env, &target)
        .await
        .unwrap_or_else(|| panic!("the woken Sandbox has no count\n{}", env.container_logs()));
    assert!(
        woken >= before,
        "the count went back: {woken} after {before}"
    );
    sandman_testenv::harness::eventually("the restored counter to go on", WAIT, || async {
        exec_count(&gateway, &env, &target)
            .await
            .filter(|c| *c > woken)
    })
    .await;
    restored(&env, "rx").await;
    assert_eq!(gateway.wakes(), 1);
}
