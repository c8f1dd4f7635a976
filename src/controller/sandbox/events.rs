//! A Sandbox's Events: the transitions a reconcile announces, by typed reason, counted in
//! the metrics.

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::status::ReadyReason;
use crate::api::Sandbox;
use crate::controller::event_note::event_note;
use crate::controller::recorder::Recorder;
use crate::metrics::Metrics;

/// Why a Sandbox's Event went out: its `reason`, and the label of its count in the metrics.
/// Code that looks for a transition compares these, never the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ready,
    Resuming,
    Suspending,
    Suspended,
    Checkpointing,
    Checkpointed,
    CheckpointFailed,
    Restored,
    RestoreFailed,
    Expired,
    PodRestarted,
    PolicyAudit,
    PolicyTerminated,
    /// `spec.lifecycle.idleTimeout` suspended the Sandbox.
    IdleSuspended,
    PolicySuspended,
    /// A request through the gateway woke the Sandbox.
    GatewayResumed,
    PolicyResumed,
    /// The Ready condition changed to this reason, and the change is worth an Event.
    Condition(ReadyReason),
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Resuming => "Resuming",
            Self::Suspending => "Suspending",
            Self::Suspended => "Suspended",
            Self::Checkpointing => "Checkpointing",
            Self::Checkpointed => "Checkpointed",
            Self::CheckpointFailed => "CheckpointFailed",
            Self::Restored => "Restored",
            Self::RestoreFailed => "RestoreFailed",
            Self::Expired => "Expired",
            Self::PodRestarted => "PodRestarted",
            Self::PolicyAudit => "PolicyAudit",
            Self::PolicyTerminated => "PolicyTerminated",
            Self::IdleSuspended => "IdleSuspended",
            Self::PolicySuspended => "PolicySuspended",
            Self::GatewayResumed => "GatewayResumed",
            Self::PolicyResumed => "PolicyResumed",
            Self::Condition(ready) => ready.as_str(),
        }
    }
}

/// A transition worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub reason: Reason,
    pub note: String,
    pub warning: bool,
}

impl Transition {
    pub fn new(reason: Reason, note: impl Into<String>, warning: bool) -> Self {
        Self {
            reason,
            note: note.into(),
            warning,
        }
    }
}

/// Publishes each transition as an Event on `sandbox`; a lost Event is logged, never fatal.
pub async fn publish(
    recorder: &Recorder,
    metrics: &Metrics,
    sandbox: &Sandbox,
    transitions: &[Transition],
) {
    let reference = sandbox.object_ref(&());
    for t in transitions {
        let reason = t.reason.as_str();
        metrics
            .transitions
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: reason.into(),
            })
            .inc();
        let event = Event {
            type_: if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(event_note(&t.note)),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }
}
