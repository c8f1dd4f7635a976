//! The phase machine: from a Sandbox, its observed pod and the time, decide what to do to the
//! children and what the status says. Pure, so every transition is unit-tested; the reconciler
//! only carries the plan out.
//!
//! [`plan`] reads like a table: each situation (expired, someone else's pod, suspended, held,
//! no pod, a pod) has a function of its own, and the first that applies decides. Status and
//! conditions are composed in `status`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    OperatingMode, Phase, Sandbox, SandboxStatus, ShutdownPolicy, TEMPLATE_HASH_ANNOTATION,
    UpdateStrategy,
};
use crate::controller::sandbox::checkpointing;
use crate::controller::sandbox::children;
use crate::controller::sandbox::decisions::{self, Decisions};
use crate::controller::sandbox::events::{Reason, Transition};
use crate::controller::sandbox::status::{self, ReadyReason};

/// The longest wait between restarts of a crashing pod.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);
/// How often a Sandbox held by a failed policy asks again.
const POLICY_FAILED_RETRY: Duration = Duration::from_secs(30);
/// How often a Sandbox refused for a Secret the baseline could not check looks again.
const BASELINE_RECHECK: Duration = Duration::from_secs(30);

/// What to do with the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    Keep,
    /// Keep the pod and checkpoint its agent: the first half of a suspend that keeps memory.
    /// What came of it is recorded in the status, and the next plan deletes the pod.
    Checkpoint(checkpointing::Target),
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

/// Everything one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub pod: PodAction,
    pub service: ChildAction,
    /// `Apply` follows the isolation decision's network profile (applied, or deleted when
    /// there is none); `Leave` touches nothing.
    pub network_policy: ChildAction,
    /// The Sandbox's token Secret, to be made.
    pub token_secret: Option<Box<k8s_openapi::api::core::v1::Secret>>,
    pub apply_claims: bool,
    pub delete_sandbox: bool,
    pub status: SandboxStatus,
    pub requeue_after: Option<Duration>,
    pub transitions: Vec<Transition>,
    /// When the plan was made, and of which generation of the Sandbox: the conditions it
    /// sets say so.
    pub made_at: Timestamp,
    pub generation: Option<i64>,
}

impl Plan {
    pub(crate) fn transition(&mut self, reason: Reason, note: impl Into<String>, warning: bool) {
        self.transitions
            .push(Transition::new(reason, note, warning));
    }

    /// Sets `Ready` as given, for a Sandbox that is neither suspended nor finished.
    pub(crate) fn ready(
        &mut self,
        reason: ReadyReason,
        is_ready: bool,
        message: impl Into<String>,
    ) {
        status::set_ready(
            &mut self.status,
            self.generation,
            self.made_at,
            reason,
            is_ready,
            message,
        );
    }

    pub(crate) fn requeue_within(&mut self, candidate: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(candidate, |c| c.min(candidate)));
    }
}

/// What the status said before this reconcile.
struct Previous {
    phase: Phase,
    ready: Option<ReadyReason>,
}

impl Previous {
    fn of(sandbox: &Sandbox) -> Self {
        let status = sandbox.status.as_ref();
        Self {
            phase: status.and_then(|s| s.phase).unwrap_or_default(),
            ready: status.and_then(status::ready_reason),
        }
    }

    fn suspended(&self) -> bool {
        self.phase.suspended_side()
    }
}

