//! `Sandbox` (`sandman.dev/v1alpha1`): one isolated, stateful workspace for an agent: a single
//! pod, a stable network identity and persistent volumes.
//!
//! Field names follow kubernetes-sigs/agent-sandbox where it has them, so a manifest ports by
//! changing `apiVersion` only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimTemplate, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a Sandbox.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sandman.dev",
    version = "v1alpha1",
    kind = "Sandbox",
    namespaced,
    status = "SandboxStatus",
    shortname = "sbx",
    category = "sandman",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".status.runtimeClassName"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A Sandbox is one isolated, stateful workspace for an AI agent: a single pod, a stable network identity (headless Service) and persistent volumes. It can be suspended (the pod goes, identity and volumes stay) and resumed.",
    // The name becomes the Service's name and the pod's hostname: a DNS label (RFC 1035),
    // which the API server would otherwise only refuse later, at every retry.
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("a Sandbox name is its Service's name and its pod's hostname: at most 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'")
)]
#[serde(rename_all = "camelCase")]
// Immutability is checked per field (cheap to cost-estimate) plus presence at the spec level,
// so that adding templates to a Sandbox created without them is refused too.
#[x_kube(validation = Rule::new("has(self.volumeClaimTemplates) == has(oldSelf.volumeClaimTemplates)").message("volumeClaimTemplates is immutable after the Sandbox is created"))]
pub struct SandboxSpec {
    /// The pod to run: labels and annotations, and a full PodSpec. Labels and annotations under
    /// `sandman.dev/` are reserved and stripped.
    pub pod_template: PodTemplate,

    /// Persistent volumes for the workspace. A claim `<template>-<sandbox>` is made for each and
    /// mounted where the pod template names the template as a volume. Immutable after create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("volumeClaimTemplates is immutable after the Sandbox is created"))]
    #[x_kube(validation = Rule::new("self.all(t, has(t.metadata) && has(t.metadata.name) && size(t.metadata.name) > 0)").message("every volume claim template needs metadata.name: it names the pod volume and the claim <name>-<sandbox>"))]
    #[x_kube(validation = Rule::new("self.all(t, has(t.spec.accessModes) && size(t.spec.accessModes) > 0 && has(t.spec.resources) && has(t.spec.resources.requests) && 'storage' in t.spec.resources.requests)").message("every volume claim template needs spec.accessModes and spec.resources.requests.storage, or its PVC can never be made"))]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,

    /// Whether to keep a headless Service named after the Sandbox, which gives the stable DNS
    /// name `<name>.<namespace>.svc`. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,

    /// `Running` (the default) or `Suspended`. Suspending deletes the pod gracefully and keeps
    /// the Service and volumes; setting `Running` again resumes it.
    #[serde(default)]
    pub operating_mode: OperatingMode,

    /// When the Sandbox expires: the pod and Service are deleted and `Finished` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,

    /// What happens at `shutdownTime`: `Retain` (default) keeps the expired Sandbox object,
    /// `Delete` deletes it.
    #[serde(default)]
    pub shutdown_policy: ShutdownPolicy,

    /// What happens to the PVCs when the Sandbox is deleted. `Retain` (default) keeps them,
    /// labelled so that a new Sandbox of the same name re-attaches them. `Delete` lets them be
    /// garbage-collected with the Sandbox, once no pod uses them.
    #[serde(default)]
    pub volume_reclaim_policy: VolumeReclaimPolicy,

    /// Whether `sandman gateway` forwards requests to this Sandbox, and to which port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    /// The in-Sandbox runtime: commands, files and watches inside the pod's first container,
    /// over E2B's envd protocol, through the gateway (docs/runtime.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
    /// How a changed `podTemplate` reaches a running pod: `OnResume` (default) at the next
    /// resume, `Recreate` by replacing the pod now.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// Isolation hints for the isolation policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationSpec>,

    /// Lifecycle settings for the built-in lifecycle default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSpec>,
}

impl Sandbox {
    /// The mode the Sandbox is in: an automatic override while it holds, else the spec's.
    pub fn effective_mode(&self) -> OperatingMode {
        match self.status.as_ref().and_then(|s| s.mode_override.as_ref()) {
            Some(o) if o.spec_mode == self.spec.operating_mode => o.mode,
            _ => self.spec.operating_mode,
        }
    }
}

