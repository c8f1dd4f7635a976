//! The JSON/YAML form of decisions, in camelCase like the rest of the API: what
//! `sandman policy eval` prints, what a `sandman policy test` suite expects, and the shape a CEL
//! hook returns. Conversions to and from the WIT types are lossless.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IsolationDecision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default)]
    pub security: SecurityOverrides,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_users: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcesDecision {
    #[serde(default)]
    pub containers: Vec<ContainerResources>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerResources {
    /// The container this applies to; none means every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default)]
    pub defaults: ComputeResources,
    #[serde(default)]
    pub caps: ComputeResources,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleDecision {
    pub action: LifecycleAction,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_after_seconds: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleAction {
    Keep,
    Suspend,
    Resume,
    Terminate,
}

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

/// Whether `actual` contains everything `expected` says: objects by key (extra keys in
/// `actual` are fine), everything else by equality. Test suites state only what they care about.
pub fn contains(actual: &serde_json::Value, expected: &serde_json::Value) -> bool {
    match (actual, expected) {
        (serde_json::Value::Object(actual), serde_json::Value::Object(expected)) => expected
            .iter()
            .all(|(key, want)| actual.get(key).is_some_and(|have| contains(have, want))),
        (serde_json::Value::Array(actual), serde_json::Value::Array(expected)) => {
            actual.len() == expected.len()
                && actual.iter().zip(expected).all(|(a, e)| contains(a, e))
        }
        (actual, expected) => actual == expected,
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

    #[test]
    fn unknown_fields_and_actions_are_refused() {
        assert!(serde_json::from_value::<IsolationDecision>(json!({ "runtime": "x" })).is_err());
        assert!(serde_json::from_value::<LifecycleDecision>(json!({ "action": "sleep" })).is_err());
    }

    #[test]
    fn expectations_match_subsets_of_objects() {
        let actual = json!({ "runtimeClassName": "gvisor", "reason": "untrusted", "security": {} });
        assert!(contains(&actual, &json!({ "runtimeClassName": "gvisor" })));
        assert!(!contains(&actual, &json!({ "runtimeClassName": "kata" })));
        assert!(!contains(&actual, &json!({ "nodeSelector": { "a": "b" } })));
        assert!(contains(&json!([1, 2]), &json!([1, 2])));
        assert!(!contains(&json!([1, 2]), &json!([1])));
    }
}
