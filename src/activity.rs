//! Activity: when a Sandbox was last used, from the `sandman.dev/last-activity` annotation
//! (RFC 3339; agents, SDKs and `sandman touch` set it) and from its own starts, so that a
//! freshly resumed Sandbox is not idle from the moment it wakes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{ActivityStatus, OperatingMode, Phase, Sandbox, SandboxStatus};

/// The annotation that records the last activity.
pub const LAST_ACTIVITY: &str = "sandman.dev/last-activity";

/// The annotation in which the gateway (or `sandman touch --wake`) asks for a suspended
/// Sandbox to be resumed. Its value names the suspension it ends ([`wake_token`]), so a
/// request never outlives it: a later suspend, by a user or a policy, is not undone by an old
/// request, and no clock is compared. The gateway writes only annotations; the operator
/// resumes.
pub const WAKE_REQUESTED: &str = "sandman.dev/wake-requested-at";

/// The annotation in which the gateway reports the connections open through it.
pub const OPEN_CONNECTIONS: &str = "sandman.dev/open-connections";

/// How far ahead of the operator's clock an activity time may be and still count: clocks of
/// the agents that write it drift a little, never by years.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// What the annotation says, if it holds a time no later than `now` plus [`CLOCK_SKEW`]. A
/// time further ahead is ignored, not clamped: a tenant who wrote the year 2099 would
/// otherwise never be idle.
pub fn annotated_at(sandbox: &Sandbox, now: Timestamp) -> Option<Timestamp> {
    let latest = now
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(CLOCK_SKEW).ok()?)
        .ok()?;
    sandbox
        .annotations()
        .get(LAST_ACTIVITY)
        .and_then(|text| text.parse::<Timestamp>().ok())
        .filter(|at| *at <= latest)
}

/// The number of the suspension the Sandbox is in, or is entering: the status counts a
/// suspension once the operator has seen it, so a suspend the status does not show yet is the
/// next one.
pub fn suspension_number(sandbox: &Sandbox) -> u64 {
    let status = sandbox.status.as_ref();
    let counted = status.map_or(0, |s| s.suspensions);
    let shown = status
        .and_then(|s| s.phase)
        .is_some_and(Phase::suspended_side);
    if shown { counted } else { counted + 1 }
}

/// The value of [`WAKE_REQUESTED`] that ends the suspension `sandbox` is in.
pub fn wake_token(sandbox: &Sandbox) -> String {
    format!("suspension-{}", suspension_number(sandbox))
}

/// True when someone asked to end this Sandbox's current suspension. Numbers, not times:
/// two suspends within one second once looked alike.
pub fn wake_requested(sandbox: &Sandbox) -> bool {
    sandbox.effective_mode() == OperatingMode::Suspended
        && sandbox
            .annotations()
            .get(WAKE_REQUESTED)
            .is_some_and(|token| *token == wake_token(sandbox))
}

/// When the pod last started for this Sandbox: its last resume, else its creation.
pub fn running_since(sandbox: &Sandbox) -> Option<Timestamp> {
    started(sandbox, sandbox.status.as_ref())
}

