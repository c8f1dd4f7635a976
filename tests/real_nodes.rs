//! Sandboxes on a real node: real containers under runc or gVisor (`runsc`), started, stopped
//! and restarted by a node agent of this project that stands in for a kubelet
//! (`sandman_testenv::real_node`), driven through the API like any node. Needs root, `runc`,
//! `runsc` and `busybox-static` (the test command, `hack/test.sh`, installs them); without them
//! the tests fail, and say why.

mod common;

use std::time::Duration;

use common::real_node::{real_node, real_node_with};
use common::*;
use sandman::api::{OperatingMode, Phase};
use sandman_testenv::harness::{eventually, stays};

/// What the container reports of its kernel and of dmesg.
const KERNEL: &str = "cat /proc/version > /workspace/version; \
    dmesg > /workspace/dmesg 2>&1; exec sleep 100000";

#[tokio::test]
async fn gvisor_policy_runs_pod_under_gvisor() {
    let Some(env) = real_node("real_gvisor").await else {
        return;
    };
    common::policy::install_loaded_cel(
        &env.ctx,
        "gvisor",
        "Enforce",
        serde_json::json!({ "isolation": "{'runtimeClassName': 'gvisor', 'reason': 'every agent under gVisor'}" }),
    )
    .await;
    create(&env.ctx, &env.sandbox("guarded", KERNEL)).await;
    let running = wait_phase(&env.ctx, "guarded", Phase::Running).await;
    assert_eq!(
        running.status.and_then(|s| s.runtime_class_name).as_deref(),
        Some("gvisor")
    );
    // gVisor's own kernel: its version string and its boot log, not the host's.
    let host = std::fs::read_to_string("/proc/version").expect("host kernel");
    let version = env.file("guarded", "version").await;
    assert_ne!(version, host, "the container sees the host's kernel");
    let dmesg = env.file("guarded", "dmesg").await;
    assert!(dmesg.contains("Starting gVisor"), "{dmesg}");
}

#[tokio::test]
async fn runc_sandbox_is_not_gvisor() {
    let Some(env) = real_node("real_runc").await else {
        return;
    };
    create(&env.ctx, &env.sandbox("plain", KERNEL)).await;
    wait_phase(&env.ctx, "plain", Phase::Running).await;
    let host = std::fs::read_to_string("/proc/version").expect("host kernel");
    assert_eq!(env.file("plain", "version").await, host);
    let dmesg = env.file("plain", "dmesg").await;
    assert!(!dmesg.contains("gVisor"), "{dmesg}");
}

