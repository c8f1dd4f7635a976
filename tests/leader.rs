//! Leader election on the local control plane: of two operator processes one reconciles; when
//! it is killed, the other takes over, and no Sandbox is touched twice.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::Api;
use sandman::api::Phase;
use sandman_testenv::harness::{TestContext, eventually};

const LEASE_SECONDS: &str = "4";

/// A loopback port free at the time of asking, outside the range outgoing connections take.
fn free_port() -> u16 {
    sandman_testenv::ports::free_loopback_port().expect("a free port")
}

/// The status code of `GET path` on the operator's metrics port, if it answers.
async fn probe(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

async fn wait_probe(port: u16, path: &str, status: u16) {
    eventually(
        &format!("{path} on :{port} to answer {status}"),
        WAIT,
        || async { (probe(port, path).await == Some(status)).then_some(()) },
    )
    .await;
}

fn operator(ctx: &TestContext, identity: &str, metrics_port: u16) -> KillOnDrop {
    operator_with_lease(ctx, identity, metrics_port, LEASE_SECONDS)
}

fn operator_with_lease(
    ctx: &TestContext,
    identity: &str,
    metrics_port: u16,
    lease_seconds: &str,
) -> KillOnDrop {
    operator_process(
        ctx,
        &[
            "--leader-elect",
            "--lease-namespace",
            &ctx.namespace,
            "--leader-identity",
            identity,
            "--lease-duration-seconds",
            lease_seconds,
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--min-dwell-seconds",
            "1",
        ],
    )
}

async fn holder(ctx: &TestContext) -> Option<String> {
    Api::<Lease>::namespaced(ctx.client.clone(), &ctx.namespace)
        .get_opt("sandman")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn wait_holder(ctx: &TestContext, identity: &str) {
    eventually(&format!("{identity} to hold the Lease"), WAIT, || async {
        (holder(ctx).await.as_deref() == Some(identity)).then_some(())
    })
    .await;
}

async fn pod_uids(ctx: &TestContext) -> BTreeMap<String, String> {
    pods(ctx)
        .list(&Default::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn leader_failover_keeps_singletons() {
    let ctx = TestContext::new("leader_failover").await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut first = operator(&ctx, "replica-a", port_a);
    wait_holder(&ctx, "replica-a").await;
    let mut second = operator(&ctx, "replica-b", port_b);
    // The standby answers its probes (a liveness probe must not restart it while it waits),
    // and the leader is ready once its caches synced and its policies were tried.
    wait_probe(port_b, "/healthz", 200).await;
    wait_probe(port_b, "/readyz", 200).await;
    wait_probe(port_a, "/readyz", 200).await;
    for i in 0..5 {
        create(&ctx, &sandbox(&format!("agent-{i}"), false)).await;
    }
    for i in 0..5 {
        wait_phase(&ctx, &format!("agent-{i}"), Phase::Running).await;
    }
    assert_eq!(
        holder(&ctx).await.as_deref(),
        Some("replica-a"),
        "one leader throughout"
    );
    let before = pod_uids(&ctx).await;
    assert_eq!(before.len(), 5);

    first.kill();
    let killed = Instant::now();
    wait_holder(&ctx, "replica-b").await;
    eprintln!(
        "takeover after the leader was killed: {:.2}s (Lease {LEASE_SECONDS}s)",
        killed.elapsed().as_secs_f64()
    );
    wait_probe(port_b, "/readyz", 200).await;
    // The new leader works: a new Sandbox runs, a suspend goes through.
    create(&ctx, &sandbox("after", false)).await;
    wait_phase(&ctx, "after", Phase::Running).await;
    // No pod is replaced or duplicated, then or for a while after.
    sandman_testenv::harness::stays(
        "every pod kept, one per Sandbox",
        Duration::from_secs(2),
        || async {
            let after = pod_uids(&ctx).await;
            after.len() == 6
                && before
                    .iter()
                    .all(|(name, uid)| after.get(name) == Some(uid))
        },
    )
    .await;
    second.kill();
}

/// A leader stopped with SIGTERM (a rolling update) once kept its Lease until it expired, so
/// reconciling paused for a whole Lease. The Lease here lasts 600 s: only a release lets the
/// standby take over within the wait.
#[tokio::test]
async fn lease_is_released_on_shutdown() {
    let ctx = TestContext::new("lease_released").await;
    let mut first = operator_with_lease(&ctx, "first", free_port(), "600");
    wait_holder(&ctx, "first").await;
    let second_port = free_port();
    let _second = operator_with_lease(&ctx, "second", second_port, "600");
    wait_probe(second_port, "/healthz", 200).await;
    let status = Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let stopped = Instant::now();
    let exit = first.0.wait().expect("the leader exits");
    assert!(exit.success(), "a clean shutdown: {exit:?}");
    wait_holder(&ctx, "second").await;
    eprintln!(
        "handover after SIGTERM: {:.2}s (Lease 600s)",
        stopped.elapsed().as_secs_f64()
    );
    create(&ctx, &sandbox("after-handover", false)).await;
    wait_phase(&ctx, "after-handover", Phase::Running).await;
}
