//! Wake-to-first-byte through the gateway for a Sandbox whose agent was checkpointed on
//! suspend (the new pod restores it), against the same Sandbox with checkpoints off (the new
//! pod starts the agent afresh). Real runsc, the real operator and gateway, the local control
//! plane; a small "kubelet" in this process plays each pod's container as soon as the pod
//! exists, by starting the supervisor with the pod's environment. Needs root, `runsc` and
//! `busybox-static`.
//!
//! ```sh
//! cargo bench --bench checkpoint_wake
//! SANDMAN_CHECKPOINT_WAKES=5 cargo bench --bench checkpoint_wake
//! # the pinned current runsc, as the supervisor image runs it:
//! SANDMAN_RUNSC=~/.cache/sandman/runsc/<pin>/runsc SANDMAN_RUNSC_PLATFORM=systrap \
//!   SANDMAN_RUNSC_RESTORE_FLAGS="--background" cargo bench --bench checkpoint_wake
//! ```

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use sandman::api::{CheckpointOutcome, Phase, Sandbox};
use sandman::checkpoint::runsc::Mount;
use sandman::checkpoint::supervisor::{
    Forward, Options, Restore, Supervisor, default_bridge, pod_env,
};
use sandman::checkpoint::{SANDBOX_UID_ENV, SUSPENSIONS_ENV};
use sandman_testenv::ControlPlane;
use tokio::sync::Mutex;

const NAMESPACE: &str = "checkpoint-wake-bench";
const AGENT_PORT: u16 = 18_080;
const AGENT: &str = "i=0; while true; do i=$((i+1)); \
    printf 'HTTP/1.0 200 OK\\r\\n\\r\\ncount=%s\\n' $i | nc -l -p 18080 >/dev/null; done";

fn main() {
    let wakes = common::setting("SANDMAN_CHECKPOINT_WAKES", 10);
    common::on_control_plane("checkpoint-wake", |plane, dir| async move {
        run(&plane, &dir, wakes).await;
        plane
    });
}

/// Plays each pod of the namespace: a supervisor from the pod's environment while the pod
/// exists, on every loopback address (so whichever IP the pod gets, it is there).
async fn kubelet(client: kube::Client, work: Arc<std::path::PathBuf>) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let current: Arc<Mutex<Option<(String, Supervisor)>>> = Arc::default();
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    let mut started = 0u32;
    while let Some(Ok(event)) = events.next().await {
        let (pod, deleted) = match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => (pod, false),
            watcher::Event::Delete(pod) => (pod, true),
            _ => continue,
        };
        let uid = pod.uid().unwrap_or_default();
        let mut slot = current.lock().await;
        if deleted || pod.metadata.deletion_timestamp.is_some() {
            if slot.as_ref().is_some_and(|(u, _)| *u == uid) {
                *slot = None;
            }
            continue;
        }
        if slot.as_ref().is_some_and(|(u, _)| *u == uid) {
            continue;
        }
        *slot = None;
        started += 1;
        let restore = Restore::asked_by(&pod);
        let options = Options {
            runsc: common::runsc(work.join(format!("runsc-{started}"))),
            rootfs: work.join("rootfs"),
            args: vec!["/bin/sh".into(), "-c".into(), AGENT.into()],
            env: Vec::new(),
            cwd: "/".into(),
            mounts: vec![Mount {
                source: work.join("volume"),
                destination: "/workspace".into(),
            }],
            images: work.join("volume/.sandman/checkpoints"),
            control: ([0, 0, 0, 0], sandman::checkpoint::SUPERVISOR_PORT).into(),
            forwards: vec![Forward {
                listen: ([0, 0, 0, 0], AGENT_PORT).into(),
                port: AGENT_PORT,
            }],
            bridge: default_bridge(),
            restore,
            sandbox_uid: pod_env(&pod, SANDBOX_UID_ENV).unwrap_or_default(),
            token: token_of(&secrets, &pod).await,
            suspensions: pod_env(&pod, SUSPENSIONS_ENV)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            checkpoint_timeout: Duration::from_secs(60),
            restore_timeout: Duration::from_secs(60),
        };
        match Supervisor::start(options).await {
            Ok(supervisor) => *slot = Some((uid, supervisor)),
            Err(e) => eprintln!("pod {}: supervisor did not start: {e}", pod.name_any()),
        }
    }
}

