//! What a plan becomes when it cannot be carried out as made: the API server refused the pod
//! it created, or a child it would apply is someone else's. Pure, like the phase machine.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{Phase, Sandbox};
use crate::controller::sandbox::events::Reason;
use crate::controller::sandbox::phase::{ChildAction, Plan, PodAction};
use crate::controller::sandbox::status::{self, ReadyReason};

/// The shortest and longest wait before trying a refused pod again.
const MIN_REJECTED_RETRY: Duration = Duration::from_secs(5);
const MAX_REJECTED_RETRY: Duration = Duration::from_secs(300);
/// How often a Sandbox held by a conflicting child looks again.
const CONFLICT_RETRY: Duration = Duration::from_secs(60);

/// The API server refused the pod this plan created: Ready says so in its words, and the
/// next try waits as long as the refusals have lasted (between 5 s and 5 min), so a pod that
/// can never be made costs a request every few minutes, not every few seconds.
pub fn reject_pod(plan: &mut Plan, sandbox: &Sandbox, message: &str, now: Timestamp) {
    let previous = sandbox.status.clone().unwrap_or_default();
    let previous_ready =
        crate::api::conditions::find(&previous.conditions, crate::api::conditions::READY);
    let rejected = ReadyReason::PodRejected;
    let rejected_since = previous_ready
        .filter(|c| c.reason == rejected.as_str())
        .map(|c| c.last_transition_time.0);
    if plan.status.phase != Some(Phase::Resuming) {
        plan.status.phase = Some(Phase::Pending);
    }
    let note = format!("the API server refused the pod: {message}");
    plan.ready(rejected, false, note.clone());
    if let Some(since) = rejected_since {
        status::pin_ready_since(&mut plan.status, since);
    }
    if previous_ready.is_none_or(|c| c.reason != rejected.as_str() || c.message != note) {
        plan.transition(Reason::Condition(rejected), note, true);
    }
    let lasted = rejected_since
        .map(|since| Duration::try_from(now.duration_since(since)).unwrap_or_default())
        .unwrap_or_default();
    plan.requeue_after = Some(lasted.clamp(MIN_REJECTED_RETRY, MAX_REJECTED_RETRY));
}

/// Objects this Sandbox would apply exist and are someone else's: sandman neither adopts nor
/// changes them, makes no pod (it would mount a stranger's volume), and says which in Ready.
pub fn hold_for_conflicts(plan: &mut Plan, sandbox: &Sandbox, conflicts: &[String]) {
    let previous = sandbox.status.clone().unwrap_or_default();
    let previous_ready = status::ready_of(&previous);
    plan.apply_claims = false;
    if plan.service == ChildAction::Apply || plan.service == ChildAction::Delete {
        plan.service = ChildAction::Leave;
    }
    if plan.pod == PodAction::Create {
        plan.pod = PodAction::Keep;
        plan.status.phase = Some(Phase::Pending);
        plan.transitions.retain(|t| t.reason != Reason::Resuming);
    }
    let note = format!(
        "{}; sandman neither adopts nor changes objects it did not make for this Sandbox: rename the Sandbox or its claim template, or remove the object",
        conflicts.join("; ")
    );
    let conflict = ReadyReason::ChildConflict;
    plan.ready(conflict, false, note.clone());
    if previous_ready.is_none_or(|(reason, message)| reason != Some(conflict) || message != note) {
        plan.transition(Reason::Condition(conflict), note, true);
    }
    plan.requeue_within(CONFLICT_RETRY);
}
