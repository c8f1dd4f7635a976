//! Conversions between the WIT decision types and their JSON form (`sandman-policy-wire`).

pub use sandman_policy_wire::*;

use super::types;

sandman_policy_wire::wit_conversions!(types);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decisions_round_trip_through_the_wit_types() {
        let isolation: IsolationDecision = serde_json::from_value(json!({
            "runtimeClassName": "gvisor",
            "security": { "runAsNonRoot": true, "hostUsers": false },
            "nodeSelector": { "pool": "sandboxes" },
            "tolerations": [{ "key": "sandbox", "operator": "Exists", "effect": "NoSchedule" }],
            "reason": "untrusted",
        }))
        .expect("isolation");
        let wit: types::IsolationDecision = isolation.clone().into();
        assert_eq!(IsolationDecision::from(wit), isolation);

        let lifecycle: LifecycleDecision = serde_json::from_value(
            json!({ "action": "suspend", "reason": "idle", "requeueAfterSeconds": 60 }),
        )
        .expect("lifecycle");
        let wit: types::LifecycleDecision = lifecycle.clone().into();
        assert_eq!(wit.action, types::LifecycleAction::Suspend);
        assert_eq!(LifecycleDecision::from(wit), lifecycle);
    }
}
