//! One reconcile: read the caches, ask the phase machine for a plan, carry it out with as few
//! writes as possible.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::{Instrument, info_span, instrument};

use crate::activity;
use crate::api::{Phase, Sandbox, SandboxStatus};
use crate::controller::children::{self, unchanged};
use crate::controller::decisions::Decisions;
use crate::controller::lifecycle::{self, ChildAction, Plan, PodAction, Transition};
use crate::controller::policy_lifecycle;
use crate::controller::{ERROR_REQUEUE, Error};
use crate::policy::set::{decide_isolation, decide_lifecycle, decide_resources};
use crate::policy::{Hook, LoadedPolicy, PolicyFailed, PolicySet, input};

/// The longest a Sandbox under a lifecycle policy goes without the policy being asked again.
const LIFECYCLE_RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub claims: Store<PersistentVolumeClaim>,
    pub recorder: Recorder,
    pub written: WrittenStatuses,
    pub policies: PolicySet,
    pub namespaces: Store<Namespace>,
    /// How long a Sandbox runs before a lifecycle decision may suspend it again.
    pub min_dwell: std::time::Duration,
}

/// Status writes the Sandbox cache has not seen yet.
///
/// A reconcile triggered by a child's event can run before the watch delivers our own status
/// write, and would then plan from the old status and write the same new status again. Each
/// entry remembers the resourceVersion the write was planned against: while the cache still
/// shows that version, it is stale and the written status stands in for it; once the cache has
/// moved on (watch events arrive in order, so it has seen our write or something later), the
/// entry goes.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<String, (String, SandboxStatus)>>);

impl WrittenStatuses {
    /// The status to plan from: the cache's, unless the cache is behind our last write.
    fn current(&self, sandbox: &Sandbox) -> Option<SandboxStatus> {
        let uid = sandbox.uid().unwrap_or_default();
        let version = sandbox.resource_version().unwrap_or_default();
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match written.get(&uid) {
            Some((planned_against, status)) if *planned_against == version => Some(status.clone()),
            Some(_) => {
                written.remove(&uid);
                sandbox.status.clone()
            }
            None => sandbox.status.clone(),
        }
    }

    fn record(&self, sandbox: &Sandbox, status: &SandboxStatus) {
        let uid = sandbox.uid().unwrap_or_default();
        let version = sandbox.resource_version().unwrap_or_default();
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        written.insert(uid, (version, status.clone()));
    }

    fn forget(&self, sandbox: &Sandbox) {
        let mut written = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        written.remove(&sandbox.uid().unwrap_or_default());
    }
}

fn apply_params() -> PatchParams {
    // Not forced: if another manager owns a field we set (a foreign Service of the same name,
    // say), the conflict surfaces as an error instead of a silent takeover.
    PatchParams::apply(crate::FIELD_MANAGER)
}

/// One reconcile, counted and timed.
pub async fn reconcile(sandbox: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_sandbox(sandbox, ctx).await;
    let labels = crate::metrics::ControllerLabel {
        controller: "sandbox".into(),
    };
    let metrics = &crate::metrics::METRICS;
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
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut sandbox = sandbox;
    let current_status = ctx.written.current(&sandbox);
    if current_status != sandbox.status {
        Arc::make_mut(&mut sandbox).status = current_status;
    }

    let mut pod = ctx
        .pods
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|p| (*p).clone());
    let phase = sandbox.status.as_ref().and_then(|s| s.phase);
    if pod.is_none()
        && matches!(
            phase,
            Some(Phase::Starting | Phase::Running | Phase::Resuming | Phase::Suspending)
        )
    {
        // The cache may lag behind our own create; only the API server can say the pod is gone.
        pod = pods
            .get_opt(&name)
            .await
            .map_err(Error::child("get", "Pod", &name))?;
    }

    let decisions = decide(&ctx, &sandbox).await?;
    let ask_again = match policy_lifecycle::next(
        &sandbox,
        &decisions,
        Timestamp::now(),
        LIFECYCLE_RESYNC,
        ctx.min_dwell,
    ) {
        policy_lifecycle::Next::Act { step, by, reason } => {
            return policy_lifecycle::carry_out(&ctx, &sandbox, step, &by, &reason).await;
        }
        policy_lifecycle::Next::AskAgain(after) => Some(after),
        policy_lifecycle::Next::Nothing => None,
    };
    let mut plan = planned(&sandbox, pod.as_ref(), &decisions);
    if let Some(again) = ask_again {
        plan.requeue_after = Some(plan.requeue_after.map_or(again, |r| r.min(again)));
    }
    tracing::debug!(?plan.pod, ?plan.service, phase = ?plan.status.phase, "plan");
    match execute(&sandbox, &ctx, &plan, &decisions).await? {
        Outcome::Done(action) => Ok(action),
        Outcome::PodExists => {
            // The cache missed a pod of this name: maybe ours from a racing reconcile, maybe
            // someone else's. Plan once more from what the API server says.
            let pod = pods
                .get_opt(&name)
                .await
                .map_err(Error::child("get", "Pod", &name))?;
            let plan = planned(&sandbox, pod.as_ref(), &decisions);
            match execute(&sandbox, &ctx, &plan, &decisions).await? {
                Outcome::Done(action) => Ok(action),
                Outcome::PodExists => Ok(Action::requeue(std::time::Duration::from_secs(1))),
            }
        }
    }
}