pub fn plan(sandbox: &Sandbox, pod: Option<&Pod>, now: Timestamp, decisions: &Decisions) -> Plan {
    let previous = Previous::of(sandbox);
    let mut plan = starting_point(sandbox, now, decisions);
    if let Some(shutdown) = &sandbox.spec.shutdown_time {
        let remaining = shutdown.0.duration_since(now);
        // Expiry comes first: an expired Sandbox never gets a pod again.
        if remaining.is_zero() || remaining.is_negative() {
            expire(&mut plan, sandbox, pod, now, &previous);
            return plan;
        }
        // A hair past the deadline, so the next reconcile finds it expired.
        let remaining = Duration::try_from(remaining).unwrap_or_default();
        plan.requeue_after = Some(remaining.saturating_add(Duration::from_millis(100)));
    }
    if pod.is_some_and(|p| !owned_by(p, sandbox)) {
        foreign_pod(&mut plan, sandbox, &previous);
        return plan;
    }
    match (sandbox.effective_mode(), pod) {
        (OperatingMode::Suspended, Some(pod)) => {
            suspending(&mut plan, sandbox, pod, now, &previous)
        }
        (OperatingMode::Suspended, None) => suspended(&mut plan, sandbox, now, &previous),
        (OperatingMode::Running, None) => {
            if !held(&mut plan, decisions, &previous) {
                missing_pod(&mut plan, now, &previous);
            }
        }
        // Resumed while its agent was being checkpointed: runsc stopped that agent, so the
        // pod goes and the next one restores what was taken.
        (OperatingMode::Running, Some(pod))
            if previous.phase == Phase::Checkpointing
                && checkpointing::taken_for_current(sandbox) =>
        {
            replace_checkpointed_pod(&mut plan, pod, now)
        }
        (OperatingMode::Running, Some(pod)) => {
            existing_pod(&mut plan, sandbox, pod, now, decisions, &previous)
        }
    }
    plan
}

/// The plan before any situation applies: keep the pod, apply the Service and claims, and
/// the status facts every situation shares.
fn starting_point(sandbox: &Sandbox, now: Timestamp, decisions: &Decisions) -> Plan {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let previous = sandbox.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = sandbox.metadata.generation;
    status.selector = Some(children::selector(sandbox));
    status.decisions = decisions.record(previous.decisions.as_ref(), now);
    // An override the user has spoken over since, or that no longer differs from the spec,
    // is void.
    if status
        .mode_override
        .as_ref()
        .is_some_and(|o| o.spec_mode != sandbox.spec.operating_mode || o.mode == o.spec_mode)
    {
        status.mode_override = None;
    }
    let wants_service = sandbox.spec.wants_service();
    if wants_service {
        status.service = Some(name.clone());
        status.service_fqdn = Some(format!("{name}.{namespace}.svc.cluster.local"));
    } else {
        status.service = None;
        status.service_fqdn = None;
    }
    let transitions = decisions::audit_news(previous.decisions.as_ref(), status.decisions.as_ref())
        .into_iter()
        .map(|note| Transition::new(Reason::PolicyAudit, note, false))
        .collect();
    Plan {
        pod: PodAction::Keep,
        service: if wants_service {
            ChildAction::Apply
        } else {
            ChildAction::Delete
        },
        network_policy: ChildAction::Apply,
        token_secret: None,
        // A volume the baseline refuses (a foreign PV, a clone) is never claimed.
        apply_claims: decisions.refused.is_empty(),
        delete_sandbox: false,
        status,
        requeue_after: None,
        transitions,
        made_at: now,
        generation: sandbox.metadata.generation,
    }
}

/// `shutdownTime` has passed: pod and Service go, and the Sandbox too under `Delete`.
fn expire(
    plan: &mut Plan,
    sandbox: &Sandbox,
    pod: Option<&Pod>,
    now: Timestamp,
    previous: &Previous,
) {
    if sandbox.spec.shutdown_policy == ShutdownPolicy::Delete {
        plan.delete_sandbox = true;
    }
    if let Some(p) = pod.filter(|p| p.metadata.deletion_timestamp.is_none() && owned_by(p, sandbox))
    {
        plan.pod = PodAction::Delete {
            uid: p.uid().unwrap_or_default(),
        };
    }
    plan.service = ChildAction::Delete;
    plan.apply_claims = false;
    plan.status.phase = Some(Phase::Expired);
    plan.status.service = None;
    plan.status.service_fqdn = None;
    status::clear_pod_facts(&mut plan.status);
    status::set_expired(&mut plan.status, sandbox, now);
    if previous.phase != Phase::Expired {
        plan.transition(
            Reason::Expired,
            "shutdownTime has passed; pod and Service removed",
            false,
        );
    }
}

