//! One reconcile: read the caches, ask the phase machine for a plan, carry it out with as few
//! writes as possible.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use tracing::{Instrument, info_span, instrument};

use crate::activity;
use crate::api::{OperatingMode, Phase, Sandbox};
use crate::controller::automation::{self, Next, Step};
use crate::controller::checkpointing;
use crate::controller::children;
use crate::controller::context::Context;
use crate::controller::decisions::Decisions;
use crate::controller::events::{Transition, event_note};
use crate::controller::phase::{self, ChildAction, Plan, PodAction};
use crate::controller::{ERROR_REQUEUE, Error};
use crate::controller::{baseline, network, ownership};
use crate::policy::set::{decide_isolation, decide_lifecycle, decide_resources};
use crate::policy::{Hook, LoadedPolicy, PolicyFailed, input};

/// The longest a Sandbox under a lifecycle policy goes without the policy being asked again.
const LIFECYCLE_RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// How a child is applied. `existing` says the cache holds it, which by then means it is
/// proven ours (`foreign_children`), so a field someone edited by hand is taken back. A child
/// not yet seen is applied unforced: should another manager's object appear in between, the
/// conflict surfaces as an error rather than a takeover.
fn apply_params(existing: bool) -> PatchParams {
    let params = PatchParams::apply(crate::FIELD_MANAGER);
    if existing { params.force() } else { params }
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
            Some(
                Phase::Starting
                    | Phase::Running
                    | Phase::Resuming
                    | Phase::Checkpointing
                    | Phase::Suspending
            )
        )
    {
        // The cache may lag behind our own create; only the API server can say the pod is gone.
        pod = pods
            .get_opt(&name)
            .await
            .map_err(Error::child("get", "Pod", &name))?;
    }

    let mut decisions = decide(&ctx, &sandbox).await?;
    if ctx.pod_baseline {
        check_baseline(&ctx, &sandbox, &mut decisions);
    }
    let now = Timestamp::now();
    // The Sandbox as observed: an automatic step below changes the copy the plan reads, and
    // the status write compares with this.
    let observed = sandbox.clone();
    let mut automatic: Option<Transition> = None;
    let ask_again =
        match automation::next(&sandbox, &decisions, now, LIFECYCLE_RESYNC, ctx.min_dwell) {
            Next::Act {
                step: Step::Terminate,
                by,
                reason,
            } => {
                automation::terminate(&ctx, &sandbox, &by, &reason).await?;
                return Ok(Action::await_change());
            }
            Next::Act { step, by, reason } => {
                let mode = if step == Step::Suspend {
                    OperatingMode::Suspended
                } else {
                    OperatingMode::Running
                };
                // The plan below carries the step out in this same reconcile, from the status.
                automatic = Some(automation::override_mode(
                    Arc::make_mut(&mut sandbox),
                    mode,
                    &by,
                    &reason,
                    now,
                ));
                None
            }
            Next::AskAgain(after) => Some(after),
            Next::Nothing => None,
        };
    let mut plan = planned(&ctx, &sandbox, pod.as_ref(), &decisions).await?;
    if let Some(again) = ask_again {
        plan.requeue_after = Some(plan.requeue_after.map_or(again, |r| r.min(again)));
    }
    if let Some(step) = &automatic {
        plan.transitions.insert(0, step.clone());
    }
    tracing::debug!(?plan.pod, ?plan.service, phase = ?plan.status.phase, "plan");
    if let Some(target) = plan.checkpoint.clone() {
        checkpoint_first(&ctx, &sandbox, &mut plan, &target).await?;
    }
    let outcome = match execute(&sandbox, &ctx, &plan, &decisions).await? {
        Outcome::PodExists => {
            // The cache missed a pod of this name: maybe ours from a racing reconcile, maybe
            // someone else's. Plan once more from what the API server says.
            let pod = pods
                .get_opt(&name)
                .await
                .map_err(Error::child("get", "Pod", &name))?;
            plan = planned(&ctx, &sandbox, pod.as_ref(), &decisions).await?;
            if let Some(step) = &automatic {
                plan.transitions.insert(0, step.clone());
            }
            match execute(&sandbox, &ctx, &plan, &decisions).await? {
                Outcome::PodExists => {
                    return Ok(Action::requeue(std::time::Duration::from_secs(1)));
                }
                other => other,
            }
        }
        other => other,
    };
    match outcome {
        Outcome::Done(action) => Ok(action),
        Outcome::Applied => {
            checkpointing::observe_restore(&ctx.supervisors, &sandbox, pod.as_ref(), &mut plan)
                .await;
            finish(&observed, &ctx, &plan).await
        }
        Outcome::PodExists => Ok(Action::requeue(std::time::Duration::from_secs(1))),
        Outcome::PodRejected(message) => {
            phase::reject_pod(&mut plan, &sandbox, &message, Timestamp::now());
            finish(&observed, &ctx, &plan).await
        }
    }
}