impl SandboxSpec {
    /// Whether the headless Service is wanted (the default).
    pub fn wants_service(&self) -> bool {
        self.service.unwrap_or(true)
    }
}

/// The pod a Sandbox runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels and annotations for the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The pod's spec.
    pub spec: PodSpec,
}

/// The metadata a pod template may set: labels and annotations only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels for the pod. Keys under `sandman.dev/` are reserved and stripped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the pod. Keys under `sandman.dev/` are reserved and stripped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Whether the Sandbox should have a running pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OperatingMode {
    /// The pod runs.
    #[default]
    Running,
    /// The pod is deleted; the Service and volumes stay.
    Suspended,
}

/// What happens to the Sandbox object at `shutdownTime`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShutdownPolicy {
    /// Keep the expired Sandbox, with `Finished` set.
    #[default]
    Retain,
    /// Delete the Sandbox.
    Delete,
}

/// What happens to the PVCs when the Sandbox is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeReclaimPolicy {
    /// Keep the PVCs, labelled for re-attachment by a new Sandbox of the same name.
    #[default]
    Retain,
    /// Delete the PVCs with the Sandbox (after its pod is gone).
    Delete,
}

/// How a changed pod template reaches the pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategy {
    /// At the next resume.
    #[default]
    OnResume,
    /// Replace the pod now.
    Recreate,
}

/// Isolation hints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsolationSpec {
    /// A free-form level (for example `standard`, `strong`, `vm`) that the isolation policy
    /// turns into a runtime. Without policies, the pod's own `runtimeClassName` stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// A Sandbox's id in E2B's form (what `E2b-Sandbox-Id` carries): 24 characters of lowercase
/// base32 (`0-9a-v`, no hyphens, valid in a host name) from the sha256 of `namespace/name`,
/// so it is unique per cluster and anyone who may name the Sandbox can compute it. It is an
/// address, not a secret: the Sandbox's token is what opens it.
pub fn sandbox_id(namespace: &str, name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{namespace}/{name}").as_bytes());
    data_encoding::BASE32_DNSSEC.encode(&digest[..15])
}

/// The port the in-Sandbox runtime listens on: envd's, which the E2B SDKs name.
pub const RUNTIME_PORT: u16 = 49983;

/// The in-Sandbox runtime. With `enabled: true` the operator mounts the runtime (an image
/// volume) into the pod's first container and wraps that container's command with it, which
/// therefore must be named in the pod template. It runs as the container's user, with the
/// container's rights, and answers only callers that hold the Sandbox's own token (the Secret
/// `sandman-token-<name>`, key `token`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    #[serde(default)]
    pub enabled: bool,
}

impl RuntimeSpec {
    /// Whether the Sandbox asks for the runtime.
    pub fn wanted(sandbox: &Sandbox) -> bool {
        sandbox.spec.runtime.as_ref().is_some_and(|r| r.enabled)
    }
}

/// How the gateway reaches a Sandbox. A Sandbox without `enabled: true` is never forwarded to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Forward requests to this Sandbox (and wake it for them).
    #[serde(default)]
    pub enabled: bool,
    /// The port to forward to; it must be a `containerPort` of the pod template. Defaults to
    /// the first one declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The sha256 (64 hex digits) of a bearer token for this Sandbox alone. A request that
    /// presents it is let through, as is one with the gateway's own token; with neither
    /// configured, the Sandbox is open to whoever reaches the gateway.
    #[serde(
        default,
        rename = "tokenSHA256",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = "^[a-f0-9]{64}$"))]
    pub token_sha256: Option<String>,
    /// Give this Sandbox a token of its own, made by the operator: it is kept in the Secret
    /// `sandman-token-<name>` (key `token`), which the Sandbox owns, and the gateway accepts it
    /// for this Sandbox only. Only its sha256 is recorded (`status.gatewayToken`). Every
    /// Sandbox made from a template gets one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_token: bool,
}

impl GatewaySpec {
    /// The container ports the pod template declares, in order.
    pub fn declared_ports(sandbox: &Sandbox) -> impl Iterator<Item = i32> + '_ {
        sandbox
            .spec
            .pod_template
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| p.container_port)
    }

    /// The port to forward to, if the Sandbox opted in and declares it.
    pub fn target_port(sandbox: &Sandbox) -> Option<u16> {
        let gateway = sandbox.spec.gateway.as_ref().filter(|g| g.enabled)?;
        let mut declared = Self::declared_ports(sandbox);
        let port = match gateway.port {
            Some(wanted) => declared.find(|p| *p == wanted)?,
            None => declared.next()?,
        };
        u16::try_from(port).ok()
    }
}

