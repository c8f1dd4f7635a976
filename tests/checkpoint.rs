//! Suspend keeps the agent's memory: real runsc checkpoints the agent to the Sandbox's volume
//! before the pod goes, and the next pod restores it. The pods' containers are played (their
//! supervisors listen on the pod IPs, see `common::agent`), everything else is real: the
//! operator, the API server, runsc and the images on the volume.
//!
//! The tests take turns: each resume may give a pod another loopback IP, and a supervisor of
//! one test must never answer for another test's pod.

mod common;

use common::agent::*;
use common::*;
use sandman::api::{CheckpointOutcome, OperatingMode, Phase};
use sandman_testenv::harness::TestContext;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The Sandbox's checkpoint status once it is Suspended.
async fn suspended(ctx: &TestContext, name: &str) -> sandman::api::CheckpointStatus {
    let sandbox = wait_phase(ctx, name, Phase::Suspended).await;
    sandbox
        .status
        .and_then(|s| s.checkpoint)
        .expect("a checkpoint status")
}

async fn outcome(
    ctx: &TestContext,
    name: &str,
    outcome: CheckpointOutcome,
) -> sandman::api::CheckpointStatus {
    let sandbox = wait_sandbox(ctx, name, &format!("checkpoint outcome {outcome:?}"), |s| {
        s.status
            .as_ref()
            .and_then(|s| s.checkpoint.as_ref())
            .is_some_and(|c| c.outcome == outcome)
    })
    .await;
    sandbox
        .status
        .and_then(|s| s.checkpoint)
        .expect("checkpoint")
}

#[tokio::test]
async fn checkpoint_on_suspend_restores_memory() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_restore").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();
    create(&ctx, &checkpointed("mem")).await;

    let first = play(&ctx, &workspace, "mem").await;
    for expected in 1..=3 {
        assert_eq!(first.count().await, expected);
    }
    set_mode(&ctx, "mem", OperatingMode::Suspended).await;
    let taken = suspended(&ctx, "mem").await;
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    assert_eq!(taken.sha256.len(), 64);
    assert!(taken.size_bytes.unwrap_or_default() > 0);
    assert_eq!(taken.pod, "mem");
    assert!(taken.taken_at.is_some());
    assert_eq!(workspace.image_names(), vec![taken.image.clone()]);
    event_notes(&ctx, "Checkpointing").await;
    let notes = event_notes(&ctx, "Checkpointed").await;
    assert!(notes[0].contains(&taken.image), "{notes:?}");
    drop(first);

    set_mode(&ctx, "mem", OperatingMode::Running).await;
    let second = play(&ctx, &workspace, "mem").await;
    assert_eq!(
        second.supervisor.start_report().start,
        sandman::checkpoint::StartKind::Restored
    );
    // The counter went on in memory: a fresh agent would say 1.
    let after = second.count().await;
    assert!(
        after > 3,
        "the restored agent counts on from 3, it said {after}"
    );
    let restored = outcome(&ctx, "mem", CheckpointOutcome::Restored).await;
    assert!(restored.restored_at.is_some());
    assert_eq!(restored.image, taken.image);
    event_notes(&ctx, "Restored").await;
    // The file it opened before the checkpoint is still open and written through.
    let log = std::fs::read_to_string(workspace.volume().join("agent.log")).expect("agent.log");
    assert!(log.contains(&format!("request {after}")), "{log}");
}

