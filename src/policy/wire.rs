//! Conversions between the WIT decision types and their JSON form (`sandman-policy-wire`).

use std::collections::BTreeMap;

pub use sandman_policy_wire::*;

use super::types;

fn pairs_to_map(pairs: Vec<(String, String)>) -> BTreeMap<String, String> {
    pairs.into_iter().collect()
}

impl From<types::IsolationDecision> for IsolationDecision {
    fn from(d: types::IsolationDecision) -> Self {
        Self {
            runtime_class_name: d.runtime_class_name,
            security: SecurityOverrides {
                run_as_non_root: d.security.run_as_non_root,
                run_as_user: d.security.run_as_user,
                read_only_root_filesystem: d.security.read_only_root_filesystem,
                allow_privilege_escalation: d.security.allow_privilege_escalation,
                host_users: d.security.host_users,
                seccomp_profile: d.security.seccomp_profile,
            },
            node_selector: pairs_to_map(d.node_selector),
            tolerations: d
                .tolerations
                .into_iter()
                .map(|t| Toleration {
                    key: t.key,
                    operator: t.operator,
                    value: t.value,
                    effect: t.effect,
                })
                .collect(),
            reason: d.reason,
        }
    }
}

impl From<IsolationDecision> for types::IsolationDecision {
    fn from(d: IsolationDecision) -> Self {
        Self {
            runtime_class_name: d.runtime_class_name,
            security: types::SecurityOverrides {
                run_as_non_root: d.security.run_as_non_root,
                run_as_user: d.security.run_as_user,
                read_only_root_filesystem: d.security.read_only_root_filesystem,
                allow_privilege_escalation: d.security.allow_privilege_escalation,
                host_users: d.security.host_users,
                seccomp_profile: d.security.seccomp_profile,
            },
            node_selector: d.node_selector.into_iter().collect(),
            tolerations: d
                .tolerations
                .into_iter()
                .map(|t| types::Toleration {
                    key: t.key,
                    operator: t.operator,
                    value: t.value,
                    effect: t.effect,
                })
                .collect(),
            reason: d.reason,
        }
    }
}

impl From<types::ComputeResources> for ComputeResources {
    fn from(r: types::ComputeResources) -> Self {
        Self {
            cpu: r.cpu,
            memory: r.memory,
            ephemeral_storage: r.ephemeral_storage,
        }
    }
}

impl From<ComputeResources> for types::ComputeResources {
    fn from(r: ComputeResources) -> Self {
        Self {
            cpu: r.cpu,
            memory: r.memory,
            ephemeral_storage: r.ephemeral_storage,
        }
    }
}

impl From<types::ResourcesDecision> for ResourcesDecision {
    fn from(d: types::ResourcesDecision) -> Self {
        Self {
            containers: d
                .containers
                .into_iter()
                .map(|c| ContainerResources {
                    container: c.container,
                    defaults: c.defaults.into(),
                    caps: c.caps.into(),
                })
                .collect(),
            reason: d.reason,
        }
    }
}

impl From<ResourcesDecision> for types::ResourcesDecision {
    fn from(d: ResourcesDecision) -> Self {
        Self {
            containers: d
                .containers
                .into_iter()
                .map(|c| types::ContainerResources {
                    container: c.container,
                    defaults: c.defaults.into(),
                    caps: c.caps.into(),
                })
                .collect(),
            reason: d.reason,
        }
    }
}

impl From<types::LifecycleDecision> for LifecycleDecision {
    fn from(d: types::LifecycleDecision) -> Self {
        Self {
            action: match d.action {
                types::LifecycleAction::Keep => LifecycleAction::Keep,
                types::LifecycleAction::Suspend => LifecycleAction::Suspend,
                types::LifecycleAction::Resume => LifecycleAction::Resume,
                types::LifecycleAction::Terminate => LifecycleAction::Terminate,
            },
            reason: d.reason,
            requeue_after_seconds: d.requeue_after_seconds,
        }
    }
}

impl From<LifecycleDecision> for types::LifecycleDecision {
    fn from(d: LifecycleDecision) -> Self {
        Self {
            action: match d.action {
                LifecycleAction::Keep => types::LifecycleAction::Keep,
                LifecycleAction::Suspend => types::LifecycleAction::Suspend,
                LifecycleAction::Resume => types::LifecycleAction::Resume,
                LifecycleAction::Terminate => types::LifecycleAction::Terminate,
            },
            reason: d.reason,
            requeue_after_seconds: d.requeue_after_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decisions_round_trip_through_the_wit_types() {
        let isolation: IsolationDecision = serde_json::from_value(json!({
            "runtimeClassName": "gvisor",
            "security": { "runAsNonRoot": true, "hostUsers": false },
            "nodeSelector": { "pool": "sandboxes" },
            "tolerations": [{ "key": "sandbox", "operator": "Exists", "effect": "NoSchedule" }],
            "reason": "untrusted",
        }))
        .expect("isolation");
        let wit: types::IsolationDecision = isolation.clone().into();
        assert_eq!(IsolationDecision::from(wit), isolation);

        let lifecycle: LifecycleDecision = serde_json::from_value(
            json!({ "action": "suspend", "reason": "idle", "requeueAfterSeconds": 60 }),
        )
        .expect("lifecycle");
        let wit: types::LifecycleDecision = lifecycle.clone().into();
        assert_eq!(wit.action, types::LifecycleAction::Suspend);
        assert_eq!(LifecycleDecision::from(wit), lifecycle);
    }
}