/// The phase machine's plan, with the activity facts of the status it will write.
fn planned(sandbox: &Sandbox, pod: Option<&Pod>, decisions: &Decisions) -> Plan {
    let mut plan = lifecycle::plan(sandbox, pod, Timestamp::now(), decisions);
    plan.status.activity = Some(activity::observe(sandbox, Some(&plan.status)));
    plan
}

/// How carrying out a plan ended.
enum Outcome {
    Done(Action),
    /// The plan said create, but a pod of that name exists.
    PodExists,
}

/// Asks the matching isolation and resources policies, off the async runtime (each evaluation is bounded by
/// its policy's timeout).
async fn decide(ctx: &Context, sandbox: &Arc<Sandbox>) -> Result<Decisions, Error> {
    let namespace = sandbox.namespace().unwrap_or_default();
    let namespace_labels = match ctx.namespaces.get(&ObjectRef::new(&namespace)) {
        Some(ns) => ns.labels().clone(),
        // Not in the cache yet (start-up): a namespaceSelector must still see the labels.
        None => Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&namespace)
            .await
            .map_err(Error::child("get", "Namespace", &namespace))?
            .map(|ns| ns.labels().clone())
            .unwrap_or_default(),
    };
    let isolation = ctx
        .policies
        .matching(Hook::Isolation, sandbox.labels(), &namespace_labels);
    let resources = ctx
        .policies
        .matching(Hook::Resources, sandbox.labels(), &namespace_labels);
    let lifecycle = ctx
        .policies
        .matching(Hook::Lifecycle, sandbox.labels(), &namespace_labels);
    if isolation.is_empty() && resources.is_empty() && lifecycle.is_empty() {
        return Ok(Decisions::default());
    }
    let has_lifecycle_policy = !lifecycle.is_empty();
    let sandbox = sandbox.clone();
    let now = Timestamp::now();
    // The blocking pool does not inherit the reconcile's span; its lines must still name the Sandbox.
    let span = tracing::Span::current();
    let decided = tokio::task::spawn_blocking(move || {
        let _reconcile = span.enter();
        let input_for = |policy: &LoadedPolicy| {
            input::build(&sandbox, &namespace_labels, now, policy.settings())
        };
        // A lifecycle policy that cannot decide changes nothing: the Sandbox keeps its mode,
        // whatever the failure policy, and the error is logged.
        let lifecycle = decide_lifecycle(&lifecycle, input_for).unwrap_or_else(|failed| {
            tracing::warn!(policy = failed.policy, error = %failed.error, "lifecycle policy failed; nothing changes");
            Default::default()
        });
        let isolation = decide_isolation(&isolation, input_for)?;
        let resources = decide_resources(&resources, input_for)?;
        Ok::<_, PolicyFailed>((isolation, resources, lifecycle))
    })
    .await
    .map_err(|e| Error::Policy(format!("policy evaluation task failed: {e}")))?;
    Ok(match decided {
        Ok((isolation, resources, lifecycle)) => {
            for (policy, error) in isolation
                .ignored
                .iter()
                .chain(&resources.ignored)
                .chain(&lifecycle.ignored)
            {
                tracing::warn!(policy, %error, "policy failed; failurePolicy Ignore lets it through");
            }
            Decisions {
                isolation: isolation.decision,
                failure: None,
                audits: isolation.audits,
                resources: resources.merged,
                lifecycle: lifecycle.decision,
                has_lifecycle_policy,
            }
        }
        Err(failed) => Decisions {
            failure: Some((failed.policy, failed.error.to_string())),
            has_lifecycle_policy,
            ..Decisions::default()
        },
    })
}

