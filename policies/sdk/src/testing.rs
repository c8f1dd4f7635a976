//! Run a policy natively, in plain `cargo test`, without building a component: build an
//! [`Input`] and call the [`Policy`](crate::Policy) methods directly.
//!
//! ```ignore
//! use sandman_policy_sdk::testing::InputBuilder;
//! let input = InputBuilder::new().label("sandman.dev/trust", "untrusted").build();
//! let decision = <MyPolicy as Policy>::isolation(input).unwrap();
//! ```

use crate::types::{Activity, ComputeResources, Container, Input, OperatingMode, Sandbox};

/// The instant inputs are built at, unless [`InputBuilder::now`] says otherwise.
pub const DEFAULT_NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// An [`Input`] with the defaults the host would send for a fresh, Running Sandbox
/// `default/agent` with one container.
pub struct InputBuilder {
    input: Input,
}

impl Default for InputBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl InputBuilder {
    pub fn new() -> Self {
        let unset = ComputeResources {
            cpu: None,
            memory: None,
            ephemeral_storage: None,
        };
        Self {
            input: Input {
                sandbox: Sandbox {
                    name: "agent".into(),
                    namespace: "default".into(),
                    uid: "00000000-0000-0000-0000-000000000001".into(),
                    labels: Vec::new(),
                    annotations: Vec::new(),
                    namespace_labels: Vec::new(),
                    containers: vec![Container {
                        name: "agent".into(),
                        image: "agent".into(),
                        requests: unset.clone(),
                        limits: unset,
                    }],
                    isolation_level: None,
                    runtime_class_name: None,
                    operating_mode: OperatingMode::Running,
                    phase: "Running".into(),
                    template: None,
                    pool: None,
                    claim: None,
                },
                activity: Activity {
                    now: DEFAULT_NOW,
                    created_at: DEFAULT_NOW,
                    last_activity_at: None,
                    idle_seconds: 0,
                    open_connections: 0,
                    running_seconds: 0,
                    suspended_since: None,
                },
                settings: "{}".into(),
            },
        }
    }

    pub fn name(mut self, namespace: &str, name: &str) -> Self {
        self.input.sandbox.namespace = namespace.into();
        self.input.sandbox.name = name.into();
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.input.sandbox.labels.push((key.into(), value.into()));
        self
    }

    pub fn namespace_label(mut self, key: &str, value: &str) -> Self {
        self.input
            .sandbox
            .namespace_labels
            .push((key.into(), value.into()));
        self
    }

    /// The policy's settings, as the JSON text the host passes.
    pub fn settings(mut self, json: &str) -> Self {
        self.input.settings = json.into();
        self
    }

    pub fn now(mut self, now: i64) -> Self {
        self.input.activity.now = now;
        self
    }

    /// Running, last active `seconds` ago.
    pub fn idle(mut self, seconds: u64) -> Self {
        let activity = &mut self.input.activity;
        activity.idle_seconds = seconds;
        activity.last_activity_at = Some(activity.now - seconds as i64);
        self
    }

    pub fn open_connections(mut self, open: u32) -> Self {
        self.input.activity.open_connections = open;
        self
    }

    /// Suspended for `seconds`.
    pub fn suspended(mut self, seconds: u64) -> Self {
        self.input.sandbox.operating_mode = OperatingMode::Suspended;
        self.input.sandbox.phase = "Suspended".into();
        self.input.activity.suspended_since = Some(self.input.activity.now - seconds as i64);
        self
    }

    pub fn build(self) -> Input {
        self.input
    }
}
