//! Policy decisions for one Sandbox: what the reconciler applies to its pod, and how they are
//! recorded in `status.decisions`.

use k8s_openapi::api::core::v1::{PodSpec, SeccompProfile, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::{PolicyDecision, PolicyDecisions};
use crate::policy::MergedResources;
use crate::policy::limits::quantity_value;
use crate::policy::types::{IsolationDecision, LifecycleDecision};

/// The decisions in force for one reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// The winning isolation decision and the policy that made it.
    pub isolation: Option<(String, IsolationDecision)>,
    /// A `failurePolicy: Fail` policy that could not decide: (policy, message).
    pub failure: Option<(String, String)>,
    /// What Audit-mode policies would have decided, by policy.
    pub audits: Vec<(String, IsolationDecision)>,
    /// Resource defaults and caps merged from the resources policies.
    pub resources: Option<MergedResources>,
    /// The winning lifecycle decision and the policy that made it.
    pub lifecycle: Option<(String, LifecycleDecision)>,
    /// Whether any lifecycle policy matches (then the Sandbox is asked about again in time).
    pub has_lifecycle_policy: bool,
    /// What the pod baseline refuses in the pod these decisions make; empty when it may run.
    pub refused: Vec<String>,
    /// What an isolation policy's allowance let through the baseline: (policy, what).
    pub exempted: Option<(String, Vec<String>)>,
    /// The baseline could not check everything it names (a Secret missing or unreadable):
    /// look again in a while, since that can change without the Sandbox changing.
    pub recheck: bool,
    /// The in-Sandbox runtime the pod gets, when the Sandbox asks for it.
    pub runtime: Option<super::runtime::Injection>,
    /// Why the Sandbox cannot have the runtime it asks for; the pod is held meanwhile.
    pub runtime_refused: Option<String>,
    /// The checkpoint supervisor sandman makes in the pod, when the Sandbox keeps memory.
    pub supervisor: Option<super::supervisor::Injection>,
    /// Why the Sandbox's pod cannot have the supervisor; the pod is held meanwhile.
    pub supervisor_refused: Option<String>,
}

fn summary(policy: &str, decision: &IsolationDecision, now: Timestamp) -> PolicyDecision {
    PolicyDecision {
        policy: policy.to_string(),
        outcome: decision
            .runtime_class_name
            .clone()
            .unwrap_or_else(|| "security-context".into()),
        message: Some(decision.reason.clone()),
        decided_at: Some(Time(now)),
    }
}

/// Keeps the earlier `decidedAt` when nothing else about the decision changed, so that
/// re-evaluating a policy never churns the status.
fn keep_time(mut recorded: PolicyDecision, before: Option<&PolicyDecision>) -> PolicyDecision {
    if let Some(before) = before {
        let same = before.policy == recorded.policy
            && before.outcome == recorded.outcome
            && before.message == recorded.message;
        if same {
            recorded.decided_at = before.decided_at.clone();
        }
    }
    recorded
}

impl Decisions {
    /// `status.decisions`, keeping `decidedAt` of decisions that did not change.
    pub fn record(
        &self,
        previous: Option<&PolicyDecisions>,
        now: Timestamp,
    ) -> Option<PolicyDecisions> {
        let baseline = self
            .baseline_record(now)
            .map(|recorded| keep_time(recorded, previous.and_then(|p| p.baseline.as_ref())));
        if self.isolation.is_none()
            && self.audits.is_empty()
            && self.resources.is_none()
            && baseline.is_none()
        {
            return None;
        }
        let resources = self.resources.as_ref().map(|merged| {
            let recorded = PolicyDecision {
                policy: merged.policies.join(","),
                outcome: "defaults-and-caps".into(),
                message: Some(merged.reasons.join("; ")),
                decided_at: Some(Time(now)),
            };
            keep_time(recorded, previous.and_then(|p| p.resources.as_ref()))
        });
        let isolation = self.isolation.as_ref().map(|(policy, decision)| {
            keep_time(
                summary(policy, decision, now),
                previous.and_then(|p| p.isolation.as_ref()),
            )
        });
        let audited = self
            .audits
            .iter()
            .map(|(policy, decision)| {
                let before = previous.and_then(|p| p.audited.iter().find(|a| &a.policy == policy));
                keep_time(summary(policy, decision, now), before)
            })
            .collect();
        Some(PolicyDecisions {
            isolation,
            resources,
            audited,
            baseline,
            ..Default::default()
        })
    }