fn started(sandbox: &Sandbox, status: Option<&SandboxStatus>) -> Option<Timestamp> {
    status
        .and_then(|s| s.resumed_at.as_ref())
        .or(sandbox.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// The activity facts of `sandbox` as its status says.
pub fn status(sandbox: &Sandbox, now: Timestamp) -> ActivityStatus {
    observe(sandbox, sandbox.status.as_ref(), now)
}

/// The activity facts of `sandbox` with `status` (a status about to be written, say).
pub fn observe(
    sandbox: &Sandbox,
    status: Option<&SandboxStatus>,
    now: Timestamp,
) -> ActivityStatus {
    let last = match (annotated_at(sandbox, now), started(sandbox, status)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let open_connections = sandbox
        .annotations()
        .get(OPEN_CONNECTIONS)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ActivityStatus {
        last_activity_time: last.map(Time),
        open_connections,
        idle_since: last.filter(|_| open_connections == 0).map(Time),
    }
}

/// Seconds idle at `now`: zero while a connection is open or the Sandbox is suspended.
pub fn idle_seconds(sandbox: &Sandbox, now: Timestamp) -> u64 {
    if sandbox.effective_mode() == OperatingMode::Suspended {
        return 0;
    }
    status(sandbox, now)
        .idle_since
        .map_or(0, |since| seconds_between(since.0, now))
}

pub fn seconds_between(earlier: Timestamp, later: Timestamp) -> u64 {
    u64::try_from(later.as_second() - earlier.as_second()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn sandbox(created: i64, annotation: Option<i64>) -> Sandbox {
        let mut sandbox = Sandbox::new("s", Default::default());
        sandbox.metadata.creation_timestamp = Some(Time(at(created)));
        if let Some(a) = annotation {
            sandbox
                .annotations_mut()
                .insert(LAST_ACTIVITY.into(), at(a).to_string());
        }
        sandbox
    }

    #[test]
    fn the_later_of_annotation_and_start_counts() {
        assert_eq!(idle_seconds(&sandbox(0, None), at(100)), 100);
        assert_eq!(idle_seconds(&sandbox(0, Some(90)), at(100)), 10);
        assert_eq!(
            idle_seconds(&sandbox(50, Some(10)), at(100)),
            50,
            "an old annotation does not make a new Sandbox idle"
        );
    }

    #[test]
    fn an_unreadable_annotation_is_ignored() {
        let mut s = sandbox(0, None);
        s.annotations_mut()
            .insert(LAST_ACTIVITY.into(), "yesterday".into());
        assert_eq!(idle_seconds(&s, at(100)), 100);
    }

    #[test]
    fn open_connections_and_suspension_are_not_idle() {
        let mut busy = sandbox(0, None);
        busy.annotations_mut()
            .insert(OPEN_CONNECTIONS.into(), "1".into());
        assert_eq!(idle_seconds(&busy, at(100)), 0);
        let mut suspended = sandbox(0, None);
        suspended.spec.operating_mode = OperatingMode::Suspended;
        assert_eq!(idle_seconds(&suspended, at(100)), 0);
    }

    #[test]
    fn activity_in_the_far_future_is_ignored() {
        let mut sandbox = Sandbox::new("agent", Default::default());
        sandbox.metadata.annotations = Some(
            [(
                LAST_ACTIVITY.to_string(),
                "2099-01-01T00:00:00Z".to_string(),
            )]
            .into(),
        );
        assert_eq!(annotated_at(&sandbox, at(0)), None);
        let near = at(30).to_string();
        sandbox.metadata.annotations = Some([(LAST_ACTIVITY.to_string(), near)].into());
        assert_eq!(
            annotated_at(&sandbox, at(0)),
            Some(at(30)),
            "within the skew"
        );
    }

    #[test]
    fn a_wake_request_ends_only_the_suspension_it_names() {
        let mut sandbox = sandbox(0, None);
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        assert_eq!(
            wake_token(&sandbox),
            "suspension-1",
            "a suspend the status does not show yet is the next one"
        );
        sandbox.status = Some(SandboxStatus {
            phase: Some(Phase::Suspended),
            suspensions: 1,
            ..Default::default()
        });
        assert!(!wake_requested(&sandbox));
        sandbox
            .annotations_mut()
            .insert(WAKE_REQUESTED.into(), "suspension-1".into());
        assert!(wake_requested(&sandbox));
        // Resumed, then suspended again within the same second: the old request stays unmet.
        sandbox.status = Some(SandboxStatus {
            phase: Some(Phase::Running),
            suspensions: 1,
            ..Default::default()
        });
        assert!(!wake_requested(&sandbox), "suspended again since");
        sandbox.spec.operating_mode = OperatingMode::Running;
        assert!(!wake_requested(&sandbox), "nothing to wake");
    }

    #[test]
    fn an_automatic_suspension_is_woken_like_a_spec_one() {
        let mut sandbox = sandbox(0, None);
        sandbox.status = Some(SandboxStatus {
            phase: Some(Phase::Suspended),
            suspensions: 3,
            mode_override: Some(crate::api::ModeOverride {
                mode: OperatingMode::Suspended,
                spec_mode: OperatingMode::Running,
                by: "builtin".into(),
                reason: String::new(),
                since: Time(at(0)),
                checkpoint: None,
            }),
            ..Default::default()
        });
        assert_eq!(sandbox.effective_mode(), OperatingMode::Suspended);
        assert_eq!(idle_seconds(&sandbox, at(100)), 0);
        sandbox
            .annotations_mut()
            .insert(WAKE_REQUESTED.into(), "suspension-3".into());
        assert!(wake_requested(&sandbox));
        // The user's own change of the spec ends the override.
        sandbox.spec.operating_mode = OperatingMode::Suspended;
        sandbox.status.as_mut().expect("status").mode_override = None;
        assert_eq!(sandbox.effective_mode(), OperatingMode::Suspended);
    }
}
