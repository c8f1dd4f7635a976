//! One tenant's slow supervisors against everyone else's work. A checkpoint call waits on the
//! tenant's pod inside a reconcile worker; this proves the bound on those calls keeps the
//! others going. A binary of its own: its operator watches every namespace (two tenants), so
//! no other test's Sandboxes may be on its control plane.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::agent::*;
use common::*;
use sandman::api::{CheckpointOutcome, OperatingMode, Phase};
use sandman_testenv::harness::{TestContext, eventually, stays};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A supervisor that takes every connection and never answers, as a hostile tenant's would.
struct Silent {
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Silent {
    async fn on(ip: &str) -> Self {
        let listener = TcpListener::bind((ip, sandman::checkpoint::SUPERVISOR_PORT))
            .await
            .expect("bind the pod's supervisor port");
        let open = Arc::new(AtomicUsize::new(0));
        let counted = open.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self { open, task }
    }

    fn connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        // The listener and every connection it holds close with the task.
        self.task.abort();
    }
}

/// Four slow Sandboxes of one tenant are suspended against an operator with four reconcile
/// workers. While their supervisors say nothing (for a 10-minute checkpoint timeout), another
/// tenant's checkpoint is taken and the slow tenant's own new Sandbox starts; no more of the
/// slow tenant's calls are in flight at once than its bound. Once the silent supervisors go,
/// their Sandboxes suspend without a checkpoint.
#[tokio::test]
async fn slow_supervisor_does_not_stall_other_sandboxes() {
    let slow = TestContext::new("slow_tenant").await;
    let other = TestContext::new("other_tenant").await;
    let _operator = Operator::start_configured(&slow, slow.client.clone(), |o| {
        o.namespace = None;
        o.concurrency = 4;
    });
    let names: Vec<String> = (0..4).map(|i| format!("slow-{i}")).collect();
    for name in &names {
        let mut sandbox = checkpointed(name);
        if let Some(lifecycle) = sandbox.spec.lifecycle.as_mut() {
            lifecycle.checkpoint_timeout = Some("10m".into());
        }
        create(&slow, &sandbox).await;
    }
    let mut silent = Vec::new();
    for name in &names {
        let (_, ip) = running_pod(&slow, name).await;
        silent.push(Silent::on(&ip).await);
    }
    for name in &names {
        set_mode(&slow, name, OperatingMode::Suspended).await;
    }
    eventually("a slow supervisor to be asked", WAIT, || async {
        silent.iter().any(|s| s.connections() > 0).then_some(())
    })
    .await;

    // With four workers, one call per namespace: the others wait for it without a worker.
    let in_flight = || silent.iter().map(Silent::connections).sum::<usize>();
    stays(
        "at most one of the slow tenant's calls in flight",
        Duration::from_secs(5),
        || async { in_flight() <= 1 },
    )
    .await;

    // Another tenant's checkpoint, meanwhile.
    let workspace = Workspace::new();
    create(&other, &checkpointed("quick")).await;
    let played = play(&other, &workspace, "quick").await;
    assert_eq!(played.count().await, 1);
    set_mode(&other, "quick", OperatingMode::Suspended).await;
    let quick = wait_phase(&other, "quick", Phase::Suspended).await;
    let taken = quick
        .status
        .and_then(|s| s.checkpoint)
        .expect("a checkpoint status");
    assert_eq!(taken.outcome, CheckpointOutcome::Checkpointed, "{taken:?}");
    drop(played);
    // The slow tenant's own other work, too.
    create(&slow, &sandbox("plain", false)).await;
    wait_phase(&slow, "plain", Phase::Running).await;

    for name in &names {
        let phase = sandboxes(&slow)
            .get(name)
            .await
            .expect("sandbox")
            .status
            .and_then(|s| s.phase);
        assert_eq!(phase, Some(Phase::Checkpointing), "{name}");
    }

    assert!(in_flight() <= 1, "{} calls in flight", in_flight());

    drop(silent);
    for name in &names {
        let sandbox = wait_phase(&slow, name, Phase::Suspended).await;
        let checkpoint = sandbox
            .status
            .and_then(|s| s.checkpoint)
            .expect("a checkpoint status");
        assert_eq!(checkpoint.outcome, CheckpointOutcome::Failed, "{name}");
    }
}
