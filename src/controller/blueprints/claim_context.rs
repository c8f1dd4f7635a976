//! What the claim controller and the warm take share: the context each reconcile gets, the
//! error both return, and the Event a claim publishes. Kept apart so that neither imports the other.

use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};

use crate::api::SandboxClaim;
use crate::controller::api_call::ApiCallFailed;
use crate::controller::recorder::Recorder;

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Api(#[from] ApiCallFailed),
    #[error("claim finalizer patch: {0}")]
    Finalizer(String),
}

pub struct ClaimContext {
    pub client: Client,
    pub recorder: Recorder,
}

/// Publishes an Event in the background: the claim's binding does not wait for it.
pub(super) fn publish(
    ctx: &ClaimContext,
    claim: &SandboxClaim,
    reason: &'static str,
    note: String,
) {
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(crate::controller::event_note::event_note(&note)),
        action: reason.into(),
        secondary: None,
    };
    let recorder = ctx.recorder.clone();
    let object = claim.object_ref(&());
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &object).await {
            tracing::warn!(%error, reason, "could not publish an Event");
        }
    });
}
