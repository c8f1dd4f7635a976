//! Automation: the suspends, resumes and terminations that nobody typed. A lifecycle policy,
//! the built-in `spec.lifecycle.idleTimeout`, or a wake request from the gateway decides; this
//! module says what to do now and when to ask again.
//!
//! Suspend and resume never write the user's spec: they set `status.modeOverride`, which holds
//! while `spec.operatingMode` stays as it was, so a GitOps tool that re-applies the manifest
//! does not fight them. Terminate deletes the Sandbox. Each step is announced by an Event that
//! names who decided.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

use super::context::Context;
use super::decisions::Decisions;
use crate::activity;
use crate::api::{ModeOverride, OperatingMode, Sandbox};
use crate::controller::Error;
use crate::controller::sandbox::events::{Reason, Transition};
use crate::policy::limits::parse_duration;
use crate::policy::types::{LifecycleAction, LifecycleDecision};

/// Who decides when no lifecycle policy does.
pub const BUILTIN: &str = "builtin";

/// Who asked when a request through `sandman gateway` wakes a Sandbox.
pub const GATEWAY: &str = "gateway";

/// A change the lifecycle decision asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Suspend; `checkpoint` is the decider's say on keeping the agent's memory (unset: the
    /// Sandbox's spec decides). It is recorded with the suspension, so it holds until the
    /// suspension is carried out however the decision reads by then.
    Suspend {
        checkpoint: Option<bool>,
    },
    Resume,
    Terminate,
}

/// What the lifecycle loop does for one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Carry out `step`, decided by `by` (a policy, or [`BUILTIN`]) for `reason`.
    Act {
        step: Step,
        by: String,
        reason: String,
    },
    /// Nothing now; ask again after this long.
    AskAgain(Duration),
    /// Nothing decides this Sandbox's lifecycle.
    Nothing,
}

/// What to do about `sandbox` now. `resync` bounds how long a Sandbox under a lifecycle
/// policy goes unasked; `min_dwell` is how long a Sandbox runs before it may be suspended
/// again, so that a policy cannot make it flap.
pub fn next(
    sandbox: &Sandbox,
    decisions: &Decisions,
    now: Timestamp,
    resync: Duration,
    min_dwell: Duration,
) -> Next {
    // A request is waiting in the gateway: that comes before any idle reckoning, unless the
    // lifecycle policy that made this suspension still decides it. The annotation is the
    // tenant's to write, so it may end a suspension, never overrule the platform's.
    if activity::wake_requested(sandbox) {
        if let Some(policy) = holding_policy(sandbox, decisions) {
            tracing::info!(%policy, "a wake request waits: the policy that suspended the Sandbox still decides suspend");
            return Next::AskAgain(resync);
        }
        return Next::Act {
            step: Step::Resume,
            by: GATEWAY.into(),
            reason: "a request arrived through the gateway".into(),
        };
    }
    let decided = match &decisions.lifecycle {
        Some((policy, decision)) => Some((policy.clone(), decision.clone())),
        None => builtin(sandbox, now),
    };
    let Some((by, decision)) = decided else {
        return if decisions.has_lifecycle_policy {
            Next::AskAgain(resync)
        } else {
            Next::Nothing
        };
    };
    let again = decision
        .requeue_after_seconds
        .map_or(resync, |s| Duration::from_secs(s.max(1)).min(resync));
    let Some(step) = step(sandbox, &decision) else {
        return Next::AskAgain(again);
    };
    if matches!(step, Step::Suspend { .. }) {
        let ran = activity::running_since(sandbox)
            .map_or(u64::MAX, |since| activity::seconds_between(since, now));
        let dwell = min_dwell.as_secs();
        if ran < dwell {
            return Next::AskAgain(Duration::from_secs(dwell - ran));
        }
    }
    Next::Act {
        step,
        by,
        reason: decision.reason,
    }
}

/// The lifecycle policy that made the current suspension, when, asked about the suspended
/// Sandbox, it still decides suspend. A policy that keeps or abstains for a suspended Sandbox
/// (the idle examples do) lets a request wake it.
fn holding_policy<'a>(sandbox: &Sandbox, decisions: &'a Decisions) -> Option<&'a str> {
    let (policy, decision) = decisions.lifecycle.as_ref()?;
    let suspended_by = sandbox.status.as_ref()?.mode_override.as_ref()?;
    (suspended_by.mode == OperatingMode::Suspended
        && suspended_by.by == *policy
        && decision.action == LifecycleAction::Suspend)
        .then_some(policy.as_str())
}

