//! One reconcile of a Sandbox, in three stages: gather what the plan reads (`gather`), plan
//! (pure: the phase machine, with the lifecycle step and what gathering found), and apply the
//! plan (`apply`), ending in at most one status write.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::events::Transition;
use crate::activity;
use crate::api::{SANDBOX_LABEL, Sandbox};
use crate::controller::caches;
use crate::controller::event_note::event_note;
use crate::controller::lean::{CachedSandbox, Labelled};
use crate::controller::sandbox::apply::{self, Applied};
use crate::controller::sandbox::automation::{self, Next, Step};
use crate::controller::sandbox::context::Context;
use crate::controller::sandbox::gather::{self, Gathered};
use crate::controller::sandbox::phase::{self, ChildAction, Plan, PodAction};
use crate::controller::sandbox::refused;
use crate::controller::sandbox::token::TokenSeen;
use crate::controller::{ERROR_REQUEUE, Error};

/// The longest a Sandbox under a lifecycle policy goes without the policy being asked again.
const LIFECYCLE_RESYNC: Duration = Duration::from_secs(300);
/// How soon a checkpoint that found no free slot is tried again.
const CHECKPOINT_SLOT_RETRY: Duration = Duration::from_secs(1);

/// The changes of the Sandbox controller's child caches, which it watches.
pub struct ChildChanges {
    pub pods: caches::Watch<crate::controller::lean::CachedPod>,
    pub services: caches::Watch<crate::controller::lean::CachedService>,
    pub claims: caches::Watch<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    pub network_policies: caches::Watch<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

/// Maps a labelled child to the Sandbox it belongs to. Children are found by label, not only
/// by owner reference, because retained PVCs have no owner.
fn sandbox_of<K: kube::Resource + Labelled>(child: K) -> Option<ObjectRef<CachedSandbox>> {
    let name = child.label(SANDBOX_LABEL)?;
    Some(ObjectRef::new(&name).within(child.meta().namespace.as_deref()?))
}

/// Runs the Sandbox controller until `shutdown`: every Sandbox is reconciled when it, one of
/// its children, or the set of loaded policies (`reevaluate`) changes.
pub async fn run(
    sandboxes: caches::Cache<CachedSandbox>,
    children: ChildChanges,
    reevaluate: impl futures::Stream<Item = ()> + Send + 'static,
    concurrency: u16,
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::for_stream(sandboxes.changes, sandboxes.store)
        .watches_stream(children.pods, sandbox_of)
        .watches_stream(children.services, sandbox_of)
        .watches_stream(children.claims, sandbox_of)
        .watches_stream(children.network_policies, sandbox_of)
        .reconcile_all_on(reevaluate)
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_cached, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
}

/// One reconcile of a cached Sandbox, its spec parsed first.
async fn reconcile_cached(cached: Arc<CachedSandbox>, ctx: Arc<Context>) -> Result<Action, Error> {
    let sandbox = cached.to_sandbox().map_err(Error::Cached)?;
    reconcile(Arc::new(sandbox), ctx).await
}

/// One reconcile, counted and timed.
pub async fn reconcile(sandbox: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_sandbox(sandbox, ctx.clone()).await;
    let labels = crate::metrics::ControllerLabel {
        controller: "sandbox".into(),
    };
    let metrics = &ctx.metrics;
    metrics.reconciles.get_or_create(&labels).inc();
    metrics
        .reconcile_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics.reconcile_errors.get_or_create(&labels).inc();
    }
    result
}