#[tokio::test]
async fn real_pods_have_their_own_network_namespace() {
    let Some(env) = real_node("real_netns").await else {
        return;
    };
    // `a` serves on its own loopback, and checks that it can reach itself there (the control);
    // `b`, under gVisor, tries the same address and must find nothing: a loopback of its own.
    let a = "echo $POD_IP > /workspace/ip; cat /proc/net/dev > /workspace/links; \
        mkdir -p /tmp/w; echo private > /tmp/w/index.html; httpd -p 127.0.0.1:8080 -h /tmp/w; \
        if nc 127.0.0.1 8080 </dev/null; then echo reached; else echo refused; fi \
          > /workspace/loopback; exec sleep 100000";
    let b = "echo $POD_IP > /workspace/ip; \
        if nc 127.0.0.1 8080 </dev/null; then echo reached; else echo refused; fi \
          > /workspace/loopback; exec sleep 100000";
    create(&env.ctx, &env.sandbox("a", a)).await;
    assert_eq!(env.file("a", "loopback").await.trim(), "reached");
    let mut gvisor = env.sandbox("b", b);
    gvisor.spec.pod_template.spec.runtime_class_name = Some("gvisor".into());
    create(&env.ctx, &gvisor).await;
    assert_eq!(env.file("b", "loopback").await.trim(), "refused");

    // Addresses from the node's own subnet, one per pod; the pods' only links are theirs.
    let subnet = env.node.pod_subnet();
    let prefix = subnet.trim_end_matches("0/24");
    let (ip_a, ip_b) = (env.file("a", "ip").await, env.file("b", "ip").await);
    assert!(
        ip_a.starts_with(prefix) && ip_b.starts_with(prefix),
        "{ip_a} {ip_b} in {subnet}"
    );
    assert_ne!(ip_a, ip_b);
    let links: std::collections::BTreeSet<String> = env
        .file("a", "links")
        .await
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .filter(|name| !name.contains('|'))
        .collect();
    assert_eq!(links, ["eth0", "lo"].map(String::from).into());

    // The node's namespaces and containers go with the node.
    let node = env.node.network_namespace();
    let namespaces = || -> Vec<String> {
        std::fs::read_dir("/var/run/netns")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        namespaces()
            .iter()
            .any(|n| n.starts_with(&format!("{node}-p"))),
        "{:?}",
        namespaces()
    );
    let node_dir = env.dir.path().to_string_lossy().into_owned();
    drop(env);
    let running: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&node_dir))
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n == &node || n.starts_with(&format!("{node}-")))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn real_suspend_resume_keeps_volume_data() {
    let Some(env) = real_node("real_resume").await else {
        return;
    };
    let script = "[ -f /workspace/first ] || echo \"$HOSTNAME $(date +%s%N)\" > /workspace/first; \
        echo started >> /workspace/starts; exec sleep 100000";
    create(&env.ctx, &env.sandbox("kept", script)).await;
    wait_phase(&env.ctx, "kept", Phase::Running).await;
    let first = env.file("kept", "first").await;
    assert_eq!(env.file("kept", "starts").await, "started\n");

    env.set_mode("kept", OperatingMode::Suspended).await;
    wait_phase(&env.ctx, "kept", Phase::Suspended).await;
    eventually("the container to stop", WAIT, || async {
        (env.node.containers_of(&env.ctx.namespace, "kept").await == 0).then_some(())
    })
    .await;
    env.set_mode("kept", OperatingMode::Running).await;
    wait_phase(&env.ctx, "kept", Phase::Running).await;
    eventually("a second start on the same volume", WAIT, || async {
        let starts = env.file("kept", "starts").await;
        (starts == "started\nstarted\n").then_some(())
    })
    .await;
    assert_eq!(
        env.file("kept", "first").await,
        first,
        "the volume kept its data"
    );
}

#[tokio::test]
async fn real_pod_is_singleton_across_rapid_flips() {
    let Some(env) = real_node("real_flips").await else {
        return;
    };
    create(&env.ctx, &env.sandbox("flip", "exec sleep 100000")).await;
    wait_phase(&env.ctx, "flip", Phase::Running).await;
    for round in 0..6 {
        let mode = if round % 2 == 0 {
            OperatingMode::Suspended
        } else {
            OperatingMode::Running
        };
        env.set_mode("flip", mode).await;
        assert!(
            env.node.containers_of(&env.ctx.namespace, "flip").await <= 1,
            "round {round}: two containers at once"
        );
    }
    env.set_mode("flip", OperatingMode::Running).await;
    wait_phase(&env.ctx, "flip", Phase::Running).await;
    eventually("one container again", WAIT, || async {
        (env.node.containers_of(&env.ctx.namespace, "flip").await == 1).then_some(())
    })
    .await;
    stays(
        "one container, never two",
        Duration::from_secs(3),
        || async { env.node.containers_of(&env.ctx.namespace, "flip").await == 1 },
    )
    .await;
}

