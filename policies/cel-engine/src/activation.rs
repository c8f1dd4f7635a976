//! The names expressions see, built from a hook's input: `sandbox`, `activity`, `settings`,
//! `namespaceLabels` and `now`, in camelCase like the WIT record they come from.

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value;
use chrono::DateTime;
use sandman_policy_sdk::types::{ComputeResources, Input, OperatingMode};

use crate::compile::Needs;

/// Indices into [`crate::compile::ROOTS`]; the field lists there follow the order below.
pub const SANDBOX: usize = 0;
pub const ACTIVITY: usize = 1;
pub const NAMESPACE_LABELS: usize = 2;
pub const NOW: usize = 3;

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn optional(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, string)
}

/// A map of the entries `wanted` keeps (by position); each value is built only when kept.
fn map<const N: usize>(
    wanted: impl Fn(usize) -> bool,
    entries: [(&str, &dyn Fn() -> Value); N],
) -> Value {
    Value::from(
        entries
            .into_iter()
            .enumerate()
            .filter(|(i, _)| wanted(*i))
            .map(|(_, (k, v))| (k.to_string(), v()))
            .collect::<HashMap<String, Value>>(),
    )
}

fn all(_: usize) -> bool {
    true
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
    map(
        all,
        [
            ("cpu", &|| optional(&r.cpu)),
            ("memory", &|| optional(&r.memory)),
            ("ephemeralStorage", &|| optional(&r.ephemeral_storage)),
        ],
    )
}

fn uint(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The inputs the expressions use, built from `input`; what they do not use is `None`.
pub struct Activation {
    pub sandbox: Option<Value>,
    pub activity: Option<Value>,
    pub namespace_labels: Option<Value>,
    pub now: Option<Value>,
}

pub fn build(input: &Input, needs: &Needs) -> Activation {
    let s = &input.sandbox;
    let a = &input.activity;
    let containers = || {
        Value::List(Arc::new(
            s.containers
                .iter()
                .map(|c| {
                    map(
                        all,
                        [
                            ("name", &|| string(&c.name)),
                            ("image", &|| string(&c.image)),
                            ("requests", &|| resources(&c.requests)),
                            ("limits", &|| resources(&c.limits)),
                        ],
                    )
                })
                .collect(),
        ))
    };
    let sandbox = needs.uses(SANDBOX).then(|| {
        map(
            |field| needs.field(SANDBOX, field),
            [
                ("name", &|| string(&s.name)),
                ("namespace", &|| string(&s.namespace)),
                ("uid", &|| string(&s.uid)),
                ("labels", &|| pairs(&s.labels)),
                ("annotations", &|| pairs(&s.annotations)),
                ("namespaceLabels", &|| pairs(&s.namespace_labels)),
                ("containers", &containers),
                ("isolationLevel", &|| optional(&s.isolation_level)),
                ("runtimeClassName", &|| optional(&s.runtime_class_name)),
                ("operatingMode", &|| {
                    string(match s.operating_mode {
                        OperatingMode::Running => "Running",
                        OperatingMode::Suspended => "Suspended",
                    })
                }),
                ("phase", &|| string(&s.phase)),
                ("template", &|| optional(&s.template)),
                ("pool", &|| optional(&s.pool)),
                ("claim", &|| optional(&s.claim)),
            ],
        )
    });
    let suspended_seconds = a
        .suspended_since
        .map_or(0, |since| u64::try_from(a.now - since).unwrap_or(0));
    let activity = needs.uses(ACTIVITY).then(|| {
        map(
            |field| needs.field(ACTIVITY, field),
            [
                ("now", &|| timestamp(a.now)),
                ("createdAt", &|| timestamp(a.created_at)),
                ("lastActivityAt", &|| {
                    a.last_activity_at.map_or(Value::Null, timestamp)
                }),
                ("idleSeconds", &|| uint(a.idle_seconds)),
                ("openConnections", &|| {
                    Value::Int(i64::from(a.open_connections))
                }),
                ("runningSeconds", &|| uint(a.running_seconds)),
                ("suspendedSince", &|| {
                    a.suspended_since.map_or(Value::Null, timestamp)
                }),
                ("suspendedSeconds", &|| uint(suspended_seconds)),
            ],
        )
    });
    Activation {
        sandbox,
        activity,
        namespace_labels: needs
            .uses(NAMESPACE_LABELS)
            .then(|| pairs(&s.namespace_labels)),
        now: needs.uses(NOW).then(|| timestamp(a.now)),
    }
}
