//! What a lifecycle policy's decision asks of a Sandbox: suspend it, resume it, or terminate
//! it, through the same paths a user's change takes (`spec.operatingMode`, deletion), each
//! announced by an Event that names the policy.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::Error;
use super::reconcile::{Context, publish};
use crate::api::{OperatingMode, Sandbox};
use crate::controller::lifecycle::Transition;
use crate::policy::types::{LifecycleAction, LifecycleDecision};

/// A change the lifecycle decision asks for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Suspend,
    Resume,
    Terminate,
}

/// What to do about `decision` for `sandbox` as it is now: nothing when it already is what the
/// policy wants.
pub fn step(sandbox: &Sandbox, decision: &LifecycleDecision) -> Option<Step> {
    let mode = sandbox.spec.operating_mode;
    match decision.action {
        LifecycleAction::Keep => None,
        LifecycleAction::Suspend => (mode == OperatingMode::Running).then_some(Step::Suspend),
        LifecycleAction::Resume => (mode == OperatingMode::Suspended).then_some(Step::Resume),
        LifecycleAction::Terminate => Some(Step::Terminate),
    }
}

/// When to ask the lifecycle policy again: when it said, else at the resync bound.
pub fn requeue_after(decision: Option<&LifecycleDecision>, resync: Duration) -> Duration {
    decision
        .and_then(|d| d.requeue_after_seconds)
        .map_or(resync, |s| Duration::from_secs(s.max(1)).min(resync))
}

/// Carries out a step. The Sandbox's next reconcile (its own watch event) does the rest.
pub async fn carry_out(
    ctx: &Context,
    sandbox: &Sandbox,
    policy: &str,
    decision: &LifecycleDecision,
    step: Step,
) -> Result<Action, Error> {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
    let note = format!("policy {policy}: {}", decision.reason);
    let mode = |mode: &str| serde_json::json!({ "spec": { "operatingMode": mode } });
    let params = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let (reason, result) = match step {
        Step::Suspend => (
            "PolicySuspended",
            api.patch(&name, &params, &Patch::Merge(mode("Suspended")))
                .await
                .map(|_| ()),
        ),
        Step::Resume => (
            "PolicyResumed",
            api.patch(&name, &params, &Patch::Merge(mode("Running")))
                .await
                .map(|_| ()),
        ),
        Step::Terminate => (
            "PolicyTerminated",
            api.delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
        ),
    };
    result.map_err(Error::child("lifecycle", "Sandbox", &name))?;
    tracing::info!(policy, reason, decision = %decision.reason, "lifecycle policy acted");
    publish(
        ctx,
        sandbox,
        &[Transition {
            reason,
            note,
            warning: false,
        }],
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(action: LifecycleAction, requeue: Option<u64>) -> LifecycleDecision {
        LifecycleDecision {
            action,
            reason: "test".into(),
            requeue_after_seconds: requeue,
        }
    }

    fn sandbox(mode: OperatingMode) -> Sandbox {
        let mut sandbox = Sandbox::new("s", Default::default());
        sandbox.spec.operating_mode = mode;
        sandbox
    }

    #[test]
    fn steps_only_change_what_differs() {
        let running = sandbox(OperatingMode::Running);
        let suspended = sandbox(OperatingMode::Suspended);
        let suspend = decision(LifecycleAction::Suspend, None);
        let resume = decision(LifecycleAction::Resume, None);
        assert_eq!(step(&running, &suspend), Some(Step::Suspend));
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
    fn requeue_follows_the_policy_within_the_resync_bound() {
        let resync = Duration::from_secs(300);
        assert_eq!(requeue_after(None, resync), resync);
        let soon = decision(LifecycleAction::Keep, Some(30));
        assert_eq!(requeue_after(Some(&soon), resync), Duration::from_secs(30));
        let late = decision(LifecycleAction::Keep, Some(86_400));
        assert_eq!(requeue_after(Some(&late), resync), resync);
    }
}
