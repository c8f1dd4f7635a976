//! What every reconcile shares: the client, the caches, the policies, and the statuses
//! written but not yet seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::api::{Sandbox, SandboxStatus};
use crate::controller::events::{self, Transition};
use crate::metrics::Metrics;
use crate::policy::PolicySet;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub claims: Store<PersistentVolumeClaim>,
    pub recorder: Recorder,
    pub written: WrittenStatuses,
    pub policies: PolicySet,
    pub namespaces: Store<Namespace>,
    /// How long a Sandbox runs before a lifecycle decision may suspend it again.
    pub min_dwell: std::time::Duration,
    /// Whether the pod baseline is enforced.
    pub pod_baseline: bool,
    /// Where this operator's counts go.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// Publishes `transitions` as Events on `sandbox`.
    pub async fn publish(&self, sandbox: &Sandbox, transitions: &[Transition]) {
        events::publish(&self.recorder, &self.metrics, sandbox, transitions).await;
    }
}

/// Status writes the Sandbox cache has not seen yet.
///
/// A reconcile triggered by a child's event can run before the watch delivers our own status
/// write, and would then plan from the old status and write the same new status again. Each
/// entry remembers the resourceVersion the write was planned against: while the cache still
/// shows that version, it is stale and the written status stands in for it; once the cache has
/// moved on (watch events arrive in order, so it has seen our write or something later), the
/// entry goes.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<String, (String, SandboxStatus)>>);

impl WrittenStatuses {
    /// The status to plan from: the cache's, unless the cache is behind our last write.
    pub fn current(&self, sandbox: &Sandbox) -> Option<SandboxStatus> {
        let uid = sandbox.uid().unwrap_or_default();
        let version = sandbox.resource_version().unwrap_or_default();
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match written.get(&uid) {
            Some((planned_against, status)) if *planned_against == version => Some(status.clone()),
            Some(_) => {
                written.remove(&uid);
                sandbox.status.clone()
            }
            None => sandbox.status.clone(),
        }
    }

    pub fn record(&self, sandbox: &Sandbox, status: &SandboxStatus) {
        let uid = sandbox.uid().unwrap_or_default();
        let version = sandbox.resource_version().unwrap_or_default();
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        written.insert(uid, (version, status.clone()));
    }

    pub fn forget(&self, sandbox: &Sandbox) {
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        written.remove(&sandbox.uid().unwrap_or_default());
    }
}