/// Where a Sandbox's own token is kept, and its hash.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTokenStatus {
    /// The Secret that holds the token under `token`, in the Sandbox's namespace.
    pub secret: String,
    /// The token's sha256, 64 hex digits.
    #[serde(rename = "sha256")]
    pub sha256: String,
}

/// Lifecycle settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleSpec {
    /// Suspend after this long without activity (a Go duration such as `30m` or `2h`), when no
    /// lifecycle policy decides. Unset means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("idleTimeout must be a positive duration such as 30m"))]
    pub idle_timeout: Option<String>,
    /// Whether suspending keeps the agent's memory: `OnSuspend` checkpoints the agent (run by
    /// `sandman supervise` under gVisor) to its volume before the pod goes, and the next pod
    /// restores it. `Never` (the default) keeps the file system only. A lifecycle policy may
    /// also ask for a checkpoint with its suspend decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointMode>,
    /// How long a checkpoint may take before the Sandbox is suspended without one (a Go
    /// duration; default `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s') && duration(self) <= duration('1h')").message("checkpointTimeout must be a duration between 0s and 1h, such as 2m"))]
    pub checkpoint_timeout: Option<String>,
    /// How many checkpoint images the volume keeps, newest first (default 2, at most 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub keep_checkpoints: Option<u32>,
}

/// When the agent's memory is checkpointed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CheckpointMode {
    /// Suspend keeps the file system only.
    #[default]
    Never,
    /// Checkpoint before every suspend, restore at the resume after it.
    OnSuspend,
    /// The pods are made for checkpoints (their supervisor gets the Sandbox's token), and a
    /// suspension takes one when the lifecycle decision that suspends asks for it.
    WhenDecided,
}

impl CheckpointMode {
    /// Whether the Sandbox's pods run a supervisor that takes checkpoints.
    pub fn supervised(mode: Option<Self>) -> bool {
        matches!(mode, Some(Self::OnSuspend | Self::WhenDecided))
    }
}

/// The last checkpoint of a Sandbox, and what became of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    /// `Checkpointed` (waiting to be restored), `Restored`, `Failed` (the suspend went on
    /// without one) or `RestoreFailed` (the pod started afresh, with the same volumes).
    pub outcome: CheckpointOutcome,
    /// The suspension (`status.suspensions`) it was taken, or tried, for.
    pub suspension: u64,
    /// The image's directory on the volume.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// sha256 over the image's files; nothing else is restored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// When it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<Time>,
    /// The pod it was taken from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// How long taking it took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When a pod restored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<Time>,
    /// Why it failed, or why it was not restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What became of a checkpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CheckpointOutcome {
    /// Taken; the next pod restores it.
    #[default]
    Checkpointed,
    /// A pod restored it.
    Restored,
    /// It could not be taken; the Sandbox was suspended without it.
    Failed,
    /// It was not restored (missing, corrupt, foreign, or the restore failed); the pod
    /// started afresh with the same volumes.
    RestoreFailed,
}

/// Where a Sandbox is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted; children not made yet.
    #[default]
    Pending,
    /// The pod exists but is not Ready.
    Starting,
    /// The pod is Ready.
    Running,
    /// The agent is being checkpointed before a suspend.
    Checkpointing,
    /// The pod is being deleted for a suspend.
    Suspending,
    /// No pod; the Service and volumes stay.
    Suspended,
    /// A pod is being made again after a suspend.
    Resuming,
    /// `shutdownTime` has passed.
    Expired,
    /// The Sandbox cannot run (see the Ready condition).
    Failed,
}

impl Phase {
    /// On the way to, or at, a suspension: the phases a suspension begins with and ends in.
    /// A Sandbox that leaves one of them for a pod is resuming.
    pub fn suspended_side(self) -> bool {
        matches!(
            self,
            Self::Checkpointing | Self::Suspending | Self::Suspended
        )
    }

    /// Coming back from a suspension: a new pod for a Sandbox that was suspending, suspended
    /// or resuming already.
    pub fn resumes(self) -> bool {
        self.suspended_side() || self == Self::Resuming
    }

