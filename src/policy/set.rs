//! The installed policies, and how their decisions compose for one Sandbox.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use super::error::PolicyError;
use super::types::{
    ComputeResources, Input, IsolationDecision, LifecycleDecision, PoolDecision, PoolInput,
};
use super::{Hook, LoadedPolicy};
use crate::api::{FailurePolicy, PodSecurityAllowance, PolicyMatch, PolicyMode};

/// A SandboxPolicy in the set: loaded and ready to evaluate, or one that has never loaded.
#[derive(Clone)]
pub struct ActivePolicy {
    pub name: String,
    pub priority: i32,
    pub mode: PolicyMode,
    pub failure_policy: FailurePolicy,
    pub matcher: PolicyMatch,
    /// Exemptions from the pod baseline for Sandboxes whose isolation this policy decides.
    pub pod_security: PodSecurityAllowance,
    /// The serving revision's sha256 (empty while unavailable).
    pub digest: String,
    pub loaded: Result<Arc<LoadedPolicy>, Unavailable>,
}

/// A policy that has never loaded. It still takes part: each evaluation fails with
/// [`PolicyError::Unavailable`], so that with `failurePolicy: Fail` the Sandboxes it matches are
/// held rather than started without it, and with `Ignore` they go ahead.
#[derive(Clone, Debug, PartialEq)]
pub struct Unavailable {
    /// The hooks it would decide: those its CEL expressions name, or all three for a
    /// component nobody could read.
    pub hooks: Vec<Hook>,
    pub reason: String,
}

impl ActivePolicy {
    pub fn hooks(&self) -> Vec<Hook> {
        match &self.loaded {
            Ok(loaded) => loaded.hooks(),
            Err(unavailable) => unavailable.hooks.clone(),
        }
    }

    /// Whether the policy takes part in `hook` (asked for every policy on every reconcile).
    pub fn decides(&self, hook: Hook) -> bool {
        match &self.loaded {
            Ok(loaded) => loaded.decides(hook),
            Err(unavailable) => unavailable.hooks.contains(&hook),
        }
    }

    /// Runs `hook` on the loaded policy, with the input `input_for` builds for it.
    fn evaluate<I, D>(
        &self,
        input_for: &impl Fn(&LoadedPolicy) -> I,
        hook: impl FnOnce(&LoadedPolicy, &I) -> Result<Option<D>, PolicyError>,
    ) -> Result<Option<D>, PolicyError> {
        match &self.loaded {
            Ok(loaded) => hook(loaded, &input_for(loaded)),
            Err(unavailable) => Err(PolicyError::Unavailable(unavailable.reason.clone())),
        }
    }
}

/// Every loaded policy, by name. Loads swap whole entries, so an evaluation sees either the old
/// or the new revision of a policy, never a mix.
#[derive(Clone, Default)]
pub struct PolicySet(Arc<RwLock<BTreeMap<String, Arc<ActivePolicy>>>>);

impl PolicySet {
    pub fn insert(&self, policy: ActivePolicy) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(policy.name.clone(), Arc::new(policy));
    }

    pub fn remove(&self, name: &str) -> bool {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.remove(name).is_some()
    }

    /// Inserts `policy` unless one of its name is there already (a load may have just finished).
    pub fn insert_if_absent(&self, policy: ActivePolicy) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.entry(policy.name.clone())
            .or_insert_with(|| Arc::new(policy));
    }

    /// Keeps the policies whose name `keep` accepts; whether any went.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> bool {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|name, _| keep(name));
        map.len() != before
    }

    pub fn get(&self, name: &str) -> Option<Arc<ActivePolicy>> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).cloned()
    }

    /// Whether any policy in the set decides `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.values().any(|p| p.decides(hook))
    }

    /// The policies with `hook` that match a Sandbox, in evaluation order (priority, then name).
    pub fn matching(
        &self,
        hook: Hook,
        labels: &BTreeMap<String, String>,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<ActivePolicy>> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<Arc<ActivePolicy>> = map
            .values()
            .filter(|p| p.decides(hook))
            .filter(|p| {
                selects(p.matcher.selector.as_ref(), labels)
                    && selects(p.matcher.namespace_selector.as_ref(), namespace_labels)
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        found
    }
}

/// Kubernetes label-selector semantics (kube's `Selector`); no selector selects everything, and
/// one the API server would refuse (an unknown operator, `In` without values) selects nothing.
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    Selector::try_from(selector.clone()).is_ok_and(|selector| selector.matches(labels))
}