#[tokio::test]
async fn checkpoint_failure_falls_back_to_plain_suspend() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_fail").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();
    create(&ctx, &checkpointed("brittle")).await;

    let first = play(&ctx, &workspace, "brittle").await;
    assert_eq!(first.count().await, 1);
    // The agent dies behind the supervisor's back: there is nothing to checkpoint.
    let killed = std::process::Command::new(runsc())
        .arg("--root")
        .arg(first.supervisor.runsc_root())
        .args(["kill", first.supervisor.container_id(), "KILL"])
        .status()
        .expect("runsc kill");
    assert!(killed.success());
    // A current runsc stops the container a moment after `kill` returns.
    let (root, id) = (
        first.supervisor.runsc_root(),
        first.supervisor.container_id(),
    );
    sandman_testenv::harness::eventually("runsc to see the agent stopped", WAIT, || async {
        let state = std::process::Command::new(runsc())
            .arg("--root")
            .arg(root)
            .args(["state", id])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&state.stdout);
        (!text.contains("\"running\"")).then_some(())
    })
    .await;
    set_mode(&ctx, "brittle", OperatingMode::Suspended).await;
    let failed = suspended(&ctx, "brittle").await;
    assert_eq!(failed.outcome, CheckpointOutcome::Failed, "{failed:?}");
    let message = failed.message.clone().unwrap_or_default();
    assert!(message.contains("not running"), "{message}");
    let notes = event_notes(&ctx, "CheckpointFailed").await;
    assert!(notes[0].contains("suspending without it"), "{notes:?}");
    assert!(workspace.image_names().is_empty(), "no half image is left");
    drop(first);

    // The next resume starts afresh, with the file system kept.
    set_mode(&ctx, "brittle", OperatingMode::Running).await;
    let second = play(&ctx, &workspace, "brittle").await;
    assert_eq!(
        second.supervisor.start_report().start,
        sandman::checkpoint::StartKind::ColdStart
    );
    assert_eq!(second.count().await, 1);
    let log = std::fs::read_to_string(workspace.volume().join("agent.log")).expect("agent.log");
    assert_eq!(log.matches("request 1").count(), 2, "{log}");
}

#[tokio::test]
async fn corrupt_checkpoint_cold_starts_with_volumes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_corrupt").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();
    create(&ctx, &checkpointed("flipped")).await;

    let first = play(&ctx, &workspace, "flipped").await;
    assert_eq!(first.count().await, 1);
    assert_eq!(first.count().await, 2);
    set_mode(&ctx, "flipped", OperatingMode::Suspended).await;
    let taken = suspended(&ctx, "flipped").await;
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    drop(first);
    // One byte of the image changes while the Sandbox sleeps.
    let image = workspace.images().join(&taken.image).join("checkpoint.img");
    let mut bytes = std::fs::read(&image).expect("image");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&image, bytes).expect("corrupt");

    set_mode(&ctx, "flipped", OperatingMode::Running).await;
    let second = play(&ctx, &workspace, "flipped").await;
    assert_eq!(
        second.supervisor.start_report().start,
        sandman::checkpoint::StartKind::ColdStart
    );
    assert_eq!(second.count().await, 1, "a fresh agent");
    let refused = outcome(&ctx, "flipped", CheckpointOutcome::RestoreFailed).await;
    let message = refused.message.unwrap_or_default();
    assert!(message.contains("corrupt"), "{message}");
    let notes = event_notes(&ctx, "RestoreFailed").await;
    assert!(notes[0].contains("same volumes"), "{notes:?}");
    // Same volume: what the first agent wrote is there.
    let log = std::fs::read_to_string(workspace.volume().join("agent.log")).expect("agent.log");
    assert!(log.contains("request 2"), "{log}");
}

#[tokio::test]
async fn checkpoints_are_retained_and_pruned() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_prune").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();
    let mut sandbox = checkpointed("kept");
    if let Some(lifecycle) = sandbox.spec.lifecycle.as_mut() {
        lifecycle.keep_checkpoints = Some(2);
    }
    create(&ctx, &sandbox).await;

    let mut images = Vec::new();
    let mut last = 0;
    for round in 0..3 {
        let played = play(&ctx, &workspace, "kept").await;
        let count = played.count().await;
        assert!(
            count > last,
            "round {round}: memory kept ({count} after {last})"
        );
        last = count;
        set_mode(&ctx, "kept", OperatingMode::Suspended).await;
        let taken = suspended(&ctx, "kept").await;
        assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
        assert!(!images.contains(&taken.image), "round {round}: a new image");
        images.push(taken.image);
        drop(played);
        let on_volume = workspace.image_names();
        let newest: Vec<_> = images.iter().rev().take(2).rev().cloned().collect();
        assert_eq!(on_volume, newest, "round {round}: the newest two are kept");
        set_mode(&ctx, "kept", OperatingMode::Running).await;
    }
    let played = play(&ctx, &workspace, "kept").await;
    assert!(played.count().await > last);
}