/// A pod of the Sandbox's name belongs to someone else: sandman neither adopts nor deletes it.
fn foreign_pod(plan: &mut Plan, sandbox: &Sandbox, previous: &Previous) {
    let name = sandbox.name_any();
    plan.status.phase = Some(Phase::Failed);
    plan.ready(ReadyReason::PodNameConflict,
        false,
        format!(
            "a pod named {name} exists and is not owned by this Sandbox; sandman will neither adopt nor delete it"
        ),
    );
    if previous.ready != Some(ReadyReason::PodNameConflict) {
        plan.transition(
            Reason::Condition(ReadyReason::PodNameConflict),
            format!("pod {name} belongs to someone else"),
            true,
        );
    }
}

/// Suspended with a pod still there: checkpoint its agent first when this suspension keeps
/// memory, then delete it, keeping the rest.
fn suspending(plan: &mut Plan, sandbox: &Sandbox, pod: &Pod, now: Timestamp, previous: &Previous) {
    if !previous.suspended() {
        begin_suspension(&mut plan.status, now);
    }
    status::set_suspended(&mut plan.status, sandbox, now, false, "");
    if let Some(target) = checkpointing::target(sandbox, pod, plan.status.suspensions) {
        checkpoint_step(plan, target, previous);
        return;
    }
    if pod.metadata.deletion_timestamp.is_none() {
        plan.pod = PodAction::Delete {
            uid: pod.uid().unwrap_or_default(),
        };
    }
    if !matches!(previous.phase, Phase::Suspending | Phase::Suspended) {
        plan.transition(
            Reason::Suspending,
            format!("deleting pod {}", pod.name_any()),
            false,
        );
    }
    plan.status.phase = Some(Phase::Suspending);
}

/// The agent's memory first, while its pod is still there. The status says `Checkpointing`
/// before anything is asked of the pod; the plan after that takes the checkpoint; the one
/// after that reads its outcome and deletes the pod. Each status is written once.
fn checkpoint_step(plan: &mut Plan, target: checkpointing::Target, previous: &Previous) {
    plan.status.phase = Some(Phase::Checkpointing);
    if previous.phase == Phase::Checkpointing {
        plan.pod = PodAction::Checkpoint(target);
    } else {
        plan.transition(
            Reason::Checkpointing,
            format!(
                "checkpointing the agent of pod {} before it goes",
                target.request.pod
            ),
            false,
        );
    }
    // The status this plan writes is the next plan's input: it must come at once, whether or
    // not the write's watch event does.
    plan.requeue_within(Duration::ZERO);
}

/// What the reconcile's checkpoint step brought back: recorded in the status the plan writes,
/// which the next plan reads to delete the pod.
pub fn checkpoint_taken(
    plan: &mut Plan,
    target: &checkpointing::Target,
    taken: checkpointing::Taken,
) {
    let transition = checkpointing::record_taken(&mut plan.status, target, taken);
    plan.transitions.push(transition);
}

/// How a pod made to restore started, heard from its supervisor before the plan: recorded
/// once the plan sees the pod Running.
pub fn start_heard(
    plan: &mut Plan,
    sandbox: &Sandbox,
    pod: &Pod,
    heard: checkpointing::StartHeard,
    now: Timestamp,
) {
    let Some(pending) = checkpointing::pending_restore(sandbox) else {
        return;
    };
    if plan.status.phase != Some(Phase::Running) {
        return;
    }
    match checkpointing::record_start(&mut plan.status, pending, &pod.name_any(), heard, now) {
        Ok(transition) => plan.transitions.push(transition),
        Err(retry) => plan.requeue_within(retry),
    }
}

/// Suspended and the pod is gone.
fn suspended(plan: &mut Plan, sandbox: &Sandbox, now: Timestamp, previous: &Previous) {
    if !previous.suspended() {
        begin_suspension(&mut plan.status, now);
    } else if plan.status.suspended_at.is_none() {
        plan.status.suspended_at = Some(Time(now));
    }
    if previous.phase != Phase::Suspended {
        plan.transition(
            Reason::Suspended,
            "the pod is gone; Service and volumes are kept",
            false,
        );
    }
    plan.status.phase = Some(Phase::Suspended);
    status::clear_pod_facts(&mut plan.status);
    status::set_suspended(
        &mut plan.status,
        sandbox,
        now,
        true,
        "the pod is gone; Service and volumes are kept",
    );
}

