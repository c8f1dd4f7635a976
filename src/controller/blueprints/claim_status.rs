//! A claim's status: why it is, or is not, Ready, and the one write of it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::conditions::{self, Desired, READY};
use crate::api::{ClaimedSandbox, FROM_POOL_LABEL, Sandbox, SandboxClaim, SandboxClaimStatus};
use crate::controller::api_call::{ApiCallFailed, failed};

pub use crate::api::ClaimReason;

/// Writes the claim's status when it changed: its Ready condition, and the Sandbox it has.
pub async fn write_status(
    client: &Client,
    claim: &SandboxClaim,
    sandbox: Option<&Sandbox>,
    (ready, reason, message): (bool, ClaimReason, String),
) -> Result<(), ApiCallFailed> {
    let previous = claim.status.clone().unwrap_or_default();
    let status = SandboxClaimStatus {
        conditions: conditions::merge(
            &previous.conditions,
            &[Desired::new(READY, ready, reason.as_str(), message)],
            claim.metadata.generation,
            &Time(Timestamp::now()),
        ),
        sandbox: sandbox.map(|s| {
            let status = s.status.clone().unwrap_or_default();
            ClaimedSandbox {
                name: s.name_any(),
                from_pool: s.labels().get(FROM_POOL_LABEL).cloned(),
                service_fqdn: status.service_fqdn,
                pod_ips: status.pod_ips,
            }
        }),
    };
    if status == previous {
        return Ok(());
    }
    let api: Api<SandboxClaim> =
        Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": SandboxClaim::api_version(&()),
        "kind": SandboxClaim::kind(&()),
        "status": status,
    });
    api.patch_status(
        &claim.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(failed(
        "write status of",
        format!("SandboxClaim {}", claim.name_any()),
    ))?;
    Ok(())
}