#[tokio::test]
async fn gateway_wake_restores_checkpoint() {
    use common::gateway::{get, options};
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_gateway").await;
    let _operator = Operator::start(&ctx);
    let gateway = sandman::gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    let workspace = Workspace::new();
    let mut sandbox = checkpointed("woken");
    sandbox.spec.gateway = Some(sandman::api::GatewaySpec {
        enabled: true,
        ..Default::default()
    });
    create(&ctx, &sandbox).await;
    let path = format!("/sandboxes/{}/woken/", ctx.namespace);

    let first = play(&ctx, &workspace, "woken").await;
    for expected in 1..=2 {
        let (status, _, body) = get(&gateway, &path, None).await;
        assert_eq!(
            (status, parse_count(&body)),
            (200, Some(expected)),
            "{body}"
        );
    }
    set_mode(&ctx, "woken", OperatingMode::Suspended).await;
    let taken = suspended(&ctx, "woken").await;
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    drop(first);

    // A request wakes it; the new pod's container is played as it comes, and restores.
    // (A just-restored agent sometimes closes its first connections unanswered; the gateway
    // sends a GET again, so one request is enough.)
    let ((status, _, body), second) =
        tokio::join!(get(&gateway, &path, None), play(&ctx, &workspace, "woken"));
    assert_eq!(status, 200, "{body}");
    let count = parse_count(&body).expect("a count");
    assert!(
        count > 2,
        "the woken agent counts on from 2, it said {count}"
    );
    assert_eq!(
        second.supervisor.start_report().start,
        sandman::checkpoint::StartKind::Restored
    );
    outcome(&ctx, "woken", CheckpointOutcome::Restored).await;
    assert_eq!(gateway.wakes(), 1);
}

/// A Sandbox whose spec leaves checkpoints to its lifecycle decisions (`WhenDecided`) is
/// suspended by a lifecycle policy whose decision asks for one (`checkpoint: true`, contract
/// 0.3.0): its memory is kept.
#[tokio::test]
async fn policy_requests_checkpoint() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_policy").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();
    let mut sandbox = checkpointed("asked");
    // Made for checkpoints, and none taken unless a decision asks.
    sandbox.spec.lifecycle = Some(sandman::api::LifecycleSpec {
        checkpoint: Some(sandman::api::CheckpointMode::WhenDecided),
        ..Default::default()
    });
    create(&ctx, &sandbox).await;

    let first = play(&ctx, &workspace, "asked").await;
    assert_eq!(first.count().await, 1);
    assert_eq!(first.count().await, 2);
    // The policy comes once the agent has state: the Sandbox has been idle for a second by
    // then, longer than the policy allows.
    let installed = common::policy::install_loaded(&ctx, "idle", "idle_suspend", |policy| {
        if let Some(wasm) = policy.spec.wasm.as_mut() {
            wasm.settings = Some(serde_json::json!({ "idleSeconds": 1, "checkpoint": true }));
        }
    })
    .await;
    let taken = suspended(&ctx, "asked").await;
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    let sandbox = sandboxes(&ctx).get("asked").await.expect("sandbox");
    let by = sandbox
        .status
        .and_then(|s| s.mode_override)
        .map(|o| o.by)
        .unwrap_or_default();
    assert_eq!(by, installed.name, "the policy suspended it");
    drop(first);

    // The policy goes (or it would suspend the restored agent again), and a wake resumes.
    installed
        .api
        .delete(&installed.name, &Default::default())
        .await
        .expect("delete the policy");
    let sandbox = sandboxes(&ctx).get("asked").await.expect("sandbox");
    sandboxes(&ctx)
        .patch(
            "asked",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "metadata": { "annotations": {
                sandman::activity::WAKE_REQUESTED: sandman::activity::wake_token(&sandbox),
            } } })),
        )
        .await
        .expect("wake");
    let second = play(&ctx, &workspace, "asked").await;
    let after = second.count().await;
    assert!(
        after > 2,
        "the restored agent counts on from 2, it said {after}"
    );
    outcome(&ctx, "asked", CheckpointOutcome::Restored).await;
}

