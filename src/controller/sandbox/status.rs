//! How a plan composes the Sandbox's status: the typed Ready reason, the three conditions
//! written together, and the pod facts.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{self, Desired, FINISHED, READY, SUSPENDED, reason};
use crate::api::{Sandbox, SandboxStatus};

/// Why the Sandbox is, or is not, Ready. One variant per reason the phase machine writes;
/// the status holds its [`as_str`](ReadyReason::as_str), and [`ReadyReason::parse`] reads
/// it back, so a state is never rebuilt from a string comparison elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyReason {
    DependenciesReady,
    DependenciesNotReady,
    SandboxSuspended,
    SandboxExpired,
    PodFailed,
    PodSucceeded,
    PodDeleted,
    RestartBackoff,
    PodNameConflict,
    /// The pod template changed under `updateStrategy: Recreate`; the pod is being replaced.
    PodTemplateChanged,
    /// The API server refused to create the pod (a missing ServiceAccount, Pod Security
    /// Admission, a quota): its words are in the Ready message.
    PodRejected,
    /// A Service or PVC of the name this Sandbox needs exists and was not made by sandman
    /// for it.
    ChildConflict,
    /// A `failurePolicy: Fail` policy could not decide, so the pod is held.
    PolicyFailed,
    /// The pod would use a privilege the pod baseline refuses, and no isolation policy
    /// allows it.
    PodBaselineRefused,
    /// The Sandbox asks for the in-Sandbox runtime, which it cannot have as it is.
    RuntimeUnavailable,
    /// The Sandbox keeps its memory across suspend, and its pod cannot have the checkpoint
    /// supervisor as it is.
    SupervisorUnavailable,
}

impl ReadyReason {
    const ALL: [ReadyReason; 16] = [
        Self::DependenciesReady,
        Self::DependenciesNotReady,
        Self::SandboxSuspended,
        Self::SandboxExpired,
        Self::PodFailed,
        Self::PodSucceeded,
        Self::PodDeleted,
        Self::RestartBackoff,
        Self::PodNameConflict,
        Self::PodTemplateChanged,
        Self::PodRejected,
        Self::ChildConflict,
        Self::PolicyFailed,
        Self::PodBaselineRefused,
        Self::RuntimeUnavailable,
        Self::SupervisorUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DependenciesReady => reason::DEPENDENCIES_READY,
            Self::DependenciesNotReady => reason::DEPENDENCIES_NOT_READY,
            Self::SandboxSuspended => reason::SANDBOX_SUSPENDED,
            Self::SandboxExpired => reason::SANDBOX_EXPIRED,
            Self::PodFailed => reason::POD_FAILED,
            Self::PodSucceeded => reason::POD_SUCCEEDED,
            Self::PodDeleted => reason::POD_DELETED,
            Self::RestartBackoff => reason::RESTART_BACKOFF,
            Self::PodNameConflict => reason::POD_NAME_CONFLICT,
            Self::PodTemplateChanged => "PodTemplateChanged",
            Self::PodRejected => "PodRejected",
            Self::ChildConflict => "ChildConflict",
            Self::PolicyFailed => "PolicyFailed",
            Self::PodBaselineRefused => "PodBaselineRefused",
            Self::RuntimeUnavailable => "RuntimeUnavailable",
            Self::SupervisorUnavailable => "SupervisorUnavailable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The pod is gone because sandman removed it and makes it again now: the next create
    /// counts no further restart.
    pub fn recreate_pending(self) -> bool {
        matches!(
            self,
            Self::PodFailed | Self::PodDeleted | Self::PodTemplateChanged
        )
    }
}

/// The Ready condition's reason and message as the status shows them.
pub fn ready_of(status: &SandboxStatus) -> Option<(Option<ReadyReason>, &str)> {
    conditions::find(&status.conditions, READY)
        .map(|c| (ReadyReason::parse(&c.reason), c.message.as_str()))
}

/// The Ready reason the status shows, if it is one of ours.
pub fn ready_reason(status: &SandboxStatus) -> Option<ReadyReason> {
    ready_of(status).and_then(|(reason, _)| reason)
}

/// Sets `Ready` as given, for a Sandbox that is neither suspended nor finished.
pub fn set_ready(
    status: &mut SandboxStatus,
    generation: Option<i64>,
    now: Timestamp,
    ready: ReadyReason,
    is_ready: bool,
    message: impl Into<String>,
) {
    set_generation_conditions(
        status,
        generation,
        now,
        [
            Desired::new(READY, is_ready, ready.as_str(), message),
            not_suspended(),
            not_finished(),
        ],
    );
}

/// Sets `Ready` false for `ready`, and `Suspended` as given: the suspend is under way or done.
pub fn set_suspended(
    status: &mut SandboxStatus,
    sandbox: &Sandbox,
    now: Timestamp,
    done: bool,
    message: &str,
) {
    let (suspended_reason, suspended_message) = if done {
        (reason::POD_TERMINATED, message)
    } else {
        (reason::POD_TERMINATING, "the pod is terminating")
    };
    set_conditions(
        status,
        sandbox,
        now,
        [
            Desired::new(
                READY,
                false,
                ReadyReason::SandboxSuspended.as_str(),
                if done {
                    "the Sandbox is suspended"
                } else {
                    "the Sandbox is suspending"
                },
            ),
            Desired::new(SUSPENDED, done, suspended_reason, suspended_message),
            not_finished(),
        ],
    );
}

/// Ready false, not suspended, finished: `shutdownTime` has passed.
pub fn set_expired(status: &mut SandboxStatus, sandbox: &Sandbox, now: Timestamp) {
    let expired = ReadyReason::SandboxExpired.as_str();
    set_conditions(
        status,
        sandbox,
        now,
        [
            Desired::new(READY, false, expired, "shutdownTime has passed"),
            Desired::new(
                SUSPENDED,
                false,
                reason::NOT_SUSPENDED,
                "the Sandbox has expired",
            ),
            Desired::new(FINISHED, true, expired, "shutdownTime has passed"),
        ],
    );
}

/// Node, IPs and runtime of a Ready pod. Published once the pod is Ready: they settle one by
/// one while it starts, and each would otherwise cost a status write.
pub fn record_pod_facts(status: &mut SandboxStatus, pod: &Pod) {
    status.pod_ips = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
        .unwrap_or_default();
    status.node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    status.runtime_class_name = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone());
}

pub fn clear_pod_facts(status: &mut SandboxStatus) {
    status.pod_ips.clear();
    status.node_name = None;
}

/// Pins Ready's `lastTransitionTime` to `since`: merge keeps it only on a flip, and a
/// refusal that lasts must keep its start.
pub fn pin_ready_since(status: &mut SandboxStatus, since: Timestamp) {
    if let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == READY) {
        ready.last_transition_time = Time(since);
    }
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
    set_generation_conditions(status, sandbox.metadata.generation, now, desired);
}

fn set_generation_conditions<const N: usize>(
    status: &mut SandboxStatus,
    generation: Option<i64>,
    now: Timestamp,
    desired: [Desired; N],
) {
    status.conditions = conditions::merge(&status.conditions, &desired, generation, &Time(now));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for reason in ReadyReason::ALL {
            assert_eq!(ReadyReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(ReadyReason::parse("SomethingElse"), None);
    }
}
