//! A policy frozen at `sandman:policy@0.2.0` (`wit/versions/0.2.0`), as a component built
//! before 0.3.0 was: Sandboxes made from the `python` template run under gVisor with a network
//! profile, a Sandbox idle for 60 s or more is suspended, and every pool keeps 3 members.

wit_bindgen::generate!({
    path: "../../wit/versions/0.2.0",
    world: "policy",
});

use exports::sandman::policy::{isolation, lifecycle, pool, resources, settings};
use sandman::policy::types::{
    Input, IsolationDecision, LifecycleAction, LifecycleDecision, NetworkProfile, OperatingMode,
    PoolDecision, PoolInput, ResourcesDecision, SecurityOverrides,
};

struct Frozen;

impl settings::Guest for Frozen {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl isolation::Guest for Frozen {
    fn decide(input: Input) -> Result<Option<IsolationDecision>, String> {
        let python = input.sandbox.template.as_deref() == Some("python");
        Ok(python.then(|| IsolationDecision {
            runtime_class_name: Some("gvisor".into()),
            security: SecurityOverrides {
                run_as_non_root: Some(true),
                run_as_user: None,
                read_only_root_filesystem: None,
                allow_privilege_escalation: Some(false),
                host_users: None,
                seccomp_profile: None,
            },
            node_selector: Vec::new(),
            tolerations: Vec::new(),
            network: Some(NetworkProfile {
                ingress_ports: vec![8080],
                egress_cidrs: Vec::new(),
            }),
            reason: "python template (0.2.0 policy)".into(),
        }))
    }
}

impl resources::Guest for Frozen {
    fn decide(_input: Input) -> Result<Option<ResourcesDecision>, String> {
        Ok(None)
    }
}

impl lifecycle::Guest for Frozen {
    fn decide(input: Input) -> Result<Option<LifecycleDecision>, String> {
        let idle = input.sandbox.operating_mode == OperatingMode::Running
            && input.activity.idle_seconds >= 60;
        Ok(idle.then(|| LifecycleDecision {
            action: LifecycleAction::Suspend,
            reason: "idle (0.2.0 policy)".into(),
            requeue_after_seconds: Some(30),
        }))
    }
}

impl pool::Guest for Frozen {
    fn decide(input: PoolInput) -> Result<Option<PoolDecision>, String> {
        Ok(Some(PoolDecision {
            replicas: 3,
            reason: format!("pool {} (0.2.0 policy)", input.pool.name),
            requeue_after_seconds: None,
        }))
    }
}

export!(Frozen);