async fn wait_for(api: &Api<Sandbox>, name: &str, check: impl Fn(&Sandbox) -> bool) -> Sandbox {
    for _ in 0..12_000 {
        if let Ok(sandbox) = api.get(name).await
            && check(&sandbox)
        {
            return sandbox;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never got there");
}

fn phase(sandbox: &Sandbox) -> Option<Phase> {
    sandbox.status.as_ref().and_then(|s| s.phase)
}

async fn run(plane: &ControlPlane, dir: &Path, wakes: usize) {
    let work = Arc::new(dir.join("work"));
    let bin = work.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::create_dir_all(work.join("volume")).expect("volume");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox (busybox-static)");
    for applet in ["sh", "nc", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
    }
    let client = sandman_testenv::client_from_kubeconfig(plane.kubeconfig())
        .await
        .expect("client");
    common::namespace(&client, NAMESPACE).await;
    common::spawn_operator(&client, NAMESPACE);
    tokio::spawn(kubelet(client.clone(), work.clone()));
    let gateway = common::gateway(&client, NAMESPACE).await;
    let http: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let api: Api<Sandbox> = Api::namespaced(client.clone(), NAMESPACE);

    println!("\n## Wake to first byte through the gateway ({wakes} wakes each)\n");
    println!(
        "| the new pod | p50 | p90 | min | max | failed first answers |\n|---|---|---|---|---|---|"
    );
    for (name, checkpoint) in [("restored", "OnSuspend"), ("cold", "Never")] {
        let sandbox: Sandbox = serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": { "name": name },
            "spec": {
                "podTemplate": { "spec": { "containers": [{
                    "name": "agent", "image": "agent",
                    "command": ["/bin/sh", "-c", AGENT],
                    "ports": [{ "containerPort": AGENT_PORT }],
                    "volumeMounts": [{ "name": "workspace", "mountPath": "/workspace" }],
                }] } },
                "volumeClaimTemplates": [{
                    "metadata": { "name": "workspace" },
                    "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
                }],
                "gateway": { "enabled": true },
                "lifecycle": { "checkpoint": checkpoint },
            },
        }))
        .expect("sandbox");
        api.create(&PostParams::default(), &sandbox)
            .await
            .expect("create sandbox");
        wait_for(&api, name, |s| phase(s) == Some(Phase::Running)).await;
        let through = format!("http://{}/sandboxes/{NAMESPACE}/{name}/", gateway.addr);
        let mut latencies = Vec::new();
        let mut failed = 0;
        let mut last_count = 0u64;
        for _ in 0..wakes {
            for mode in ["Running", "Suspended"] {
                api.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } })),
                )
                .await
                .expect("suspend");
            }
            let suspended = wait_for(&api, name, |s| phase(s) == Some(Phase::Suspended)).await;
            if checkpoint == "OnSuspend" {
                let outcome = suspended
                    .status
                    .and_then(|s| s.checkpoint)
                    .map(|c| c.outcome);
                assert_eq!(outcome, Some(CheckpointOutcome::Checkpointed));
            }
            let started = Instant::now();
            // A failed first answer is counted and asked again: the time to the first good
            // byte includes it.
            let count: u64 = loop {
                let response = http
                    .get(through.parse().expect("uri"))
                    .await
                    .expect("a response");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                let body = String::from_utf8_lossy(&body);
                match body
                    .split("count=")
                    .nth(1)
                    .and_then(|c| c.trim().parse().ok())
                {
                    Some(count) => break count,
                    None => failed += 1,
                }
            };
            let first_byte = started.elapsed();
            if checkpoint == "OnSuspend" {
                assert!(
                    count > last_count,
                    "memory kept: {count} after {last_count}"
                );
            } else {
                // A fresh agent counts from 1; the gateway may send its GET once more when a
                // just-started listener closed the first connection unanswered.
                assert!(count <= 2, "a fresh agent counted {count}");
            }
            last_count = count;
            latencies.push(first_byte);
            wait_for(&api, name, |s| phase(s) == Some(Phase::Running)).await;
        }
        latencies.sort();
        let at = |p: f64| {
            let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies[index].as_secs_f64() * 1000.0
        };
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {failed} |",
            at(0.5),
            at(0.9),
            at(0.0),
            at(1.0)
        );
        api.delete(name, &Default::default()).await.expect("delete");
        while api.get_opt(name).await.ok().flatten().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The token the pod's first container gets from its Secret, as a kubelet resolves it; none
/// when the pod names none.
async fn token_of(secrets: &Api<k8s_openapi::api::core::v1::Secret>, pod: &Pod) -> String {
    let Some(reference) = sandman::checkpoint::supervisor::token_reference(pod) else {
        return String::new();
    };
    let secret = secrets.get(&reference.name).await.ok();
    secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(&reference.key).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .unwrap_or_default()
}
