//! Waking a Sandbox for a request: one resume however many requests arrive, a bounded queue of
//! held requests per Sandbox, and a bounded hold time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;

use super::activity::Key;
use crate::api::{OperatingMode, Phase, Sandbox};
use crate::metrics::Metrics;

pub enum Wait {
    Ready(SocketAddr),
    /// More requests are held for this Sandbox than the queue allows.
    Overflow,
    /// The Sandbox did not become ready within the hold time.
    TimedOut,
    /// The Sandbox went away, or stopped opting in.
    Gone,
}

pub struct Waker {
    client: Client,
    store: Store<Sandbox>,
    queue: usize,
    hold: Duration,
    held: Mutex<HashMap<Key, usize>>,
    wakes: AtomicU64,
    metrics: Arc<Metrics>,
    /// Ticks whenever the watch changes the cache: held requests look again then, not on a
    /// timer.
    changes: watch::Receiver<()>,
}

/// How soon a held request tries again to connect to a pod that is Ready in the cache but
/// not accepting yet: no watch event says when its server starts listening.
const CONNECT_RETRY: Duration = Duration::from_millis(25);

impl Waker {
    pub fn new(
        client: Client,
        store: Store<Sandbox>,
        queue: usize,
        hold: Duration,
        metrics: Arc<Metrics>,
        changes: watch::Receiver<()>,
    ) -> Self {
        Self {
            metrics,
            changes,
            client,
            store,
            queue,
            hold,
            held: Mutex::default(),
            wakes: AtomicU64::new(0),
        }
    }

    /// Resumes the gateway asked for.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// The cached Sandbox, if any.
    pub fn sandbox(&self, key: &Key) -> Option<std::sync::Arc<Sandbox>> {
        self.lookup(key)
    }

    /// The cached Sandbox in `namespace` whose controller is the claim `claim_uid`: the one
    /// a claim was bound to, seen as soon as the watch brings the binding. A Sandbox's owner
    /// references are written by whoever can write it, so this is only ever a hint for that
    /// caller's own namespace: what the caller gets is still read as the caller.
    pub fn claimed_by(&self, namespace: &str, claim_uid: &str) -> Option<String> {
        claimed_by(&self.store, namespace, claim_uid)
    }

