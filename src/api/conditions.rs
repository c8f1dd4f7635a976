//! Condition types and reasons, and the one rule for updating them: `lastTransitionTime` moves
//! only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const SUSPENDED: &str = "Suspended";
pub const FINISHED: &str = "Finished";

/// Reasons, named after upstream agent-sandbox's where they exist.
pub mod reason {
    pub const DEPENDENCIES_READY: &str = "DependenciesReady";
    pub const DEPENDENCIES_NOT_READY: &str = "DependenciesNotReady";
    pub const SANDBOX_SUSPENDED: &str = "SandboxSuspended";
    pub const SANDBOX_EXPIRED: &str = "SandboxExpired";
    pub const POD_FAILED: &str = "PodFailed";
    pub const POD_SUCCEEDED: &str = "PodSucceeded";
    pub const POD_DELETED: &str = "PodDeleted";
    pub const RESTART_BACKOFF: &str = "RestartBackoff";
    pub const POD_NAME_CONFLICT: &str = "PodNameConflict";
    pub const RECONCILER_ERROR: &str = "ReconcilerError";
    pub const NOT_SUSPENDED: &str = "NotSuspended";
    pub const POD_TERMINATING: &str = "PodTerminating";
    pub const POD_TERMINATED: &str = "PodTerminated";
    pub const NOT_FINISHED: &str = "NotFinished";
}

/// A condition as the reconciler wants it; [`merge`] turns it into a full [`Condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions after applying `desired` to `current`: `lastTransitionTime` is kept unless the
/// status changed, and every condition carries `generation` as `observedGeneration`.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|want| {
            let status = if want.status { "True" } else { "False" }.to_string();
            let previous = current.iter().find(|c| c.type_ == want.type_);
            let last_transition_time = match previous {
                Some(prev) if prev.status == status => prev.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: want.type_.to_string(),
                status,
                reason: want.reason.to_string(),
                message: want.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid time"))
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(
            &[],
            &[Desired::new(READY, false, "A", "a")],
            Some(1),
            &time(10),
        );
        assert_eq!(first[0].last_transition_time, time(10));
        let same = merge(
            &first,
            &[Desired::new(READY, false, "B", "b")],
            Some(2),
            &time(20),
        );
        assert_eq!(same[0].last_transition_time, time(10));
        assert_eq!(same[0].reason, "B");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::new(READY, true, "C", "c")],
            Some(2),
            &time(30),
        );
        assert_eq!(flipped[0].last_transition_time, time(30));
    }
}
