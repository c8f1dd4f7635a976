//! Events: the transitions a reconcile announces, counted in the metrics.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::api::Sandbox;
use crate::metrics::Metrics;

/// A transition worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub reason: &'static str,
    pub note: String,
    pub warning: bool,
}

impl Transition {
    pub fn new(reason: &'static str, note: impl Into<String>, warning: bool) -> Self {
        Self {
            reason,
            note: note.into(),
            warning,
        }
    }
}

/// The API server refuses Event notes over 1 KiB, and the Event is then lost without a word.
const EVENT_NOTE_BYTES: usize = 1000;

pub fn event_note(note: &str) -> String {
    crate::text::clip(note.to_string(), EVENT_NOTE_BYTES - 40)
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
        metrics
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
            note: Some(event_note(&t.note)),
            action: t.reason.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = t.reason, "could not publish an Event");
        }
    }
}
