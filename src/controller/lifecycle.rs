//! The phase machine: from a Sandbox, its observed pod and the time, decide what to do to the
//! children and what the status says. Pure, so every transition is unit-tested; the reconciler
//! only carries the plan out.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::conditions::{self, Desired, FINISHED, READY, SUSPENDED, reason};
use crate::api::{
    OperatingMode, Phase, Sandbox, SandboxStatus, ShutdownPolicy, TEMPLATE_HASH_ANNOTATION,
    UpdateStrategy,
};
use crate::controller::children;
use crate::controller::decisions::Decisions;

/// The longest wait between restarts of a crashing pod.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);

/// What to do with the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    Keep,
    Create,
    /// Delete the pod with this UID (a precondition, so a newer pod is never hit).
    Delete {
        uid: String,
    },
}

/// What to do with a child that is applied or removed as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildAction {
    Apply,
    Delete,
    /// Touch nothing: the object of that name is not this Sandbox's.
    Leave,
}

/// A transition worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub reason: &'static str,
    pub note: String,
    pub warning: bool,
}

/// Everything one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub pod: PodAction,
    pub service: ChildAction,
    pub apply_claims: bool,
    pub delete_sandbox: bool,
    pub status: SandboxStatus,
    pub requeue_after: Option<Duration>,
    pub transitions: Vec<Transition>,
}

/// Ready reasons that mean "the pod is gone because sandman removed it and will make it again
/// now": the next reconcile creates without counting another restart.
const RECREATE_PENDING: &[&str] = &[
    reason::POD_FAILED,
    reason::POD_DELETED,
    POD_TEMPLATE_CHANGED,
];
pub const POD_TEMPLATE_CHANGED: &str = "PodTemplateChanged";
/// The API server refused to create the pod (a missing ServiceAccount, Pod Security
/// Admission, a quota): its words are in the Ready message.
pub const POD_REJECTED: &str = "PodRejected";
/// A Service or PVC of the name this Sandbox needs exists and was not made by sandman for it.
pub const CHILD_CONFLICT: &str = "ChildConflict";

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
    let previous_ready = conditions::find(&previous.conditions, READY);
    let rejected_since = previous_ready
        .filter(|c| c.reason == POD_REJECTED)
        .map(|c| c.last_transition_time.0);
    if plan.status.phase != Some(Phase::Resuming) {
        plan.status.phase = Some(Phase::Pending);
    }
    let note = format!("the API server refused the pod: {message}");
    set_ready(
        &mut plan.status,
        sandbox,
        now,
        Desired::new(READY, false, POD_REJECTED, note.clone()),
    );
    // Pinned to when the refusals began: merge keeps lastTransitionTime only on a flip.
    if let Some(since) = rejected_since
        && let Some(ready) = plan.status.conditions.iter_mut().find(|c| c.type_ == READY)
    {
        ready.last_transition_time = Time(since);
    }
    plan.transitions.retain(|t| t.reason != "Starting");
    if previous_ready.is_none_or(|c| c.reason != POD_REJECTED || c.message != note) {
        plan.transitions.push(transition(POD_REJECTED, note, true));
    }
    let lasted = rejected_since
        .map(|since| Duration::try_from(now.duration_since(since)).unwrap_or_default())
        .unwrap_or_default();
    plan.requeue_after = Some(lasted.clamp(MIN_REJECTED_RETRY, MAX_REJECTED_RETRY));
}

/// Objects this Sandbox would apply exist and are someone else's: sandman neither adopts nor
/// changes them, makes no pod (it would mount a stranger's volume), and says which in Ready.
pub fn hold_for_conflicts(
    plan: &mut Plan,
    sandbox: &Sandbox,
    conflicts: &[String],
    now: Timestamp,
) {
    let previous = sandbox.status.clone().unwrap_or_default();
    let previous_ready = conditions::find(&previous.conditions, READY);
    plan.apply_claims = false;
    if plan.service == ChildAction::Apply || plan.service == ChildAction::Delete {
        plan.service = ChildAction::Leave;
    }
    if plan.pod == PodAction::Create {
        plan.pod = PodAction::Keep;
        plan.status.phase = Some(Phase::Pending);
        plan.transitions
            .retain(|t| t.reason != "Starting" && t.reason != "Resuming");
    }
    let note = format!(
        "{}; sandman neither adopts nor changes objects it did not make for this Sandbox: rename the Sandbox or its claim template, or remove the object",
        conflicts.join("; ")
    );
    set_ready(
        &mut plan.status,
        sandbox,
        now,
        Desired::new(READY, false, CHILD_CONFLICT, note.clone()),
    );
    if previous_ready.is_none_or(|c| c.reason != CHILD_CONFLICT || c.message != note) {
        plan.transitions
            .push(transition(CHILD_CONFLICT, note, true));
    }
    plan.requeue_after = min_requeue(plan.requeue_after, CONFLICT_RETRY);
}
/// A `failurePolicy: Fail` policy could not decide, so the pod is held.
pub const POLICY_FAILED: &str = "PolicyFailed";
/// The pod would use a privilege the pod baseline refuses, and no isolation policy allows it.
pub const POD_BASELINE_REFUSED: &str = "PodBaselineRefused";

