//! What the cluster benchmarks share: a namespace, the operator and the gateway, in-process
//! against a local control plane.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

/// Creates namespace `name`.
pub async fn namespace(client: &kube::Client, name: &str) {
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))
            .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
}

/// The operator for `namespace`, with no minimum dwell (benchmarks suspend at once).
pub fn spawn_operator(client: &kube::Client, namespace: &str) {
    let client = client.clone();
    let namespace = namespace.to_string();
    tokio::spawn(async move {
        let options = sandman::controller::Options {
            namespace: Some(namespace),
            min_dwell: Duration::ZERO,
            // Played by the benchmarks' own kubelets, never pulled.
            supervisor_image: Some("bench.local/sandman-supervisor:played".into()),
            ..sandman::controller::Options::default()
        };
        let _ = sandman::controller::run(client, options, std::future::pending()).await;
    });
}

/// A gateway on a loopback port for `namespace`.
pub async fn gateway(client: &kube::Client, namespace: &str) -> sandman::gateway::Gateway {
    sandman::gateway::start(
        client.clone(),
        sandman::gateway::Options {
            listen: "127.0.0.1:0".parse().expect("address"),
            namespace: Some(namespace.into()),
            ..sandman::gateway::Options::default()
        },
    )
    .await
    .expect("gateway")
}

/// A number from the environment, or `default`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// With `RUST_LOG` set, the logs of what runs in-process (operator, gateway, supervisor) go
/// to stderr, with times to the microsecond: where a wake's or a restore's time goes.
pub fn logs_to_stderr() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Starts a local control plane (with sandman's CRDs) in a directory of its own named after
/// `bench`, runs `work` on a multi-threaded runtime, then stops it and removes the directory.
pub fn on_control_plane<F, Fut>(bench: &str, work: F)
where
    F: FnOnce(sandman_testenv::ControlPlane, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = sandman_testenv::ControlPlane>,
{
    logs_to_stderr();
    let dir = std::env::temp_dir().join(format!("sandman-{bench}-bench-{}", std::process::id()));
    let mut options = sandman_testenv::Options::new(&dir);
    options.crds_dir = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"));
    let plane =
        sandman_testenv::ControlPlane::start(&options).expect("start the local control plane");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut plane = runtime.block_on(work(plane, dir.clone()));
    plane.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The runsc a checkpoint benchmark drives, with state under `root`: Debian's (`runsc`, ptrace)
/// unless `SANDMAN_RUNSC` and `SANDMAN_RUNSC_PLATFORM` name another, such as the pinned one
/// testenv builds, and the space-separated flags in `SANDMAN_RUNSC_CHECKPOINT_FLAGS` and
/// `SANDMAN_RUNSC_RESTORE_FLAGS`.
pub fn runsc(root: std::path::PathBuf) -> sandman::checkpoint::runsc::Runsc {
    let flags = |name: &str| -> Vec<String> {
        std::env::var(name)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    sandman::checkpoint::runsc::Runsc {
        binary: std::env::var_os("SANDMAN_RUNSC").map_or_else(|| "runsc".into(), Into::into),
        root,
        platform: std::env::var("SANDMAN_RUNSC_PLATFORM").unwrap_or_else(|_| "ptrace".into()),
        checkpoint_flags: flags("SANDMAN_RUNSC_CHECKPOINT_FLAGS"),
        restore_flags: flags("SANDMAN_RUNSC_RESTORE_FLAGS"),
    }
}

/// Loads onto `node` what a Sandbox that checkpoints needs: the checkpoint supervisor's image,
/// laid out under `dir` from `sandman` (the bench's own binary) and the pinned runsc, and
/// `rootfs` as the agent's image `busybox`.
pub fn load_supervisor(
    node: &sandman_testenv::real_node::RealNode,
    dir: &std::path::Path,
    rootfs: &std::path::Path,
    sandman: &str,
) {
    let supervisor = sandman_testenv::supervisor_image::supervisor_image(
        std::path::Path::new(sandman),
        &dir.join("supervisor-image"),
    )
    .expect("the supervisor image");
    node.load_image(sandman_testenv::supervisor_image::REFERENCE, &supervisor);
    node.load_image("busybox", rootfs);
}
