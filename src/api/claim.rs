//! `SandboxClaim` (`sandman.dev/v1alpha1`): an agent framework's request for a Sandbox of a
//! template. It is bound to a ready warm-pool member at once when there is one, otherwise to a
//! new Sandbox.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaimTemplate;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::template::SandboxTemplateRef;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sandman.dev",
    version = "v1alpha1",
    kind = "SandboxClaim",
    namespaced,
    status = "SandboxClaimStatus",
    shortname = "sbxc",
    category = "sandman",
    printcolumn = r#"{"name":"Sandbox","type":"string","jsonPath":".status.sandbox.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A SandboxClaim asks for a Sandbox from a SandboxTemplate: a ready member of a SandboxWarmPool when there is one, otherwise a new Sandbox.",
    validation = Rule::new("has(self.spec.sandboxTemplateRef) || has(self.spec.warmPoolRef)").message("a claim names a sandboxTemplateRef, a warmPoolRef, or both")
)]
#[serde(rename_all = "camelCase")]
// Only `lifecycle` may change (a claim's end moves, as E2B's `set_timeout` does); what the
// Sandbox is made of may not.
#[x_kube(validation = Rule::new("has(self.sandboxTemplateRef) == has(oldSelf.sandboxTemplateRef) && (!has(self.sandboxTemplateRef) || self.sandboxTemplateRef == oldSelf.sandboxTemplateRef) && has(self.warmPoolRef) == has(oldSelf.warmPoolRef) && (!has(self.warmPoolRef) || self.warmPoolRef == oldSelf.warmPoolRef) && has(self.additionalPodMetadata) == has(oldSelf.additionalPodMetadata) && (!has(self.additionalPodMetadata) || self.additionalPodMetadata == oldSelf.additionalPodMetadata) && has(self.env) == has(oldSelf.env) && (!has(self.env) || self.env == oldSelf.env) && has(self.volumeClaimTemplates) == has(oldSelf.volumeClaimTemplates) && (!has(self.volumeClaimTemplates) || self.volumeClaimTemplates == oldSelf.volumeClaimTemplates)").message("a claim's spec is immutable but for lifecycle: delete it and claim again"))]
pub struct SandboxClaimSpec {
    /// The template to claim from. Optional when `warmPoolRef` names a pool: its template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_template_ref: Option<SandboxTemplateRef>,
    /// The pool to take a ready member from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool_ref: Option<SandboxWarmPoolRef>,
    /// When the claim ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ClaimLifecycle>,
    /// Labels and annotations for the Sandbox's pod (keys under `sandman.dev/` are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_pod_metadata: Option<PodMetadata>,
    /// Environment variables for the Sandbox, as far as the template's
    /// `envVarsInjectionPolicy` allows. Setting any means a new Sandbox, never a warm one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
    /// Volume claim templates for the Sandbox, as far as the template's
    /// `volumeClaimTemplatesPolicy` allows. Bringing any means a new Sandbox, never a warm one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SandboxWarmPoolRef {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLifecycle {
    /// When the claim expires: its Sandbox is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,
    /// How long an expired claim kept by `Retain` stays, counted from `shutdownTime`; then it
    /// is deleted. Unset: it stays until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// At `shutdownTime`: `Delete` deletes the claim too, `DeleteForeground` deletes it with
    /// foreground propagation (it stays, being deleted, until its Sandbox is gone), `Retain`
    /// (default) keeps it, showing Expired. `Suspend` deletes nothing: the Sandbox is suspended
    /// (its files kept, and its memory where it checkpoints) and stays so, the claim showing
    /// Suspended, until `shutdownTime` is moved (E2B's `autoPause`).
    #[serde(default)]
    pub shutdown_policy: ClaimShutdownPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClaimShutdownPolicy {
    Delete,
    DeleteForeground,
    #[default]
    Retain,
    Suspend,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PodMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// The container; default the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimStatus {
    /// `Ready`: the bound Sandbox is Running and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The bound Sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<ClaimedSandbox>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedSandbox {
    pub name: String,
    /// Whether it came warm from a pool, or was made for the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_pool: Option<String>,
    #[serde(
        default,
        rename = "serviceFQDN",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_fqdn: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,
}

/// Why a claim is, or is not, Ready: the reason its Ready condition gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimReason {
    SandboxReady,
    SandboxNotReady,
    /// The template or pool it names does not exist, or they disagree.
    NotFound,
    /// Its pod metadata, env or volumes are not allowed by its template.
    Refused,
    Expired,
    /// Past its `shutdownTime` under `Suspend`: its Sandbox is suspended, not deleted.
    Suspended,
}

impl ClaimReason {
    /// The reason a Ready condition gives, read back.
    pub fn parse(reason: &str) -> Option<Self> {
        [
            Self::SandboxReady,
            Self::SandboxNotReady,
            Self::NotFound,
            Self::Refused,
            Self::Expired,
            Self::Suspended,
        ]
        .into_iter()
        .find(|r| r.as_str() == reason)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SandboxReady => "SandboxReady",
            Self::SandboxNotReady => "SandboxNotReady",
            Self::NotFound => "NotFound",
            Self::Refused => "Refused",
            Self::Expired => "Expired",
            Self::Suspended => "Suspended",
        }
    }
}
