//! An isolation and lifecycle policy frozen at `sandman:policy@0.1.0` (`wit/versions/0.1.0`),
//! as a component built before 0.2.0 was: Sandboxes labelled `trust=untrusted` run under gVisor,
//! and a Sandbox idle for 60 s or more is suspended.

wit_bindgen::generate!({
    path: "../../wit/versions/0.1.0",
    world: "policy",
});

use exports::sandman::policy::{isolation, lifecycle, resources, settings};
use sandman::policy::types::{
    Input, IsolationDecision, LifecycleAction, LifecycleDecision, OperatingMode, ResourcesDecision,
    SecurityOverrides,
};

struct Frozen;

impl settings::Guest for Frozen {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl isolation::Guest for Frozen {
    fn decide(input: Input) -> Result<Option<IsolationDecision>, String> {
        let untrusted = input
            .sandbox
            .labels
            .iter()
            .any(|(k, v)| k == "trust" && v == "untrusted");
        Ok(untrusted.then(|| IsolationDecision {
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
            reason: "untrusted (0.1.0 policy)".into(),
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
            reason: "idle (0.1.0 policy)".into(),
            requeue_after_seconds: None,
        }))
    }
}

export!(Frozen);