#[instrument(name = "sandbox.reconcile", skip_all, fields(namespace = %sandbox.namespace().unwrap_or_default(), sandbox = %sandbox.name_any()))]
async fn reconcile_sandbox(sandbox: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action, Error> {
    if sandbox.metadata.deletion_timestamp.is_some() {
        ctx.written.forget(&sandbox);
        // Owner references and PVC protection do the rest: the pod and Service are collected,
        // PVCs go only once no pod uses them, and retained PVCs have no owner at all.
        return Ok(Action::await_change());
    }
    let mut gathered = gather::gather(&ctx, sandbox).await?;
    let now = Timestamp::now();
    // The Sandbox as observed: an automatic step changes the copy the plan reads, and the
    // status write compares with this.
    let observed = gathered.sandbox.clone();
    let lifecycle = match automation::next(
        &gathered.sandbox,
        &gathered.decisions,
        now,
        LIFECYCLE_RESYNC,
        ctx.min_dwell,
    ) {
        Next::Act {
            step: Step::Terminate,
            by,
            reason,
        } => {
            automation::terminate(&ctx, &gathered.sandbox, &by, &reason).await?;
            return Ok(Action::await_change());
        }
        Next::Act { step, by, reason } => {
            // The plan carries the step out in this same reconcile, from the status.
            let sandbox = Arc::make_mut(&mut gathered.sandbox);
            Lifecycle::Stepped(automation::override_mode(sandbox, step, &by, &reason, now))
        }
        Next::AskAgain(after) => Lifecycle::AskAgain(after),
        Next::Nothing => Lifecycle::AskAgain(Duration::MAX),
    };
    let mut plan = plan(&gathered, gathered.pod.as_ref(), &lifecycle, now);
    tracing::debug!(?plan.pod, ?plan.service, phase = ?plan.status.phase, "plan");
    let mut applied = apply::apply(&ctx, &gathered.sandbox, &plan, &gathered.decisions).await?;
    if matches!(applied, Applied::PodExists) {
        // The cache missed a pod of this name: maybe ours from a racing reconcile, maybe
        // someone else's. Plan once more from what the API server says.
        let pod = gather::pod_from_api(&ctx, &gathered.sandbox).await?;
        plan = self::plan(&gathered, pod.as_ref(), &lifecycle, Timestamp::now());
        applied = apply::apply(&ctx, &gathered.sandbox, &plan, &gathered.decisions).await?;
    }
    match applied {
        Applied::SandboxDeleted => return Ok(Action::await_change()),
        Applied::PodExists => return Ok(Action::requeue(Duration::from_secs(1))),
        // The status already says Checkpointing; nothing new to write until the call is made.
        Applied::CheckpointWaits => {
            tracing::debug!("checkpoint waits for a slot");
            return Ok(Action::requeue(CHECKPOINT_SLOT_RETRY));
        }
        Applied::PodRejected(message) => {
            refused::reject_pod(&mut plan, &gathered.sandbox, &message, Timestamp::now());
        }
        Applied::Children { taken } => {
            if let (Some(taken), PodAction::Checkpoint(target)) = (taken, plan.pod.clone()) {
                phase::checkpoint_taken(&mut plan, &target, taken);
            }
        }
    }
    apply::status(&ctx, &observed, &plan).await?;
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// What the lifecycle loop brought to this reconcile's plan.
enum Lifecycle {
    /// A suspend or resume overrode the mode, announced by this transition.
    Stepped(Option<Transition>),
    /// Nothing to do now; ask again after this long (`Duration::MAX`: no need to).
    AskAgain(Duration),
}

/// The plan for what was gathered, with `pod` as the Sandbox's pod: the phase machine's, held
/// when a child it would apply belongs to someone else, with the activity facts, the restore a
/// pod reported and the lifecycle step. Pure.
fn plan(gathered: &Gathered, pod: Option<&Pod>, lifecycle: &Lifecycle, now: Timestamp) -> Plan {
    let sandbox = &gathered.sandbox;
    let mut plan = phase::plan(sandbox, pod, now, &gathered.decisions);
    if plan.apply_claims && !gathered.children.conflicts.is_empty() {
        refused::hold_for_conflicts(&mut plan, sandbox, &gathered.children.conflicts);
    }
    plan.status.gateway_token = gathered.token.status();
    if let TokenSeen::ToMake(secret, _) = &gathered.token {
        plan.token_secret = Some(secret.clone());
    }
    // Someone else's NetworkPolicy of that name is never patched (which would conflict on
    // every try) nor deleted.
    if gathered.children.foreign_network_policy {
        plan.network_policy = ChildAction::Leave;
    }
    // A Service that is not ours is not ours to delete either; that is no conflict.
    if plan.service == ChildAction::Delete && gathered.children.foreign_service {
        plan.service = ChildAction::Leave;
    }
    if let (Some(heard), Some(pod)) = (&gathered.start, pod) {
        phase::start_heard(&mut plan, sandbox, pod, heard.clone(), now);
    }
    plan.status.activity = Some(activity::observe(sandbox, Some(&plan.status), now));
    match lifecycle {
        Lifecycle::Stepped(Some(step)) => plan.transitions.insert(0, step.clone()),
        Lifecycle::Stepped(None) => {}
        Lifecycle::AskAgain(after) if *after < Duration::MAX => plan.requeue_within(*after),
        Lifecycle::AskAgain(_) => {}
    }
    plan
}

pub fn error_policy(sandbox: Arc<CachedSandbox>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(
        namespace = %sandbox.namespace().unwrap_or_default(),
        sandbox = %sandbox.name_any(),
        error = %error,
        "reconcile failed"
    );
    let recorder = ctx.recorder.clone();
    let reference = sandbox.object_ref(&());
    let note = event_note(&error.to_string());
    tokio::spawn(async move {
        let event = Event {
            type_: EventType::Warning,
            reason: "ReconcilerError".into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        let _ = recorder.publish(&event, &reference).await;
    });
    Action::requeue(ERROR_REQUEUE)
}
