//! A real, local Kubernetes control plane for sandman's tests, benchmarks and demo.
//!
//! It runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as
//! processes on loopback. The binaries are built from the pinned Go module in
//! `tools/testenv` (or taken from `KUBEBUILDER_ASSETS`), so a fresh machine needs nothing but
//! the package registries.
//!
//! - [`ControlPlane`] starts and stops one control plane.
//! - [`harness`] gives every integration-test binary one shared control plane and every test a
//!   fresh namespace.

pub mod apiserver;
mod binaries;
mod bootstrap;
pub mod clients;
mod control_plane;
mod error;
pub mod file_server;
pub mod harness;
pub mod helm;
mod pki;
pub mod policies;
pub mod ports;
mod process;
pub mod real_node;
pub mod registry;
pub mod runsc;
pub mod runtime_image;
pub mod supervisor_image;
pub mod token_server;

pub use binaries::{Binaries, cache_root, fingerprint};
pub use control_plane::{
    ControlPlane, Frozen, Lifetime, Options, ProcessState, RunningState, stop_recorded,
};
pub use error::Error;

/// The Kubernetes release the control plane runs. The k8s-openapi feature flag matches it.
pub const KUBERNETES_VERSION: &str = "v1.36.3";

/// Reads the admin kubeconfig at `path` into a kube [`kube::Client`].
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Kube(format!("read kubeconfig {}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Kube(format!("kubeconfig {}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}
