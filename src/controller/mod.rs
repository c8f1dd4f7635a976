//! The Sandbox reconciler: caches → automation (automatic suspend and resume) → phase machine
//! (`phase`) → children (`children`) → server-side apply → status (`status`) and Events
//! (`events`).
//!
//! Within the controller, modules depend downwards: `reconcile` uses `automation`, `phase`,
//! `context` and `events`; `automation` uses `context` and `events`; `phase` and `status` are
//! pure.

pub mod api_call;
mod automation;
pub mod baseline;
pub mod blueprint;
pub mod caches;
pub mod checkpointing;
pub mod children;
pub mod claims;
mod context;
pub mod decisions;
mod error;
mod events;
pub mod hardening;
mod hash;
pub mod leader;
pub mod network;
pub mod ownership;
pub mod phase;
pub mod policies;
pub mod policy_fetch;
pub mod pool_sizing;
pub mod pools;
mod reconcile;
pub mod status;
pub mod templates;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::Client;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

pub use context::Context;
pub use error::Error;

use crate::api::{SANDBOX_LABEL, Sandbox};
use crate::policy::{PolicyEngine, PolicySet};
use caches::Scope;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch one namespace only (tests, and tenants that run their own operator).
    pub namespace: Option<String>,
    /// Sandboxes reconciled at once.
    pub concurrency: u16,
    /// The name that Events are reported under.
    pub instance: String,
    /// Load only the SandboxPolicies with these labels (a label selector), so that several
    /// operators can share a cluster without serving each other's policies.
    pub policy_selector: Option<String>,
    /// Where compiled policies are kept across restarts (none: compile on every start).
    pub policy_cache_dir: Option<std::path::PathBuf>,
    /// How long a Sandbox runs before a lifecycle decision may suspend it again.
    pub min_dwell: std::time::Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (none: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Reconcile only while holding this Lease (none: always).
    pub leader_election: Option<leader::Election>,
    /// Limits for policies that set none, and the most a policy may ask for.
    pub policy_limits: crate::policy::limits::PolicyLimitBounds,
    /// Where the `imagePullSecret`s of SandboxPolicies are read.
    pub pull_secrets: policy_fetch::PullSecrets,
    /// How long Sandboxes wait at start for the SandboxPolicies present then to load.
    pub policy_load_grace: Duration,
    /// Refuse pods that use host namespaces, hostPath, privilege, added capabilities or
    /// ServiceAccount tokens unless their isolation policy allows it (`baseline.rs`).
    pub pod_baseline: bool,
    /// Where this operator's counts go, and what `/metrics` serves.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where `sandman gateway` runs: template NetworkPolicies let its pods in.
    pub gateway_namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 32,
            instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "sandman".into()),
            policy_selector: None,
            policy_cache_dir: None,
            min_dwell: std::time::Duration::from_secs(60),
            metrics_listen: None,
            leader_election: None,
            policy_limits: Default::default(),
            pull_secrets: Default::default(),
            policy_load_grace: Duration::from_secs(10),
            pod_baseline: true,
            metrics: Arc::default(),
            gateway_namespace: "default".into(),
        }
    }
}

/// Maps a labelled child to the Sandbox it belongs to. Children are found by label, not only
/// by owner reference, because retained PVCs have no owner.
fn sandbox_of<K: kube::Resource>(child: K) -> Option<ObjectRef<Sandbox>> {
    let meta = child.meta();
    let name = meta.labels.as_ref()?.get(SANDBOX_LABEL)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref()?))
}