/// The decision of a hook where the first Enforce-mode policy that decides wins (isolation,
/// lifecycle), for one Sandbox.
pub struct FirstDecision<D> {
    /// The winning Enforce-mode decision and the policy that made it.
    pub decision: Option<(String, D)>,
    /// What Audit-mode policies would have decided (not applied).
    pub audits: Vec<(String, D)>,
    /// Errors that `failurePolicy: Ignore` let through, for Events.
    pub ignored: Vec<(String, PolicyError)>,
}

impl<D> Default for FirstDecision<D> {
    fn default() -> Self {
        Self {
            decision: None,
            audits: Vec::new(),
            ignored: Vec::new(),
        }
    }
}

pub type IsolationOutcome = FirstDecision<IsolationDecision>;
pub type LifecycleOutcome = FirstDecision<LifecycleDecision>;
pub type PoolOutcome = FirstDecision<PoolDecision>;

/// A policy with `failurePolicy: Fail` could not decide.
#[derive(Debug)]
pub struct PolicyFailed {
    pub policy: String,
    pub error: PolicyError,
}

/// Runs the matching policies in order: the first Enforce-mode decision that does not abstain
/// wins; Audit-mode policies run and are recorded; a failing `Fail` policy stops all.
fn decide_first<I, D>(
    policies: &[Arc<ActivePolicy>],
    input_for: impl Fn(&LoadedPolicy) -> I,
    hook: impl Fn(&LoadedPolicy, &I) -> Result<Option<D>, PolicyError>,
) -> Result<FirstDecision<D>, PolicyFailed> {
    let mut outcome = FirstDecision::default();
    for policy in policies {
        if policy.mode == PolicyMode::Enforce && outcome.decision.is_some() {
            continue;
        }
        match policy.evaluate(&input_for, &hook) {
            Ok(None) => {}
            Ok(Some(decision)) => match policy.mode {
                PolicyMode::Enforce => outcome.decision = Some((policy.name.clone(), decision)),
                PolicyMode::Audit => outcome.audits.push((policy.name.clone(), decision)),
            },
            Err(error) => match (policy.mode, policy.failure_policy) {
                (PolicyMode::Enforce, FailurePolicy::Fail) => {
                    return Err(PolicyFailed {
                        policy: policy.name.clone(),
                        error,
                    });
                }
                _ => outcome.ignored.push((policy.name.clone(), error)),
            },
        }
    }
    Ok(outcome)
}

/// The isolation decision: see [`decide_first`].
pub fn decide_isolation(
    policies: &[Arc<ActivePolicy>],
    input_for: impl Fn(&LoadedPolicy) -> Input,
) -> Result<IsolationOutcome, PolicyFailed> {
    decide_first(policies, input_for, LoadedPolicy::isolation)
}

/// The lifecycle decision: see [`decide_first`].
pub fn decide_lifecycle(
    policies: &[Arc<ActivePolicy>],
    input_for: impl Fn(&LoadedPolicy) -> Input,
) -> Result<LifecycleOutcome, PolicyFailed> {
    decide_first(policies, input_for, LoadedPolicy::lifecycle)
}