/// The built-in default: suspend a Running Sandbox after `spec.lifecycle.idleTimeout` without
/// activity; no timeout means never.
fn builtin(sandbox: &Sandbox, now: Timestamp) -> Option<(String, LifecycleDecision)> {
    let timeout = sandbox.spec.lifecycle.as_ref()?.idle_timeout.as_ref()?;
    let timeout = parse_duration(timeout).ok()?.as_secs().max(1);
    if sandbox.effective_mode() != OperatingMode::Running {
        return None;
    }
    let idle = activity::idle_seconds(sandbox, now);
    let decision = if idle >= timeout {
        LifecycleDecision {
            action: LifecycleAction::Suspend,
            reason: format!("idle for {idle}s (idleTimeout {timeout}s)"),
            requeue_after_seconds: None,
            checkpoint: None,
        }
    } else {
        LifecycleDecision {
            action: LifecycleAction::Keep,
            reason: format!("idle for {idle}s"),
            requeue_after_seconds: Some(timeout - idle),
            checkpoint: None,
        }
    };
    Some((BUILTIN.to_string(), decision))
}

/// What to do about `decision` for `sandbox` as it is now: nothing when it already is what the
/// decision wants.
pub fn step(sandbox: &Sandbox, decision: &LifecycleDecision) -> Option<Step> {
    let mode = sandbox.effective_mode();
    match decision.action {
        LifecycleAction::Keep => None,
        LifecycleAction::Suspend => (mode == OperatingMode::Running).then_some(Step::Suspend {
            checkpoint: decision.checkpoint,
        }),
        LifecycleAction::Resume => (mode == OperatingMode::Suspended).then_some(Step::Resume),
        LifecycleAction::Terminate => Some(Step::Terminate),
    }
}

