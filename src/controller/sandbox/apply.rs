//! The last stage of a reconcile: carrying a plan out, one function per child kind, in the
//! order that keeps a pod safe (claims and Service, then the network, then the pod), and the
//! one status write.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{Instrument, info_span, instrument};

use super::children;
use crate::api::{GatewayTokenStatus, Phase, Sandbox};
use crate::controller::api_call::{ignore_not_found, is_refusal};
use crate::controller::sandbox::checkpointing::{self, Taken};
use crate::controller::sandbox::context::Context;
use crate::controller::sandbox::decisions::Decisions;
use crate::controller::sandbox::phase::{ChildAction, Plan, PodAction};
use crate::controller::{Error, network};

/// How carrying out a plan ended.
#[derive(Debug)]
pub enum Applied {
    /// The plan deleted the Sandbox itself.
    SandboxDeleted,
    /// The children are as planned; the status is next. `taken` is what the plan's
    /// checkpoint step brought back.
    Children { taken: Option<Taken> },
    /// The plan said create, but a pod of that name exists.
    PodExists,
    /// The API server refused the pod, in these words.
    PodRejected(String),
    /// The plan's checkpoint waits for a slot: this namespace, or the operator, has as many
    /// checkpoint calls in flight as it may.
    CheckpointWaits,
}

/// How a child is applied. `existing` says the cache holds it, which by then means it is
/// proven ours (see `gather`), so a field someone edited by hand is taken back. A child not
/// yet seen is applied unforced: should another manager's object appear in between, the
/// conflict surfaces as an error rather than a takeover.
fn apply_params(existing: bool) -> PatchParams {
    let params = PatchParams::apply(crate::FIELD_MANAGER);
    if existing { params.force() } else { params }
}

/// Carries `plan` out for `sandbox`.
pub async fn apply(
    ctx: &Context,
    sandbox: &Sandbox,
    plan: &Plan,
    decisions: &Decisions,
) -> Result<Applied, Error> {
    if plan.delete_sandbox {
        delete_sandbox(ctx, sandbox, plan).await?;
        return Ok(Applied::SandboxDeleted);
    }
    if plan.apply_claims {
        claims(ctx, sandbox).await?;
    }
    // Before the status that records its hash is written.
    if let Some(secret) = &plan.token_secret {
        super::token::make(ctx, sandbox, secret).await?;
    }
    service(ctx, sandbox, plan.service).await?;
    // Before the pod: a pod never runs without the network its policy chose.
    if plan.network_policy == ChildAction::Apply {
        network_policy(ctx, sandbox, decisions).await?;
    }
    pod(ctx, sandbox, plan, decisions).await
}

async fn delete_sandbox(ctx: &Context, sandbox: &Sandbox, plan: &Plan) -> Result<(), Error> {
    let name = sandbox.name_any();
    let sandboxes: Api<Sandbox> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    ctx.publish(sandbox, &plan.transitions).await;
    ignore_not_found(sandboxes.delete(&name, &DeleteParams::default()).await)
        .map_err(Error::child("delete", "Sandbox", &name))
}

/// Each claim template's PVC, applied when it differs from what the template says.
async fn claims(ctx: &Context, sandbox: &Sandbox) -> Result<(), Error> {
    let namespace = sandbox.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    for claim in children::desired_claims(sandbox) {
        let claim_name = claim.name_any();
        let cached = ctx
            .claims
            .get(&ObjectRef::new(&claim_name).within(&namespace));
        if cached
            .as_ref()
            .is_some_and(|c| children::claim_in_place(c, &claim))
        {
            continue;
        }
        api.patch(
            &claim_name,
            &apply_params(cached.is_some()),
            &Patch::Apply(&claim),
        )
        .instrument(info_span!("apply", kind = "PersistentVolumeClaim"))
        .await
        .map_err(Error::child("apply", "PersistentVolumeClaim", &claim_name))?;
    }
    Ok(())
}

/// The headless Service: applied when it differs, deleted when the plan says so.
async fn service(ctx: &Context, sandbox: &Sandbox, action: ChildAction) -> Result<(), Error> {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let cached = ctx
        .services
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|s| s.to_service())
        .transpose()
        .map_err(Error::Cached)?;
    match action {
        ChildAction::Leave => Ok(()),
        ChildAction::Delete => {
            if cached.is_some() {
                ignore_not_found(services.delete(&name, &DeleteParams::default()).await)
                    .map_err(Error::child("delete", "Service", &name))?;
            }
            Ok(())
        }
        ChildAction::Apply => {
            let service = children::desired_service(sandbox);
            if cached
                .as_ref()
                .is_some_and(|c| children::service_in_place(c, &service))
            {
                return Ok(());
            }
            let stray = cached
                .as_ref()
                .map(|c| children::foreign_selector_keys(c, &service))
                .unwrap_or_default();
            if !stray.is_empty() {
                // Keys another manager added to our selector: apply would leave them.
                let nulls: serde_json::Map<String, serde_json::Value> = stray
                    .into_iter()
                    .map(|k| (k, serde_json::Value::Null))
                    .collect();
                let patch = serde_json::json!({ "spec": { "selector": nulls } });
                services
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::child("repair", "Service", &name))?;
            }
            services
                .patch(
                    &name,
                    &apply_params(cached.is_some()),
                    &Patch::Apply(&service),
                )
                .await
                .map_err(Error::child("apply", "Service", &name))?;
            Ok(())
        }
    }
}

