//! The SandboxClaim controller: binds each claim to one Sandbox (a ready warm-pool member when
//! there is one, else a new Sandbox), mirrors the Sandbox into the claim's status, and on
//! deletion follows the template's `claimDeletionPolicy`.
//!
//! Binding without races: a member is taken by a patch guarded by its resourceVersion that
//! moves it from the pool (label and owner) to the claim. Of two claims racing for one member,
//! one wins and the other gets a conflict and looks again; a member not yet Ready, being
//! deleted, or already claimed is never taken (`blueprint::is_takeable`). The bound Sandbox is
//! found by the claim's UID label, read from the API server rather than a cache, so a claim
//! whose own status write lagged never takes a second member.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::instrument;

use crate::api::conditions::{self, READY};
use crate::api::{
    ClaimDeletionPolicy, ClaimLifecycle, ClaimShutdownPolicy, OperatingMode, Sandbox, SandboxClaim,
    SandboxTemplate, SandboxWarmPool,
};
use crate::controller::api_call::{failed, ignore_not_found, is_refusal, scoped};
use crate::controller::blueprint::{self, CLAIM_LABEL, CLAIM_NAME_LABEL};
use crate::controller::blueprints::claim_context::{ClaimContext, ClaimError, publish};
use crate::controller::blueprints::claim_status::{ClaimReason, write_status};
use crate::controller::blueprints::warm_take::{self, Taken};
use crate::controller::recorder::Recorder;

const FINALIZER: &str = "sandman.dev/claim";
/// How often a claim waiting for a template or pool that does not exist looks again.
const MISSING_RETRY: Duration = Duration::from_secs(30);

/// Runs the SandboxClaim controller until `shutdown`.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    recorder: Recorder,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let claims: Api<SandboxClaim> = scoped(&client, namespace.as_deref());
    let sandboxes: Api<Sandbox> = scoped(&client, namespace.as_deref());
    let config = watcher::Config::default().any_semantic();
    let ctx = Arc::new(ClaimContext { client, recorder });
    Controller::new(claims, config.clone())
        // A claimed Sandbox carries its claim's name: its changes reach the claim's status.
        .watches(
            sandboxes,
            config.labels(CLAIM_NAME_LABEL),
            |sandbox: Sandbox| {
                let name = sandbox.labels().get(CLAIM_NAME_LABEL)?.clone();
                Some(ObjectRef::new(&name).within(sandbox.namespace().as_deref()?))
            },
        )
        .with_config(Config::default().concurrency(8))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(claim: Arc<SandboxClaim>, error: &ClaimError, _: Arc<ClaimContext>) -> Action {
    tracing::warn!(claim = %claim.name_any(), %error, "claim reconcile failed");
    Action::requeue(crate::controller::ERROR_REQUEUE)
}

#[instrument(name = "claim.reconcile", skip_all, fields(namespace = %claim.namespace().unwrap_or_default(), claim = %claim.name_any()))]
async fn reconcile(claim: Arc<SandboxClaim>, ctx: Arc<ClaimContext>) -> Result<Action, ClaimError> {
    let namespace = claim.namespace().unwrap_or_default();
    let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let finalizers = claim.finalizers();
    let ours = finalizers.iter().position(|f| f == FINALIZER);
    if claim.metadata.deletion_timestamp.is_some() {
        let Some(index) = ours else {
            return Ok(Action::await_change());
        };
        let action = release(&claim, &ctx).await?;
        // Guarded: the finalizer is removed only where it still is.
        let patch = json_patch(serde_json::json!([
            { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER },
            { "op": "remove", "path": format!("/metadata/finalizers/{index}") },
        ]))?;
        ignore_not_found(
            api.patch(&claim.name_any(), &PatchParams::default(), &patch)
                .await,
        )
        .map_err(failed("remove the finalizer of", "the claim"))?;
        return Ok(action);
    }
    if ours.is_some() {
        return bind(&claim, &ctx, Binding::Again).await;
    }
    // The finalizer first, so that a claim deleted from now on is released; then bind in the
    // same pass rather than a watch round trip later (a warm claim's latency).
    let patch = if claim.metadata.finalizers.is_none() {
        json_patch(serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ]))?
    } else {
        json_patch(serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": finalizers },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ]))?
    };
    let claim = api
        .patch(&claim.name_any(), &PatchParams::default(), &patch)
        .await
        .map_err(failed("add the finalizer to", "the claim"))?;
    bind(&claim, &ctx, Binding::First).await
}