pub fn plan(sandbox: &Sandbox, pod: Option<&Pod>, now: Timestamp, decisions: &Decisions) -> Plan {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let previous = sandbox.status.clone().unwrap_or_default();
    let previous_phase = previous.phase.unwrap_or_default();
    let previous_ready_reason = conditions::find(&previous.conditions, READY)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = sandbox.metadata.generation;
    status.selector = Some(children::selector(sandbox));
    status.decisions = decisions.record(previous.decisions.as_ref(), now);
    let audited =
        |d: Option<&crate::api::PolicyDecisions>| d.map(|d| d.audited.clone()).unwrap_or_default();
    let audit_news: Vec<String> = audited(status.decisions.as_ref())
        .into_iter()
        .filter(|a| !audited(previous.decisions.as_ref()).contains(a))
        .map(|a| {
            format!(
                "policy {} would decide {} ({}); Audit mode, not applied",
                a.policy,
                a.outcome,
                a.message.unwrap_or_default()
            )
        })
        .collect();
    if sandbox.spec.wants_service() {
        status.service = Some(name.clone());
        status.service_fqdn = Some(format!("{name}.{namespace}.svc.cluster.local"));
    } else {
        status.service = None;
        status.service_fqdn = None;
    }
    let mut plan = Plan {
        pod: PodAction::Keep,
        service: if sandbox.spec.wants_service() {
            ChildAction::Apply
        } else {
            ChildAction::Delete
        },
        apply_claims: true,
        delete_sandbox: false,
        status,
        requeue_after: None,
        transitions: audit_news
            .into_iter()
            .map(|note| transition("PolicyAudit", note, false))
            .collect(),
    };
    let live_pod = pod.filter(|p| p.metadata.deletion_timestamp.is_none());
    let owned = pod.is_none_or(|p| owned_by(p, sandbox));

    // Expiry comes first: an expired Sandbox never gets a pod again.
    if let Some(shutdown) = &sandbox.spec.shutdown_time {
        let remaining = shutdown.0.duration_since(now);
        if remaining.is_zero() || remaining.is_negative() {
            if sandbox.spec.shutdown_policy == ShutdownPolicy::Delete {
                plan.delete_sandbox = true;
            }
            if let Some(p) = live_pod.filter(|p| owned_by(p, sandbox)) {
                plan.pod = PodAction::Delete {
                    uid: p.uid().unwrap_or_default(),
                };
            }
            plan.service = ChildAction::Delete;
            plan.apply_claims = false;
            let status = &mut plan.status;
            status.phase = Some(Phase::Expired);
            status.service = None;
            status.service_fqdn = None;
            clear_pod_facts(status);
            set_conditions(
                status,
                sandbox,
                now,
                [
                    Desired::new(
                        READY,
                        false,
                        reason::SANDBOX_EXPIRED,
                        "shutdownTime has passed",
                    ),
                    Desired::new(
                        SUSPENDED,
                        false,
                        reason::NOT_SUSPENDED,
                        "the Sandbox has expired",
                    ),
                    Desired::new(
                        FINISHED,
                        true,
                        reason::SANDBOX_EXPIRED,
                        "shutdownTime has passed",
                    ),
                ],
            );
            if previous_phase != Phase::Expired {
                plan.transitions.push(transition(
                    "Expired",
                    "shutdownTime has passed; pod and Service removed",
                    false,
                ));
            }
            return plan;
        }
        // A hair past the deadline, so the next reconcile finds it expired.
        let remaining = Duration::try_from(remaining).unwrap_or_default();
        plan.requeue_after = Some(remaining.saturating_add(Duration::from_millis(100)));
    }

    if !owned {
        plan.status.phase = Some(Phase::Failed);
        set_ready(
            &mut plan.status,
            sandbox,
            now,
            Desired::new(
                READY,
                false,
                reason::POD_NAME_CONFLICT,
                format!(
                    "a pod named {name} exists and is not owned by this Sandbox; sandman will neither adopt nor delete it"
                ),
            ),
        );
        if previous_ready_reason != reason::POD_NAME_CONFLICT {
            plan.transitions.push(transition(
                reason::POD_NAME_CONFLICT,
                format!("pod {name} belongs to someone else"),
                true,
            ));
        }
        return plan;
    }

    match (sandbox.spec.operating_mode, pod) {
        (OperatingMode::Suspended, Some(pod)) => {
            if let Some(p) = live_pod {
                plan.pod = PodAction::Delete {
                    uid: p.uid().unwrap_or_default(),
                };
            }
            if !matches!(previous_phase, Phase::Suspending | Phase::Suspended) {
                plan.status.suspended_at = Some(Time(now));
                plan.transitions.push(transition(
                    "Suspending",
                    format!("deleting pod {}", pod.name_any()),
                    false,
                ));
            }
            plan.status.phase = Some(Phase::Suspending);
            set_conditions(
                &mut plan.status,
                sandbox,
                now,
                [
                    Desired::new(
                        READY,
                        false,
                        reason::SANDBOX_SUSPENDED,
                        "the Sandbox is suspending",
                    ),
                    Desired::new(
                        SUSPENDED,
                        false,
                        reason::POD_TERMINATING,
                        "the pod is terminating",
                    ),
                    not_finished(),
                ],
            );
        }
        (OperatingMode::Suspended, None) => {
            if !matches!(previous_phase, Phase::Suspending | Phase::Suspended)
                || plan.status.suspended_at.is_none()
            {
                plan.status.suspended_at = Some(Time(now));
            }
            if previous_phase != Phase::Suspended {
                plan.transitions.push(transition(
                    "Suspended",
                    "the pod is gone; Service and volumes are kept",
                    false,
                ));
            }
            plan.status.phase = Some(Phase::Suspended);
            clear_pod_facts(&mut plan.status);
            set_conditions(
                &mut plan.status,
                sandbox,
                now,
                [
                    Desired::new(
                        READY,
                        false,
                        reason::SANDBOX_SUSPENDED,
                        "the Sandbox is suspended",
                    ),
                    Desired::new(
                        SUSPENDED,
                        true,
                        reason::POD_TERMINATED,
                        "the pod is gone; Service and volumes are kept",
                    ),
                    not_finished(),
                ],
            );
        }
        (OperatingMode::Running, None) if decisions.failure.is_some() => {
            let (policy, message) = decisions.failure.clone().unwrap_or_default();
            plan.status.phase = Some(Phase::Pending);
            set_ready(
                &mut plan.status,
                sandbox,
                now,
                Desired::new(
                    READY,
                    false,
                    POLICY_FAILED,
                    format!(
                        "policy {policy} failed, and its failurePolicy is Fail: {message}; the pod is held"
                    ),
                ),
            );
            if previous_ready_reason != POLICY_FAILED {
                plan.transitions.push(transition(
                    POLICY_FAILED,
                    format!("policy {policy}: {message}"),
                    true,
                ));
            }
            plan.requeue_after = min_requeue(plan.requeue_after, Duration::from_secs(30));
        }
        (OperatingMode::Running, None) if !decisions.refused.is_empty() => {
            let note = format!(
                "the pod baseline refuses {}; a SandboxPolicy that decides this Sandbox's isolation may allow it (spec.podSecurity)",
                decisions.refused.join(", ")
            );
            plan.status.phase = Some(Phase::Pending);
            set_ready(
                &mut plan.status,
                sandbox,
                now,
                Desired::new(READY, false, POD_BASELINE_REFUSED, note.clone()),
            );
            if previous_ready_reason != POD_BASELINE_REFUSED {
                plan.transitions
                    .push(transition(POD_BASELINE_REFUSED, note, true));
            }
        }
        (OperatingMode::Running, None) => plan_missing_pod(
            &mut plan,
            sandbox,
            previous_phase,
            &previous_ready_reason,
            now,
        ),
        (OperatingMode::Running, Some(pod)) => {
            plan_existing_pod(&mut plan, sandbox, pod, previous_phase, now, decisions)
        }
    }
    plan
}