/// The Sandbox's NetworkPolicy, as its isolation decision's network profile asks: applied
/// when it differs, deleted when the profile is gone. One that is not the Sandbox's own is
/// never touched.
async fn network_policy(
    ctx: &Context,
    sandbox: &Sandbox,
    decisions: &Decisions,
) -> Result<(), Error> {
    let namespace = sandbox.namespace().unwrap_or_default();
    let name = network::sandbox_policy_name(&sandbox.name_any());
    let cached = ctx
        .network_policies
        .get(&ObjectRef::new(&name).within(&namespace));
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let profile = decisions
        .isolation
        .as_ref()
        .and_then(|(_, decision)| decision.network.as_ref());
    match (profile, cached) {
        (Some(profile), cached) => {
            let desired = network::sandbox_policy(sandbox, profile, &ctx.gateway_namespace);
            if let Some(existing) = &cached {
                if !network::owned_by(existing, sandbox) {
                    tracing::warn!(networkpolicy = %name, "a NetworkPolicy of this name is not the Sandbox's; leaving it");
                    return Ok(());
                }
                if network::in_place(existing, &desired) {
                    return Ok(());
                }
            }
            api.patch(
                &name,
                &apply_params(cached.is_some()),
                &Patch::Apply(&desired),
            )
            .instrument(info_span!("apply", kind = "NetworkPolicy"))
            .await
            .map_err(Error::child("apply", "NetworkPolicy", &name))?;
        }
        (None, Some(existing)) if network::owned_by(&existing, sandbox) => {
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await)
                .map_err(Error::child("delete", "NetworkPolicy", &name))?;
        }
        (None, _) => {}
    }
    Ok(())
}

/// The pod: kept, checkpointed, created or deleted.
async fn pod(
    ctx: &Context,
    sandbox: &Sandbox,
    plan: &Plan,
    decisions: &Decisions,
) -> Result<Applied, Error> {
    let action = &plan.pod;
    // The token as this plan records it: one made again in this same apply is the one to
    // sign with, before the status that records it is written.
    let recorded = plan.status.gateway_token.as_ref();
    let name = sandbox.name_any();
    let pods: Api<Pod> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    match action {
        PodAction::Keep => {}
        PodAction::Checkpoint(target) => {
            let namespace = sandbox.namespace().unwrap_or_default();
            let Some(_slot) = ctx.checkpoint_slots.try_take(&namespace) else {
                return Ok(Applied::CheckpointWaits);
            };
            let taken = checkpoint(ctx, sandbox, recorded, target).await;
            return Ok(Applied::Children { taken: Some(taken) });
        }
        PodAction::Create => {
            let mut pod = children::desired_pod(sandbox, decisions);
            // Only the operator's signature makes the supervisor restore: it needs the
            // Sandbox's token, read for this and not kept.
            if checkpointing::pending_restore(sandbox).is_some() {
                let token = super::token::read(ctx, sandbox, recorded).await?;
                checkpointing::sign_restore(&mut pod, sandbox, &token);
            }
            let params = PostParams {
                field_manager: Some(crate::FIELD_MANAGER.into()),
                ..Default::default()
            };
            // Create, not apply: a pod of this name that someone else made must never be
            // patched into ours. The name is the Sandbox's, so the API server itself guarantees
            // there is never a second pod.
            match pods.create(&params, &pod).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Applied::PodExists),
                Err(kube::Error::Api(e)) if is_refusal(e.code) => {
                    return Ok(Applied::PodRejected(e.message));
                }
                Err(e) => return Err(Error::child("create", "Pod", &name)(e)),
            }
        }
        PodAction::Delete { uid } => {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods.delete(&name, &params).await {
                Ok(_) => {}
                // Gone already, or replaced by a newer pod that this plan did not see.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(Error::child("delete", "Pod", &name)(e)),
            }
        }
    }
    Ok(Applied::Children { taken: None })
}

/// The plan's checkpoint step: the status already says `Checkpointing` (an earlier plan wrote
/// it), which may last seconds.
#[instrument(name = "sandbox.checkpoint", skip_all, fields(pod = %target.request.pod))]
async fn checkpoint(
    ctx: &Context,
    sandbox: &Sandbox,
    recorded: Option<&GatewayTokenStatus>,
    target: &checkpointing::Target,
) -> Taken {
    match super::token::read(ctx, sandbox, recorded).await {
        Ok(token) => checkpointing::take(&ctx.supervisors, &token, target).await,
        Err(error) => checkpointing::not_asked(&error.to_string()),
    }
}

/// Writes the plan's status if it differs from what `observed` shows, once, and publishes
/// the plan's transitions.
pub async fn status(ctx: &Context, observed: &Sandbox, plan: &Plan) -> Result<(), Error> {
    if observed.status.as_ref() != Some(&plan.status) {
        tracing::debug!(
            from = ?observed.status.as_ref().and_then(|s| s.phase),
            to = ?plan.status.phase,
            "write status"
        );
        let produced = write_status(ctx, observed, plan).await?;
        let was = observed.status.as_ref().and_then(|s| s.phase);
        if was == Some(Phase::Resuming)
            && plan.status.phase == Some(Phase::Running)
            && let Some(resumed) = &plan.status.resumed_at
        {
            let took = Timestamp::now().duration_since(resumed.0);
            ctx.metrics
                .resume_seconds
                .observe(took.as_secs_f64().max(0.0));
        }
        ctx.written.record(observed, &plan.status, produced);
    }
    ctx.publish(observed, &plan.transitions).await;
    Ok(())
}

/// Applies the plan's status; returns the resourceVersion the write produced.
async fn write_status(
    ctx: &Context,
    sandbox: &Sandbox,
    plan: &Plan,
) -> Result<Option<String>, Error> {
    let api: Api<Sandbox> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": Sandbox::api_version(&()),
        "kind": Sandbox::kind(&()),
        "status": plan.status,
    });
    let written = api
        .patch_status(
            &sandbox.name_any(),
            &PatchParams::apply(crate::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Status)?;
    Ok(written.resource_version())
}
