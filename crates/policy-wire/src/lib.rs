//! The JSON/YAML form of policy decisions, in camelCase like the rest of the API: what
//! `sandman policy eval` prints, what a `sandman policy test` suite expects, and the shape a CEL
//! hook returns. The host and the guest SDK each convert it to and from their WIT types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// Conversions both ways between these types and the WIT decision types that a bindings
/// generator made in module `$types` (wasmtime's on the host, wit-bindgen's in a guest). The
/// records have the same fields on both sides; only the generated types differ.
#[macro_export]
macro_rules! wit_conversions {
    ($types:ident) => {
        impl From<$types::SecurityOverrides> for $crate::SecurityOverrides {
            fn from(s: $types::SecurityOverrides) -> Self {
                Self {
                    run_as_non_root: s.run_as_non_root,
                    run_as_user: s.run_as_user,
                    read_only_root_filesystem: s.read_only_root_filesystem,
                    allow_privilege_escalation: s.allow_privilege_escalation,
                    host_users: s.host_users,
                    seccomp_profile: s.seccomp_profile,
                }
            }
        }

        impl From<$crate::SecurityOverrides> for $types::SecurityOverrides {
            fn from(s: $crate::SecurityOverrides) -> Self {
                Self {
                    run_as_non_root: s.run_as_non_root,
                    run_as_user: s.run_as_user,
                    read_only_root_filesystem: s.read_only_root_filesystem,
                    allow_privilege_escalation: s.allow_privilege_escalation,
                    host_users: s.host_users,
                    seccomp_profile: s.seccomp_profile,
                }
            }
        }

        impl From<$types::Toleration> for $crate::Toleration {
            fn from(t: $types::Toleration) -> Self {
                Self {
                    key: t.key,
                    operator: t.operator,
                    value: t.value,
                    effect: t.effect,
                }
            }
        }

        impl From<$crate::Toleration> for $types::Toleration {
            fn from(t: $crate::Toleration) -> Self {
                Self {
                    key: t.key,
                    operator: t.operator,
                    value: t.value,
                    effect: t.effect,
                }
            }
        }

        impl From<$types::IsolationDecision> for $crate::IsolationDecision {
            fn from(d: $types::IsolationDecision) -> Self {
                Self {
                    runtime_class_name: d.runtime_class_name,
                    security: d.security.into(),
                    node_selector: d.node_selector.into_iter().collect(),
                    tolerations: d.tolerations.into_iter().map(Into::into).collect(),
                    reason: d.reason,
                }
            }
        }

        impl From<$crate::IsolationDecision> for $types::IsolationDecision {
            fn from(d: $crate::IsolationDecision) -> Self {
                Self {
                    runtime_class_name: d.runtime_class_name,
                    security: d.security.into(),
                    node_selector: d.node_selector.into_iter().collect(),
                    tolerations: d.tolerations.into_iter().map(Into::into).collect(),
                    reason: d.reason,
                }
            }
        }

        impl From<$types::ComputeResources> for $crate::ComputeResources {
            fn from(r: $types::ComputeResources) -> Self {
                Self {
                    cpu: r.cpu,
                    memory: r.memory,
                    ephemeral_storage: r.ephemeral_storage,
                }
            }
        }

        impl From<$crate::ComputeResources> for $types::ComputeResources {
            fn from(r: $crate::ComputeResources) -> Self {
                Self {
                    cpu: r.cpu,
                    memory: r.memory,
                    ephemeral_storage: r.ephemeral_storage,
                }
            }
        }

        impl From<$types::ContainerResources> for $crate::ContainerResources {
            fn from(c: $types::ContainerResources) -> Self {
                Self {
                    container: c.container,
                    defaults: c.defaults.into(),
                    caps: c.caps.into(),
                }
            }
        }

        impl From<$crate::ContainerResources> for $types::ContainerResources {
            fn from(c: $crate::ContainerResources) -> Self {
                Self {
                    container: c.container,
                    defaults: c.defaults.into(),
                    caps: c.caps.into(),
                }
            }
        }

        impl From<$types::ResourcesDecision> for $crate::ResourcesDecision {
            fn from(d: $types::ResourcesDecision) -> Self {
                Self {
                    containers: d.containers.into_iter().map(Into::into).collect(),
                    reason: d.reason,
                }
            }
        }

        impl From<$crate::ResourcesDecision> for $types::ResourcesDecision {
            fn from(d: $crate::ResourcesDecision) -> Self {
                Self {
                    containers: d.containers.into_iter().map(Into::into).collect(),
                    reason: d.reason,
                }
            }
        }

        impl From<$types::LifecycleAction> for $crate::LifecycleAction {
            fn from(a: $types::LifecycleAction) -> Self {
                match a {
                    $types::LifecycleAction::Keep => Self::Keep,
                    $types::LifecycleAction::Suspend => Self::Suspend,
                    $types::LifecycleAction::Resume => Self::Resume,
                    $types::LifecycleAction::Terminate => Self::Terminate,
                }
            }
        }

        impl From<$crate::LifecycleAction> for $types::LifecycleAction {
            fn from(a: $crate::LifecycleAction) -> Self {
                match a {
                    $crate::LifecycleAction::Keep => Self::Keep,
                    $crate::LifecycleAction::Suspend => Self::Suspend,
                    $crate::LifecycleAction::Resume => Self::Resume,
                    $crate::LifecycleAction::Terminate => Self::Terminate,
                }
            }
        }

        impl From<$types::LifecycleDecision> for $crate::LifecycleDecision {
            fn from(d: $types::LifecycleDecision) -> Self {
                Self {
                    action: d.action.into(),
                    reason: d.reason,
                    requeue_after_seconds: d.requeue_after_seconds,
                }
            }
        }

        impl From<$crate::LifecycleDecision> for $types::LifecycleDecision {
            fn from(d: $crate::LifecycleDecision) -> Self {
                Self {
                    action: d.action.into(),
                    reason: d.reason,
                    requeue_after_seconds: d.requeue_after_seconds,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