fn plan_missing_pod(
    plan: &mut Plan,
    sandbox: &Sandbox,
    previous_phase: Phase,
    previous_ready_reason: &str,
    now: Timestamp,
) {
    let resuming = matches!(
        previous_phase,
        Phase::Suspended | Phase::Suspending | Phase::Resuming
    );
    let had_pod = matches!(previous_phase, Phase::Running | Phase::Starting);
    let pending = RECREATE_PENDING.contains(&previous_ready_reason);
    if had_pod && !pending {
        // Someone else deleted the pod: a restart, subject to backoff.
        let wait = restart_wait(&plan.status, now);
        if !wait.is_zero() {
            plan.status.phase = Some(Phase::Starting);
            set_ready(
                &mut plan.status,
                sandbox,
                now,
                Desired::new(
                    READY,
                    false,
                    reason::RESTART_BACKOFF,
                    format!(
                        "the pod was deleted; recreating in {}s",
                        wait.as_secs().max(1)
                    ),
                ),
            );
            plan.requeue_after = min_requeue(plan.requeue_after, wait);
            return;
        }
        count_restart(&mut plan.status, now);
        plan.pod = PodAction::Create;
        plan.status.phase = Some(Phase::Starting);
        set_ready(
            &mut plan.status,
            sandbox,
            now,
            Desired::new(
                READY,
                false,
                reason::POD_DELETED,
                "the pod was deleted by someone else; recreated it",
            ),
        );
        plan.transitions.push(transition(
            "PodRestarted",
            "the pod was deleted by someone else; recreated it",
            true,
        ));
        return;
    }
    plan.pod = PodAction::Create;
    clear_pod_facts(&mut plan.status);
    if resuming {
        if previous_phase != Phase::Resuming {
            plan.status.resumed_at = Some(Time(now));
            plan.transitions.push(transition(
                "Resuming",
                "creating the pod again with the same volumes and identity",
                false,
            ));
        }
        plan.status.phase = Some(Phase::Resuming);
    } else {
        if previous_phase == Phase::Pending {
            plan.transitions
                .push(transition("Starting", "created the pod", false));
        }
        plan.status.phase = Some(Phase::Starting);
    }
    let (ready_reason, message) = if pending {
        (
            previous_ready_reason_static(previous_ready_reason),
            "recreating the pod",
        )
    } else {
        (reason::DEPENDENCIES_NOT_READY, "the pod is starting")
    };
    set_ready(
        &mut plan.status,
        sandbox,
        now,
        Desired::new(READY, false, ready_reason, message),
    );
}

