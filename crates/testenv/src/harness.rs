//! Test support: one control plane per test binary, one fresh namespace per test.
//!
//! ```no_run
//! # async fn example() {
//! let ctx = sandman_testenv::harness::TestContext::new("my_test").await;
//! // ctx.client talks to the shared control plane; ctx.namespace is this test's own.
//! # }
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::registry::Registry;
use crate::token_server::TokenServer;
use crate::{ControlPlane, Lifetime, Options};

/// How many log lines of each component a failing test prints.
const TAIL_LINES: usize = 40;

static CONTROL_PLANE: LazyLock<Result<ControlPlane, String>> = LazyLock::new(start_shared);

fn start_shared() -> Result<ControlPlane, String> {
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!("sandman-testenv-{}", std::process::id()));
    let mut options = Options::new(&dir);
    options.lifetime = Lifetime::TiedToParent;
    options.crds_dir = Some(repo_root().join("crds"));
    let started = Instant::now();
    let plane = ControlPlane::start(&options).map_err(|e| e.to_string())?;
    eprintln!(
        "testenv: control plane at {} ready in {:.1}s (logs in {})",
        plane.server(),
        started.elapsed().as_secs_f64(),
        dir.join("logs").display()
    );
    Ok(plane)
}

static REGISTRY: LazyLock<Result<Registry, String>> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("sandman-testenv-{}", std::process::id()));
    Registry::start(&dir.join("registry"), Lifetime::TiedToParent).map_err(|e| e.to_string())
});

static TOKEN_REGISTRY: LazyLock<Result<(TokenServer, Registry), String>> = LazyLock::new(|| {
    let dir = std::env::temp_dir()
        .join(format!("sandman-testenv-{}", std::process::id()))
        .join("token-registry");
    let tokens = TokenServer::start(&dir.join("tokens")).map_err(|e| e.to_string())?;
    let registry = Registry::start_with_token_auth(&dir, Lifetime::TiedToParent, &tokens)
        .map_err(|e| e.to_string())?;
    Ok((tokens, registry))
});

/// A second registry, which wants Bearer tokens from a token server (see
/// [`crate::token_server`]): anonymous pulls of `public/…`, everything for the one user.
pub fn token_registry() -> &'static Registry {
    match &*TOKEN_REGISTRY {
        Ok((_, registry)) => registry,
        Err(e) => panic!("the token-auth OCI registry did not start: {e}"),
    }
}

/// The OCI registry shared by every test in this binary, started on first use.
pub fn registry() -> &'static Registry {
    match &*REGISTRY {
        Ok(registry) => registry,
        Err(e) => panic!(
            "the local OCI registry did not start: {e} (install Debian's docker-registry, or set SANDMAN_REGISTRY_BIN)"
        ),
    }
}

/// The sandman repository root (for `crds/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Cargo's target directory for this build (`CARGO_TARGET_DIR`, else the repository's
/// `target/`), where tests keep what they build or download beside it.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Test directories of earlier test binaries whose process is gone: their control plane died
/// with them, and only the files are left.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("sandman-testenv-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The control plane shared by every test in this binary, started on first use. Its processes
/// die with the test binary, however it ends.
pub fn control_plane() -> &'static ControlPlane {
    match &*CONTROL_PLANE {
        Ok(plane) => plane,
        Err(e) => panic!("the local control plane did not start: {e}"),
    }
}

/// One test's view of the control plane: an admin client and a namespace of its own. When the
/// test panics, dropping it prints the tail of every component's log.
pub struct TestContext {
    pub client: Client,
    pub namespace: String,
}

impl TestContext {
    /// Creates a fresh namespace named after `test` and waits until pods can be created in it.
    pub async fn new(test: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let plane = control_plane();
        let client = crate::client_from_kubeconfig(plane.kubeconfig())
            .await
            .expect("client for the local control plane");
        let mut base: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        base.truncate(50);
        let namespace = format!(
            "{}-{}",
            base.trim_matches('-'),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": namespace, "labels": { "sandman.dev/test": base.trim_matches('-') } }
        }))
        .expect("namespace object");
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .expect("create test namespace");
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        eventually(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || {
                let accounts = accounts.clone();
                async move { accounts.get_opt("default").await.ok().flatten() }
            },
        )
        .await;
        Self { client, namespace }
    }

    /// The kubeconfig of the shared control plane, for a subprocess (kubectl, the operator).
    pub fn kubeconfig(&self) -> &Path {
        control_plane().kubeconfig()
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test in namespace {} failed; control plane logs:\n{}",
                self.namespace,
                control_plane().log_tails(TAIL_LINES)
            );
        }
    }
}

/// Polls `check` every 100 ms until it yields `Some`, and panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that `check` holds now and keeps holding for `window`: a negative ("nothing
/// happens") proven over a bounded time, never by one look after a fixed sleep.
pub async fn stays<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + window;
    loop {
        assert!(check().await, "{what} stopped holding");
        if Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