/// Takes the plan's checkpoint before the pod is deleted: the status says `Checkpointing`
/// (and the Event goes out) while it runs, which may be seconds; its outcome goes into the
/// plan, whose pod deletion then goes on whatever the outcome.
#[instrument(name = "sandbox.checkpoint", skip_all, fields(pod = %target.request.pod))]
async fn checkpoint_first(
    ctx: &Context,
    sandbox: &Sandbox,
    plan: &mut Plan,
    target: &checkpointing::Target,
) -> Result<(), Error> {
    let mut checkpointing = plan.clone();
    checkpointing.status.phase = Some(Phase::Checkpointing);
    write_status(&ctx.client, sandbox, &checkpointing).await?;
    ctx.publish(sandbox, &plan.transitions).await;
    plan.transitions.clear();
    checkpointing::take(&ctx.supervisors, plan, target).await;
    Ok(())
}

/// The phase machine's plan, with the activity facts of the status it will write, held when a
/// child it would apply belongs to someone else.
async fn planned(
    ctx: &Context,
    sandbox: &Sandbox,
    pod: Option<&Pod>,
    decisions: &Decisions,
) -> Result<Plan, Error> {
    let now = Timestamp::now();
    let mut plan = phase::plan(sandbox, pod, now, decisions);
    let conflicts = foreign_children(ctx, sandbox, &mut plan).await?;
    if !conflicts.is_empty() {
        phase::hold_for_conflicts(&mut plan, sandbox, &conflicts, now);
    }
    plan.status.activity = Some(activity::observe(sandbox, Some(&plan.status), now));
    Ok(plan)
}

/// The children this plan would apply that exist and are not this Sandbox's. The caches hold
/// only labelled objects, so a name missing from them is asked of the API server: that is one
/// read per child while it is being created, and none after.
async fn foreign_children(
    ctx: &Context,
    sandbox: &Sandbox,
    plan: &mut Plan,
) -> Result<Vec<String>, Error> {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let mut conflicts = Vec::new();
    if plan.apply_claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
        for template in &sandbox.spec.volume_claim_templates {
            let template_name = children::claim_template_name(template);
            let claim_name = children::claim_name(&template_name, &name);
            let existing = match ctx
                .claims
                .get(&ObjectRef::new(&claim_name).within(&namespace))
            {
                Some(cached) => Some((*cached).clone()),
                None => api.get_opt(&claim_name).await.map_err(Error::child(
                    "get",
                    "PersistentVolumeClaim",
                    &claim_name,
                ))?,
            };
            if existing.is_some_and(|c| !ownership::claim_is_ours(&c, sandbox, &template_name)) {
                conflicts.push(ownership::conflict("PersistentVolumeClaim", &claim_name));
            }
        }
    }
    let cached_service = ctx.services.get(&ObjectRef::new(&name).within(&namespace));
    match plan.service {
        ChildAction::Apply => {
            let existing = match cached_service {
                Some(cached) => Some((*cached).clone()),
                None => Api::<Service>::namespaced(ctx.client.clone(), &namespace)
                    .get_opt(&name)
                    .await
                    .map_err(Error::child("get", "Service", &name))?,
            };
            if existing.is_some_and(|s| !ownership::service_is_ours(&s, sandbox)) {
                conflicts.push(ownership::conflict("Service", &name));
            }
        }
        // A Service that is not ours is not ours to delete either; that is no conflict.
        ChildAction::Delete => {
            if cached_service.is_some_and(|s| !ownership::service_is_ours(&s, sandbox)) {
                plan.service = ChildAction::Leave;
            }
        }
        ChildAction::Leave => {}
    }
    Ok(conflicts)
}

/// How carrying out a plan ended.
enum Outcome {
    Done(Action),
    /// The children are as planned; the status is next.
    Applied,
    /// The plan said create, but a pod of that name exists.
    PodExists,
    /// The API server refused the pod, in these words.
    PodRejected(String),
}

