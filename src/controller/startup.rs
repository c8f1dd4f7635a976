//! Starting the operator: probes and metrics, leadership, the SandboxPolicy controller, the
//! caches, then the Sandbox, template, pool and claim controllers; and on the way out, giving
//! the Lease up.

use std::future::Future;
use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use kube::Client;
use tokio::sync::{mpsc, watch};

use super::blueprints::{claims, pools, templates};
use super::caches::{self, Scope};
use super::sandbox::reconcile::{self, ChildChanges};
use super::{Context, Error, Options, leader, policies};
use crate::metrics::Readiness;
use crate::policy::{PolicyEngine, PolicySet};

/// Resolves when the operator should stop: asked to, or no longer leading.
type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Runs the operator's controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let shutdown: Shutdown = shutdown.boxed().shared();
    // Served before the election, so that a standby replica answers its probes.
    let ready = Readiness::default();
    serve_metrics(&options, &ready).await;
    let Some(leading) = lead(&client, &options, &ready, shutdown).await? else {
        return Ok(());
    };
    let result = run_leading(&client, &options, &ready, &leading).await;
    release(&options, &client, leading.keeping).await;
    match result {
        Ok(()) => lost_leadership(&leading.lost),
        Err(error) => Err(error),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` when asked: metrics are worth a loud error,
/// not a stopped operator.
async fn serve_metrics(options: &Options, ready: &Readiness) {
    let Some(listen) = options.metrics_listen else {
        return;
    };
    match crate::metrics::serve(listen, ready.clone(), options.metrics.clone()).await {
        Ok(addr) => tracing::info!(%addr, "serving /metrics, /healthz and /readyz"),
        Err(error) => tracing::error!(%listen, %error, "cannot serve metrics"),
    }
}

/// This replica leads (or there is no election): what stops it, and what keeps the Lease.
struct Leading {
    /// Asked to stop, or the Lease lost.
    shutdown: Shutdown,
    /// Why the Lease was lost, once it was.
    lost: Arc<std::sync::Mutex<Option<leader::LeaderError>>>,
    keeping: Option<tokio::task::JoinHandle<()>>,
}

/// Waits until this replica leads; `None` when asked to stop first. Once it leads, losing the
/// Lease stops it.
async fn lead(
    client: &Client,
    options: &Options,
    ready: &Readiness,
    shutdown: Shutdown,
) -> Result<Option<Leading>, Error> {
    let lost = Arc::new(std::sync::Mutex::new(None));
    let Some(election) = options.leader_election.clone() else {
        return Ok(Some(Leading {
            shutdown,
            lost,
            keeping: None,
        }));
    };
    // A standby is ready: it is waiting, as it should.
    ready.set();
    tokio::select! {
        acquired = election.acquire(client) => acquired?,
        () = shutdown.clone() => return Ok(None),
    }
    ready.clear();
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let keeping = {
        let client = client.clone();
        let lost = lost.clone();
        tokio::spawn(async move {
            let error = election.keep(&client).await;
            tracing::error!(%error, "leadership lost; stopping");
            if let Ok(mut lost) = lost.lock() {
                *lost = Some(error);
            }
            let _ = lost_tx.send(());
        })
    };
    let shutdown = futures::future::select(shutdown, lost_rx)
        .map(|_| ())
        .boxed()
        .shared();
    Ok(Some(Leading {
        shutdown,
        lost,
        keeping: Some(keeping),
    }))
}

/// Everything that runs while this replica leads.
async fn run_leading(
    client: &Client,
    options: &Options,
    ready: &Readiness,
    leading: &Leading,
) -> Result<(), Error> {
    let shutdown = leading.shutdown.clone();
    let loaded = start_policies(client, options, shutdown.clone())?;
    let scope = Scope {
        namespace: options.namespace.clone(),
    };
    let sandboxes = caches::sandboxes(client, &scope, options.metrics.clone());
    {
        // Ready once the Sandbox cache has synced and every policy has been tried once.
        let store = sandboxes.store.clone();
        let mut first_pass = loaded.first_pass.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if caches::synced(&store).await && first_pass.wait_for(|done| *done).await.is_ok() {
                ready.set();
            }
        });
    }
    let (context, children) = sandbox_context(client, options, &scope, loaded.policies.clone())?;
    // A Sandbox reconciled before its policies load would get a pod without them (runc where
    // a policy says gVisor), so the Sandbox controller starts after the first pass.
    let mut first_pass = loaded.first_pass.clone();
    let passed = tokio::select! {
        passed = first_pass.wait_for(|done| *done) => passed.is_ok(),
        () = shutdown.clone() => return Ok(()),
    };
    if !passed {
        return Err(Error::PolicyControllerStopped);
    }
    start_blueprint_controllers(
        client,
        options,
        &context,
        loaded.for_pools,
        shutdown.clone(),
    );
    tracing::info!(namespace = ?options.namespace, concurrency = options.concurrency, "starting the Sandbox controller");
    reconcile::run(
        sandboxes,
        children,
        loaded.for_sandboxes,
        options.concurrency,
        context,
        shutdown,
    )
    .await;
    Ok(())
}

/// A stream that yields once per message on `rx`.
type Changes = futures::stream::BoxStream<'static, ()>;

fn changes(rx: mpsc::UnboundedReceiver<()>) -> Changes {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
    )
    .boxed()
}

/// The SandboxPolicy controller, started, and what the others hear from it.
struct Loaded {
    policies: PolicySet,
    /// True once every SandboxPolicy present at start has been tried once.
    first_pass: watch::Receiver<bool>,
    /// Every Sandbox is evaluated again when the set of loaded policies changes, and every
    /// warm pool sized again.
    for_sandboxes: Changes,
    for_pools: (PolicySet, Changes),
}

fn start_policies(client: &Client, options: &Options, shutdown: Shutdown) -> Result<Loaded, Error> {
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
    let (changed, mut policy_changes) = mpsc::unbounded_channel();
    let (first_pass_tx, first_pass) = watch::channel(false);
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
        shutdown,
    ));
    let (sandboxes_changed, for_sandboxes) = mpsc::unbounded_channel();
    let (pools_changed, for_pools) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while policy_changes.recv().await.is_some() {
            let _ = sandboxes_changed.send(());
            let _ = pools_changed.send(());
        }
    });
    Ok(Loaded {
        for_pools: (policies.clone(), changes(for_pools)),
        policies,
        first_pass,
        for_sandboxes: changes(for_sandboxes),
    })
}

/// What every Sandbox reconcile shares, and the changes of the caches it reads.
fn sandbox_context(
    client: &Client,
    options: &Options,
    scope: &Scope,
    policies: PolicySet,
) -> Result<(Arc<Context>, ChildChanges), Error> {
    let namespaces = caches::namespaces(client);
    tokio::spawn(namespaces.changes.for_each(|_| futures::future::ready(())));
    let pods = caches::pods(client, scope);
    let services = caches::services(client, scope);
    let claims = caches::claims(client, scope);
    let network_policies = caches::network_policies(client, scope);
    let recorder = super::recorder::Recorder::new(
        client.clone(),
        crate::FIELD_MANAGER.into(),
        options.instance.clone(),
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
        runtime_image: options.runtime_image.clone(),
        supervisor_image: options.supervisor_image.clone(),
        metrics: options.metrics.clone(),
        supervisors,
        checkpoint_slots: Arc::new(
            super::sandbox::checkpoint_slots::CheckpointSlots::for_workers(options.concurrency),
        ),
    });
    let changes = ChildChanges {
        pods: pods.changes,
        services: services.changes,
        claims: claims.changes,
        network_policies: network_policies.changes,
    };
    Ok((context, changes))
}

/// Templates, warm pools and claims: each its own controller, writing Sandboxes that the
/// Sandbox controller then runs like any other.
fn start_blueprint_controllers(
    client: &Client,
    options: &Options,
    context: &Context,
    pool_policies: (PolicySet, Changes),
    shutdown: Shutdown,
) {
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
        shutdown,
    ));
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
