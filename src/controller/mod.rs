//! The operator's controllers, each in a folder of its own: Sandboxes (`sandbox`: gather, the
//! phase machine, apply), templates, warm pools and claims (`blueprints`), and SandboxPolicies
//! (`policies`), with the plumbing they share beside them (caches, errors, API-call helpers,
//! NetworkPolicies, blueprints of Sandboxes). `startup` starts them; no controller imports
//! another.

pub mod api_call;
pub mod blueprint;
pub mod blueprints;
pub mod caches;
mod error;
mod event_note;
mod hash;
pub mod leader;
pub mod lean;
pub mod lean_meta;
pub mod network;
pub mod policies;
pub mod recorder;
pub mod sandbox;
mod startup;

use std::sync::Arc;
use std::time::Duration;

pub use error::Error;
pub use sandbox::context::Context;
pub use startup::run;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch one namespace only (tests, and tenants that run their own operator).
    pub namespace: Option<String>,
    /// Sandboxes reconciled at once.
    pub concurrency: u16,
    /// The name that Events are reported under.
    pub instance: String,
    /// Load only the SandboxPolicies with these labels (a label selector), so that several
    /// operators can share a cluster without serving each other's policies.
    pub policy_selector: Option<String>,
    /// Where compiled policies are kept across restarts (none: compile on every start).
    pub policy_cache_dir: Option<std::path::PathBuf>,
    /// How long a Sandbox runs before a lifecycle decision may suspend it again.
    pub min_dwell: std::time::Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (none: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Reconcile only while holding this Lease (none: always).
    pub leader_election: Option<leader::Election>,
    /// Limits for policies that set none, and the most a policy may ask for.
    pub policy_limits: crate::policy::limits::PolicyLimitBounds,
    /// Where the `imagePullSecret`s of SandboxPolicies are read.
    pub pull_secrets: policies::fetch::PullSecrets,
    /// How long Sandboxes wait at start for the SandboxPolicies present then to load.
    pub policy_load_grace: Duration,
    /// Refuse pods that use host namespaces, hostPath, privilege, added capabilities or
    /// ServiceAccount tokens unless their isolation policy allows it (`baseline.rs`).
    pub pod_baseline: bool,
    /// The image of the in-Sandbox runtime, for Sandboxes that ask for it.
    pub runtime_image: Option<String>,
    /// The image of the checkpoint supervisor (`sandman` and `runsc`), for Sandboxes that
    /// keep their memory across suspend.
    pub supervisor_image: Option<String>,
    /// Where this operator's counts go, and what `/metrics` serves.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where `sandman gateway` runs: template NetworkPolicies let its pods in.
    pub gateway_namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 32,
            instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "sandman".into()),
            policy_selector: None,
            policy_cache_dir: None,
            min_dwell: std::time::Duration::from_secs(60),
            metrics_listen: None,
            leader_election: None,
            policy_limits: Default::default(),
            pull_secrets: Default::default(),
            policy_load_grace: Duration::from_secs(10),
            pod_baseline: true,
            runtime_image: None,
            supervisor_image: None,
            metrics: Arc::default(),
            gateway_namespace: "default".into(),
        }
    }
}

/// The requeue delay after a failed reconcile.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);
