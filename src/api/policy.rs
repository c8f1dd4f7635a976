//! `SandboxPolicy` (`sandman.dev/v1alpha1`, cluster-scoped): a platform policy that makes one
//! or more of the isolation, resources and lifecycle decisions for the Sandboxes it matches.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a SandboxPolicy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sandman.dev",
    version = "v1alpha1",
    kind = "SandboxPolicy",
    status = "SandboxPolicyStatus",
    shortname = "sbp",
    category = "sandman",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Hooks","type":"string","jsonPath":".status.hooks"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A SandboxPolicy is a platform policy, a WebAssembly component or CEL expressions, that decides isolation, resource defaults or lifecycle for the Sandboxes it matches."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.wasm) != has(self.cel)").message("give exactly one of wasm or cel"))]
pub struct SandboxPolicySpec {
    /// Lower runs first. For each hook, the first Enforce-mode decision that does not abstain
    /// wins; resources merge field by field, earlier policies winning.
    #[serde(default)]
    pub priority: i32,
    /// Which Sandboxes the policy sees. Empty matches every Sandbox.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<PolicyMatch>,
    /// `Enforce` (default) applies decisions; `Audit` records them without applying them.
    #[serde(default)]
    pub mode: PolicyMode,
    /// `Fail` (default) holds a matched Sandbox when the policy cannot decide; `Ignore` falls
    /// through to the next policy or the built-in default.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// The policy as a WebAssembly component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmPolicy>,
    /// The policy as CEL expressions, evaluated by the CEL engine sandman carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel: Option<CelPolicy>,
    /// What a Sandbox whose isolation this policy decides (Enforce mode) may ask of its pod
    /// beyond sandman's pod baseline: Pod Security's `restricted` profile, plus no
    /// ServiceAccount tokens, no `nodeName`, no tolerate-all, no system priority classes and no
    /// foreign volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurityAllowance>,
    /// A JSON Schema (draft 2020-12 unless `$schema` says otherwise) that the settings must
    /// meet, checked before the policy loads and in every suite case; a mismatch fails the load
    /// (reason InvalidSettings) with the schema's words. References outside the schema are
    /// never fetched. The title, description and author of a policy are the annotations
    /// `sandman.dev/title`, `sandman.dev/description` and `sandman.dev/author`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub settings_schema: Option<serde_json::Value>,
}

/// Exemptions from the pod baseline that a platform grants through its isolation policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityAllowance {
    /// Privileges a pod may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allow: Vec<PodPrivilege>,
    /// Linux capabilities containers may add (`NET_BIND_SERVICE` is always allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub capabilities: Vec<String>,
}

/// A privilege the pod baseline refuses unless an isolation policy allows it. The baseline is
/// Pod Security's `restricted` profile plus what sandman adds for tenants (tokens, scheduling,
/// volumes that are not the Sandbox's own); each name opens one rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodPrivilege {
    /// `hostNetwork: true`.
    HostNetwork,
    /// `hostPID: true`.
    #[serde(rename = "HostPID")]
    HostPid,
    /// `hostIPC: true`.
    #[serde(rename = "HostIPC")]
    HostIpc,
    /// `hostPath` volumes.
    HostPath,
    /// Container `hostPort`s.
    HostPorts,
    /// `privileged: true` (which also lets privilege escalation through), and Windows
    /// `hostProcess`.
    Privileged,
    /// `automountServiceAccountToken: true`, projected ServiceAccount tokens, and Secrets of
    /// type `kubernetes.io/service-account-token` referenced by volumes or env.
    ServiceAccountToken,
    /// `runAsNonRoot: false` and `runAsUser: 0`, at pod or container level.
    RunAsRoot,
    /// `allowPrivilegeEscalation: true`.
    PrivilegeEscalation,
    /// Capabilities not dropped: a container whose `capabilities.drop` lacks `ALL`.
    KeepCapabilities,
    /// A seccomp profile of type `Unconfined`, through the field or the annotation.
    UnconfinedSeccomp,
    /// An AppArmor profile of type `Unconfined`, through the field or the annotation.
    UnconfinedAppArmor,
    /// SELinux options other than one of the container types (`container_t`,
    /// `container_init_t`, `container_kvm_t`, `container_engine_t`), or any SELinux user or role.
    #[serde(rename = "SELinuxOptions")]
    SeLinuxOptions,
    /// `procMount: Unmasked`.
    UnmaskedProcMount,
    /// Sysctls outside Kubernetes' safe set.
    UnsafeSysctls,
    /// Volume types outside the restricted profile's list (`nfs`, `iscsi`, `gitRepo`,
    /// `flexVolume`, …); `hostPath` has its own name.
    OtherVolumeTypes,
    /// `spec.nodeName`, which skips the scheduler and its taints.
    NodeName,
    /// A toleration that tolerates every taint (no key, `operator: Exists`).
    TolerateAll,
    /// The `system-node-critical` and `system-cluster-critical` priority classes (any class
    /// named `system-…`).
    SystemPriority,
    /// A PVC template's `volumeName`, `dataSource` or `dataSourceRef`: a volume or a clone that
    /// is not made for this Sandbox.
    ForeignVolumes,
}

impl SandboxPolicySpec {
    /// Settings and limits, whichever form the policy takes.
    pub fn limits(&self) -> PolicyLimits {
        match (&self.wasm, &self.cel) {
            (Some(wasm), _) => wasm.limits.clone(),
            (None, Some(cel)) => cel.limits.clone(),
            (None, None) => PolicyLimits::default(),
        }
    }
}

