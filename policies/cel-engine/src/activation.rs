//! The names expressions see, built from a hook's input: `sandbox`, `activity`, `settings`,
//! `namespaceLabels` and `now`, in camelCase like the WIT record they come from.

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value;
use chrono::DateTime;
use sandman_policy_sdk::types::{ComputeResources, Input, OperatingMode};

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn optional(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, string)
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::from(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<String, Value>>(),
    )
}

fn pairs(pairs: &[(String, String)]) -> Value {
    Value::from(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), string(v)))
            .collect::<HashMap<String, Value>>(),
    )
}

fn timestamp(seconds: i64) -> Value {
    DateTime::from_timestamp(seconds, 0)
        .map(|t| Value::Timestamp(t.fixed_offset()))
        .unwrap_or(Value::Null)
}

fn resources(r: &ComputeResources) -> Value {
    map([
        ("cpu", optional(&r.cpu)),
        ("memory", optional(&r.memory)),
        ("ephemeralStorage", optional(&r.ephemeral_storage)),
    ])
}

fn uint(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

pub struct Activation {
    pub sandbox: Value,
    pub activity: Value,
    pub namespace_labels: Value,
    pub now: Value,
}

pub fn build(input: &Input) -> Activation {
    let s = &input.sandbox;
    let a = &input.activity;
    let containers = s
        .containers
        .iter()
        .map(|c| {
            map([
                ("name", string(&c.name)),
                ("image", string(&c.image)),
                ("requests", resources(&c.requests)),
                ("limits", resources(&c.limits)),
            ])
        })
        .collect::<Vec<_>>();
    let namespace_labels = pairs(&s.namespace_labels);
    let sandbox = map([
        ("name", string(&s.name)),
        ("namespace", string(&s.namespace)),
        ("uid", string(&s.uid)),
        ("labels", pairs(&s.labels)),
        ("annotations", pairs(&s.annotations)),
        ("namespaceLabels", namespace_labels.clone()),
        ("containers", Value::List(Arc::new(containers))),
        ("isolationLevel", optional(&s.isolation_level)),
        ("runtimeClassName", optional(&s.runtime_class_name)),
        (
            "operatingMode",
            string(match s.operating_mode {
                OperatingMode::Running => "Running",
                OperatingMode::Suspended => "Suspended",
            }),
        ),
        ("phase", string(&s.phase)),
    ]);
    let suspended_seconds = a
        .suspended_since
        .map_or(0, |since| u64::try_from(a.now - since).unwrap_or(0));
    let activity = map([
        ("now", timestamp(a.now)),
        ("createdAt", timestamp(a.created_at)),
        ("lastActivityAt", a.last_activity_at.map_or(Value::Null, timestamp)),
        ("idleSeconds", uint(a.idle_seconds)),
        ("openConnections", Value::Int(i64::from(a.open_connections))),
        ("runningSeconds", uint(a.running_seconds)),
        ("suspendedSince", a.suspended_since.map_or(Value::Null, timestamp)),
        ("suspendedSeconds", uint(suspended_seconds)),
    ]);
    Activation {
        sandbox,
        activity,
        namespace_labels,
        now: timestamp(a.now),
    }
}