/// The size of a warm pool: see [`decide_first`].
pub fn decide_pool(
    policies: &[Arc<ActivePolicy>],
    input_for: impl Fn(&LoadedPolicy) -> PoolInput,
) -> Result<PoolOutcome, PolicyFailed> {
    decide_first(policies, input_for, LoadedPolicy::pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let labels = BTreeMap::from([("trust".to_string(), "untrusted".to_string())]);
        assert!(selects(None, &labels));
        let by_label = LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: None,
        };
        assert!(selects(Some(&by_label), &labels));
        assert!(!selects(Some(&by_label), &BTreeMap::new()));
        let expression = |operator: &str, values: Option<Vec<String>>| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "trust".into(),
                operator: operator.into(),
                values,
            }]),
        };
        let untrusted = Some(vec!["untrusted".to_string()]);
        assert!(selects(Some(&expression("In", untrusted.clone())), &labels));
        assert!(!selects(Some(&expression("NotIn", untrusted)), &labels));
        assert!(selects(Some(&expression("Exists", None)), &labels));
        assert!(selects(
            Some(&expression("DoesNotExist", None)),
            &BTreeMap::new()
        ));
        assert!(
            !selects(Some(&expression("Bogus", None)), &labels),
            "unknown operators select nothing"
        );
    }
}

/// Resource defaults and caps merged from every Enforce-mode policy that decided, field by
/// field: the earlier policy (lower priority value) wins each field it sets.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MergedResources {
    /// (container, defaults, caps), in the order first decided; a `None` container applies
    /// to every container.
    pub containers: Vec<(Option<String>, ComputeResources, ComputeResources)>,
    /// The policies that contributed, in order.
    pub policies: Vec<String>,
    /// Their reasons, in order.
    pub reasons: Vec<String>,
}

fn fill(into: &mut ComputeResources, from: &ComputeResources) {
    into.cpu = into.cpu.take().or_else(|| from.cpu.clone());
    into.memory = into.memory.take().or_else(|| from.memory.clone());
    into.ephemeral_storage = into
        .ephemeral_storage
        .take()
        .or_else(|| from.ephemeral_storage.clone());
}

fn empty() -> ComputeResources {
    ComputeResources {
        cpu: None,
        memory: None,
        ephemeral_storage: None,
    }
}

/// The resources outcome for one Sandbox.
#[derive(Default)]
pub struct ResourcesOutcome {
    pub merged: Option<MergedResources>,
    pub ignored: Vec<(String, PolicyError)>,
}

/// Runs the matching resources policies in order and merges their decisions.
pub fn decide_resources(
    policies: &[Arc<ActivePolicy>],
    input_for: impl Fn(&LoadedPolicy) -> Input,
) -> Result<ResourcesOutcome, PolicyFailed> {
    let mut outcome = ResourcesOutcome::default();
    let mut merged = MergedResources::default();
    for policy in policies.iter().filter(|p| p.mode == PolicyMode::Enforce) {
        match policy.evaluate(&input_for, LoadedPolicy::resources) {
            Ok(None) => {}
            Ok(Some(decision)) => {
                for entry in &decision.containers {
                    let index = match merged
                        .containers
                        .iter()
                        .position(|(c, _, _)| *c == entry.container)
                    {
                        Some(index) => index,
                        None => {
                            merged
                                .containers
                                .push((entry.container.clone(), empty(), empty()));
                            merged.containers.len() - 1
                        }
                    };
                    let (_, defaults, caps) = &mut merged.containers[index];
                    fill(defaults, &entry.defaults);
                    fill(caps, &entry.caps);
                }
                merged.policies.push(policy.name.clone());
                merged.reasons.push(decision.reason);
            }
            Err(error) if policy.failure_policy == FailurePolicy::Fail => {
                return Err(PolicyFailed {
                    policy: policy.name.clone(),
                    error,
                });
            }
            Err(error) => outcome.ignored.push((policy.name.clone(), error)),
        }
    }
    if !merged.policies.is_empty() {
        outcome.merged = Some(merged);
    }
    Ok(outcome)
}

impl MergedResources {
    /// The (defaults, caps) for a container: its own entry, field by field before the entry for
    /// every container.
    pub fn for_container(&self, name: &str) -> (ComputeResources, ComputeResources) {
        let (mut defaults, mut caps) = (empty(), empty());
        for wanted in [Some(name.to_string()), None] {
            if let Some((_, d, c)) = self.containers.iter().find(|(c, _, _)| *c == wanted) {
                fill(&mut defaults, d);
                fill(&mut caps, c);
            }
        }
        (defaults, caps)
    }
}