    /// Ticks whenever the cache changes.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changes.clone()
    }

    /// Waits until `key` is in the cache, until `deadline`. Returns whether it is.
    pub async fn appeared(&self, key: &Key, deadline: tokio::time::Instant) -> bool {
        let mut changes = self.changes.clone();
        loop {
            // Marked seen before the cache is read, so a change in between is not missed.
            changes.borrow_and_update();
            if self.lookup(key).is_some() {
                return true;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return self.lookup(key).is_some(),
            }
        }
    }

    fn lookup(&self, key: &Key) -> Option<std::sync::Arc<Sandbox>> {
        self.store.get(&ObjectRef::new(&key.1).within(&key.0))
    }

    /// Where to send a request for `key` on `port`: at once when it runs, else once it has
    /// woken.
    pub async fn ready(&self, key: &Key, port: u16) -> Wait {
        if let Some(addr) = self.lookup(key).and_then(|s| running_at(&s, port)) {
            return Wait::Ready(addr);
        }
        {
            let Ok(mut held) = self.held.lock() else {
                return Wait::Gone;
            };
            let count = held.entry(key.clone()).or_default();
            if *count >= self.queue {
                return Wait::Overflow;
            }
            *count += 1;
        }
        let metrics = &self.metrics;
        metrics.gateway_held.inc();
        let started = Instant::now();
        let outcome = self.wait(key, port).await;
        metrics.gateway_held.dec();
        if matches!(outcome, Wait::Ready(_)) {
            metrics
                .gateway_wake_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if let Ok(mut held) = self.held.lock()
            && let Some(count) = held.get_mut(key)
        {
            *count -= 1;
            if *count == 0 {
                held.remove(key);
            }
        }
        outcome
    }

    async fn wait(&self, key: &Key, port: u16) -> Wait {
        let deadline = tokio::time::Instant::now() + self.hold;
        let mut changes = self.changes.clone();
        let mut watching = true;
        // The resourceVersion a resume was last asked against: a 409 means the cache was
        // behind, and the resume is asked again once it has caught up.
        let mut asked_at: Option<String> = None;
        loop {
            // Marked seen before the cache is read, so a change in between is not missed.
            changes.borrow_and_update();
            let Some(sandbox) = self.lookup(key) else {
                return Wait::Gone;
            };
            // A pod just woken may be Ready a moment before its server accepts: the request
            // is held until it does, within the same hold time.
            let mut refused = false;
            if let Some(addr) = running_at(&sandbox, port) {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Wait::Ready(addr);
                }
                refused = true;
            }
            let version = sandbox.metadata.resource_version.clone();
            // A wake request the operator has not acted on yet is not asked again. It names the
            // suspension it ends.
            if sandbox.effective_mode() == OperatingMode::Suspended
                && !crate::activity::wake_requested(&sandbox)
                && asked_at != version
            {
                asked_at = version.clone();
                self.resume(key, version, crate::activity::wake_token(&sandbox))
                    .await;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            let until = if refused {
                deadline.min(now + CONNECT_RETRY)
            } else {
                deadline
            };
            tokio::select! {
                changed = changes.changed(), if watching => watching = changed.is_ok(),
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Asks for a resume, guarded by the resourceVersion the cache shows: of held requests
    /// that ask at once, one succeeds and the rest see a conflict. The gateway writes only the
    /// `sandman.dev/wake-requested-at` annotation (its admission policy allows no more); the
    /// operator resumes the Sandbox.
    async fn resume(&self, key: &Key, version: Option<String>, token: String) {
        let api: Api<Sandbox> = Api::namespaced(self.client.clone(), &key.0);
        let params = PatchParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": version,
                "annotations": { crate::activity::WAKE_REQUESTED: token },
            },
        });
        match api.patch(&key.1, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                self.wakes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(namespace = key.0, name = key.1, "gateway woke a Sandbox");
            }
            // Another held request resumed it first, or the cache is behind: either way the
            // next look at the cache tells.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(error) => {
                tracing::warn!(namespace = key.0, name = key.1, %error, "could not resume")
            }
        }
    }
}

fn claimed_by(store: &Store<Sandbox>, namespace: &str, claim_uid: &str) -> Option<String> {
    store
        .find(|sandbox| {
            sandbox.metadata.namespace.as_deref() == Some(namespace)
                && sandbox
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid == claim_uid)
        })
        .and_then(|sandbox| sandbox.metadata.name.clone())
}

/// The pod address of a Sandbox that is Running with a pod IP.
fn running_at(sandbox: &Sandbox, port: u16) -> Option<SocketAddr> {
    if sandbox.effective_mode() != OperatingMode::Running {
        return None;
    }
    let status = sandbox.status.as_ref()?;
    if status.phase != Some(Phase::Running) {
        return None;
    }
    let ip: IpAddr = status.pod_ips.first()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn owned(namespace: &str, name: &str, uid: &str, controller: bool) -> Sandbox {
        let mut sandbox = Sandbox::new(name, Default::default());
        sandbox.metadata.namespace = Some(namespace.into());
        sandbox.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "sandman.dev/v1alpha1".into(),
            kind: "SandboxClaim".into(),
            name: "claim".into(),
            uid: uid.into(),
            controller: Some(controller),
            ..Default::default()
        }]);
        sandbox
    }

    #[test]
    fn a_binding_is_the_claims_controller_reference_in_the_callers_namespace() {
        let (store, mut writer) = reflector::store::<Sandbox>();
        for sandbox in [
            owned("other", "theirs", "u1", true),
            owned("mine", "merely-owned", "u1", false),
            owned("mine", "taken", "u2", true),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(sandbox));
        }
        assert_eq!(claimed_by(&store, "mine", "u1"), None);
        assert_eq!(claimed_by(&store, "other", "u1").as_deref(), Some("theirs"));
        assert_eq!(claimed_by(&store, "mine", "u2").as_deref(), Some("taken"));
    }
}
