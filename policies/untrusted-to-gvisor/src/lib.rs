//! Isolation policy: Sandboxes labelled untrusted, or in a namespace labelled untrusted, run
//! under gVisor with a hardened security context.
//!
//! Settings (all optional):
//! `{"label": "sandman.dev/trust", "value": "untrusted", "runtimeClassName": "gvisor"}`

use sandman_policy_sdk::types::{Input, IsolationDecision, SecurityOverrides};
use sandman_policy_sdk::{Policy, export_policy, label, parse_settings};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct Settings {
    label: String,
    value: String,
    runtime_class_name: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            label: "sandman.dev/trust".into(),
            value: "untrusted".into(),
            runtime_class_name: "gvisor".into(),
        }
    }
}

struct UntrustedToGvisor;

impl Policy for UntrustedToGvisor {
    fn validate_settings(settings: &str) -> Result<(), String> {
        let settings: Settings = parse_settings(settings)?;
        if settings.runtime_class_name.is_empty() {
            return Err("runtimeClassName must not be empty".into());
        }
        Ok(())
    }

    fn isolation(input: Input) -> Result<Option<IsolationDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        let sandbox = &input.sandbox;
        let marked = |pairs: &[(String, String)]| {
            label(pairs, &settings.label) == Some(settings.value.as_str())
        };
        let why = if marked(&sandbox.labels) {
            format!(
                "the Sandbox is labelled {}={}",
                settings.label, settings.value
            )
        } else if marked(&sandbox.namespace_labels) {
            format!(
                "namespace {} is labelled {}={}",
                sandbox.namespace, settings.label, settings.value
            )
        } else {
            return Ok(None);
        };
        Ok(Some(IsolationDecision {
            runtime_class_name: Some(settings.runtime_class_name.clone()),
            security: SecurityOverrides {
                run_as_non_root: Some(true),
                run_as_user: None,
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                host_users: Some(false),
                seccomp_profile: Some("RuntimeDefault".into()),
            },
            node_selector: Vec::new(),
            tolerations: Vec::new(),
            network: None,
            reason: format!("{why}: {}", settings.runtime_class_name),
        }))
    }
}

export_policy!(UntrustedToGvisor, [isolation]);

#[cfg(test)]
mod tests {
    use super::*;
    use sandman_policy_sdk::testing::InputBuilder;

    #[test]
    fn untrusted_label_or_namespace_selects_gvisor() {
        for input in [
            InputBuilder::new().label("sandman.dev/trust", "untrusted"),
            InputBuilder::new().namespace_label("sandman.dev/trust", "untrusted"),
        ] {
            let decision = UntrustedToGvisor::isolation(input.build())
                .expect("decides")
                .expect("not abstaining");
            assert_eq!(decision.runtime_class_name.as_deref(), Some("gvisor"));
            assert_eq!(decision.security.host_users, Some(false));
        }
        let trusted = InputBuilder::new()
            .label("sandman.dev/trust", "trusted")
            .build();
        assert!(
            UntrustedToGvisor::isolation(trusted)
                .expect("decides")
                .is_none()
        );
    }
}