/// Suspends or resumes `sandbox` by an override of its spec's mode, in its status, and says
/// so in the Transition to publish. The plan that follows sees the new mode at once.
/// `Terminate` is no override: it changes nothing and says nothing.
pub fn override_mode(
    sandbox: &mut Sandbox,
    step: Step,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> Option<Transition> {
    let (mode, checkpoint) = match step {
        Step::Suspend { checkpoint } => (OperatingMode::Suspended, checkpoint),
        Step::Resume => (OperatingMode::Running, None),
        Step::Terminate => return None,
    };
    let (event, note) = match mode {
        OperatingMode::Suspended => (
            if by == BUILTIN {
                Reason::IdleSuspended
            } else {
                Reason::PolicySuspended
            },
            if by == BUILTIN {
                format!("spec.lifecycle.idleTimeout: {reason}")
            } else {
                format!("policy {by}: {reason}")
            },
        ),
        OperatingMode::Running => (
            if by == GATEWAY {
                Reason::GatewayResumed
            } else {
                Reason::PolicyResumed
            },
            if by == GATEWAY {
                reason.to_string()
            } else {
                format!("policy {by}: {reason}")
            },
        ),
    };
    let spec_mode = sandbox.spec.operating_mode;
    let status = sandbox.status.get_or_insert_default();
    // Back to what the spec says: nothing overrides it any more.
    status.mode_override = (mode != spec_mode).then(|| ModeOverride {
        mode,
        spec_mode,
        by: by.to_string(),
        reason: crate::text::clip(reason.to_string(), 1024),
        since: Time(now),
        checkpoint,
    });
    tracing::info!(by, event = event.as_str(), reason, "automatic step");
    Some(Transition::new(event, note, false))
}

/// Deletes the Sandbox a policy terminated; volumes follow `volumeReclaimPolicy`.
pub async fn terminate(
    ctx: &Context,
    sandbox: &Sandbox,
    by: &str,
    reason: &str,
) -> Result<(), Error> {
    let name = sandbox.name_any();
    let api: Api<Sandbox> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(Error::child("terminate", "Sandbox", &name)(e)),
    }
    tracing::info!(by, reason, "policy terminated the Sandbox");
    ctx.publish(
        sandbox,
        &[Transition::new(
            Reason::PolicyTerminated,
            format!("policy {by}: {reason}"),
            false,
        )],
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const RESYNC: Duration = Duration::from_secs(300);
    const DWELL: Duration = Duration::from_secs(60);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn decision(action: LifecycleAction, requeue: Option<u64>) -> LifecycleDecision {
        LifecycleDecision {
            action,
            reason: "test".into(),
            requeue_after_seconds: requeue,
            checkpoint: None,
        }
    }

    fn sandbox(mode: OperatingMode) -> Sandbox {
        let mut sandbox = Sandbox::new("s", Default::default());
        sandbox.spec.operating_mode = mode;
        sandbox.metadata.creation_timestamp = Some(Time(at(0)));
        sandbox
    }

    fn by_policy(d: LifecycleDecision) -> Decisions {
        Decisions {
            lifecycle: Some(("p".into(), d)),
            has_lifecycle_policy: true,
            ..Decisions::default()
        }
    }

    #[test]
    fn steps_only_change_what_differs() {
        let running = sandbox(OperatingMode::Running);
        let suspended = sandbox(OperatingMode::Suspended);
        let suspend = decision(LifecycleAction::Suspend, None);
        let resume = decision(LifecycleAction::Resume, None);
        assert_eq!(
            step(&running, &suspend),
            Some(Step::Suspend { checkpoint: None })
        );
        assert_eq!(step(&suspended, &suspend), None);
        assert_eq!(step(&suspended, &resume), Some(Step::Resume));
        assert_eq!(step(&running, &resume), None);
        assert_eq!(step(&running, &decision(LifecycleAction::Keep, None)), None);
        assert_eq!(
            step(&suspended, &decision(LifecycleAction::Terminate, None)),
            Some(Step::Terminate)
        );
    }

    #[test]
    fn the_policy_is_asked_again_when_it_says_within_the_resync_bound() {
        let running = sandbox(OperatingMode::Running);
        let keep = |requeue| by_policy(decision(LifecycleAction::Keep, requeue));
        assert_eq!(
            next(&running, &keep(Some(30)), at(100), RESYNC, DWELL),
            Next::AskAgain(Duration::from_secs(30))
        );
        assert_eq!(
            next(&running, &keep(Some(86_400)), at(100), RESYNC, DWELL),
            Next::AskAgain(RESYNC)
        );
        let abstained = Decisions {
            has_lifecycle_policy: true,
            ..Decisions::default()
        };
        assert_eq!(
            next(&running, &abstained, at(100), RESYNC, DWELL),
            Next::AskAgain(RESYNC)
        );
        assert_eq!(
            next(&running, &Decisions::default(), at(100), RESYNC, DWELL),
            Next::Nothing,
            "no policy and no idleTimeout: nothing to ask"
        );
    }

    #[test]
    fn a_suspend_waits_out_the_minimum_dwell() {
        let running = sandbox(OperatingMode::Running);
        let suspend = by_policy(decision(LifecycleAction::Suspend, None));
        assert_eq!(
            next(&running, &suspend, at(20), RESYNC, DWELL),
            Next::AskAgain(Duration::from_secs(40))
        );
        assert!(matches!(
            next(&running, &suspend, at(60), RESYNC, DWELL),
            Next::Act {
                step: Step::Suspend { .. },
                ..
            }
        ));
    }

    #[test]
    fn idle_timeout_suspends_without_a_policy() {
        let mut running = sandbox(OperatingMode::Running);
        running.spec.lifecycle = Some(crate::api::LifecycleSpec {
            idle_timeout: Some("2m".into()),
            ..Default::default()
        });
        assert_eq!(
            next(&running, &Decisions::default(), at(100), RESYNC, DWELL),
            Next::AskAgain(Duration::from_secs(20))
        );
        match next(&running, &Decisions::default(), at(130), RESYNC, DWELL) {
            Next::Act { step, by, reason } => {
                assert_eq!(
                    (step, by.as_str()),
                    (Step::Suspend { checkpoint: None }, BUILTIN)
                );
                assert!(reason.contains("idle for 130s"), "{reason}");
            }
            other => panic!("expected a suspend, got {other:?}"),
        }
    }

    /// A wake request ends the suspension it names, and no later one: a user's suspend of the
    /// resumed Sandbox once was undone at once by the old request.
    #[test]
    fn a_wake_request_resumes_only_the_suspension_it_names() {
        let mut sandbox = sandbox(OperatingMode::Suspended);
        sandbox.status = Some(crate::api::SandboxStatus {
            phase: Some(crate::api::Phase::Suspended),
            suspensions: 2,
            ..Default::default()
        });
        sandbox.metadata.annotations = Some(
            [(
                activity::WAKE_REQUESTED.to_string(),
                "suspension-2".to_string(),
            )]
            .into(),
        );
        let woken = next(&sandbox, &Decisions::default(), at(20), RESYNC, DWELL);
        assert!(
            matches!(woken, Next::Act { step: Step::Resume, ref by, .. } if by == GATEWAY),
            "{woken:?}"
        );
        // Resumed, and suspended again by the user in the same second: the status has not
        // counted the new suspension yet, and the old request must not end it.
        sandbox.status = Some(crate::api::SandboxStatus {
            phase: Some(crate::api::Phase::Running),
            suspensions: 2,
            ..Default::default()
        });
        assert_eq!(
            next(&sandbox, &Decisions::default(), at(20), RESYNC, DWELL),
            Next::Nothing
        );
    }

    /// The tenant writes the wake annotation: it ends a suspension the platform's policy no
    /// longer holds, never one the policy still decides.
    #[test]
    fn a_wake_request_cannot_overrule_the_policy_that_suspended() {
        let mut sandbox = sandbox(OperatingMode::Suspended);
        sandbox.status = Some(crate::api::SandboxStatus {
            phase: Some(crate::api::Phase::Suspended),
            suspensions: 1,
            mode_override: Some(ModeOverride {
                mode: OperatingMode::Suspended,
                spec_mode: OperatingMode::Suspended,
                by: "off-hours".into(),
                reason: "outside business hours".into(),
                since: Time(at(0)),
                checkpoint: None,
            }),
            ..Default::default()
        });
        sandbox.metadata.annotations = Some(
            [(
                activity::WAKE_REQUESTED.to_string(),
                "suspension-1".to_string(),
            )]
            .into(),
        );
        let holding = |action| Decisions {
            lifecycle: Some(("off-hours".into(), decision(action, None))),
            has_lifecycle_policy: true,
            ..Decisions::default()
        };
        assert_eq!(
            next(
                &sandbox,
                &holding(LifecycleAction::Suspend),
                at(20),
                RESYNC,
                DWELL
            ),
            Next::AskAgain(RESYNC),
            "the policy still decides suspend"
        );
        let woken = next(
            &sandbox,
            &holding(LifecycleAction::Keep),
            at(20),
            RESYNC,
            DWELL,
        );
        assert!(
            matches!(woken, Next::Act { step: Step::Resume, ref by, .. } if by == GATEWAY),
            "once the policy lets go, the same request wakes it: {woken:?}"
        );
    }

    /// An automatic step writes the status, never the spec: the user's manifest stays the
    /// user's, and their next change of `operatingMode` wins.
    #[test]
    fn automatic_steps_override_the_spec_in_status_only() {
        let mut sandbox = sandbox(OperatingMode::Running);
        let step = override_mode(
            &mut sandbox,
            Step::Suspend { checkpoint: None },
            "p",
            "idle",
            at(5),
        )
        .expect("a step");
        assert_eq!(step.reason, Reason::PolicySuspended);
        assert_eq!(sandbox.spec.operating_mode, OperatingMode::Running);
        assert_eq!(sandbox.effective_mode(), OperatingMode::Suspended);
        let held = sandbox
            .status
            .as_ref()
            .and_then(|s| s.mode_override.clone())
            .expect("an override");
        assert_eq!(
            (held.by.as_str(), held.spec_mode),
            ("p", OperatingMode::Running)
        );
        // Resuming back to what the spec says leaves nothing to override.
        let step =
            override_mode(&mut sandbox, Step::Resume, GATEWAY, "a request", at(9)).expect("a step");
        assert_eq!(step.reason, Reason::GatewayResumed);
        assert_eq!(
            sandbox
                .status
                .as_ref()
                .and_then(|s| s.mode_override.clone()),
            None
        );
        // A policy may resume what the user suspended; the user's next change ends that.
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        override_mode(&mut sandbox, Step::Resume, "p", "work queued", at(12));
        assert_eq!(sandbox.effective_mode(), OperatingMode::Running);
        // A policy suspends; the user then resumes by their own spec change.
        sandbox.spec.operating_mode = OperatingMode::Running;
        sandbox.status.get_or_insert_default().mode_override = None;
        override_mode(
            &mut sandbox,
            Step::Suspend { checkpoint: None },
            "p",
            "idle",
            at(20),
        );
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        sandbox.spec.operating_mode = OperatingMode::Running;
        assert_eq!(
            sandbox.effective_mode(),
            OperatingMode::Suspended,
            "same spec: still held"
        );
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        assert_eq!(
            sandbox.effective_mode(),
            OperatingMode::Suspended,
            "the spec changed: the override is void and the spec rules"
        );
    }

    /// A policy's say on keeping memory is recorded with the suspend it makes: a later
    /// reconcile of the same suspension reads it there, whatever the policy decides by then.
    #[test]
    fn the_checkpoint_choice_travels_with_the_suspend() {
        let mut running = sandbox(OperatingMode::Running);
        let mut keep_memory = decision(LifecycleAction::Suspend, None);
        keep_memory.checkpoint = Some(true);
        let step = step(&running, &keep_memory).expect("a suspend");
        assert_eq!(
            step,
            Step::Suspend {
                checkpoint: Some(true)
            }
        );
        override_mode(&mut running, step, "p", "idle", at(5));
        let held = running
            .status
            .as_ref()
            .and_then(|s| s.mode_override.as_ref())
            .expect("an override");
        assert_eq!(held.checkpoint, Some(true));
        assert_eq!(
            override_mode(&mut running, Step::Terminate, "p", "done", at(6)),
            None,
            "terminate overrides nothing"
        );
    }
}