/// True for an API answer that says "this pod will not be made as asked" (forbidden, invalid,
/// not found, quota), as opposed to a conflict, throttling or a server fault worth a retry.
fn is_refusal(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 409 | 429)
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
    .map_err(Error::Evaluation)?;
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
                ..Decisions::default()
            }
        }
        Err(failed) => Decisions {
            failure: Some((failed.policy, failed.error.to_string())),
            has_lifecycle_policy,
            ..Decisions::default()
        },
    })
}

/// What the pod these decisions make asks beyond the pod baseline, given the allowance of the
/// isolation policy that decided it.
fn check_baseline(ctx: &Context, sandbox: &Sandbox, decisions: &mut Decisions) {
    let spec = children::desired_pod_spec(sandbox, decisions);
    let allowing = decisions.isolation.as_ref().and_then(|(name, _)| {
        let allowance = ctx.policies.get(name)?.pod_security.clone();
        (allowance != Default::default()).then(|| (name.clone(), allowance))
    });
    let Some((policy, allowance)) = allowing else {
        decisions.refused = baseline::refusals(&spec, &Default::default());
        return;
    };
    decisions.refused = baseline::refusals(&spec, &allowance);
    // What the allowance let through, for status: only worked out when there is one.
    let exempted: Vec<String> = baseline::refusals(&spec, &Default::default())
        .into_iter()
        .filter(|r| !decisions.refused.contains(r))
        .collect();
    if !exempted.is_empty() {
        decisions.exempted = Some((policy, exempted));
    }
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
        ctx.publish(sandbox, &plan.transitions).await;
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
    }

    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let cached_service = ctx.services.get(&ObjectRef::new(&name).within(&namespace));
    match plan.service {
        ChildAction::Apply => {
            let service = children::desired_service(sandbox);
            if !cached_service
                .as_ref()
                .is_some_and(|c| children::service_in_place(c, &service))
            {
                let stray = cached_service
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
                        &apply_params(cached_service.is_some()),
                        &Patch::Apply(&service),
                    )
                    .await
                    .map_err(Error::child("apply", "Service", &name))?;
            }
        }
        ChildAction::Leave => {}
        ChildAction::Delete => {
            if cached_service.is_some() {
                ignore_not_found(services.delete(&name, &DeleteParams::default()).await)
                    .map_err(Error::child("delete", "Service", &name))?;
            }
        }
    }

    // Before the pod: a pod never runs without the network its policy chose.
    keep_network_policy(sandbox, ctx, decisions).await?;

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
                Err(kube::Error::Api(e)) if is_refusal(e.code) => {
                    return Ok(Outcome::PodRejected(e.message));
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

    Ok(Outcome::Applied)
}

/// The Sandbox's NetworkPolicy, as its isolation decision's network profile asks: applied
/// when it differs, deleted when the profile is gone. One that is not the Sandbox's own is
/// never touched.
async fn keep_network_policy(
    sandbox: &Sandbox,
    ctx: &Context,
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

/// Writes the plan's status if it differs from what `sandbox` (as observed) shows, and
/// publishes the plan's transitions.
async fn finish(sandbox: &Sandbox, ctx: &Context, plan: &Plan) -> Result<Action, Error> {
    let client = &ctx.client;
    if sandbox.status.as_ref() != Some(&plan.status) {
        tracing::debug!(
            from = ?sandbox.status.as_ref().and_then(|s| s.phase),
            to = ?plan.status.phase,
            "write status"
        );
        let produced = write_status(client, sandbox, plan).await?;
        let was = sandbox.status.as_ref().and_then(|s| s.phase);
        if was == Some(Phase::Resuming)
            && plan.status.phase == Some(Phase::Running)
            && let Some(resumed) = &plan.status.resumed_at
        {
            let took = Timestamp::now().duration_since(resumed.0);
            ctx.metrics
                .resume_seconds
                .observe(took.as_secs_f64().max(0.0));
        }
        ctx.written.record(sandbox, &plan.status, produced);
    }
    ctx.publish(sandbox, &plan.transitions).await;
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// Applies the plan's status; returns the resourceVersion the write produced.
async fn write_status(
    client: &Client,
    sandbox: &Sandbox,
    plan: &Plan,
) -> Result<Option<String>, Error> {
    let api: Api<Sandbox> =
        Api::namespaced(client.clone(), &sandbox.namespace().unwrap_or_default());
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
