//! The policy input for a Sandbox: the same facts for every policy, plus its own settings.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::types::{
    Activity, ComputeResources, Container, Input, OperatingMode, Pool, PoolActivity, PoolInput,
    Sandbox as SandboxInput,
};
use crate::activity;
use crate::api::{self, Sandbox};

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn resources(list: Option<&BTreeMap<String, Quantity>>) -> ComputeResources {
    let get = |key: &str| list.and_then(|l| l.get(key)).map(|q| q.0.clone());
    ComputeResources {
        cpu: get("cpu"),
        memory: get("memory"),
        ephemeral_storage: get("ephemeral-storage"),
    }
}

/// Builds the input every policy sees for `sandbox` at `now`.
pub fn build(
    sandbox: &Sandbox,
    namespace_labels: &BTreeMap<String, String>,
    now: Timestamp,
    settings: &str,
) -> Input {
    let spec = &sandbox.spec;
    // What the Sandbox is, not only what its spec asks: an automatic suspend counts.
    let mode = sandbox.effective_mode();
    let status = sandbox.status.clone().unwrap_or_default();
    let seconds = |t: Timestamp| t.as_second();
    let created_at = sandbox
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(seconds(now), |t| seconds(t.0));
    let suspended_since = status
        .suspended_at
        .as_ref()
        .filter(|_| mode == api::OperatingMode::Suspended)
        .map(|t| seconds(t.0));
    let running_since = activity::running_since(sandbox).map_or(created_at, seconds);
    let observed = activity::status(sandbox, now);
    let non_negative = |d: i64| u64::try_from(d).unwrap_or(0);
    // What made the Sandbox, from the labels the template, pool and claim controllers set.
    let label = |key: &str| sandbox.labels().get(key).cloned();
    let sandbox_input = SandboxInput {
        name: sandbox.name_any(),
        namespace: sandbox.namespace().unwrap_or_default(),
        uid: sandbox.uid().unwrap_or_default(),
        labels: pairs(sandbox.labels()),
        annotations: pairs(sandbox.annotations()),
        namespace_labels: pairs(namespace_labels),
        containers: spec
            .pod_template
            .spec
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                requests: resources(c.resources.as_ref().and_then(|r| r.requests.as_ref())),
                limits: resources(c.resources.as_ref().and_then(|r| r.limits.as_ref())),
            })
            .collect(),
        isolation_level: spec.isolation.as_ref().and_then(|i| i.level.clone()),
        runtime_class_name: spec.pod_template.spec.runtime_class_name.clone(),
        operating_mode: match mode {
            api::OperatingMode::Running => OperatingMode::Running,
            api::OperatingMode::Suspended => OperatingMode::Suspended,
        },
        phase: format!("{:?}", status.phase.unwrap_or_default()),
        template: label(api::TEMPLATE_LABEL),
        pool: label(api::POOL_LABEL),
        claim: label(api::CLAIM_NAME_LABEL),
    };
    Input {
        sandbox: sandbox_input,
        activity: Activity {
            now: seconds(now),
            created_at,
            last_activity_at: observed.last_activity_time.as_ref().map(|t| seconds(t.0)),
            idle_seconds: activity::idle_seconds(sandbox, now),
            open_connections: observed.open_connections,
            running_seconds: if mode == api::OperatingMode::Running {
                non_negative(seconds(now) - running_since)
            } else {
                0
            },
            suspended_since,
        },
        settings: settings.to_string(),
    }
}

/// A typical input for dry runs, tests and benchmarks: one Running Sandbox `team/agent` with one
/// container, created at `now`, with the given labels and settings.
pub fn sample(labels: &[(&str, &str)], namespace_labels: &[(&str, &str)], settings: &str) -> Input {
    let owned = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let unset = ComputeResources {
        cpu: None,
        memory: None,
        ephemeral_storage: None,
    };
    let now = 1_800_000_000;
    Input {
        sandbox: SandboxInput {
            name: "agent".into(),
            namespace: "team".into(),
            uid: "00000000-0000-0000-0000-000000000001".into(),
            labels: owned(labels),
            annotations: Vec::new(),
            namespace_labels: owned(namespace_labels),
            containers: vec![Container {
                name: "agent".into(),
                image: "registry.example/agent:1".into(),
                requests: unset.clone(),
                limits: unset,
            }],
            isolation_level: None,
            runtime_class_name: None,
            operating_mode: OperatingMode::Running,
            phase: "Pending".into(),
            template: None,
            pool: None,
            claim: None,
        },
        activity: Activity {
            now,
            created_at: now,
            last_activity_at: None,
            idle_seconds: 0,
            open_connections: 0,
            running_seconds: 0,
            suspended_since: None,
        },
        settings: settings.to_string(),
    }
}

/// Activity stated directly rather than observed: for `sandman policy eval` and test suites.
#[derive(serde::Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivityFacts {
    /// RFC 3339; defaults to the caller's notion of now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_seconds: Option<u64>,
    /// How long a Suspended Sandbox has been suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_seconds: Option<u64>,
}

impl ActivityFacts {
    /// The `now` these facts name, or `default`.
    pub fn now_or(&self, default: Timestamp) -> Result<Timestamp, String> {
        match &self.now {
            Some(text) => text
                .parse()
                .map_err(|e| format!("activity.now {text:?} is not RFC 3339: {e}")),
            None => Ok(default),
        }
    }

    /// Overrides the observed activity in `input` with the facts given.
    pub fn apply(&self, input: &mut Input) {
        let activity = &mut input.activity;
        let ago = |seconds: u64| activity.now - i64::try_from(seconds).unwrap_or(i64::MAX);
        if let Some(idle) = self.idle_seconds {
            activity.idle_seconds = idle;
            activity.last_activity_at = Some(ago(idle));
        }
        if let Some(open) = self.open_connections {
            activity.open_connections = open;
        }
        if let Some(running) = self.running_seconds {
            activity.running_seconds = running;
        }
        if let Some(suspended) = self.suspended_seconds {
            activity.suspended_since = Some(ago(suspended));
        }
    }
}

/// A typical pool input for tests and benchmarks: pool `team/warm` of template `python`, asking
/// for one member, with one ready member and no claims.
pub fn sample_pool(labels: &[(&str, &str)], settings: &str) -> PoolInput {
    PoolInput {
        pool: Pool {
            name: "warm".into(),
            namespace: "team".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            namespace_labels: Vec::new(),
            template: "python".into(),
            replicas: 1,
        },
        activity: PoolActivity {
            now: 1_800_000_000,
            members: 1,
            ready_members: 1,
            claims: Vec::new(),
        },
        settings: settings.to_string(),
    }
}