/// A container that exits is started again in the same pod, as restartPolicy Always says, and
/// the pod's status counts it: the node agent reports `restartCount` as a kubelet does.
#[tokio::test]
async fn exited_container_restarts_and_pod_counts_it() {
    let Some(env) = real_node("real_restart").await else {
        return;
    };
    create(
        &env.ctx,
        &env.sandbox("crashy", "echo run >> /workspace/runs; sleep 1; exit 3"),
    )
    .await;
    wait_phase(&env.ctx, "crashy", Phase::Running).await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(env.ctx.client.clone(), &env.ctx.namespace);
    let restarts = eventually("the pod to report a restart", WAIT, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get_opt("crashy").await.ok()??;
            let count = pod
                .status?
                .container_statuses?
                .first()
                .map(|c| c.restart_count)?;
            (count >= 2).then_some(count)
        }
    })
    .await;
    // Every start ran the container's command again, on the same volume: each counted
    // restart ended a run that had written its line.
    let runs = env.file("crashy", "runs").await;
    assert!(
        runs.lines().count() as i32 >= restarts,
        "{restarts} restarts reported, the command ran {} times",
        runs.lines().count()
    );
    assert!(
        env.node.containers_of(&env.ctx.namespace, "crashy").await <= 1,
        "a restart never runs a second container"
    );
}

#[tokio::test]
async fn hardened_defaults_hold_in_a_real_container() {
    // The control below opens what the pod baseline refuses (a mounted token); the hardened
    // defaults under test are the pod builder's, not the baseline's.
    let Some(env) = real_node_with("real_hardened", |o| o.pod_baseline = false).await else {
        return;
    };
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status > /workspace/status; \
        ls /var/run/secrets/kubernetes.io/serviceaccount > /workspace/token 2>&1; \
        echo done >> /workspace/token; exec sleep 100000";
    create(&env.ctx, &env.sandbox("hardened", script)).await;
    // The same container with the defaults opened on purpose: the checks can fail.
    let mut open = env.sandbox("open", script);
    open.spec.pod_template.spec.automount_service_account_token = Some(true);
    open.spec.pod_template.spec.containers[0].security_context =
        serde_json::from_value(serde_json::json!({
            "capabilities": { "drop": ["NET_RAW"] },
            "allowPrivilegeEscalation": true,
        }))
        .ok();
    create(&env.ctx, &open).await;

    let status = env.file("hardened", "status").await;
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let token = env.file("hardened", "token").await;
    assert!(!token.contains("token\n"), "a token is mounted: {token}");

    let status = env.file("open", "status").await;
    assert!(!status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    let token = env.file("open", "token").await;
    assert!(token.contains("token\n"), "{token}");
}

#[tokio::test]
async fn gateway_wakes_real_container() {
    let Some(env) = real_node("real_gateway").await else {
        return;
    };
    let gateway =
        sandman::gateway::start(env.ctx.client.clone(), common::gateway::options(&env.ctx))
            .await
            .expect("gateway");
    let script = "mkdir -p /tmp/www; echo \"hello from $HOSTNAME\" > /tmp/www/index.html; \
        exec httpd -f -p $POD_IP:8080 -h /tmp/www";
    // Under runc and under gVisor. (busybox httpd under gVisor, just started, now and then
    // closes connections unanswered for a moment: the gateway sends a GET again;
    // docs/real-nodes.md.)
    for (name, runtime) in [("web", None::<&str>), ("webg", Some("gvisor"))] {
        let mut sandbox = env.sandbox(name, script);
        sandbox.spec.pod_template.spec.runtime_class_name = runtime.map(str::to_string);
        sandbox.spec.gateway = Some(sandman::api::GatewaySpec {
            enabled: true,
            ..Default::default()
        });
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        create(&env.ctx, &sandbox).await;
        wait_phase(&env.ctx, name, Phase::Suspended).await;
        let path = format!("/sandboxes/{}/{name}/", env.ctx.namespace);
        let (status, _, body) = common::gateway::get(&gateway, &path, None).await;
        assert_eq!(
            (status, body.trim()),
            (200, format!("hello from {name}").as_str()),
            "{runtime:?}"
        );
        assert_eq!(env.node.containers_of(&env.ctx.namespace, name).await, 1);
    }
    assert_eq!(gateway.wakes(), 2);
}
