//! Pool policy: size a warm pool by how fast its template is being claimed. The pool keeps
//! `min` members, plus `perClaim` for every claim of the last `windowSeconds`, up to `max`; as
//! claims age out of the window it shrinks back, and the policy asks to be called again then.
//!
//! Settings: `{"min": 1, "max": 10, "perClaim": 1, "windowSeconds": 600}` (the last two are
//! optional).

use sandman_policy_sdk::types::{PoolDecision, PoolInput};
use sandman_policy_sdk::{Policy, export_policy, parse_settings};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    min: u32,
    max: u32,
    #[serde(default = "one")]
    per_claim: u32,
    #[serde(default = "ten_minutes")]
    window_seconds: u64,
}

fn one() -> u32 {
    1
}

fn ten_minutes() -> u64 {
    600
}

struct PoolByClaimRate;

impl Policy for PoolByClaimRate {
    fn validate_settings(settings: &str) -> Result<(), String> {
        let settings: Settings = parse_settings(settings)?;
        if settings.min > settings.max {
            return Err(format!(
                "min ({}) must not be more than max ({})",
                settings.min, settings.max
            ));
        }
        if settings.window_seconds == 0 {
            return Err("windowSeconds must be positive".into());
        }
        Ok(())
    }

    fn pool(input: PoolInput) -> Result<Option<PoolDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        let now = input.activity.now;
        let window = i64::try_from(settings.window_seconds).unwrap_or(i64::MAX);
        let recent: Vec<i64> = input
            .activity
            .claims
            .iter()
            .copied()
            .filter(|&at| now.saturating_sub(at) < window)
            .collect();
        let count = u32::try_from(recent.len()).unwrap_or(u32::MAX);
        let replicas = settings
            .min
            .saturating_add(settings.per_claim.saturating_mul(count))
            .min(settings.max);
        // The oldest recent claim leaves the window first: the size may drop then.
        let requeue = recent.iter().min().map(|oldest| {
            u64::try_from(oldest.saturating_add(window) - now)
                .unwrap_or(1)
                .max(1)
        });
        Ok(Some(PoolDecision {
            replicas,
            reason: format!(
                "{count} claims in the last {}s: {} + {} each, at most {}",
                settings.window_seconds, settings.min, settings.per_claim, settings.max
            ),
            requeue_after_seconds: requeue,
        }))
    }
}

export_policy!(PoolByClaimRate, [pool]);