/// Runs the Sandbox and SandboxPolicy controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let shutdown = Box::pin(shutdown).shared();
    // Served before the election, so that a standby replica answers its probes.
    let ready = crate::metrics::Readiness::default();
    if let Some(listen) = options.metrics_listen {
        // Metrics are worth a loud error, not a stopped operator.
        match crate::metrics::serve(listen, ready.clone(), options.metrics.clone()).await {
            Ok(addr) => tracing::info!(%addr, "serving /metrics, /healthz and /readyz"),
            Err(error) => tracing::error!(%listen, %error, "cannot serve metrics"),
        }
    }
    // Until this replica leads, it only waits; once it does, losing the Lease stops it.
    let lost = std::sync::Arc::new(std::sync::Mutex::new(None));
    let mut keeping: Option<tokio::task::JoinHandle<()>> = None;
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(election) = options.leader_election.clone() {
        ready.set();
        tokio::select! {
            acquired = election.acquire(&client) => acquired?,
            () = shutdown.clone() => return Ok(()),
        }
        ready.clear();
        let client = client.clone();
        let lost = lost.clone();
        keeping = Some(tokio::spawn(async move {
            let error = election.keep(&client).await;
            tracing::error!(%error, "leadership lost; stopping");
            if let Ok(mut lost) = lost.lock() {
                *lost = Some(error);
            }
            let _ = lost_tx.send(());
        }));
    }
    let shutdown = futures::future::select(shutdown, lost_rx)
        .map(|_| ())
        .shared();
    let engine = match &options.policy_cache_dir {
        Some(dir) => PolicyEngine::with_cache_dir(dir),
        None => PolicyEngine::new(),
    };
    let engine = Arc::new(
        engine
            .map_err(Error::Engine)?
            .observed_by(options.metrics.clone()),
    );
    let policies = PolicySet::default();
    let (changed, policy_changes) = mpsc::unbounded_channel();
    let (first_pass_tx, mut first_pass) = tokio::sync::watch::channel(false);
    tokio::spawn(policies::run(
        client.clone(),
        policies::Settings {
            selector: options.policy_selector.clone(),
            limits: options.policy_limits.clone(),
            pull_secrets: options.pull_secrets.clone(),
            load_grace: options.policy_load_grace,
            metrics: options.metrics.clone(),
        },
        engine,
        policies.clone(),
        changed,
        first_pass_tx,
        shutdown.clone(),
    ));
    // Every Sandbox and every warm pool is evaluated again when the set of loaded policies
    // changes.
    let (sandboxes_changed, for_sandboxes) = mpsc::unbounded_channel();
    let (pools_changed, for_pools) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut policy_changes = policy_changes;
        while policy_changes.recv().await.is_some() {
            let _ = sandboxes_changed.send(());
            let _ = pools_changed.send(());
        }
    });
    let changes = |rx: mpsc::UnboundedReceiver<()>| {
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
        )
    };
    let reevaluate = changes(for_sandboxes);
    let pool_policies = (policies.clone(), changes(for_pools));
    let namespaces = caches::namespaces(&client);
    tokio::spawn(namespaces.changes.for_each(|_| futures::future::ready(())));
    let scope = Scope {
        namespace: options.namespace.clone(),
    };
    let sandboxes = caches::sandboxes(&client, &scope, options.metrics.clone());
    {
        // Ready once the Sandbox cache has synced and every policy has been tried once.
        let store = sandboxes.store.clone();
        let mut first_pass = first_pass.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if caches::synced(&store).await && first_pass.wait_for(|done| *done).await.is_ok() {
                ready.set();
            }
        });
    }
    let pods = caches::pods(&client, &scope);
    let services = caches::services(&client, &scope);
    let claims = caches::claims(&client, &scope);
    let network_policies = caches::network_policies(&client, &scope);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: crate::FIELD_MANAGER.into(),
            instance: Some(options.instance.clone()),
        },
    );
    let supervisors = crate::checkpoint::client::SupervisorClient::new(
        crate::http_client::HttpClient::new().map_err(Error::HttpClient)?,
    );
    let context = Arc::new(Context {
        client: client.clone(),
        pods: pods.store,
        services: services.store,
        claims: claims.store,
        network_policies: network_policies.store,
        gateway_namespace: options.gateway_namespace.clone(),
        recorder,
        written: Default::default(),
        policies,
        namespaces: namespaces.store,
        min_dwell: options.min_dwell,
        pod_baseline: options.pod_baseline,
        metrics: options.metrics.clone(),
        supervisors,
    });
    // A Sandbox reconciled before its policies load would get a pod without them (runc where
    // a policy says gVisor), so the Sandbox controller starts after the first pass.
    let passed = tokio::select! {
        passed = first_pass.wait_for(|done| *done) => Some(passed.is_ok()),
        () = shutdown.clone() => None,
    };
    match passed {
        Some(true) => {}
        Some(false) => {
            return Err(Error::PolicyControllerStopped);
        }
        None => {
            release(&options, &client, keeping).await;
            return lost_leadership(&lost);
        }
    }
    // Templates, warm pools and claims: each its own controller, writing Sandboxes that the
    // Sandbox controller then runs like any other.
    tokio::spawn(templates::run(
        client.clone(),
        options.namespace.clone(),
        options.gateway_namespace.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(pools::run(
        client.clone(),
        options.namespace.clone(),
        pool_policies,
        shutdown.clone(),
    ));
    tokio::spawn(claims::run(
        client.clone(),
        options.namespace.clone(),
        context.recorder.clone(),
        shutdown.clone(),
    ));
    tracing::info!(namespace = ?options.namespace, concurrency = options.concurrency, "starting the Sandbox controller");
    Controller::for_stream(sandboxes.changes, sandboxes.store)
        .watches_stream(pods.changes, sandbox_of)
        .watches_stream(services.changes, sandbox_of)
        .watches_stream(claims.changes, sandbox_of)
        .watches_stream(network_policies.changes, sandbox_of)
        .reconcile_all_on(reevaluate)
        .with_config(Config::default().concurrency(options.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
    release(&options, &client, keeping).await;
    lost_leadership(&lost)
}

/// After a clean shutdown of a leader: stop renewing, then give the Lease up. A leader that
/// lost the Lease has nothing to give.
async fn release(options: &Options, client: &Client, keeping: Option<tokio::task::JoinHandle<()>>) {
    let (Some(election), Some(keeping)) = (&options.leader_election, keeping) else {
        return;
    };
    if keeping.is_finished() {
        return;
    }
    keeping.abort();
    match election.release(client).await {
        Ok(()) => tracing::info!(lease = %election.name, "released the Lease"),
        Err(error) => tracing::warn!(%error, "could not release the Lease; it expires instead"),
    }
}

/// How the operator ends: with the error that cost it the Lease, if that is why it stopped.
fn lost_leadership(lost: &std::sync::Mutex<Option<leader::LeaderError>>) -> Result<(), Error> {
    match lost.lock().ok().and_then(|mut l| l.take()) {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// The requeue delay after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);