/// A policy written in CEL. Each hook's expression returns a map with the shape of that hook's
/// decision (as in `wit/policy.wit`, in camelCase), or `null` to abstain. Expressions see
/// `sandbox`, `activity`, `settings`, `namespaceLabels`, `now` and `variables.<name>`, and the
/// Kubernetes CEL libraries (`quantity()`, lists, sets, strings, regex, format, math).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.isolation) || has(self.resources) || has(self.lifecycle)").message("give at least one of isolation, resources or lifecycle"))]
pub struct CelPolicy {
    /// Named expressions, evaluated in order; each may use the ones before it as
    /// `variables.<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub variables: Vec<CelVariable>,
    /// The isolation decision, or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// The resources decision, or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
    /// The lifecycle decision, or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
    /// Free-form settings, seen by expressions as `settings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub settings: Option<serde_json::Value>,
    /// Checks of the settings when the policy loads, in order: each expression sees only
    /// `settings` and must be true, or the load fails with its message (reason
    /// InvalidExpression, as every load error of a CEL policy), as a Wasm policy's
    /// `validate-settings` refuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub settings_validations: Vec<CelValidation>,
    /// What one evaluation may consume. Unset fields take the operator's defaults; more than
    /// the operator's maximums is refused (reason InvalidLimits).
    #[serde(default)]
    pub limits: PolicyLimits,
}

/// A check of a CEL policy's settings: `expression` (a bool over `settings`) and the
/// `message` a load refused by it gives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CelValidation {
    pub expression: String,
    pub message: String,
}

/// A named CEL expression.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CelVariable {
    pub name: String,
    pub expression: String,
}

/// Which Sandboxes a policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Labels of the Sandbox's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Labels of the Sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PolicyMode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

/// A WebAssembly policy component, pinned by digest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.configMap), has(self.url), has(self.image)].filter(x, x).size() == 1").message("give exactly one source: configMap, url or image"))]
#[x_kube(validation = Rule::new("!has(self.imagePullSecret) || has(self.image)").message("imagePullSecret goes with an image source"))]
#[x_kube(validation = Rule::new("!has(self.verify) || has(self.image)").message("verify goes with an image source: signatures are kept beside OCI artifacts"))]
pub struct WasmPolicy {
    /// The component stored under `key` (binaryData) of a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// An `http://` or `https://` URL that serves the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must be http:// or https://"))]
    pub url: Option<String>,
    /// An OCI reference (`registry/repository:tag` or `…@sha256:…`) to a Wasm artifact, as
    /// `sandman policy push` publishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The name of a `kubernetes.io/dockerconfigjson` Secret in the operator's own namespace
    /// holding credentials for the image's registry. Without one, pulls are anonymous (public
    /// repositories on Docker Hub and ghcr.io still get their anonymous token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Require a cosign-format signature of the image, made with the private half of this
    /// public key. A missing or bad signature fails the load (reason SignatureInvalid) and the
    /// last good revision keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// The component's sha256, as 64 hex digits. A module with another digest is refused.
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{64}$')").message("sha256 must be 64 lowercase hex digits"))]
    pub sha256: String,
    /// Free-form settings, handed to the policy as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub settings: Option<serde_json::Value>,
    /// What one evaluation may consume. Unset fields take the operator's defaults; more than
    /// the operator's maximums is refused (reason InvalidLimits).
    #[serde(default)]
    pub limits: PolicyLimits,
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The public key (PEM, PKIX `PUBLIC KEY`, as `cosign.pub`) that signatures must verify under.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.secret)").message("give the key in exactly one of configMap or secret"))]
pub struct VerifySpec {
    /// The PEM text under `key` of a ConfigMap's `data`, in the namespace given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// Under `key` of a Secret in the operator's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretKey>,
}

/// A key of a Secret in the operator's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

/// Where a policy's component comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum WasmSource<'a> {
    ConfigMap(&'a ConfigMapSource),
    Url(&'a str),
    Image(&'a str),
}

impl WasmPolicy {
    /// The one source the policy names (the CRD enforces exactly one; the first wins here).
    pub fn source(&self) -> Option<WasmSource<'_>> {
        if let Some(config_map) = &self.config_map {
            return Some(WasmSource::ConfigMap(config_map));
        }
        if let Some(url) = &self.url {
            return Some(WasmSource::Url(url));
        }
        self.image.as_deref().map(WasmSource::Image)
    }
}

impl std::fmt::Display for WasmSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WasmSource::ConfigMap(c) => {
                write!(f, "ConfigMap {}/{} key {}", c.namespace, c.name, c.key)
            }
            WasmSource::Url(url) => write!(f, "URL {url}"),
            WasmSource::Image(image) => write!(f, "image {image}"),
        }
    }
}

/// A key of a ConfigMap, named with its namespace (a policy is cluster-scoped, so there is no
/// namespace to assume).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    pub namespace: String,
    pub name: String,
    /// The key: under `binaryData` for a component (`wasm.configMap`), under `data` for a
    /// public key's PEM text (`verify.configMap`).
    pub key: String,
}

/// Per-evaluation limits. Unset fields take the operator's defaults (`100ms` and `32Mi` unless
/// the platform configured others); the operator refuses values above its maximums.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLimits {
    /// Time for one evaluation, as a Go duration (`100ms`, `1s`): CPU time of the evaluating
    /// thread, so a busy node does not cut a policy short, within 20 times that (at least 5 s)
    /// of wall-clock time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Memory for one evaluation, as a Kubernetes quantity (`32Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// The observed state of a SandboxPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPolicyStatus {
    /// `Ready`, with reason Loaded, FetchFailed, DigestMismatch, CompileFailed,
    /// InvalidSettings, InvalidLimits, InvalidExpression (CEL) or NoHooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The hooks the loaded component exports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// The sha256 of the component being served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Extra facts by key, for tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}