/// Whether a claim may already be bound.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// The finalizer was only now added: nothing was ever bound to the claim, since binding
    /// comes after the finalizer. No need to look for a bound Sandbox.
    First,
    /// Any later pass: an earlier one may have bound a Sandbox and not recorded it yet.
    Again,
}

fn json_patch(operations: serde_json::Value) -> Result<Patch<()>, ClaimError> {
    serde_json::from_value(operations)
        .map(Patch::Json)
        .map_err(|e| ClaimError::Finalizer(e.to_string()))
}

/// What the claim asks for, resolved: its template, and the pool it may take from.
struct Wanted {
    template: SandboxTemplate,
    pool: Option<SandboxWarmPool>,
}

/// What a claim's references came to.
enum Resolved {
    Wanted(Box<Wanted>),
    /// Something it names is missing, or they disagree: the Ready message says which.
    Missing(String),
}

/// Resolves the template (from the claim, else the pool's).
async fn wanted(claim: &SandboxClaim, client: &Client) -> Result<Resolved, ClaimError> {
    let namespace = claim.namespace().unwrap_or_default();
    let pool = match &claim.spec.warm_pool_ref {
        Some(reference) => {
            let pools: Api<SandboxWarmPool> = Api::namespaced(client.clone(), &namespace);
            match pools
                .get_opt(&reference.name)
                .await
                .map_err(failed("get", format!("SandboxWarmPool {}", reference.name)))?
            {
                Some(pool) => Some(pool),
                None => {
                    return Ok(Resolved::Missing(format!(
                        "SandboxWarmPool {} not found",
                        reference.name
                    )));
                }
            }
        }
        None => None,
    };
    let template_name = match (&claim.spec.sandbox_template_ref, &pool) {
        (Some(reference), _) => reference.name.clone(),
        (None, Some(pool)) => pool.spec.sandbox_template_ref.name.clone(),
        (None, None) => {
            return Ok(Resolved::Missing(
                "the claim names no template and no pool".into(),
            ));
        }
    };
    if let (Some(pool), Some(reference)) = (&pool, &claim.spec.sandbox_template_ref)
        && pool.spec.sandbox_template_ref.name != reference.name
    {
        return Ok(Resolved::Missing(format!(
            "SandboxWarmPool {} keeps template {}, not {}",
            pool.name_any(),
            pool.spec.sandbox_template_ref.name,
            reference.name
        )));
    }
    let pool = match pool {
        Some(pool) => Some(pool),
        None => warm_take::pool_of_template(client, &namespace, &template_name).await?,
    };
    let templates: Api<SandboxTemplate> = Api::namespaced(client.clone(), &namespace);
    match templates
        .get_opt(&template_name)
        .await
        .map_err(failed("get", format!("SandboxTemplate {template_name}")))?
    {
        Some(template) => Ok(Resolved::Wanted(Box::new(Wanted { template, pool }))),
        None => Ok(Resolved::Missing(format!(
            "SandboxTemplate {template_name} not found"
        ))),
    }
}

