//! Decisions from their JSON form (`sandman-policy-wire`, camelCase, as CEL hooks and test
//! suites write them) into the WIT types a hook returns.

pub use sandman_policy_wire::*;

use crate::types;

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

impl From<ComputeResources> for types::ComputeResources {
    fn from(r: ComputeResources) -> Self {
        Self {
            cpu: r.cpu,
            memory: r.memory,
            ephemeral_storage: r.ephemeral_storage,
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