    fn baseline_record(&self, now: Timestamp) -> Option<PolicyDecision> {
        let (policy, outcome, what) = if !self.refused.is_empty() {
            let policy = self
                .isolation
                .as_ref()
                .map_or_else(|| "baseline".to_string(), |(p, _)| p.clone());
            (policy, "refused", self.refused.clone())
        } else {
            let (policy, what) = self.exempted.clone()?;
            (policy, "exempted", what)
        };
        Some(PolicyDecision {
            policy,
            outcome: outcome.into(),
            message: Some(what.join(", ")),
            decided_at: Some(Time(now)),
        })
    }
}

/// Applies merged resource defaults and caps to every container: a default fills a request
/// the template leaves unset; a cap lowers a request or limit above it and sets a missing limit.
pub fn apply_resources(spec: &mut PodSpec, merged: &MergedResources) {
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let (defaults, caps) = merged.for_container(&container.name);
        let resources = container.resources.get_or_insert_with(Default::default);
        for (name, default, cap) in [
            ("cpu", &defaults.cpu, &caps.cpu),
            ("memory", &defaults.memory, &caps.memory),
            (
                "ephemeral-storage",
                &defaults.ephemeral_storage,
                &caps.ephemeral_storage,
            ),
        ] {
            let requests = resources.requests.get_or_insert_with(Default::default);
            if let Some(default) = default {
                requests
                    .entry(name.to_string())
                    .or_insert_with(|| Quantity(default.clone()));
            }
            let Some(cap) = cap else { continue };
            let over = |q: &Quantity| match (quantity_value(&q.0), quantity_value(cap)) {
                (Some(value), Some(max)) => value > max,
                // What cannot be read cannot be shown to be under the cap; the cap wins.
                _ => true,
            };
            if requests.get(name).is_some_and(over) {
                requests.insert(name.to_string(), Quantity(cap.clone()));
            }
            let limits = resources.limits.get_or_insert_with(Default::default);
            match limits.get(name) {
                Some(limit) if !over(limit) => {}
                _ => {
                    limits.insert(name.to_string(), Quantity(cap.clone()));
                }
            }
        }
        if resources.requests.as_ref().is_some_and(|r| r.is_empty()) {
            resources.requests = None;
        }
        if resources.limits.as_ref().is_some_and(|l| l.is_empty()) {
            resources.limits = None;
        }
    }
}

/// Applies an isolation decision to a pod spec. Policy values win over the template and over
/// sandman's hardened defaults, at pod level and in every container; what the decision leaves
/// unset stays as it was.
pub fn apply_isolation(spec: &mut PodSpec, decision: &IsolationDecision) {
    if let Some(runtime) = &decision.runtime_class_name {
        spec.runtime_class_name = Some(runtime.clone());
    }
    let security = &decision.security;
    if let Some(host_users) = security.host_users {
        spec.host_users = Some(host_users);
    }
    let pod = spec.security_context.get_or_insert_with(Default::default);
    if let Some(v) = security.run_as_non_root {
        pod.run_as_non_root = Some(v);
    }
    if let Some(v) = security.run_as_user {
        pod.run_as_user = Some(v);
    }
    if let Some(profile) = &security.seccomp_profile {
        pod.seccomp_profile = Some(match profile.split_once('/') {
            Some(("Localhost", path)) => SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some(path.into()),
            },
            _ => SeccompProfile {
                type_: profile.clone(),
                localhost_profile: None,
            },
        });
    }
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let context = container
            .security_context
            .get_or_insert_with(Default::default);
        // The decision's user holds in every container: a container's own value would
        // otherwise win over the pod's. A container may be stricter than a non-root decision
        // (its own runAsNonRoot: true stays), never looser.
        if let Some(v) = security.run_as_user {
            context.run_as_user = Some(v);
        }
        if security.run_as_non_root == Some(true) {
            context.run_as_non_root = Some(true);
        }
        if let Some(v) = security.read_only_root_filesystem {
            context.read_only_root_filesystem = Some(v);
        }
        if let Some(v) = security.allow_privilege_escalation {
            context.allow_privilege_escalation = Some(v);
        }
        if security.seccomp_profile.is_some() {
            // The pod-level profile the policy chose must not be shadowed per container.
            context.seccomp_profile = None;
        }
    }
    if !decision.node_selector.is_empty() {
        let selector = spec.node_selector.get_or_insert_with(Default::default);
        selector.extend(decision.node_selector.iter().cloned());
    }
    if !decision.tolerations.is_empty() {
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        tolerations.extend(decision.tolerations.iter().map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: None,
        }));
    }
}

