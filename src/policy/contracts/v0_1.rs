//! Components built against `sandman:policy@0.1.0` (frozen in `wit/versions/0.1.0`) keep
//! working: the host gives them the 0.1.0 input (the current one without the fields 0.2.0
//! added) and reads their decisions as current ones. 0.1.0 has no pool hook.

use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use super::{Call, Exports, Version};
use crate::policy::bindings::sandman::policy::host as current_host;
use crate::policy::store::GuestState;
use crate::policy::{Hook, types};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/versions/0.1.0",
        world: "policy",
    });
}

use bindings::exports::sandman::policy::{isolation, lifecycle, resources, settings};
use bindings::sandman::policy::types as old;
use types as new;

adapter!(
    V0_1,
    "0.1.0",
    world: bindings::Policy,
    hooks: [isolation, resources, lifecycle],
    down: down,
    up: up,
    pool: no
);

/// A 0.1.0 hook's answer as the current one.
fn up<A, B: From<A>>(answer: Result<Option<A>, String>) -> Call<B> {
    Ok(answer.map(|decision| decision.map(Into::into)))
}

sandman_policy_wire::wit_record!(
    old::SecurityOverrides,
    new::SecurityOverrides {
        run_as_non_root: same,
        run_as_user: same,
        read_only_root_filesystem: same,
        allow_privilege_escalation: same,
        host_users: same,
        seccomp_profile: same,
    }
);
sandman_policy_wire::wit_record!(
    old::Toleration,
    new::Toleration {
        key: same,
        operator: same,
        value: same,
        effect: same,
    }
);
/// A 0.1.0 isolation decision: it has no network profile.
impl From<old::IsolationDecision> for new::IsolationDecision {
    fn from(decision: old::IsolationDecision) -> Self {
        Self {
            runtime_class_name: decision.runtime_class_name,
            security: decision.security.into(),
            node_selector: decision.node_selector,
            tolerations: decision.tolerations.into_iter().map(Into::into).collect(),
            network: None,
            reason: decision.reason,
        }
    }
}
sandman_policy_wire::wit_record!(
    old::ComputeResources,
    new::ComputeResources {
        cpu: same,
        memory: same,
        ephemeral_storage: same,
    }
);
sandman_policy_wire::wit_record!(
    old::ContainerResources,
    new::ContainerResources {
        container: same,
        defaults: into,
        caps: into,
    }
);
sandman_policy_wire::wit_record!(
    old::ResourcesDecision,
    new::ResourcesDecision {
        containers: each,
        reason: same,
    }
);
sandman_policy_wire::wit_record!(
    old::Container,
    new::Container {
        name: same,
        image: same,
        requests: into,
        limits: into,
    }
);
sandman_policy_wire::wit_record!(
    old::Activity,
    new::Activity {
        now: same,
        created_at: same,
        last_activity_at: same,
        idle_seconds: same,
        open_connections: same,
        running_seconds: same,
        suspended_since: same,
    }
);
sandman_policy_wire::wit_enum!(
    old::OperatingMode,
    new::OperatingMode { Running, Suspended }
);
sandman_policy_wire::wit_enum!(
    old::LifecycleAction,
    new::LifecycleAction {
        Keep,
        Suspend,
        Resume,
        Terminate,
    }
);
sandman_policy_wire::wit_enum!(
    old::LogLevel,
    new::LogLevel {
        Debug,
        Info,
        Warn,
        Error,
    }
);

/// The 0.1.0 input: the current one less what 0.2.0 added (template, pool, claim).
fn down(input: &new::Input) -> wasmtime::Result<old::Input> {
    let sandbox = &input.sandbox;
    Ok(old::Input {
        sandbox: old::Sandbox {
            name: sandbox.name.clone(),
            namespace: sandbox.namespace.clone(),
            uid: sandbox.uid.clone(),
            labels: sandbox.labels.clone(),
            annotations: sandbox.annotations.clone(),
            namespace_labels: sandbox.namespace_labels.clone(),
            containers: sandbox.containers.iter().cloned().map(Into::into).collect(),
            isolation_level: sandbox.isolation_level.clone(),
            runtime_class_name: sandbox.runtime_class_name.clone(),
            operating_mode: sandbox.operating_mode.into(),
            phase: sandbox.phase.clone(),
        },
        activity: input.activity.into(),
        settings: input.settings.clone(),
    })
}

/// A 0.1.0 lifecycle decision: it never asks for a checkpoint.
impl From<old::LifecycleDecision> for new::LifecycleDecision {
    fn from(decision: old::LifecycleDecision) -> Self {
        Self {
            action: decision.action.into(),
            reason: decision.reason,
            requeue_after_seconds: decision.requeue_after_seconds,
            checkpoint: None,
        }
    }
}

impl bindings::sandman::policy::types::Host for GuestState {}

impl bindings::sandman::policy::host::Host for GuestState {
    fn log(&mut self, level: old::LogLevel, message: String) {
        current_host::Host::log(self, level.into(), message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_input_keeps_every_field_it_had() {
        let mut current = crate::policy::input::sample(&[("team", "a")], &[], "{}");
        current.sandbox.template = Some("python".into());
        current.sandbox.claim = Some("job-1".into());
        let old = down(&current).expect("the old input");
        assert_eq!(old.sandbox.name, current.sandbox.name);
        assert_eq!(old.sandbox.labels, current.sandbox.labels);
        assert_eq!(old.activity.now, current.activity.now);
        assert_eq!(old.settings, current.settings);
    }
}