/// A suspension begins: it gets the next number, which a wake request names.
fn begin_suspension(status: &mut SandboxStatus, now: Timestamp) {
    status.suspended_at = Some(Time(now));
    status.suspensions = status.suspensions.saturating_add(1);
}

/// No pod is made while a `failurePolicy: Fail` policy could not decide, or while the pod
/// would break the baseline. True when the Sandbox is held.
fn held(plan: &mut Plan, decisions: &Decisions, previous: &Previous) -> bool {
    let (reason, message, note, retry) = if let Some((policy, message)) = &decisions.failure {
        (
            ReadyReason::PolicyFailed,
            format!(
                "policy {policy} failed, and its failurePolicy is Fail: {message}; the pod is held"
            ),
            format!("policy {policy}: {message}"),
            Some(POLICY_FAILED_RETRY),
        )
    } else if let Some(why) = &decisions.runtime_refused {
        (
            ReadyReason::RuntimeUnavailable,
            why.clone(),
            why.clone(),
            None,
        )
    } else if let Some(why) = &decisions.supervisor_refused {
        (
            ReadyReason::SupervisorUnavailable,
            why.clone(),
            why.clone(),
            None,
        )
    } else if !decisions.refused.is_empty() {
        let note = format!(
            "the pod baseline refuses {}; a SandboxPolicy that decides this Sandbox's isolation may allow it (spec.podSecurity)",
            decisions.refused.join(", ")
        );
        let retry = decisions.recheck.then_some(BASELINE_RECHECK);
        (ReadyReason::PodBaselineRefused, note.clone(), note, retry)
    } else {
        return false;
    };
    plan.status.phase = Some(Phase::Pending);
    plan.ready(reason, false, message);
    if previous.ready != Some(reason) {
        plan.transition(Reason::Condition(reason), note, true);
    }
    if let Some(retry) = retry {
        plan.requeue_within(retry);
    }
    true
}

/// Running, and no pod: make one. A pod someone else deleted is a restart, with backoff; a
/// pod gone for a suspend is a resume.
fn missing_pod(plan: &mut Plan, now: Timestamp, previous: &Previous) {
    let resuming = previous.phase.resumes();
    let had_pod = matches!(previous.phase, Phase::Running | Phase::Starting);
    let pending = previous.ready.filter(|r| r.recreate_pending());
    if had_pod && pending.is_none() {
        restart_deleted_pod(plan, now);
        return;
    }
    plan.pod = PodAction::Create;
    status::clear_pod_facts(&mut plan.status);
    if resuming {
        if previous.phase != Phase::Resuming {
            plan.status.resumed_at = Some(Time(now));
            plan.transition(
                Reason::Resuming,
                "creating the pod again with the same volumes and identity",
                false,
            );
        }
        plan.status.phase = Some(Phase::Resuming);
    } else {
        // No Event for a first start: the Ready one follows within seconds and says more, and
        // a start that stalls shows in Ready's reason and the pod's own Events. Events are API
        // writes too (a launch is 4 writes and 1 Event; BENCHMARKS.md).
        plan.status.phase = Some(Phase::Starting);
    }
    let (reason, message) = match pending {
        Some(reason) => (reason, "recreating the pod"),
        None => (ReadyReason::DependenciesNotReady, "the pod is starting"),
    };
    plan.ready(reason, false, message);
}

/// Someone else deleted the pod: recreate it once the backoff allows.
fn restart_deleted_pod(plan: &mut Plan, now: Timestamp) {
    if backing_off(plan, now, "was deleted") {
        return;
    }
    count_restart(&mut plan.status, now);
    plan.pod = PodAction::Create;
    let note = "the pod was deleted by someone else; recreated it";
    plan.ready(ReadyReason::PodDeleted, false, note);
    plan.transition(Reason::PodRestarted, note, true);
}