/// Another pod's requests to the supervisor: unsigned, signed with another token, the token as
/// a bearer, signed for another Sandbox, or an old request for a suspension before the pod.
/// Each is refused with 401 and the agent runs on; the operator's own signed request is taken.
/// A restore whose signature is not the operator's is a cold start, and the image stays.
#[tokio::test]
async fn unauthenticated_checkpoint_is_refused() {
    use sandman::checkpoint::CheckpointRequest;
    use sandman::checkpoint::signed::{authorization, restore_signature};
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_unsigned").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();
    create(&ctx, &checkpointed("guarded")).await;

    let first = play(&ctx, &workspace, "guarded").await;
    assert_eq!(first.count().await, 1);
    let token = supervisor_token(&ctx, &first.pod).await;
    let uid = sandboxes(&ctx)
        .get("guarded")
        .await
        .expect("sandbox")
        .metadata
        .uid
        .expect("uid");
    let control = format!("{}:{}", first.ip, sandman::checkpoint::SUPERVISOR_PORT);
    let body = |uid: &str, suspension: u64| {
        serde_json::to_vec(&CheckpointRequest {
            sandbox_uid: uid.into(),
            pod: "guarded".into(),
            suspension,
            keep: 2,
            timeout_seconds: None,
        })
        .expect("json")
    };
    let ours = body(&uid, 1);
    let theirs = body("another-sandbox", 1);
    let replayed = body(&uid, 0);
    let forged: [(&str, Option<String>, &[u8]); 6] = [
        ("unsigned", None, &ours),
        (
            "another token",
            Some(authorization(&"0".repeat(64), "POST", "/checkpoint", &ours)),
            &ours,
        ),
        (
            "the token as a bearer",
            Some(format!("Bearer {token}")),
            &ours,
        ),
        (
            "signed for another body",
            Some(authorization(&token, "POST", "/checkpoint", &theirs)),
            &ours,
        ),
        (
            "another Sandbox",
            Some(authorization(&token, "POST", "/checkpoint", &theirs)),
            &theirs,
        ),
        (
            "a suspension before the pod",
            Some(authorization(&token, "POST", "/checkpoint", &replayed)),
            &replayed,
        ),
    ];
    for (what, signature, body) in forged {
        let (status, answer) =
            control_request(&control, "POST", "/checkpoint", signature.as_deref(), body).await;
        assert_eq!(status, 401, "{what}: {answer}");
    }
    let (status, answer) = control_request(&control, "GET", "/status", None, b"").await;
    assert_eq!(status, 401, "an unsigned status: {answer}");
    assert!(
        !answer.contains("ColdStart"),
        "nothing is said without a signature: {answer}"
    );
    // Nothing was checkpointed: the agent counts on.
    assert_eq!(first.count().await, 2);
    assert!(workspace.image_names().is_empty());

    // The operator's request, signed, is taken.
    set_mode(&ctx, "guarded", OperatingMode::Suspended).await;
    let taken = suspended(&ctx, "guarded").await;
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    drop(first);

    // A supervisor told to restore that image with a signature that is not the operator's.
    let mut options = agent_options(&workspace, "127.0.0.1");
    options.control = "127.0.0.1:0".parse().expect("address");
    options.forwards.clear();
    options.sandbox_uid = uid.clone();
    options.token = token.clone();
    options.restore = Some(sandman::checkpoint::supervisor::Restore {
        image: taken.image.clone(),
        sha256: taken.sha256.clone(),
        signature: restore_signature(&"0".repeat(64), &uid, &taken.image, &taken.sha256),
    });
    let unsigned = sandman::checkpoint::supervisor::Supervisor::start(options)
        .await
        .expect("the supervisor starts");
    let report = unsigned.start_report().clone();
    assert_eq!(
        report.start,
        sandman::checkpoint::StartKind::ColdStart,
        "{report:?}"
    );
    let reason = report.reason.unwrap_or_default();
    assert!(reason.contains("operator's word"), "{reason}");
    drop(unsigned);

    // The operator's own restore still works: the image was not touched.
    set_mode(&ctx, "guarded", OperatingMode::Running).await;
    let second = play(&ctx, &workspace, "guarded").await;
    assert_eq!(
        second.supervisor.start_report().start,
        sandman::checkpoint::StartKind::Restored
    );
    assert!(second.count().await > 2);
}