/// Audit-mode decisions that are new since the last status, in words for an Event.
pub fn audit_news(
    before: Option<&crate::api::PolicyDecisions>,
    after: Option<&crate::api::PolicyDecisions>,
) -> Vec<String> {
    let audited =
        |d: Option<&crate::api::PolicyDecisions>| d.map(|d| d.audited.clone()).unwrap_or_default();
    let known = audited(before);
    audited(after)
        .into_iter()
        .filter(|a| !known.contains(a))
        .map(|a| {
            format!(
                "policy {} would decide {} ({}); Audit mode, not applied",
                a.policy,
                a.outcome,
                a.message.unwrap_or_default()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::{SecurityOverrides, Toleration as PolicyToleration};
    use k8s_openapi::api::core::v1::{Container, SecurityContext};

    fn decision() -> IsolationDecision {
        IsolationDecision {
            runtime_class_name: Some("gvisor".into()),
            security: SecurityOverrides {
                run_as_non_root: Some(true),
                run_as_user: Some(1000),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: None,
                host_users: Some(false),
                seccomp_profile: Some("Localhost/agents.json".into()),
            },
            node_selector: vec![("sandbox-runtime".into(), "gvisor".into())],
            tolerations: vec![PolicyToleration {
                key: Some("sandboxed".into()),
                operator: Some("Exists".into()),
                value: None,
                effect: Some("NoSchedule".into()),
            }],
            network: None,
            reason: "untrusted".into(),
        }
    }

    #[test]
    fn isolation_decisions_reach_pod_and_containers() {
        let mut spec = PodSpec {
            runtime_class_name: Some("runc".into()),
            containers: vec![Container {
                name: "agent".into(),
                security_context: Some(Default::default()),
                ..Default::default()
            }],
            ..Default::default()
        };
        apply_isolation(&mut spec, &decision());
        assert_eq!(
            spec.runtime_class_name.as_deref(),
            Some("gvisor"),
            "the policy wins"
        );
        assert_eq!(spec.host_users, Some(false));
        let pod = spec.security_context.clone().expect("pod context");
        assert_eq!(
            (pod.run_as_non_root, pod.run_as_user),
            (Some(true), Some(1000))
        );
        let seccomp = pod.seccomp_profile.expect("seccomp");
        assert_eq!(
            (seccomp.type_.as_str(), seccomp.localhost_profile.as_deref()),
            ("Localhost", Some("agents.json"))
        );
        let container = spec.containers[0]
            .security_context
            .clone()
            .expect("container context");
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(
            spec.node_selector
                .expect("selector")
                .get("sandbox-runtime")
                .map(String::as_str),
            Some("gvisor")
        );
        assert_eq!(spec.tolerations.expect("tolerations").len(), 1);
    }

    #[test]
    fn a_containers_own_root_user_cannot_override_a_non_root_decision() {
        let root: SecurityContext = serde_json::from_value(serde_json::json!({
            "runAsNonRoot": false, "runAsUser": 0,
        }))
        .expect("context");
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "agent".into(),
                security_context: Some(root.clone()),
                ..Default::default()
            }],
            init_containers: Some(vec![Container {
                name: "init".into(),
                security_context: Some(root),
                ..Default::default()
            }]),
            ..Default::default()
        };
        apply_isolation(&mut spec, &decision());
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let context = container.security_context.clone().expect("context");
            assert_eq!(
                (context.run_as_non_root, context.run_as_user),
                (Some(true), Some(1000)),
                "{}",
                container.name
            );
        }
    }

    #[test]
    fn resources_fill_defaults_and_enforce_caps() {
        use crate::policy::types::ComputeResources;
        let q = |v: &str| Some(v.to_string());
        let merged = MergedResources {
            containers: vec![(
                None,
                ComputeResources {
                    cpu: q("250m"),
                    memory: q("512Mi"),
                    ephemeral_storage: None,
                },
                ComputeResources {
                    cpu: q("2"),
                    memory: q("4Gi"),
                    ephemeral_storage: None,
                },
            )],
            policies: vec!["tenants".into()],
            reasons: vec!["defaults".into()],
        };
        let mut greedy = Container {
            name: "greedy".into(),
            ..Default::default()
        };
        greedy.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some([("cpu".to_string(), Quantity("8".into()))].into()),
            ..Default::default()
        });
        let mut spec = PodSpec {
            containers: vec![
                Container {
                    name: "plain".into(),
                    ..Default::default()
                },
                greedy,
            ],
            ..Default::default()
        };
        apply_resources(&mut spec, &merged);
        let get = |i: usize, requests: bool, name: &str| {
            let r = spec.containers[i].resources.clone().unwrap_or_default();
            let list = if requests { r.requests } else { r.limits };
            list.and_then(|l| l.get(name).map(|q| q.0.clone()))
        };
        assert_eq!(
            get(0, true, "cpu").as_deref(),
            Some("250m"),
            "default request"
        );
        assert_eq!(
            get(0, false, "memory").as_deref(),
            Some("4Gi"),
            "cap as the limit"
        );
        assert_eq!(
            get(1, true, "cpu").as_deref(),
            Some("2"),
            "a request above the cap is capped"
        );
        assert_eq!(get(1, true, "memory").as_deref(), Some("512Mi"));
    }

    /// A request written with a suffix the host once could not read (`u`, `n`) went past the
    /// cap: 64 CPUs past a cap of 2.
    #[test]
    fn caps_hold_for_every_quantity_suffix_and_for_unreadable_requests() {
        use crate::policy::types::ComputeResources;
        let merged = MergedResources {
            containers: vec![(
                None,
                ComputeResources {
                    cpu: None,
                    memory: None,
                    ephemeral_storage: None,
                },
                ComputeResources {
                    cpu: Some("2".into()),
                    memory: None,
                    ephemeral_storage: None,
                },
            )],
            policies: vec!["caps".into()],
            reasons: vec!["caps".into()],
        };
        for asked in ["64000000u", "64000000000n", "64", "6.4e1", "not-a-quantity"] {
            let mut spec = PodSpec {
                containers: vec![Container {
                    name: "greedy".into(),
                    resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                        requests: Some([("cpu".to_string(), Quantity(asked.into()))].into()),
                        limits: Some([("cpu".to_string(), Quantity(asked.into()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            };
            apply_resources(&mut spec, &merged);
            let resources = spec.containers[0].resources.clone().unwrap_or_default();
            for list in [resources.requests, resources.limits] {
                assert_eq!(
                    list.and_then(|l| l.get("cpu").map(|q| q.0.clone()))
                        .as_deref(),
                    Some("2"),
                    "{asked} is capped"
                );
            }
        }
        let mut modest = PodSpec {
            containers: vec![Container {
                name: "modest".into(),
                resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                    requests: Some([("cpu".to_string(), Quantity("500000u".into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        apply_resources(&mut modest, &merged);
        let requests = modest.containers[0]
            .resources
            .clone()
            .unwrap_or_default()
            .requests;
        assert_eq!(
            requests
                .and_then(|l| l.get("cpu").map(|q| q.0.clone()))
                .as_deref(),
            Some("500000u"),
            "a request under the cap stays as written"
        );
    }

    #[test]
    fn an_unchanged_decision_keeps_its_time() {
        let decisions = Decisions {
            isolation: Some(("p".into(), decision())),
            ..Default::default()
        };
        let t0 = Timestamp::from_second(1_800_000_000).expect("t0");
        let t1 = Timestamp::from_second(1_800_000_100).expect("t1");
        let first = decisions.record(None, t0);
        let again = decisions.record(first.as_ref(), t1);
        assert_eq!(
            first, again,
            "no status churn from re-evaluating the same decision"
        );
        assert_eq!(Decisions::default().record(first.as_ref(), t1), None);
    }
}
