//! The CRD types: the ground floor every other module stands on.

pub mod cached;
pub mod claim;
pub mod conditions;
pub mod policy;
pub mod pool;
pub mod sandbox;
pub mod template;

pub use claim::*;
pub use policy::*;
pub use pool::*;
pub use sandbox::*;
pub use template::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD sandman serves, in the order `crds/` lists them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Sandbox::crd(),
        SandboxPolicy::crd(),
        SandboxTemplate::crd(),
        SandboxWarmPool::crd(),
        SandboxClaim::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, exactly as `crds/` holds them.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// On the answer to E2B's pause (`POST /sandboxes/{id}/pause`): what the pause kept, `memory`
/// (a checkpoint) or `filesystem`.
pub const PAUSE_KEPT_HEADER: &str = "sandman-pause-kept";

/// Labels and annotations under this prefix belong to sandman: they are stripped from user
/// templates so that a tenant cannot hijack selectors or forge state.
pub const RESERVED_PREFIX: &str = "sandman.dev/";

/// The label that ties every child (Pod, Service, PVC) to its Sandbox.
pub const SANDBOX_LABEL: &str = "sandman.dev/sandbox";

/// On a retained PVC: the claim template it came from, so a new Sandbox of the same name finds it.
pub const CLAIM_TEMPLATE_LABEL: &str = "sandman.dev/claim-template";

/// On the pod: a hash of the pod template it was built from.
pub const TEMPLATE_HASH_ANNOTATION: &str = "sandman.dev/template-hash";

/// On a Sandbox a claim took from a warm pool: the claim's `additionalPodMetadata` (JSON). Its
/// pod carries these labels and annotations, the live pod at once and every later pod too,
/// without counting as a change of the pod template (which would replace the warm pod).
pub const CLAIM_POD_METADATA_ANNOTATION: &str = "sandman.dev/claim-pod-metadata";

/// On a Sandbox made from a template, and on its pod: the template's name. The template's
/// NetworkPolicy selects pods by it.
pub const TEMPLATE_LABEL: &str = "sandman.dev/template";
/// On a Sandbox made from a template: the hash of what it was made from.
pub const BLUEPRINT_HASH_LABEL: &str = "sandman.dev/blueprint-hash";
/// On an unclaimed pool member: the pool's name. Removed when a claim takes it.
pub const POOL_LABEL: &str = "sandman.dev/pool";
/// On a claimed Sandbox: the claim's UID (names are reused, UIDs are not).
pub const CLAIM_LABEL: &str = "sandman.dev/claim-uid";
/// On a claimed Sandbox: the claim's name, so that its changes reach the claim.
pub const CLAIM_NAME_LABEL: &str = "sandman.dev/claim";
/// On a Sandbox a claim took from a pool: the pool, so that the pool hears it was taken.
pub const FROM_POOL_LABEL: &str = "sandman.dev/from-pool";
