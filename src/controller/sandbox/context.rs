//! What every reconcile shares: the client, the caches, the policies, and the statuses
//! written but not yet seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::controller::lean::{CachedPod, CachedService};
use crate::controller::recorder::Recorder;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::api::{Sandbox, SandboxStatus};
use crate::controller::sandbox::events::{self, Transition};
use crate::metrics::Metrics;
use crate::policy::PolicySet;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub pods: Store<CachedPod>,
    pub services: Store<CachedService>,
    pub claims: Store<PersistentVolumeClaim>,
    /// NetworkPolicies of Sandboxes whose isolation policy chose a network profile.
    pub network_policies: Store<NetworkPolicy>,
    /// Where the gateway runs: a Sandbox's NetworkPolicy lets its pods in.
    pub gateway_namespace: String,
    pub recorder: Recorder,
    pub written: WrittenStatuses,
    pub policies: PolicySet,
    pub namespaces: Store<Namespace>,
    /// How long a Sandbox runs before a lifecycle decision may suspend it again.
    pub min_dwell: std::time::Duration,
    /// Whether the pod baseline is enforced.
    pub pod_baseline: bool,
    /// The image of the in-Sandbox runtime (`--runtime-image`).
    pub runtime_image: Option<String>,
    /// The image of the checkpoint supervisor (`--supervisor-image`).
    pub supervisor_image: Option<String>,
    /// Where this operator's counts go.
    pub metrics: Arc<Metrics>,
    /// Pods' supervisors, asked for checkpoints and for how a restore went.
    pub supervisors: crate::checkpoint::client::SupervisorClient,
    /// The bound on checkpoint calls in flight, per namespace and in all.
    pub checkpoint_slots: Arc<super::checkpoint_slots::CheckpointSlots>,
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
/// write, and would then plan from the old status: write the same status again, or worse, act
/// on a state it already left (an automatic resume lives in status; planning from the status
/// before it would suspend the Sandbox again). Each entry remembers the resourceVersion the
/// write was planned against and the one the write produced. The cache is behind while it
/// shows the first, or a version before the second (another writer's change that landed in
/// between); once it shows the second or later, it has our write and the entry goes.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<String, Written>>);

struct Written {
    planned_against: String,
    /// The resourceVersion our write returned, when the API server said.
    produced: Option<String>,
    status: SandboxStatus,
}

impl Written {
    /// Whether a cache showing `version` has not seen this write yet. resourceVersions are
    /// opaque in general; an etcd-backed API server's are increasing integers, and only then
    /// is "before" decided by number.
    fn unseen_at(&self, version: &str) -> bool {
        if version == self.planned_against {
            return true;
        }
        match (
            version.parse::<u64>(),
            self.produced.as_deref().map(str::parse::<u64>),
        ) {
            (Ok(cached), Some(Ok(produced))) => cached < produced,
            _ => false,
        }
    }
}

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
            Some(entry) if entry.unseen_at(&version) => Some(entry.status.clone()),
            Some(_) => {
                written.remove(&uid);
                sandbox.status.clone()
            }
            None => sandbox.status.clone(),
        }
    }

    /// Remembers a status written for `sandbox` (as the reconcile saw it), which produced
    /// resourceVersion `produced`.
    pub fn record(&self, sandbox: &Sandbox, status: &SandboxStatus, produced: Option<String>) {
        let uid = sandbox.uid().unwrap_or_default();
        let version = sandbox.resource_version().unwrap_or_default();
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        written.insert(
            uid,
            Written {
                planned_against: version,
                produced,
                status: status.clone(),
            },
        );
    }

    pub fn forget(&self, sandbox: &Sandbox) {
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        written.remove(&sandbox.uid().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;

    fn at(version: &str, phase: Phase) -> Sandbox {
        let mut sandbox = Sandbox::new("s", Default::default());
        sandbox.metadata.uid = Some("uid".into());
        sandbox.metadata.resource_version = Some(version.into());
        sandbox.status = Some(SandboxStatus {
            phase: Some(phase),
            ..Default::default()
        });
        sandbox
    }

    /// Another writer's change between our read (10) and our write (12) moves the cache to
    /// 11, which still lacks our status: it must not be planned from.
    #[test]
    fn a_cache_between_our_read_and_our_write_is_still_behind() {
        let written = WrittenStatuses::default();
        let ours = SandboxStatus {
            phase: Some(Phase::Resuming),
            ..Default::default()
        };
        written.record(&at("10", Phase::Suspended), &ours, Some("12".into()));
        assert_eq!(
            written.current(&at("10", Phase::Suspended)),
            Some(ours.clone())
        );
        assert_eq!(
            written.current(&at("11", Phase::Suspended)),
            Some(ours.clone())
        );
        let caught_up = at("12", Phase::Resuming);
        assert_eq!(written.current(&caught_up), caught_up.status);
        // Once caught up, the entry is gone: an older view is the cache's own business.
        assert_eq!(
            written
                .current(&at("11", Phase::Suspended))
                .and_then(|s| s.phase),
            Some(Phase::Suspended)
        );
    }

    #[test]
    fn opaque_versions_fall_back_to_the_planned_version() {
        let written = WrittenStatuses::default();
        let ours = SandboxStatus::default();
        written.record(&at("a", Phase::Running), &ours, Some("c".into()));
        assert_eq!(written.current(&at("a", Phase::Running)), Some(ours));
        assert_eq!(
            written
                .current(&at("b", Phase::Running))
                .and_then(|s| s.phase),
            Some(Phase::Running)
        );
    }
}
