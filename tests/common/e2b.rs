//! What the E2B SDK and MCP tests share: objects applied as the admin, a ServiceAccount with
//! the rules docs/e2b.md gives and its token, and a template with the runtime and a volume.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use sandman_testenv::harness::TestContext;

pub async fn apply(ctx: &TestContext, namespace: &str, value: serde_json::Value) {
    let object: kube::api::DynamicObject = serde_json::from_value(value).expect("an object");
    let gvk = kube::api::GroupVersionKind::try_from(object.types.as_ref().expect("types"))
        .expect("a kind");
    let (resource, _) = kube::discovery::pinned_kind(&ctx.client, &gvk)
        .await
        .expect("discovery");
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
}

/// What a framework's ServiceAccount needs for E2B's SDKs (docs/e2b.md): claims, the claimed
/// Sandboxes, and their runtime tokens.
pub fn e2b_rules() -> serde_json::Value {
    serde_json::json!([
        { "apiGroups": ["sandman.dev"], "resources": ["sandboxclaims"],
          "verbs": ["create", "get", "list", "patch", "delete"] },
        { "apiGroups": ["sandman.dev"], "resources": ["sandboxes"], "verbs": ["get", "patch"] },
        { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] },
    ])
}

/// A ServiceAccount's token in `namespace`; with `rights`, a Role of [`e2b_rules`] bound to it.
pub async fn account(ctx: &TestContext, namespace: &str, name: &str, rights: bool) -> String {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name },
    });
    apply(ctx, namespace, object).await;
    if rights {
        let role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": name }, "rules": e2b_rules(),
        });
        apply(ctx, namespace, role).await;
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": namespace }],
        });
        apply(ctx, namespace, binding).await;
    }
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({ "spec": { "audiences": [] } }))
            .expect("a token request");
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

/// A SandboxTemplate `name` with the runtime and a `workspace` volume at /workspace, whose pods
/// go to the node `scheduling` describes.
pub fn template(name: &str, scheduling: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxTemplate",
        "metadata": { "name": name },
        "spec": {
            "runtime": { "enabled": true },
            "podTemplate": { "spec": {
                "nodeSelector": scheduling["nodeSelector"],
                "tolerations": scheduling["tolerations"],
                "containers": [{
                    "name": "agent", "image": "busybox", "command": ["sleep", "100000"],
                    "volumeMounts": [{ "name": "workspace", "mountPath": "/workspace" }],
                }],
            }},
            "volumeClaimTemplates": [{
                "metadata": { "name": "workspace" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } },
                },
            }],
        },
    })
}

/// A gateway serving the control API for every namespace, as the chart runs it.
pub async fn control_gateway(ctx: &TestContext) -> sandman::gateway::Gateway {
    let kubeconfig = kube::config::Kubeconfig::read_from(ctx.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = Default::default();
    let mut options = super::gateway::options(ctx);
    options.namespace = None;
    options.control = Some(sandman::gateway::control::Control { config });
    sandman::gateway::start(ctx.client.clone(), options)
        .await
        .expect("gateway")
}

/// Waits until the test's namespace has no SandboxClaim left.
pub async fn no_claims_left(ctx: &TestContext, what: &str) {
    let claims: Api<sandman::api::SandboxClaim> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    sandman_testenv::harness::eventually(what, super::WAIT, || async {
        claims
            .list(&Default::default())
            .await
            .ok()
            .filter(|l| l.items.is_empty())
    })
    .await;
}