/// Running, with a pod of ours.
fn existing_pod(
    plan: &mut Plan,
    sandbox: &Sandbox,
    pod: &Pod,
    now: Timestamp,
    decisions: &Decisions,
    previous: &Previous,
) {
    let pod_phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        terminating_pod(plan, previous);
        return;
    }
    if pod_phase == "Failed" || pod_phase == "Succeeded" {
        finished_pod(plan, pod, &pod_phase, now);
        return;
    }
    let current_hash = pod.annotations().get(TEMPLATE_HASH_ANNOTATION).cloned();
    let template_changed =
        current_hash.as_deref() != Some(children::template_hash(sandbox, decisions).as_str());
    if template_changed && sandbox.spec.update_strategy == UpdateStrategy::Recreate {
        replace_pod(plan, pod);
        return;
    }
    live_pod(plan, pod, template_changed, previous);
}

/// The old pod is still terminating: wait for it, with a phase that already says a pod is
/// coming (a resume asked while the suspend finishes is Resuming).
fn terminating_pod(plan: &mut Plan, previous: &Previous) {
    plan.status.phase = Some(match previous.phase {
        p if p.resumes() => Phase::Resuming,
        Phase::Running => Phase::Running,
        _ => Phase::Starting,
    });
    let reason = status::ready_reason(&plan.status)
        .filter(|r| r.recreate_pending())
        .unwrap_or(ReadyReason::DependenciesNotReady);
    plan.ready(reason, false, "waiting for the old pod to terminate");
}

/// The pod failed or completed: recreate it once the backoff allows.
fn finished_pod(plan: &mut Plan, pod: &Pod, pod_phase: &str, now: Timestamp) {
    let ended = pod_phase.to_lowercase();
    let ended_reason = if pod_phase == "Failed" {
        ReadyReason::PodFailed
    } else {
        ReadyReason::PodSucceeded
    };
    if backing_off(plan, now, &ended) {
        return;
    }
    count_restart(&mut plan.status, now);
    plan.pod = PodAction::Delete {
        uid: pod.uid().unwrap_or_default(),
    };
    // Ready says PodFailed either way: it is what marks the recreate as pending.
    plan.ready(
        ReadyReason::PodFailed,
        false,
        format!("the pod {ended} ({}); recreating it", ended_reason.as_str()),
    );
    plan.transition(
        Reason::PodRestarted,
        format!("the pod {ended}; recreating it"),
        true,
    );
}

/// The pod is to be made again (it `what`: was deleted, failed, …): Starting, and while the
/// restart backoff lasts, Ready says how long and the plan looks again then. True while it
/// lasts.
fn backing_off(plan: &mut Plan, now: Timestamp, what: &str) -> bool {
    plan.status.phase = Some(Phase::Starting);
    let wait = restart_wait(&plan.status, now);
    if wait.is_zero() {
        return false;
    }
    plan.ready(
        ReadyReason::RestartBackoff,
        false,
        format!("the pod {what}; recreating in {}s", wait.as_secs().max(1)),
    );
    plan.requeue_within(wait);
    true
}

/// The pod whose agent this suspension checkpointed, in a Sandbox resumed since: it goes,
/// and the resume makes a new pod that restores the checkpoint.
fn replace_checkpointed_pod(plan: &mut Plan, pod: &Pod, now: Timestamp) {
    if pod.metadata.deletion_timestamp.is_none() {
        plan.pod = PodAction::Delete {
            uid: pod.uid().unwrap_or_default(),
        };
    }
    plan.status.phase = Some(Phase::Resuming);
    plan.status.resumed_at = Some(Time(now));
    status::clear_pod_facts(&mut plan.status);
    plan.ready(
        ReadyReason::DependenciesNotReady,
        false,
        "resumed while checkpointing; replacing the checkpointed pod with one that restores it",
    );
    plan.transition(
        Reason::Resuming,
        "resumed while checkpointing; the new pod restores the checkpoint",
        false,
    );
}