async fn execute(
    sandbox: &Sandbox,
    ctx: &Context,
    plan: &Plan,
    decisions: &Decisions,
) -> Result<Outcome, Error> {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let client = &ctx.client;

    if plan.delete_sandbox {
        let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), &namespace);
        publish(ctx, sandbox, &plan.transitions).await;
        ignore_not_found(sandboxes.delete(&name, &DeleteParams::default()).await)
            .map_err(Error::child("delete", "Sandbox", &name))?;
        return Ok(Outcome::Done(Action::await_change()));
    }

    if plan.apply_claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
        for claim in children::desired_claims(sandbox) {
            let claim_name = claim.name_any();
            let cached = ctx
                .claims
                .get(&ObjectRef::new(&claim_name).within(&namespace));
            if cached.is_some_and(|c| unchanged(&*c, &claim)) {
                continue;
            }
            api.patch(&claim_name, &apply_params(), &Patch::Apply(&claim))
                .instrument(info_span!("apply", kind = "PersistentVolumeClaim"))
                .await
                .map_err(Error::child("apply", "PersistentVolumeClaim", &claim_name))?;
        }
    }

    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let cached_service = ctx.services.get(&ObjectRef::new(&name).within(&namespace));
    match plan.service {
        ChildAction::Apply => {
            let service = children::desired_service(sandbox);
            if !cached_service.is_some_and(|c| unchanged(&*c, &service)) {
                services
                    .patch(&name, &apply_params(), &Patch::Apply(&service))
                    .await
                    .map_err(Error::child("apply", "Service", &name))?;
            }
        }
        ChildAction::Delete => {
            if cached_service.is_some() {
                ignore_not_found(services.delete(&name, &DeleteParams::default()).await)
                    .map_err(Error::child("delete", "Service", &name))?;
            }
        }
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match &plan.pod {
        PodAction::Keep => {}
        PodAction::Create => {
            let pod = children::desired_pod(sandbox, decisions);
            let params = PostParams {
                field_manager: Some(crate::FIELD_MANAGER.into()),
                ..Default::default()
            };
            // Create, not apply: a pod of this name that someone else made must never be
            // patched into ours. The name is the Sandbox's, so the API server itself guarantees
            // there is never a second pod.
            match pods.create(&params, &pod).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Outcome::PodExists),
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

    if sandbox.status.as_ref() != Some(&plan.status) {
        tracing::debug!(
            from = ?sandbox.status.as_ref().and_then(|s| s.phase),
            to = ?plan.status.phase,
            "write status"
        );
        write_status(client, sandbox, plan).await?;
        let was = sandbox.status.as_ref().and_then(|s| s.phase);
        if was == Some(Phase::Resuming)
            && plan.status.phase == Some(Phase::Running)
            && let Some(resumed) = &plan.status.resumed_at
        {
            let took = Timestamp::now().duration_since(resumed.0);
            crate::metrics::METRICS
                .resume_seconds
                .observe(took.as_secs_f64().max(0.0));
        }
        ctx.written.record(sandbox, &plan.status);
    }
    publish(ctx, sandbox, &plan.transitions).await;
    Ok(Outcome::Done(
        plan.requeue_after
            .map_or_else(Action::await_change, Action::requeue),
    ))
}

async fn write_status(client: &Client, sandbox: &Sandbox, plan: &Plan) -> Result<(), Error> {
    let api: Api<Sandbox> =
        Api::namespaced(client.clone(), &sandbox.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": Sandbox::api_version(&()),
        "kind": Sandbox::kind(&()),
        "status": plan.status,
    });
    api.patch_status(
        &sandbox.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

pub(crate) async fn publish(ctx: &Context, sandbox: &Sandbox, transitions: &[Transition]) {
    let reference = sandbox.object_ref(&());
    for t in transitions {
        crate::metrics::METRICS
            .transitions
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: t.reason.into(),
            })
            .inc();
        let event = Event {
            type_: if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.reason.into(),
            note: Some(t.note.clone()),
            action: t.reason.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = t.reason, "could not publish an Event");
        }
    }
}

fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn error_policy(sandbox: Arc<Sandbox>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(
        namespace = %sandbox.namespace().unwrap_or_default(),
        sandbox = %sandbox.name_any(),
        error = %error,
        "reconcile failed"
    );
    let recorder = ctx.recorder.clone();
    let reference = sandbox.object_ref(&());
    let note = error.to_string();
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
