//! Taking a ready member from a warm pool for a claim: which pool serves a claim, and the take
//! itself, a patch guarded by the member's resourceVersion that moves it from the pool (label
//! and owner) to the claim, so of two claims racing for one member one wins and the other
//! looks again.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::{
    CLAIM_POD_METADATA_ANNOTATION, PodMetadata, Sandbox, SandboxClaim, SandboxTemplate,
    SandboxWarmPool,
};
use crate::controller::api_call::{failed, ignore_not_found};
use crate::controller::blueprint::{
    self, CLAIM_LABEL, CLAIM_NAME_LABEL, FROM_POOL_LABEL, POOL_LABEL,
};
use crate::controller::blueprints::claim_context::{ClaimContext, ClaimError, publish};

/// How many members a claim tries before it makes a Sandbox of its own.
const TAKE_ATTEMPTS: usize = 4;

/// A claim that names only a template is served from a warm pool of that template when the
/// namespace has one, as E2B's `templateID` and upstream's claims expect; of several, the first
/// by name. Read from the API server's watch cache: a pool made a moment ago and missed costs
/// one cold start, never a wrong Sandbox (the take is checked against the pool's members).
pub(super) async fn pool_of_template(
    client: &Client,
    namespace: &str,
    template: &str,
) -> Result<Option<SandboxWarmPool>, ClaimError> {
    let pools: Api<SandboxWarmPool> = Api::namespaced(client.clone(), namespace);
    let mut pools: Vec<SandboxWarmPool> = pools
        .list(&ListParams::default().match_any())
        .await
        .map_err(failed("list", "SandboxWarmPools"))?
        .items
        .into_iter()
        .filter(|pool| {
            pool.spec.sandbox_template_ref.name == template
                && pool.metadata.deletion_timestamp.is_none()
        })
        .collect();
    pools.sort_by_key(|pool| pool.name_any());
    Ok(pools.into_iter().next())
}

/// What a claim got from its pool.
pub(super) enum Taken {
    Member(Box<Sandbox>),
    /// No member is ready to take.
    NoneReady,
    /// Every try lost the member to a concurrent change.
    Contended,
}

/// The members of the pool `selector` names. A first try reads the API server's watch cache
/// (a consistent list waits for the cache to catch up with etcd: tens of milliseconds of a
/// warm claim's latency). Stale is safe: the take is guarded by the member's resourceVersion,
/// and a cache that shows no ready member is asked again consistently before the claim goes
/// cold.
async fn members(
    sandboxes: &Api<Sandbox>,
    pool: &SandboxWarmPool,
    selector: &str,
    current: &str,
    first_try: bool,
) -> Result<Vec<Sandbox>, ClaimError> {
    let list = |params: ListParams| async move {
        sandboxes
            .list(&params)
            .await
            .map(|l| l.items)
            .map_err(failed("list", format!("pool members ({selector})")))
    };
    let consistent = ListParams::default().labels(selector);
    if !first_try {
        return Ok(list(consistent).await?);
    }
    let cached = list(consistent.clone().match_any()).await?;
    if blueprint::choose_member(&cached, pool, current).is_some() {
        return Ok(cached);
    }
    Ok(list(consistent).await?)
}

/// Takes a ready member of `pool`, or none when there is none to take.
pub(super) async fn take_member(
    claim: &SandboxClaim,
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    pod_metadata: Option<&PodMetadata>,
    sandboxes: &Api<Sandbox>,
    ctx: &ClaimContext,
) -> Result<Taken, ClaimError> {
    let pod_metadata_json = pod_metadata
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ClaimError::Finalizer(e.to_string()))?;
    let current = blueprint::blueprint_hash(&template.spec);
    let pool_name = pool.name_any();
    let Some(owner) = claim.controller_owner_ref(&()) else {
        return Ok(Taken::NoneReady);
    };
    let selector = format!("{POOL_LABEL}={pool_name}");
    for attempt in 0..TAKE_ATTEMPTS {
        let members = members(sandboxes, pool, &selector, &current, attempt == 0).await?;
        let Some(member) = blueprint::choose_member(&members, pool, &current) else {
            return Ok(Taken::NoneReady);
        };
        let name = member.name_any();
        // Guarded by the resourceVersion the member was chosen at: a member another claim
        // took, or that changed since (no longer Ready, say), is a conflict, not a takeover.
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": member.resource_version(),
                "labels": {
                    POOL_LABEL: null,
                    FROM_POOL_LABEL: pool_name,
                    CLAIM_LABEL: claim.uid(),
                    CLAIM_NAME_LABEL: claim.name_any(),
                },
                // Every later pod of the Sandbox carries the claim's pod metadata too.
                "annotations": { CLAIM_POD_METADATA_ANNOTATION: pod_metadata_json },
                "ownerReferences": [owner],
            }
        });
        let params = PatchParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match sandboxes.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(taken) => {
                if let Some(metadata) = pod_metadata {
                    label_live_pod(ctx, &taken, metadata).await?;
                }
                publish(
                    ctx,
                    claim,
                    "Bound",
                    format!("took warm Sandbox {name} from pool {pool_name}"),
                );
                return Ok(Taken::Member(Box::new(taken)));
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
            Err(e) => return Err(failed("take", format!("Sandbox {name}"))(e).into()),
        }
    }
    Ok(Taken::Contended)
}

/// The claim's labels and annotations on the warm member's running pod, in place: a change of
/// pod metadata restarts nothing. A pod already gone is fine: the next one is made with them.
async fn label_live_pod(
    ctx: &ClaimContext,
    sandbox: &Sandbox,
    metadata: &PodMetadata,
) -> Result<(), ClaimError> {
    let pods: Api<Pod> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": { "labels": metadata.labels, "annotations": metadata.annotations },
    });
    let params = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    ignore_not_found(
        pods.patch(&sandbox.name_any(), &params, &Patch::Merge(&patch))
            .await,
    )
    .map_err(failed(
        "label the pod of",
        format!("Sandbox {}", sandbox.name_any()),
    ))?;
    Ok(())
}