fn previous_ready_reason_static(reason_text: &str) -> &'static str {
    RECREATE_PENDING
        .iter()
        .copied()
        .find(|r| *r == reason_text)
        .unwrap_or(reason::DEPENDENCIES_NOT_READY)
}

fn plan_existing_pod(
    plan: &mut Plan,
    sandbox: &Sandbox,
    pod: &Pod,
    previous_phase: Phase,
    now: Timestamp,
    decisions: &Decisions,
) {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let pod_phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();

    if terminating {
        // A resume asked while the suspend is still finishing waits for the old pod to go;
        // otherwise keep a phase that already says a pod is coming.
        plan.status.phase = Some(match previous_phase {
            Phase::Suspending | Phase::Suspended | Phase::Resuming => Phase::Resuming,
            Phase::Running => Phase::Running,
            _ => Phase::Starting,
        });
        let ready_reason = conditions::find(&plan.status.conditions, READY)
            .map(|c| c.reason.clone())
            .filter(|r| RECREATE_PENDING.contains(&r.as_str()));
        let ready_reason = ready_reason.map_or(reason::DEPENDENCIES_NOT_READY, |r| {
            previous_ready_reason_static(&r)
        });
        set_ready(
            &mut plan.status,
            sandbox,
            now,
            Desired::new(
                READY,
                false,
                ready_reason,
                "waiting for the old pod to terminate",
            ),
        );
        return;
    }

    if pod_phase == "Failed" || pod_phase == "Succeeded" {
        let reason_word = if pod_phase == "Failed" {
            reason::POD_FAILED
        } else {
            reason::POD_SUCCEEDED
        };
        let wait = restart_wait(&plan.status, now);
        plan.status.phase = Some(Phase::Starting);
        if !wait.is_zero() {
            set_ready(
                &mut plan.status,
                sandbox,
                now,
                Desired::new(
                    READY,
                    false,
                    reason::RESTART_BACKOFF,
                    format!(
                        "the pod {}; recreating in {}s",
                        pod_phase.to_lowercase(),
                        wait.as_secs().max(1)
                    ),
                ),
            );
            plan.requeue_after = min_requeue(plan.requeue_after, wait);
            return;
        }
        count_restart(&mut plan.status, now);
        plan.pod = PodAction::Delete { uid };
        set_ready(
            &mut plan.status,
            sandbox,
            now,
            Desired::new(
                READY,
                false,
                reason::POD_FAILED,
                format!(
                    "the pod {} ({reason_word}); recreating it",
                    pod_phase.to_lowercase()
                ),
            ),
        );
        plan.transitions.push(transition(
            "PodRestarted",
            format!("the pod {}; recreating it", pod_phase.to_lowercase()),
            true,
        ));
        return;
    }

    let current_hash = pod.annotations().get(TEMPLATE_HASH_ANNOTATION).cloned();
    let template_changed =
        current_hash.as_deref() != Some(children::template_hash(sandbox, decisions).as_str());
    if template_changed && sandbox.spec.update_strategy == UpdateStrategy::Recreate {
        plan.pod = PodAction::Delete { uid };
        plan.status.phase = Some(Phase::Starting);
        set_ready(
            &mut plan.status,
            sandbox,
            now,
            Desired::new(
                READY,
                false,
                POD_TEMPLATE_CHANGED,
                "the pod template changed; replacing the pod",
            ),
        );
        plan.transitions.push(transition(
            POD_TEMPLATE_CHANGED,
            "the pod template changed; replacing the pod (updateStrategy Recreate)",
            false,
        ));
        return;
    }

    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        // Published once the pod is Ready: node and IPs settle one by one while it starts, and
        // each would otherwise cost a status write.
        record_pod_facts(&mut plan.status, pod);
        if previous_phase != Phase::Running {
            let note = if previous_phase == Phase::Resuming {
                "resumed; the pod is ready"
            } else {
                "the pod is ready"
            };
            plan.transitions.push(transition("Ready", note, false));
        }
        plan.status.phase = Some(Phase::Running);
        let message = if template_changed {
            "the pod is ready; a changed pod template takes effect at the next resume"
        } else {
            "the pod is ready"
        };
        set_ready(
            &mut plan.status,
            sandbox,
            now,
            Desired::new(READY, true, reason::DEPENDENCIES_READY, message),
        );
    } else {
        plan.status.phase = Some(if previous_phase == Phase::Resuming {
            Phase::Resuming
        } else {
            Phase::Starting
        });
        set_ready(
            &mut plan.status,
            sandbox,
            now,
            Desired::new(
                READY,
                false,
                reason::DEPENDENCIES_NOT_READY,
                "the pod is starting",
            ),
        );
    }
}

