//! The JSON/YAML form of policy decisions, in camelCase like the rest of the API: what
//! `sandman policy eval` prints, what a `sandman policy test` suite expects, and the shape a CEL
//! hook returns. The host and the guest SDK each convert it to and from their WIT types.

pub mod quantity;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkProfile>,
    #[serde(default)]
    pub reason: String,
}

/// The network a Sandbox's pod may use: ingress from the gateway and on these ports, egress to
/// DNS and these CIDRs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkProfile {
    #[serde(default)]
    pub ingress_ports: Vec<u16>,
    #[serde(default)]
    pub egress_cidrs: Vec<String>,
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
    /// With `suspend`: checkpoint the agent's memory too (contract 0.3.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
}

/// How many unclaimed members a warm pool keeps.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolDecision {
    pub replicas: u32,
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
    difference(actual, expected).is_none()
}

/// Where `actual` first fails to contain `expected` (see [`contains`]): the path of the field,
/// what was expected there and what was found (`None` for a missing field).
pub fn difference(
    actual: &serde_json::Value,
    expected: &serde_json::Value,
) -> Option<(String, serde_json::Value, Option<serde_json::Value>)> {
    match (actual, expected) {
        (serde_json::Value::Object(actual), serde_json::Value::Object(expected)) => expected
            .iter()
            .find_map(|(key, want)| match actual.get(key) {
                None => Some((key.clone(), want.clone(), None)),
                Some(have) => difference(have, want).map(|(path, w, h)| (join(key, &path), w, h)),
            }),
        (serde_json::Value::Array(have), serde_json::Value::Array(want))
            if have.len() == want.len() =>
        {
            have.iter().zip(want).enumerate().find_map(|(i, (a, e))| {
                difference(a, e).map(|(path, w, h)| (join(&format!("[{i}]"), &path), w, h))
            })
        }
        (actual, expected) if actual == expected => None,
        (actual, expected) => Some((String::new(), expected.clone(), Some(actual.clone()))),
    }
}

fn join(head: &str, tail: &str) -> String {
    match (head, tail) {
        (head, "") => head.to_string(),
        (head, tail) if tail.starts_with('[') => format!("{head}{tail}"),
        (head, tail) => format!("{head}.{tail}"),
    }
}

/// Conversions both ways between these types and the WIT decision types that a bindings
/// generator made in module `$types` (wasmtime's on the host, wit-bindgen's in a guest). The
/// records have the same fields on both sides; only the generated types differ.
#[macro_export]
macro_rules! wit_conversions {
    ($types:ident) => {
        $crate::wit_record!(
            $types::SecurityOverrides,
            $crate::SecurityOverrides {
                run_as_non_root: same,
                run_as_user: same,
                read_only_root_filesystem: same,
                allow_privilege_escalation: same,
                host_users: same,
                seccomp_profile: same,
            }
        );
        $crate::wit_record!(
            $types::Toleration,
            $crate::Toleration {
                key: same,
                operator: same,
                value: same,
                effect: same,
            }
        );
        $crate::wit_record!(
            $types::IsolationDecision,
            $crate::IsolationDecision {
                runtime_class_name: same,
                security: into,
                node_selector: collect,
                tolerations: each,
                network: optional,
                reason: same,
            }
        );
        $crate::wit_record!(
            $types::NetworkProfile,
            $crate::NetworkProfile {
                ingress_ports: same,
                egress_cidrs: same,
            }
        );
        $crate::wit_record!(
            $types::ComputeResources,
            $crate::ComputeResources {
                cpu: same,
                memory: same,
                ephemeral_storage: same,
            }
        );
        $crate::wit_record!(
            $types::ContainerResources,
            $crate::ContainerResources {
                container: same,
                defaults: into,
                caps: into,
            }
        );
        $crate::wit_record!(
            $types::ResourcesDecision,
            $crate::ResourcesDecision {
                containers: each,
                reason: same,
            }
        );
        $crate::wit_enum!(
            $types::LifecycleAction,
            $crate::LifecycleAction {
                Keep,
                Suspend,
                Resume,
                Terminate,
            }
        );
        $crate::wit_record!(
            $types::LifecycleDecision,
            $crate::LifecycleDecision {
                action: into,
                reason: same,
                requeue_after_seconds: same,
                checkpoint: same,
            }
        );
        $crate::wit_record!(
            $types::PoolDecision,
            $crate::PoolDecision {
                replicas: same,
                reason: same,
                requeue_after_seconds: same,
            }
        );
    };
}

/// `From` both ways between two records with the same fields; each field is moved (`same`),
/// converted (`into`), collected into the other map type (`collect`) or converted item by item
/// (`each`).
#[doc(hidden)]
#[macro_export]
macro_rules! wit_record {
    ($a:path, $b:path { $($field:ident: $how:ident),* $(,)? }) => {
        impl From<$a> for $b {
            fn from(v: $a) -> Self {
                Self { $($field: $crate::wit_field!($how, v.$field)),* }
            }
        }
        impl From<$b> for $a {
            fn from(v: $b) -> Self {
                Self { $($field: $crate::wit_field!($how, v.$field)),* }
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! wit_field {
    (same, $e:expr) => {
        $e
    };
    (into, $e:expr) => {
        $e.into()
    };
    (collect, $e:expr) => {
        $e.into_iter().collect()
    };
    (each, $e:expr) => {
        $e.into_iter().map(Into::into).collect()
    };
    (optional, $e:expr) => {
        $e.map(Into::into)
    };
}

/// `From` both ways between two enums with the same unit variants.
#[doc(hidden)]
#[macro_export]
macro_rules! wit_enum {
    ($a:path, $b:path { $($variant:ident),* $(,)? }) => {
        impl From<$a> for $b {
            fn from(v: $a) -> Self {
                use $a as Source;
                match v {
                    $(Source::$variant => Self::$variant),*
                }
            }
        }
        impl From<$b> for $a {
            fn from(v: $b) -> Self {
                use $b as Source;
                match v {
                    $(Source::$variant => Self::$variant),*
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
    fn a_difference_names_the_field() {
        let actual = json!({ "action": "keep", "reason": "active", "list": [{ "a": 1 }] });
        assert_eq!(
            difference(&actual, &json!({ "reason": "idle" })),
            Some(("reason".into(), json!("idle"), Some(json!("active"))))
        );
        assert_eq!(
            difference(&actual, &json!({ "list": [{ "a": 2 }] })),
            Some(("list[0].a".into(), json!(2), Some(json!(1))))
        );
        assert_eq!(
            difference(&actual, &json!({ "requeueAfterSeconds": 5 })),
            Some(("requeueAfterSeconds".into(), json!(5), None))
        );
        assert_eq!(difference(&actual, &json!({ "action": "keep" })), None);
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
