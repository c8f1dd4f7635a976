//! `SandboxTemplate` (`sandman.dev/v1alpha1`): what a platform team publishes so that agents
//! ask for Sandboxes by name instead of writing them. Warm pools keep ready Sandboxes of a
//! template, and claims take one.
//!
//! Field names follow kubernetes-sigs/agent-sandbox's `extensions.agents.x-k8s.io` v1beta1, so
//! a template ports by changing `apiVersion`.

use k8s_openapi::api::core::v1::PersistentVolumeClaimTemplate;
use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sandbox::{
    GatewaySpec, IsolationSpec, LifecycleSpec, PodTemplate, RuntimeSpec, UpdateStrategy,
    VolumeReclaimPolicy,
};

/// The Sandboxes a template makes, and how claims may change them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sandman.dev",
    version = "v1alpha1",
    kind = "SandboxTemplate",
    namespaced,
    shortname = "sbxt",
    category = "sandman",
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.networkPolicyManagement"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A SandboxTemplate describes the Sandboxes that warm pools keep and claims get: pod, volumes, Service, gateway and lifecycle settings, and a default-deny network profile."
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateSpec {
    /// The pod each Sandbox runs, as in a Sandbox's `podTemplate`.
    pub pod_template: PodTemplate,
    /// Persistent volumes of each Sandbox, as in a Sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(t, has(t.metadata) && has(t.metadata.name) && size(t.metadata.name) > 0)").message("every volume claim template needs metadata.name"))]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,
    /// Whether each Sandbox keeps a headless Service (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,
    /// Gateway settings of each Sandbox. Each Sandbox gets a token of its own
    /// (`generateToken`); a template cannot name one, since all its Sandboxes would share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.tokenSHA256)").message("a template cannot name a tokenSHA256: every Sandbox made from it gets a token of its own, in the Secret sandman-token-<sandbox>"))]
    pub gateway: Option<GatewaySpec>,
    /// The in-Sandbox runtime for the template's Sandboxes, each with a token of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
    /// Isolation hints for the isolation policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationSpec>,
    /// Lifecycle defaults (idle timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSpec>,
    /// What happens to a Sandbox's PVCs when it is deleted.
    #[serde(default)]
    pub volume_reclaim_policy: VolumeReclaimPolicy,
    /// How a changed pod template reaches a running pod of a claimed Sandbox.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,
    /// The network profile of the template's Sandboxes. Ingress is denied except from the
    /// gateway and what `ingress` allows; egress is denied except DNS and what `egress` allows.
    /// Omitted: the default-deny profile itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// `Managed` (default): sandman keeps one NetworkPolicy for the template's Sandboxes.
    /// `Unmanaged`: none, for clusters whose network is managed elsewhere.
    #[serde(default)]
    pub network_policy_management: NetworkPolicyManagement,
    /// Whether a claim may set environment variables: `Disallowed` (default), `Allowed` (new
    /// names only) or `Overrides`. A claim that sets any gets a new Sandbox, never a warm one:
    /// a running pod's environment cannot change.
    #[serde(default)]
    pub env_vars_injection_policy: EnvVarsInjectionPolicy,
    /// Whether a claim may bring volume claim templates: `Disallowed` (default), `Allowed`
    /// (new names only) or `Overrides` (may replace the template's of the same name). A claim
    /// that brings any gets a new Sandbox, never a warm one.
    #[serde(default)]
    pub volume_claim_templates_policy: VolumeClaimTemplatesPolicy,
    /// What deleting a claim does to its Sandbox: `Delete` (default) deletes it, `Retain`
    /// suspends it and keeps it (with its volumes), no longer claimed.
    #[serde(default)]
    pub claim_deletion_policy: ClaimDeletionPolicy,
}

/// Rules added to the template's default-deny network profile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Ingress allowed besides the gateway's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    /// Egress allowed besides DNS: an allow-list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NetworkPolicyManagement {
    #[default]
    Managed,
    Unmanaged,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EnvVarsInjectionPolicy {
    #[default]
    Disallowed,
    Allowed,
    Overrides,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeClaimTemplatesPolicy {
    #[default]
    Disallowed,
    Allowed,
    Overrides,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClaimDeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// A reference to a SandboxTemplate in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SandboxTemplateRef {
    pub name: String,
}
