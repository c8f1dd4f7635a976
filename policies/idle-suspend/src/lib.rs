//! Lifecycle policy: suspend a running Sandbox after `idleSeconds` without activity (never while
//! a connection is open), and terminate one suspended for longer than `terminateAfterSeconds`.
//!
//! Settings: `{"idleSeconds": 1800, "terminateAfterSeconds": 604800, "checkpoint": true}` (the
//! last two are optional). With `checkpoint`, a suspend keeps the agent's memory too (the
//! decision's `checkpoint`, contract 0.3.0); without it, the Sandbox's spec decides.

use sandman_policy_sdk::types::{Input, LifecycleAction, LifecycleDecision, OperatingMode};
use sandman_policy_sdk::{Policy, export_policy, parse_settings};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    idle_seconds: u64,
    terminate_after_seconds: Option<u64>,
    checkpoint: Option<bool>,
}

struct IdleSuspend;

impl Policy for IdleSuspend {
    fn validate_settings(settings: &str) -> Result<(), String> {
        let settings: Settings = parse_settings(settings)?;
        if settings.idle_seconds == 0 {
            return Err("idleSeconds must be positive".into());
        }
        Ok(())
    }

    fn lifecycle(input: Input) -> Result<Option<LifecycleDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        let activity = &input.activity;
        let decision = |action, reason: String, requeue| {
            Ok(Some(LifecycleDecision {
                action,
                reason,
                requeue_after_seconds: requeue,
                checkpoint: matches!(action, LifecycleAction::Suspend)
                    .then_some(settings.checkpoint)
                    .flatten(),
            }))
        };
        match input.sandbox.operating_mode {
            OperatingMode::Suspended => {
                let (Some(limit), Some(since)) =
                    (settings.terminate_after_seconds, activity.suspended_since)
                else {
                    return Ok(None);
                };
                let suspended_for = u64::try_from(activity.now.saturating_sub(since)).unwrap_or(0);
                if suspended_for >= limit {
                    return decision(
                        LifecycleAction::Terminate,
                        format!("suspended for {suspended_for}s (limit {limit}s)"),
                        None,
                    );
                }
                decision(
                    LifecycleAction::Keep,
                    format!("suspended for {suspended_for}s"),
                    Some(limit - suspended_for),
                )
            }
            OperatingMode::Running => {
                if activity.open_connections > 0 {
                    return decision(
                        LifecycleAction::Keep,
                        format!("{} open connections", activity.open_connections),
                        Some(settings.idle_seconds),
                    );
                }
                if activity.idle_seconds >= settings.idle_seconds {
                    return decision(
                        LifecycleAction::Suspend,
                        format!(
                            "idle for {}s (limit {}s)",
                            activity.idle_seconds, settings.idle_seconds
                        ),
                        None,
                    );
                }
                decision(
                    LifecycleAction::Keep,
                    format!("idle for {}s", activity.idle_seconds),
                    Some(settings.idle_seconds - activity.idle_seconds),
                )
            }
        }
    }
}

export_policy!(IdleSuspend, [lifecycle]);

#[cfg(test)]
mod tests {
    use super::*;
    use sandman_policy_sdk::testing::InputBuilder;
    use sandman_policy_sdk::types::LifecycleAction;

    const SETTINGS: &str = r#"{"idleSeconds": 1800, "terminateAfterSeconds": 604800}"#;

    fn action(input: Input) -> Option<LifecycleAction> {
        IdleSuspend::lifecycle(input)
            .expect("decides")
            .map(|d| d.action)
    }

    #[test]
    fn idle_past_the_limit_suspends_unless_a_connection_is_open() {
        let idle = || InputBuilder::new().settings(SETTINGS).idle(3600);
        assert_eq!(action(idle().build()), Some(LifecycleAction::Suspend));
        assert_eq!(
            action(idle().open_connections(1).build()),
            Some(LifecycleAction::Keep)
        );
    }

    #[test]
    fn a_week_suspended_terminates() {
        let input = InputBuilder::new()
            .settings(SETTINGS)
            .suspended(700_000)
            .build();
        assert_eq!(action(input), Some(LifecycleAction::Terminate));
    }

    #[test]
    fn zero_idle_seconds_is_refused() {
        assert!(IdleSuspend::validate_settings(r#"{"idleSeconds": 0}"#).is_err());
    }
}
