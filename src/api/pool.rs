//! `SandboxWarmPool` (`sandman.dev/v1alpha1`): ready Sandboxes of a template, kept so that a
//! claim gets one at once. Members are ordinary Sandboxes, and policies see them as such.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::template::SandboxTemplateRef;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sandman.dev",
    version = "v1alpha1",
    kind = "SandboxWarmPool",
    namespaced,
    status = "SandboxWarmPoolStatus",
    shortname = "sbxwp",
    category = "sandman",
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.sandboxTemplateRef.name"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A SandboxWarmPool keeps ready Sandboxes of a SandboxTemplate, so that a SandboxClaim gets one at once. It replenishes as claims take members."
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolSpec {
    /// How many unclaimed members to keep (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// The template the members are made from.
    pub sandbox_template_ref: SandboxTemplateRef,
    /// What happens to unclaimed members when the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<WarmPoolUpdateStrategy>,
    /// The most members a pool policy may ask for (default 100). A SandboxPolicy with a
    /// `pool` hook that selects the pool decides its size in place of `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_replicas: Option<i32>,
}

impl SandboxWarmPoolSpec {
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(1).max(0)
    }

    pub fn max_replicas(&self) -> i32 {
        self.max_replicas.unwrap_or(100).max(0)
    }

    pub fn strategy(&self) -> WarmPoolUpdateStrategyType {
        self.update_strategy
            .as_ref()
            .map(|s| s.type_)
            .unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct WarmPoolUpdateStrategy {
    /// `OnReplenish` (default): members of an older template stay until claimed or deleted.
    /// `Recreate`: they are replaced at once.
    #[serde(rename = "type", default)]
    pub type_: WarmPoolUpdateStrategyType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WarmPoolUpdateStrategyType {
    #[default]
    OnReplenish,
    Recreate,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolStatus {
    /// Unclaimed members, ready or not.
    #[serde(default)]
    pub replicas: i32,
    /// Unclaimed members that are Running and Ready: what a claim can take now.
    #[serde(default)]
    pub ready_replicas: i32,
    /// How many members the pool keeps now: `spec.replicas`, or what a pool policy decided.
    #[serde(default)]
    pub desired_replicas: i32,
    /// The pool policy that decided `desiredReplicas`, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sized_by: Option<PoolSizing>,
    /// A label selector for the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A pool policy's decision, as applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSizing {
    pub policy: String,
    /// What the policy asked for (the pool keeps at most `spec.maxReplicas`).
    pub replicas: i32,
    #[serde(default)]
    pub reason: String,
}