/// `updateStrategy: Recreate` and the template changed: replace the pod now.
fn replace_pod(plan: &mut Plan, pod: &Pod) {
    plan.pod = PodAction::Delete {
        uid: pod.uid().unwrap_or_default(),
    };
    plan.status.phase = Some(Phase::Starting);
    plan.ready(
        ReadyReason::PodTemplateChanged,
        false,
        "the pod template changed; replacing the pod",
    );
    plan.transition(
        Reason::Condition(ReadyReason::PodTemplateChanged),
        "the pod template changed; replacing the pod (updateStrategy Recreate)",
        false,
    );
}

/// A live pod: Running once it is Ready, else still starting (or resuming).
fn live_pod(plan: &mut Plan, pod: &Pod, template_changed: bool, previous: &Previous) {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        plan.status.phase = Some(if previous.phase == Phase::Resuming {
            Phase::Resuming
        } else {
            Phase::Starting
        });
        plan.ready(
            ReadyReason::DependenciesNotReady,
            false,
            "the pod is starting",
        );
        return;
    }
    status::record_pod_facts(&mut plan.status, pod);
    if previous.phase != Phase::Running {
        let note = if previous.phase == Phase::Resuming {
            "resumed; the pod is ready"
        } else {
            "the pod is ready"
        };
        plan.transition(Reason::Ready, note, false);
    }
    plan.status.phase = Some(Phase::Running);
    let message = if template_changed {
        "the pod is ready; a changed pod template takes effect at the next resume"
    } else {
        "the pod is ready"
    };
    plan.ready(ReadyReason::DependenciesReady, true, message);
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
        assert!(
            plan.transitions
                .iter()
                .any(|t| t.reason.as_str() == "Ready")
        );
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

    #[test]
    fn each_suspension_is_counted_once() {
        let mut sandbox = sandbox(Some(Phase::Running));
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        let running = pod(&sandbox, "Running", true);
        let suspending = plan(&sandbox, Some(&running), at(0), &Decisions::default());
        assert_eq!(suspending.status.suspensions, 1);
        sandbox.status = Some(suspending.status.clone());
        let suspended = plan(&sandbox, None, at(1), &Decisions::default());
        assert_eq!(suspended.status.phase, Some(Phase::Suspended));
        assert_eq!(suspended.status.suspensions, 1, "the same suspension");
    }

    /// An automatic suspend is a status override of a Running spec: the plan follows it, and
    /// drops it once the user's spec says otherwise.
    #[test]
    fn the_plan_follows_an_override_until_the_spec_changes() {
        let mut sandbox = sandbox(Some(Phase::Running));
        if let Some(status) = sandbox.status.as_mut() {
            status.mode_override = Some(crate::api::ModeOverride {
                mode: OperatingMode::Suspended,
                spec_mode: OperatingMode::Running,
                by: "builtin".into(),
                reason: String::new(),
                since: Time(at(0)),
                checkpoint: None,
            });
        }
        let running = pod(&sandbox, "Running", true);
        let suspending = plan(&sandbox, Some(&running), at(0), &Decisions::default());
        assert!(matches!(suspending.pod, PodAction::Delete { .. }));
        assert!(suspending.status.mode_override.is_some());
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        let user_suspended = plan(&sandbox, Some(&running), at(1), &Decisions::default());
        assert_eq!(
            user_suspended.status.mode_override, None,
            "the user spoke since"
        );
    }

    /// A Sandbox whose suspensions keep memory, with a running pod that has an IP.
    fn checkpointed(mode: OperatingMode, phase: Phase) -> (Sandbox, Pod) {
        let mut sandbox = sandbox(Some(phase));
        sandbox.spec.operating_mode = mode;
        sandbox.spec.lifecycle = Some(crate::api::LifecycleSpec {
            checkpoint: Some(crate::api::CheckpointMode::OnSuspend),
            ..Default::default()
        });
        let mut pod = pod(&sandbox, "Running", true);
        if let Some(status) = pod.status.as_mut() {
            status.pod_ip = Some("10.244.0.7".into());
        }
        (sandbox, pod)
    }

    fn record(suspension: u64) -> crate::checkpoint::CheckpointRecord {
        crate::checkpoint::CheckpointRecord {
            image: format!("000000000000001-s{suspension}"),
            sha256: "ab".repeat(32),
            size_bytes: 4096,
            taken_at: at(1),
            sandbox_uid: "sandbox-uid".into(),
            pod: "agent".into(),
            suspension,
            took_ms: 20,
        }
    }

    fn reasons(plan: &Plan) -> Vec<&'static str> {
        plan.transitions.iter().map(|t| t.reason.as_str()).collect()
    }

    /// The plan says "checkpoint, then delete the pod", and each half is a plan of its own: the
    /// status says Checkpointing before the pod is asked anything, the next plan takes the
    /// checkpoint, and the one after reads its outcome and deletes the pod.
    #[test]
    fn a_suspend_that_keeps_memory_checkpoints_then_deletes_the_pod() {
        let (mut sandbox, pod) = checkpointed(OperatingMode::Suspended, Phase::Running);
        let announce = plan(&sandbox, Some(&pod), at(0), &Decisions::default());
        assert_eq!(
            announce.pod,
            PodAction::Keep,
            "nothing is asked of the pod yet"
        );
        assert_eq!(announce.status.phase, Some(Phase::Checkpointing));
        assert_eq!(announce.status.suspensions, 1);
        assert_eq!(reasons(&announce), ["Checkpointing"]);
        assert_eq!(announce.requeue_after, Some(Duration::ZERO));

        sandbox.status = Some(announce.status);
        let mut take = plan(&sandbox, Some(&pod), at(1), &Decisions::default());
        let PodAction::Checkpoint(target) = take.pod.clone() else {
            panic!("expected the checkpoint step, got {:?}", take.pod);
        };
        assert_eq!(target.pod_ip, "10.244.0.7");
        assert_eq!(target.request.suspension, 1);
        assert_eq!(take.status.phase, Some(Phase::Checkpointing));
        assert!(
            reasons(&take).is_empty(),
            "announced once: {:?}",
            reasons(&take)
        );
        checkpoint_taken(
            &mut take,
            &target,
            checkpointing::Taken::Checkpointed(record(1)),
        );
        assert_eq!(reasons(&take), ["Checkpointed"]);
        let taken = take.status.checkpoint.clone().expect("a checkpoint status");
        assert_eq!(taken.outcome, crate::api::CheckpointOutcome::Checkpointed);
        assert_eq!(taken.suspension, 1);

        sandbox.status = Some(take.status);
        let delete = plan(&sandbox, Some(&pod), at(2), &Decisions::default());
        assert!(
            matches!(delete.pod, PodAction::Delete { .. }),
            "{:?}",
            delete.pod
        );
        assert_eq!(delete.status.phase, Some(Phase::Suspending));
        assert_eq!(delete.status.suspensions, 1, "the same suspension");
        assert_eq!(reasons(&delete), ["Suspending"]);
    }

    /// A checkpoint that fails is an outcome like any other: the next plan deletes the pod,
    /// the volume is kept, and nothing will be restored.
    #[test]
    fn a_failed_checkpoint_still_suspends() {
        let (mut sandbox, pod) = checkpointed(OperatingMode::Suspended, Phase::Checkpointing);
        if let Some(status) = sandbox.status.as_mut() {
            status.suspensions = 4;
        }
        let mut take = plan(&sandbox, Some(&pod), at(0), &Decisions::default());
        let PodAction::Checkpoint(target) = take.pod.clone() else {
            panic!("expected the checkpoint step, got {:?}", take.pod);
        };
        checkpoint_taken(
            &mut take,
            &target,
            checkpointing::Taken::Failed("runsc checkpoint: exit 1".into()),
        );
        assert_eq!(reasons(&take), ["CheckpointFailed"]);
        assert!(take.transitions[0].warning);
        sandbox.status = Some(take.status);
        let delete = plan(&sandbox, Some(&pod), at(1), &Decisions::default());
        assert!(
            matches!(delete.pod, PodAction::Delete { .. }),
            "{:?}",
            delete.pod
        );
        assert!(checkpointing::pending_restore(&sandbox).is_none());
    }

    /// Resumed after the checkpoint was taken but before its pod went: runsc stopped that
    /// agent, so the pod is replaced by one that restores the checkpoint.
    #[test]
    fn resumed_while_checkpointing_replaces_the_pod_with_one_that_restores() {
        let (mut sandbox, pod) = checkpointed(OperatingMode::Suspended, Phase::Checkpointing);
        if let Some(status) = sandbox.status.as_mut() {
            status.suspensions = 1;
        }
        let mut take = plan(&sandbox, Some(&pod), at(0), &Decisions::default());
        let PodAction::Checkpoint(target) = take.pod.clone() else {
            panic!("expected the checkpoint step, got {:?}", take.pod);
        };
        checkpoint_taken(
            &mut take,
            &target,
            checkpointing::Taken::Checkpointed(record(1)),
        );
        sandbox.status = Some(take.status);
        sandbox.spec.operating_mode = OperatingMode::Running;
        let replace = plan(&sandbox, Some(&pod), at(1), &Decisions::default());
        assert!(
            matches!(replace.pod, PodAction::Delete { .. }),
            "{:?}",
            replace.pod
        );
        assert_eq!(replace.status.phase, Some(Phase::Resuming));
        sandbox.status = Some(replace.status);
        let create = plan(&sandbox, None, at(2), &Decisions::default());
        assert_eq!(create.pod, PodAction::Create);
        assert_eq!(create.status.phase, Some(Phase::Resuming));
        let restores = checkpointing::restore_env(&sandbox);
        assert!(
            restores
                .iter()
                .any(|e| e.value.as_deref() == Some("000000000000001-s1")),
            "{restores:?}"
        );
    }

    /// Resumed before anything was asked of the pod: its agent still runs, and it is kept.
    #[test]
    fn resumed_before_the_checkpoint_keeps_the_pod() {
        let (sandbox, pod) = checkpointed(OperatingMode::Running, Phase::Checkpointing);
        let plan = plan(&sandbox, Some(&pod), at(0), &Decisions::default());
        assert_eq!(plan.pod, PodAction::Keep);
        assert_eq!(plan.status.phase, Some(Phase::Running));
    }

    /// How a restoring pod started is recorded once the plan sees it Running; a supervisor
    /// that has not answered yet is asked again soon, and nothing is recorded meanwhile.
    #[test]
    fn a_restoring_pod_reports_how_it_started() {
        let (mut sandbox, mut pod) = checkpointed(OperatingMode::Running, Phase::Resuming);
        if let Some(status) = sandbox.status.as_mut() {
            status.suspensions = 1;
            status.resumed_at = Some(Time(at(0)));
            status.checkpoint = Some(crate::api::CheckpointStatus {
                outcome: crate::api::CheckpointOutcome::Checkpointed,
                suspension: 1,
                image: "000000000000001-s1".into(),
                ..Default::default()
            });
        }
        pod.metadata.annotations.get_or_insert_default().insert(
            checkpointing::RESTORE_ANNOTATION.into(),
            "000000000000001-s1".into(),
        );
        let mut silent = plan(&sandbox, Some(&pod), at(1), &Decisions::default());
        start_heard(
            &mut silent,
            &sandbox,
            &pod,
            checkpointing::StartHeard::Silent("connection refused".into()),
            at(1),
        );
        assert_eq!(silent.requeue_after, Some(checkpointing::REPORT_RETRY));
        assert_eq!(
            silent.status.checkpoint.as_ref().map(|c| c.outcome),
            Some(crate::api::CheckpointOutcome::Checkpointed)
        );
        let mut heard = plan(&sandbox, Some(&pod), at(2), &Decisions::default());
        start_heard(
            &mut heard,
            &sandbox,
            &pod,
            checkpointing::StartHeard::Report(crate::checkpoint::StartReport {
                start: crate::checkpoint::StartKind::Restored,
                image: Some("000000000000001-s1".into()),
                reason: None,
                at: at(2),
                took_ms: 80,
            }),
            at(2),
        );
        assert!(
            reasons(&heard).contains(&"Restored"),
            "{:?}",
            reasons(&heard)
        );
        assert_eq!(
            heard.status.checkpoint.as_ref().map(|c| c.outcome),
            Some(crate::api::CheckpointOutcome::Restored)
        );
    }
}
