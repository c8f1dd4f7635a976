//! What the cluster benchmarks share: a namespace, the operator and the gateway, in-process
//! against a local control plane.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

/// Creates namespace `name`.
pub async fn namespace(client: &kube::Client, name: &str) {
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))
            .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
}

/// The operator for `namespace`, with no minimum dwell (benchmarks suspend at once).
pub fn spawn_operator(client: &kube::Client, namespace: &str) {
    let client = client.clone();
    let namespace = namespace.to_string();
    tokio::spawn(async move {
        let options = sandman::controller::Options {
            namespace: Some(namespace),
            min_dwell: Duration::ZERO,
            ..sandman::controller::Options::default()
        };
        let _ = sandman::controller::run(client, options, std::future::pending()).await;
    });
}

/// A gateway on a loopback port for `namespace`.
pub async fn gateway(client: &kube::Client, namespace: &str) -> sandman::gateway::Gateway {
    sandman::gateway::start(
        client.clone(),
        sandman::gateway::Options {
            listen: "127.0.0.1:0".parse().expect("address"),
            namespace: Some(namespace.into()),
            ..sandman::gateway::Options::default()
        },
    )
    .await
    .expect("gateway")
}