/// True when `pod` is controlled by this very Sandbox (same UID, not just the same name).
pub fn owned_by(pod: &Pod, sandbox: &Sandbox) -> bool {
    let Some(uid) = sandbox.uid() else {
        return false;
    };
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// How long to wait before the next restart: nothing for the first, then 1s, 2s, 4s ... up to
/// five minutes, measured from the previous restart.
pub fn restart_wait(status: &SandboxStatus, now: Timestamp) -> Duration {
    let Some(last) = &status.last_restart_time else {
        return Duration::ZERO;
    };
    let exponent = u32::try_from(status.restarts.clamp(1, 16) - 1).unwrap_or(0);
    let backoff = Duration::from_secs(1u64 << exponent).min(MAX_RESTART_BACKOFF);
    let elapsed = now.duration_since(last.0);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    backoff.saturating_sub(elapsed)
}

fn count_restart(status: &mut SandboxStatus, now: Timestamp) {
    status.restarts = status.restarts.saturating_add(1);
    status.last_restart_time = Some(Time(now));
}

fn record_pod_facts(status: &mut SandboxStatus, pod: &Pod) {
    status.pod_ips = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
        .unwrap_or_default();
    status.node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    status.runtime_class_name = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone());
}

fn clear_pod_facts(status: &mut SandboxStatus) {
    status.pod_ips.clear();
    status.node_name = None;
}