    /// Phases in which sandman made a pod that should still be there: when the cache has
    /// none, only the API server can say it is gone.
    pub fn expects_pod(self) -> bool {
        matches!(
            self,
            Self::Starting
                | Self::Running
                | Self::Resuming
                | Self::Checkpointing
                | Self::Suspending
        )
    }
}

/// The observed state of a Sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// Where the Sandbox is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The token the operator made for this Sandbox (`spec.gateway.generateToken`): where it is
    /// kept, and its sha256, which is what the gateway checks. The token itself is only in
    /// the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_token: Option<GatewayTokenStatus>,
    /// `Ready`, `Suspended` and `Finished`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The stable DNS name of the Sandbox, `<name>.<namespace>.svc.cluster.local`.
    #[serde(
        default,
        rename = "serviceFQDN",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_fqdn: Option<String>,
    /// The name of the headless Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The pod's IPs.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,
    /// The node the pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// A label selector for the Sandbox's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The `runtimeClassName` in effect for the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// When the Sandbox was last suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<Time>,
    /// How many suspensions have begun. A wake request names the suspension it ends by this
    /// number, so an old request never ends a later one.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub suspensions: u64,
    /// An automatic suspend or resume (by a lifecycle policy, `spec.lifecycle.idleTimeout` or
    /// the gateway) in force over `spec.operatingMode`. sandman never writes the spec, so a
    /// GitOps tool that re-applies the user's manifest does not undo it; the override ends
    /// when the user changes `spec.operatingMode`, or when an automatic step returns the
    /// Sandbox to the mode its spec says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_override: Option<ModeOverride>,
    /// When the Sandbox was last resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<Time>,
    /// How many times the pod was recreated after it failed or was deleted by someone else.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: i32,
    /// When the pod was last recreated after a failure; the next recreate waits for an
    /// exponential backoff from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<Time>,
    /// The policy decisions that shaped this Sandbox, one per hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<PolicyDecisions>,
    /// What the lifecycle decisions see of the Sandbox's use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityStatus>,
    /// The last checkpoint of the agent's memory (`spec.lifecycle.checkpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStatus>,
}

/// Activity, from the `sandman.dev/last-activity` annotation (which agents, SDKs and
/// `sandman touch` set) and from the Sandbox's own starts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityStatus {
    /// The last sign of use: the annotation, or the last start, whichever is later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// Connections open through the gateway; each keeps the Sandbox active while it lasts.
    #[serde(default)]
    pub open_connections: u32,
    /// Since when the Sandbox has been idle: the last activity, while nothing is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<Time>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A mode set by automation rather than by the user's spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModeOverride {
    /// The mode in force.
    pub mode: OperatingMode,
    /// The `spec.operatingMode` it overrides; once the spec says otherwise, the user has
    /// spoken since and the override is void.
    pub spec_mode: OperatingMode,
    /// Who decided: a SandboxPolicy's name, `builtin` (idleTimeout) or `gateway`.
    pub by: String,
    /// Why, in the decider's words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the override began.
    pub since: Time,
    /// Whether the suspension this override makes keeps the agent's memory, when the one who
    /// suspended said (a lifecycle policy's `checkpoint`); unset, `spec.lifecycle.checkpoint`
    /// decides. Recorded with the suspend, so the choice holds for every reconcile of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
}

/// The latest decision of each policy hook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecisions {
    /// The isolation decision (runtime, security context, placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<PolicyDecision>,
    /// The resources decision (defaults and caps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PolicyDecision>,
    /// The lifecycle decision (keep, suspend, resume, terminate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<PolicyDecision>,
    /// What Audit-mode policies would have decided; recorded, not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audited: Vec<PolicyDecision>,
    /// The pod baseline: `refused` (what, in the message) or `exempted` (what an isolation
    /// policy allowed beyond it). Absent when the pod asks for nothing privileged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<PolicyDecision>,
}

/// One hook's decision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecision {
    /// The SandboxPolicy that decided (or `builtin`).
    pub policy: String,
    /// What it decided, in a word (for example `gvisor` or `suspend`).
    pub outcome: String,
    /// Why, in the policy's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn sandbox_ids_are_e2b_host_labels_and_differ_by_namespace() {
        let id = super::sandbox_id("team", "agent");
        assert_eq!(id.len(), 24);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
            "{id}"
        );
        assert_eq!(id, super::sandbox_id("team", "agent"));
        assert_ne!(id, super::sandbox_id("other", "agent"));
    }
}