/// The Sandbox bound to this claim, asked of the API server by the claim's UID.
async fn bound(
    claim: &SandboxClaim,
    sandboxes: &Api<Sandbox>,
) -> Result<Option<Sandbox>, ClaimError> {
    let uid = claim.uid().unwrap_or_default();
    let ours = |s: &Sandbox| {
        s.metadata.deletion_timestamp.is_none()
            && s.labels().get(CLAIM_LABEL).map(String::as_str) == Some(uid.as_str())
    };
    // Bound before: one read by the name the status records (every change of the Sandbox
    // reconciles its claim), still checked against the claim's UID.
    if let Some(name) = claim
        .status
        .as_ref()
        .and_then(|s| s.sandbox.as_ref())
        .map(|s| &s.name)
        && let Some(sandbox) = sandboxes
            .get_opt(name)
            .await
            .map_err(failed("get", format!("Sandbox {name}")))?
            .filter(|s| ours(s))
    {
        return Ok(Some(sandbox));
    }
    let list = sandboxes
        .list(&ListParams::default().labels(&format!("{CLAIM_LABEL}={uid}")))
        .await
        .map_err(failed("list", "claimed Sandboxes"))?;
    Ok(list.items.into_iter().find(|s| ours(s)))
}

async fn bind(
    claim: &SandboxClaim,
    ctx: &ClaimContext,
    binding: Binding,
) -> Result<Action, ClaimError> {
    let namespace = claim.namespace().unwrap_or_default();
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = Timestamp::now();
    // Both reads at once: a new claim needs both, and they do not depend on each other.
    let (bound, wanted) = tokio::try_join!(
        async {
            match binding {
                Binding::First => Ok(None),
                Binding::Again => bound(claim, &sandboxes).await,
            }
        },
        async { Ok(wanted(claim, &ctx.client).await) }
    )?;
    let lifecycle = claim.spec.lifecycle.clone().unwrap_or_default();
    if let Some(action) = expire(claim, ctx, &sandboxes, bound.as_ref(), &lifecycle, now).await? {
        return Ok(action);
    }
    let requeue = lifecycle.shutdown_time.as_ref().map(|t| {
        Duration::try_from(t.0.duration_since(now)).unwrap_or_default() + Duration::from_millis(100)
    });
    let sandbox = match bound {
        Some(sandbox) => sandbox,
        None => match provide(claim, ctx, &sandboxes, wanted?).await? {
            Provided::Sandbox(sandbox) => *sandbox,
            Provided::Not(action) => return Ok(action),
        },
    };
    let ready = sandbox
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY))
        .is_some_and(|c| c.status == "True");
    let (reason, message) = if ready {
        (
            ClaimReason::SandboxReady,
            format!("Sandbox {} is ready", sandbox.name_any()),
        )
    } else {
        (
            ClaimReason::SandboxNotReady,
            format!("waiting for Sandbox {}", sandbox.name_any()),
        )
    };
    write_status(&ctx.client, claim, Some(&sandbox), (ready, reason, message)).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Past the claim's `shutdownTime`: the Sandbox goes, and the claim too under `Delete` (or a
/// retained one once its time-to-live after expiry has passed); under `Suspend` the Sandbox is
/// suspended instead, and both stay. `None` while not expired.
async fn expire(
    claim: &SandboxClaim,
    ctx: &ClaimContext,
    sandboxes: &Api<Sandbox>,
    bound: Option<&Sandbox>,
    lifecycle: &ClaimLifecycle,
    now: Timestamp,
) -> Result<Option<Action>, ClaimError> {
    let Some(shutdown) = &lifecycle.shutdown_time else {
        return Ok(None);
    };
    let remaining = shutdown.0.duration_since(now);
    if !(remaining.is_zero() || remaining.is_negative()) {
        return Ok(None);
    }
    if lifecycle.shutdown_policy == ClaimShutdownPolicy::Suspend {
        if let Some(s) = bound {
            suspend_sandbox(sandboxes, s).await?;
        }
        let suspended = (
            false,
            ClaimReason::Suspended,
            "shutdownTime has passed; the Sandbox is suspended until shutdownTime is moved"
                .to_string(),
        );
        write_status(&ctx.client, claim, bound, suspended).await?;
        // Moving shutdownTime is a change of the claim, which brings it back here.
        return Ok(Some(Action::await_change()));
    }
    if let Some(s) = bound {
        delete_sandbox(sandboxes, &s.name_any()).await?;
    }
    let kept_for = lifecycle
        .ttl_seconds_after_finished
        .map(|ttl| Duration::from_secs(u64::try_from(ttl).unwrap_or(0)));
    let ttl_left = kept_for
        .map(|ttl| ttl.saturating_sub(Duration::try_from(remaining.abs()).unwrap_or_default()));
    let params = match lifecycle.shutdown_policy {
        ClaimShutdownPolicy::Delete => Some(DeleteParams::default()),
        ClaimShutdownPolicy::DeleteForeground => Some(DeleteParams::foreground()),
        ClaimShutdownPolicy::Retain if ttl_left.is_some_and(|t| t.is_zero()) => {
            Some(DeleteParams::default())
        }
        // Returned above: nothing is deleted.
        ClaimShutdownPolicy::Retain | ClaimShutdownPolicy::Suspend => None,
    };
    if let Some(params) = params {
        let claims: Api<SandboxClaim> =
            Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
        ignore_not_found(claims.delete(&claim.name_any(), &params).await)
            .map_err(failed("delete", "the expired claim"))?;
        return Ok(Some(Action::await_change()));
    }
    let expired = (
        false,
        ClaimReason::Expired,
        "shutdownTime has passed; the Sandbox was deleted".to_string(),
    );
    write_status(&ctx.client, claim, None, expired).await?;
    Ok(Some(ttl_left.map_or_else(Action::await_change, |left| {
        Action::requeue(left + Duration::from_millis(100))
    })))
}