/// The token Secret is deleted while the Sandbox sleeps with a checkpoint: the resume makes a
/// new token, signs the restore with it, and the agent's memory comes back.
#[tokio::test]
async fn a_deleted_token_secret_does_not_hold_the_resume() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_token_gone").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();
    create(&ctx, &checkpointed("forgetful")).await;

    let first = play(&ctx, &workspace, "forgetful").await;
    assert_eq!(first.count().await, 1);
    assert_eq!(first.count().await, 2);
    let old_token = supervisor_token(&ctx, &first.pod).await;
    set_mode(&ctx, "forgetful", OperatingMode::Suspended).await;
    let taken = suspended(&ctx, "forgetful").await;
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    drop(first);
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .delete("sandman-token-forgetful", &Default::default())
        .await
        .expect("delete the token Secret");

    set_mode(&ctx, "forgetful", OperatingMode::Running).await;
    let second = play(&ctx, &workspace, "forgetful").await;
    assert_ne!(
        supervisor_token(&ctx, &second.pod).await,
        old_token,
        "a new token"
    );
    assert_eq!(
        second.supervisor.start_report().start,
        sandman::checkpoint::StartKind::Restored,
        "{:?}",
        second.supervisor.start_report()
    );
    assert!(second.count().await > 2);
    outcome(&ctx, "forgetful", CheckpointOutcome::Restored).await;
}

