//! Lean, label-selected caches of the children. Only objects carrying the `sandman.dev/sandbox`
//! label are watched, and `managedFields` plus every field of a child the reconciler never reads
//! are dropped before they reach the cache (pods and Services are read as the slim types of
//! [`super::lean`]), so memory grows with Sandboxes, not with the
//! cluster, and by as little as it can per Sandbox (at 10,000 Sandboxes each cached byte per
//! child is 10 MB of the operator's memory).

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Config};
use kube::{Client, Resource};

use super::lean::{CachedPod, CachedSandbox, CachedService};
use crate::api::SANDBOX_LABEL;

/// Where the controller looks: the whole cluster, or one namespace.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub namespace: Option<String>,
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

fn trim_metadata<K: Resource>(object: &mut K) {
    crate::api::cached::trim_metadata(object.meta_mut());
}

/// A PVC's ownership, labels and applied hash are in its metadata, which is all the reconciler
/// reads of it. (A NetworkPolicy keeps its spec: whether it is in place is decided by comparing
/// specs.)
fn strip_claim(claim: &mut PersistentVolumeClaim) {
    trim_metadata(claim);
    claim.spec = None;
    claim.status = None;
}

pub type Watch<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// A cache of `K` and the stream of changes that keeps it (and the controller) up to date.
pub struct Cache<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    pub store: Store<K>,
    pub changes: Watch<K>,
}

fn cache<K>(api: Api<K>, config: Config, strip: fn(&mut K)) -> Cache<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + std::hash::Hash + Eq + Clone,
{
    let (store, writer) = reflector::store();
    let changes = watcher(api, config)
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .touched_objects()
        .boxed();
    Cache { store, changes }
}

fn watcher<K>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
}

/// Resolves once `store` has its first full listing; `false` if its writer went away first.
///
/// `Store::wait_until_ready` keeps one waker (a futures oneshot underneath), so of several
/// tasks waiting on one store only the last to poll is woken: a controller waits on its own
/// store, and another waiter would sleep forever. Asking again now and then sidesteps that.
pub async fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            store.wait_until_ready(),
        )
        .await
        {
            Ok(ready) => return ready.is_ok(),
            Err(_) => continue,
        }
    }
}

pub fn sandboxes(
    client: &Client,
    scope: &Scope,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Cache<CachedSandbox> {
    let (store, writer) = reflector::store();
    // Trimmed as it is read (`LeanMeta`).
    let changes = watcher(scope.api(client), Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .inspect_ok({
            let mut phases = crate::metrics::PhaseWatch::default();
            move |event| count_phases(&metrics, &mut phases, event)
        })
        .touched_objects()
        .boxed();
    Cache { store, changes }
}

/// Keeps the Sandboxes-by-phase gauges from the watch itself: each event moves one Sandbox.
fn count_phases(
    metrics: &crate::metrics::Metrics,
    phases: &mut crate::metrics::PhaseWatch,
    event: &watcher::Event<CachedSandbox>,
) {
    let phase = |s: &CachedSandbox| Some(format!("{:?}", s.phase().unwrap_or_default()));
    let uid = |s: &CachedSandbox| s.meta().uid.clone().unwrap_or_default();
    match event {
        watcher::Event::Init => phases.relisting(),
        watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
            phases.phase(metrics, &uid(s), phase(s))
        }
        watcher::Event::Delete(s) => phases.phase(metrics, &uid(s), None),
        watcher::Event::InitDone => phases.relisted(metrics),
    }
}

fn children_config() -> Config {
    Config::default().labels(SANDBOX_LABEL).any_semantic()
}

pub fn pods(client: &Client, scope: &Scope) -> Cache<CachedPod> {
    cache(
        scope.api(client),
        children_config(),
        CachedPod::keep_ready_only,
    )
}

pub fn services(client: &Client, scope: &Scope) -> Cache<CachedService> {
    // Trimmed as it is read (`LeanMeta`), and only the spec fields compared are kept.
    cache(scope.api(client), children_config(), |_| {})
}

/// NetworkPolicies sandman keeps for Sandboxes whose isolation policy chose a network profile.
pub fn network_policies(client: &Client, scope: &Scope) -> Cache<NetworkPolicy> {
    cache(scope.api(client), children_config(), trim_metadata)
}

pub fn claims(client: &Client, scope: &Scope) -> Cache<PersistentVolumeClaim> {
    cache(scope.api(client), children_config(), strip_claim)
}

/// Namespace labels, for policies' namespaceSelectors.
pub fn namespaces(client: &Client) -> Cache<Namespace> {
    cache(
        Api::all(client.clone()),
        Config::default().any_semantic(),
        trim_metadata,
    )
}

pub use reflector::ObjectRef;
