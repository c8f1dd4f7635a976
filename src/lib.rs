//! sandman: a Kubernetes operator that runs AI agents in Sandboxes.
//!
//! The data path reads straight through: Sandbox → desired children → server-side apply →
//! status. Modules depend downwards only: `cli` → `controller` → `api`.

pub mod activity;
pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod controller;
pub mod distribution;
pub mod gateway;
pub mod http_client;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod runtime_client;
pub mod telemetry;
pub mod text;

/// The one field manager sandman uses for every server-side apply.
pub const FIELD_MANAGER: &str = "sandman";

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