/// What a tenant writes never reaches the supervisor's privilege. A hand-made Sandbox that
/// keeps memory, says it is a template's (its label) and brings a privileged init container is
/// refused by the baseline: no policy allowance exists for checkpoints to borrow. A claim's
/// `PATH` and `LD_PRELOAD`, and a template's own `SANDMAN_RESTORE_*`, reach the supervisor
/// only as the agent's variables, and the supervisor sandman made restores nothing on them.
#[tokio::test]
async fn tenant_cannot_reach_the_supervisors_privilege() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ctx = TestContext::new("ckpt_privilege").await;
    let _operator = Operator::start(&ctx);
    let workspace = Workspace::new();

    let mut forged = checkpointed("forged");
    forged.metadata.labels = Some(labels(&[("sandman.dev/template", "agents")]));
    forged.spec.pod_template.spec.init_containers = Some(vec![
        serde_json::from_value(serde_json::json!({
            "name": "escape", "image": "busybox", "command": ["sh", "-c", "id"],
            "securityContext": { "privileged": true },
        }))
        .expect("an init container"),
    ]);
    create(&ctx, &forged).await;
    let refused = wait_sandbox(&ctx, "forged", "the baseline to refuse it", |s| {
        condition(s, "Ready").is_some_and(|(_, reason)| reason == "PodBaselineRefused")
    })
    .await;
    let message = refused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("escape"), "{message}");
    let pods = pods(&ctx);
    sandman_testenv::harness::stays(
        "no pod for the forged Sandbox",
        std::time::Duration::from_secs(2),
        || {
            let pods = pods.clone();
            async move { matches!(pods.get_opt("forged").await, Ok(None)) }
        },
    )
    .await;

    let mut template = serde_json::to_value(checkpointed("unused").spec).expect("a spec");
    template["podTemplate"]["spec"]["containers"][0]["env"] = serde_json::json!([
        { "name": "SANDMAN_RESTORE_IMAGE", "value": "planted" },
        { "name": "SANDMAN_RESTORE_SHA256", "value": "0".repeat(64) },
        { "name": "SANDMAN_RESTORE_SIGNATURE", "value": "0".repeat(64) },
    ]);
    let template = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxTemplate",
        "metadata": { "name": "agents" },
        "spec": {
            "podTemplate": template["podTemplate"],
            "volumeClaimTemplates": template["volumeClaimTemplates"],
            "lifecycle": template["lifecycle"],
            "envVarsInjectionPolicy": "Allowed",
        },
    });
    let claim = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxClaim",
        "metadata": { "name": "job" },
        "spec": {
            "sandboxTemplateRef": { "name": "agents" },
            "env": [
                { "name": "PATH", "value": "/bin:/workspace/bin" },
                { "name": "LD_PRELOAD", "value": "/workspace/evil.so" },
            ],
        },
    });
    let templates: kube::Api<sandman::api::SandboxTemplate> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.namespace);
    templates
        .create(
            &Default::default(),
            &serde_json::from_value(template).expect("a template"),
        )
        .await
        .expect("create the template");
    let claims: kube::Api<sandman::api::SandboxClaim> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.namespace);
    claims
        .create(
            &Default::default(),
            &serde_json::from_value(claim).expect("a claim"),
        )
        .await
        .expect("create the claim");

    let played = play(&ctx, &workspace, "job").await;
    let spec = played.pod.spec.clone().expect("a spec");
    let container = &spec.containers[0];
    let names: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    for theirs in [
        "PATH",
        "LD_PRELOAD",
        "SANDMAN_RESTORE_IMAGE",
        "SANDMAN_RESTORE_SHA256",
        "SANDMAN_RESTORE_SIGNATURE",
    ] {
        assert!(
            !names.contains(&theirs),
            "{theirs} is the supervisor's: {names:?}"
        );
    }
    let context = container.security_context.clone().expect("a context");
    assert_eq!(context.privileged, Some(false));
    assert_eq!(spec.host_users, Some(false));
    let options = pod_options(&ctx, &workspace, &played.pod, &played.ip).await;
    assert!(options.restore.is_none(), "{:?}", options.restore);
    for theirs in ["PATH=/bin:/workspace/bin", "LD_PRELOAD=/workspace/evil.so"] {
        assert!(
            options.env.iter().any(|e| e == theirs),
            "the agent's: {:?}",
            options.env
        );
    }
    assert_eq!(
        played.supervisor.start_report().start,
        sandman::checkpoint::StartKind::ColdStart
    );
    assert_eq!(played.count().await, 1, "a fresh agent, under gVisor");
}

/// Connections that close before they send a byte (the gateway's check that a woken pod
/// accepts, a port scan) are never bridged into the agent: the agent, which counts every
/// connection it accepts, counts the request that follows them as its first.
#[tokio::test]
async fn a_connection_that_sends_nothing_never_reaches_the_agent() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let workspace = Workspace::new();
    let ip = "127.0.77.1";
    let mut options = agent_options(&workspace, ip);
    options.control = format!("{ip}:0").parse().expect("address");
    let _supervisor = sandman::checkpoint::supervisor::Supervisor::start(options)
        .await
        .expect("the supervisor starts");
    let address = format!("{ip}:{PORT}");
    for _ in 0..5 {
        let probe = tokio::net::TcpStream::connect(&address)
            .await
            .expect("the forwarded port accepts");
        drop(probe);
    }
    assert_eq!(count_at(&address).await, 1, "the probes reached the agent");
}
