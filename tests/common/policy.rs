//! SandboxPolicies from this repository's components: published in a ConfigMap of the test's
//! namespace, installed for that namespace only, and waited on until they load.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use sandman::api::SandboxPolicy;
use sandman_testenv::harness::TestContext;
use sandman_testenv::policies::policy_wasm;
use sha2::{Digest, Sha256};

use super::wait_ready_reason;

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stores `crate_name`'s component in a ConfigMap of the test's namespace and returns its digest.
pub async fn publish(ctx: &TestContext, crate_name: &str) -> String {
    let wasm = policy_wasm(crate_name);
    let digest = sha256(&wasm);
    let config_map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(crate_name.replace('_', "-")),
            ..Default::default()
        },
        binary_data: Some([("policy.wasm".to_string(), ByteString(wasm))].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the policy ConfigMap");
    digest
}

/// A SandboxPolicy for the test's namespace only (cluster-scoped, so named after it), from
/// `spec` without its `match`.
pub fn namespaced(ctx: &TestContext, name: &str, mut spec: serde_json::Value) -> SandboxPolicy {
    spec["match"] = serde_json::json!({
        "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ctx.namespace } },
    });
    let value = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "SandboxPolicy",
        "metadata": {
            "name": format!("{}-{name}", ctx.namespace),
            "labels": { "sandman.dev/test-namespace": ctx.namespace },
        },
        "spec": spec,
    });
    serde_json::from_value(value).expect("policy")
}

/// A policy of `crate_name`'s component, published in the test's namespace.
pub fn policy(ctx: &TestContext, name: &str, crate_name: &str, digest: &str) -> SandboxPolicy {
    namespaced(
        ctx,
        name,
        serde_json::json!({
            "wasm": {
                "configMap": { "namespace": ctx.namespace, "name": crate_name.replace('_', "-"), "key": "policy.wasm" },
                "sha256": digest,
                // A loaded CI machine must not turn a slow evaluation into a policy failure.
                "limits": { "timeout": "5s" },
            },
        }),
    )
}

/// A CEL policy (`spec.cel`, a 5 s limit added) for the test's namespace, installed and
/// reported Loaded.
pub async fn install_loaded_cel(
    ctx: &TestContext,
    name: &str,
    mode: &str,
    mut cel: serde_json::Value,
) -> SandboxPolicy {
    cel["limits"] = serde_json::json!({ "timeout": "5s" });
    let policy = namespaced(ctx, name, serde_json::json!({ "mode": mode, "cel": cel }));
    let api = install(ctx, &policy).await;
    wait_ready_reason(&api, &format!("{}-{name}", ctx.namespace), "Loaded").await
}

/// A policy installed from `crate_name`'s component and reported Loaded.
pub struct Installed {
    pub api: Api<SandboxPolicy>,
    pub name: String,
    pub digest: String,
    pub loaded: SandboxPolicy,
}

/// Publishes `crate_name`, installs a policy for it (after `configure`), waits until it loads.
pub async fn install_loaded(
    ctx: &TestContext,
    short_name: &str,
    crate_name: &str,
    configure: impl FnOnce(&mut SandboxPolicy),
) -> Installed {
    let digest = publish(ctx, crate_name).await;
    let mut wanted = policy(ctx, short_name, crate_name, &digest);
    configure(&mut wanted);
    let api = install(ctx, &wanted).await;
    let name = format!("{}-{short_name}", ctx.namespace);
    let loaded = wait_ready_reason(&api, &name, "Loaded").await;
    Installed {
        api,
        name,
        digest,
        loaded,
    }
}

pub async fn install(ctx: &TestContext, policy: &SandboxPolicy) -> Api<SandboxPolicy> {
    let api: Api<SandboxPolicy> = Api::all(ctx.client.clone());
    api.create(&PostParams::default(), policy)
        .await
        .expect("create SandboxPolicy");
    api
}