/// What a claim with no Sandbox yet got.
enum Provided {
    Sandbox(Box<Sandbox>),
    /// None, for a reason its status says; look again as this says.
    Not(Action),
}

/// A Sandbox for a claim that has none: a ready member of its pool, else one of its own.
async fn provide(
    claim: &SandboxClaim,
    ctx: &ClaimContext,
    sandboxes: &Api<Sandbox>,
    wanted: Resolved,
) -> Result<Provided, ClaimError> {
    let wanted = match wanted {
        Resolved::Wanted(wanted) => *wanted,
        Resolved::Missing(message) => {
            write_status(
                &ctx.client,
                claim,
                None,
                (false, ClaimReason::NotFound, message),
            )
            .await?;
            return Ok(Provided::Not(Action::requeue(MISSING_RETRY)));
        }
    };
    // Env and volumes are baked into a pod when it is made: a claim that sets them gets a
    // Sandbox of its own. Pod labels and annotations can change on a running pod, so a
    // claim with only those still takes a warm member.
    let warm_allowed = claim.spec.env.is_empty() && claim.spec.volume_claim_templates.is_empty();
    let pod_metadata = match blueprint::checked_pod_metadata(claim) {
        Ok(metadata) => metadata,
        Err(refusal) => {
            let refused = (false, ClaimReason::Refused, refusal.to_string());
            write_status(&ctx.client, claim, None, refused).await?;
            return Ok(Provided::Not(Action::await_change()));
        }
    };
    if let (Some(pool), true) = (&wanted.pool, warm_allowed) {
        match warm_take::take_member(claim, pool, &wanted.template, pod_metadata, sandboxes, ctx)
            .await?
        {
            Taken::Member(member) => return Ok(Provided::Sandbox(member)),
            Taken::NoneReady => {}
            // Ready members exist, and other claims keep winning them: look again soon
            // rather than cold-start while a warm one is there.
            Taken::Contended => return Ok(Provided::Not(Action::requeue(Duration::from_secs(1)))),
        }
    }
    match make_sandbox(claim, &wanted.template, sandboxes, ctx).await? {
        Made::Sandbox(made) => Ok(Provided::Sandbox(made)),
        Made::Refused(message) => {
            write_status(
                &ctx.client,
                claim,
                None,
                (false, ClaimReason::Refused, message),
            )
            .await?;
            Ok(Provided::Not(Action::await_change()))
        }
    }
}

/// What making a claim's own Sandbox came to.
enum Made {
    Sandbox(Box<Sandbox>),
    /// Not made, for this reason (the claim's Ready message).
    Refused(String),
}