/// Sets `Ready` as given, for a Sandbox that is neither suspended nor finished.
fn set_ready(status: &mut SandboxStatus, sandbox: &Sandbox, now: Timestamp, ready: Desired) {
    set_conditions(
        status,
        sandbox,
        now,
        [ready, not_suspended(), not_finished()],
    );
}

fn not_suspended() -> Desired {
    Desired::new(
        SUSPENDED,
        false,
        reason::NOT_SUSPENDED,
        "the Sandbox is not suspended",
    )
}

fn not_finished() -> Desired {
    Desired::new(
        FINISHED,
        false,
        reason::NOT_FINISHED,
        "the Sandbox has not expired",
    )
}

fn set_conditions<const N: usize>(
    status: &mut SandboxStatus,
    sandbox: &Sandbox,
    now: Timestamp,
    desired: [Desired; N],
) {
    status.conditions = conditions::merge(
        &status.conditions,
        &desired,
        sandbox.metadata.generation,
        &Time(now),
    );
}

fn transition(reason: &'static str, note: impl Into<String>, warning: bool) -> Transition {
    Transition {
        reason,
        note: note.into(),
        warning,
    }
}

fn min_requeue(current: Option<Duration>, candidate: Duration) -> Option<Duration> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PodTemplate, SandboxSpec};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use k8s_openapi::jiff::SignedDuration;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    fn sandbox(phase: Option<Phase>) -> Sandbox {
        let mut sandbox = Sandbox::new(
            "agent",
            SandboxSpec {
                pod_template: PodTemplate::default(),
                ..Default::default()
            },
        );
        sandbox.metadata.namespace = Some("team".into());
        sandbox.metadata.uid = Some("sandbox-uid".into());
        sandbox.metadata.generation = Some(1);
        sandbox.status = Some(SandboxStatus {
            phase,
            ..Default::default()
        });
        sandbox
    }

    fn pod(sandbox: &Sandbox, phase: &str, ready: bool) -> Pod {
        let mut pod = children::desired_pod(sandbox, &Decisions::default());
        pod.metadata.uid = Some("pod-uid".into());
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "sandman.dev/v1alpha1".into(),
            kind: "Sandbox".into(),
            name: "agent".into(),
            uid: "sandbox-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn new_sandbox_creates_its_pod() {
        let plan = plan(&sandbox(None), None, at(0), &Decisions::default());
        assert_eq!(plan.pod, PodAction::Create);
        assert_eq!(plan.status.phase, Some(Phase::Starting));
        assert_eq!(plan.service, ChildAction::Apply);
    }

    #[test]
    fn ready_pod_means_running() {
        let sandbox = sandbox(Some(Phase::Starting));
        let plan = plan(
            &sandbox,
            Some(&pod(&sandbox, "Running", true)),
            at(0),
            &Decisions::default(),
        );
        assert_eq!(plan.pod, PodAction::Keep);
        assert_eq!(plan.status.phase, Some(Phase::Running));
        assert!(plan.transitions.iter().any(|t| t.reason == "Ready"));
    }

    #[test]
    fn suspend_deletes_the_pod_and_keeps_the_rest() {
        let mut sandbox = sandbox(Some(Phase::Running));
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        let plan = plan(
            &sandbox,
            Some(&pod(&sandbox, "Running", true)),
            at(0),
            &Decisions::default(),
        );
        assert_eq!(
            plan.pod,
            PodAction::Delete {
                uid: "pod-uid".into()
            }
        );
        assert_eq!(plan.service, ChildAction::Apply);
        assert!(plan.apply_claims);
        assert_eq!(plan.status.phase, Some(Phase::Suspending));
        assert_eq!(plan.status.suspended_at, Some(Time(at(0))));
    }

    #[test]
    fn resume_after_suspend_is_resuming_not_a_restart() {
        let sandbox = sandbox(Some(Phase::Suspended));
        let plan = plan(&sandbox, None, at(5), &Decisions::default());
        assert_eq!(plan.pod, PodAction::Create);
        assert_eq!(plan.status.phase, Some(Phase::Resuming));
        assert_eq!(plan.status.resumed_at, Some(Time(at(5))));
        assert_eq!(plan.status.restarts, 0);
    }

    #[test]
    fn vanished_pod_counts_a_restart() {
        let sandbox = sandbox(Some(Phase::Running));
        let plan = plan(&sandbox, None, at(0), &Decisions::default());
        assert_eq!(plan.pod, PodAction::Create);
        assert_eq!(plan.status.restarts, 1);
    }

    #[test]
    fn failed_pods_back_off_exponentially() {
        let mut sandbox = sandbox(Some(Phase::Running));
        let failed = pod(&sandbox, "Failed", false);
        let first = plan(&sandbox, Some(&failed), at(0), &Decisions::default());
        assert_eq!(
            first.pod,
            PodAction::Delete {
                uid: "pod-uid".into()
            },
            "the first restart is immediate"
        );
        assert_eq!(first.status.restarts, 1);

        sandbox.status = Some(first.status.clone());
        let too_soon = plan(&sandbox, Some(&failed), at(0), &Decisions::default());
        assert_eq!(too_soon.pod, PodAction::Keep);
        assert_eq!(too_soon.requeue_after, Some(Duration::from_secs(1)));
        let later = plan(&sandbox, Some(&failed), at(1), &Decisions::default());
        assert_eq!(later.status.restarts, 2);

        let mut status = later.status.clone();
        status.restarts = 30;
        assert_eq!(restart_wait(&status, at(1)), MAX_RESTART_BACKOFF, "capped");
    }

    #[test]
    fn expiry_removes_pod_and_service_and_requeues_precisely() {
        let mut sandbox = sandbox(Some(Phase::Running));
        sandbox.spec.shutdown_time = Some(Time(at(60)));
        let before = plan(
            &sandbox,
            Some(&pod(&sandbox, "Running", true)),
            at(0),
            &Decisions::default(),
        );
        assert_eq!(before.pod, PodAction::Keep);
        let requeue = before.requeue_after.expect("requeue for expiry");
        assert!(requeue >= Duration::from_secs(60) && requeue < Duration::from_secs(61));

        let after = plan(
            &sandbox,
            Some(&pod(&sandbox, "Running", true)),
            at(60) + SignedDuration::from_millis(1),
            &Decisions::default(),
        );
        assert_eq!(
            after.pod,
            PodAction::Delete {
                uid: "pod-uid".into()
            }
        );
        assert_eq!(after.service, ChildAction::Delete);
        assert_eq!(after.status.phase, Some(Phase::Expired));
        assert!(!after.delete_sandbox);
        sandbox.spec.shutdown_policy = ShutdownPolicy::Delete;
        assert!(plan(&sandbox, None, at(61), &Decisions::default()).delete_sandbox);
    }

    #[test]
    fn someone_elses_pod_is_never_touched() {
        let sandbox = sandbox(Some(Phase::Pending));
        let mut foreign = pod(&sandbox, "Running", true);
        foreign.metadata.owner_references = None;
        let plan = plan(&sandbox, Some(&foreign), at(0), &Decisions::default());
        assert_eq!(plan.pod, PodAction::Keep);
        assert_eq!(plan.status.phase, Some(Phase::Failed));
    }

    #[test]
    fn template_change_waits_for_resume_unless_recreate() {
        let mut sandbox = sandbox(Some(Phase::Running));
        let running = pod(&sandbox, "Running", true);
        sandbox.spec.pod_template.spec.hostname = Some("changed".into());
        assert_eq!(
            plan(&sandbox, Some(&running), at(0), &Decisions::default()).pod,
            PodAction::Keep
        );
        sandbox.spec.update_strategy = UpdateStrategy::Recreate;
        assert_eq!(
            plan(&sandbox, Some(&running), at(0), &Decisions::default()).pod,
            PodAction::Delete {
                uid: "pod-uid".into()
            }
        );
    }

    #[test]
    fn unchanged_world_plans_an_unchanged_status() {
        let sandbox = sandbox(Some(Phase::Starting));
        let first = plan(
            &sandbox,
            Some(&pod(&sandbox, "Running", true)),
            at(0),
            &Decisions::default(),
        );
        let mut settled = sandbox.clone();
        settled.status = Some(first.status.clone());
        let second = plan(
            &settled,
            Some(&pod(&sandbox, "Running", true)),
            at(10),
            &Decisions::default(),
        );
        assert_eq!(second.status, first.status, "no write when nothing changed");
        assert!(second.transitions.is_empty());
    }
}