/// Makes a Sandbox for the claim (a cold start). `Err` carries why the claim cannot have one.
async fn make_sandbox(
    claim: &SandboxClaim,
    template: &SandboxTemplate,
    sandboxes: &Api<Sandbox>,
    ctx: &ClaimContext,
) -> Result<Made, ClaimError> {
    let desired = match blueprint::claimed_sandbox(claim, template) {
        Ok(desired) => desired,
        Err(refusal) => return Ok(Made::Refused(refusal.to_string())),
    };
    let params = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match sandboxes.create(&params, &desired).await {
        Ok(made) => {
            publish(
                ctx,
                claim,
                "Bound",
                format!(
                    "made Sandbox {} from template {}",
                    made.name_any(),
                    template.name_any()
                ),
            );
            Ok(Made::Sandbox(Box::new(made)))
        }
        // A Sandbox of the claim's name exists: ours would carry the claim's UID, and `bound`
        // would have found it, so it is someone else's.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Made::Refused(format!(
            "a Sandbox named {} exists and is not this claim's",
            claim.name_any()
        ))),
        Err(kube::Error::Api(e)) if is_refusal(e.code) => Ok(Made::Refused(format!(
            "the API server refused the Sandbox: {}",
            e.message
        ))),
        Err(e) => Err(failed("create", "Sandbox")(e).into()),
    }
}

/// The claim is being deleted: its Sandbox follows the template's policy. `Delete` leaves it
/// to the garbage collector (the claim owns it); `Retain` suspends it and lets it go.
async fn release(claim: &SandboxClaim, ctx: &ClaimContext) -> Result<Action, ClaimError> {
    let namespace = claim.namespace().unwrap_or_default();
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(sandbox) = bound(claim, &sandboxes).await? else {
        return Ok(Action::await_change());
    };
    let templates: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
    let template_name = sandbox
        .labels()
        .get(blueprint::TEMPLATE_LABEL)
        .cloned()
        .unwrap_or_default();
    let policy = templates
        .get_opt(&template_name)
        .await
        .map_err(failed("get", format!("SandboxTemplate {template_name}")))?
        .map(|t| t.spec.claim_deletion_policy)
        .unwrap_or_default();
    let name = sandbox.name_any();
    match policy {
        ClaimDeletionPolicy::Delete => delete_sandbox(&sandboxes, &name).await?,
        ClaimDeletionPolicy::Retain => {
            // The Sandbox is sandman's own (made from a template), so its mode is written in
            // its spec: no user's manifest owns it.
            let patch = serde_json::json!({
                "metadata": {
                    "ownerReferences": null,
                    "labels": { CLAIM_LABEL: null, CLAIM_NAME_LABEL: null },
                },
                "spec": { "operatingMode": "Suspended" },
            });
            let params = PatchParams {
                field_manager: Some(crate::FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            ignore_not_found(sandboxes.patch(&name, &params, &Patch::Merge(&patch)).await)
                .map_err(failed("retain", format!("Sandbox {name}")))?;
        }
    }
    Ok(Action::await_change())
}

/// Asks `sandbox` to suspend, unless its spec says so already (a gateway wake of a suspended
/// Sandbox leaves its spec as it is, so that is no reason to write again).
async fn suspend_sandbox(sandboxes: &Api<Sandbox>, sandbox: &Sandbox) -> Result<(), ClaimError> {
    if sandbox.spec.operating_mode == OperatingMode::Suspended {
        return Ok(());
    }
    let name = sandbox.name_any();
    let params = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = serde_json::json!({ "spec": { "operatingMode": "Suspended" } });
    ignore_not_found(sandboxes.patch(&name, &params, &Patch::Merge(&patch)).await)
        .map_err(failed("suspend", format!("Sandbox {name}")))?;
    Ok(())
}

async fn delete_sandbox(sandboxes: &Api<Sandbox>, name: &str) -> Result<(), ClaimError> {
    ignore_not_found(sandboxes.delete(name, &DeleteParams::default()).await)
        .map_err(failed("delete", format!("Sandbox {name}")))?;
    Ok(())
}
