//! The Helm chart (`deploy/helm/sandman`) and its checked-in rendering
//! (`deploy/manifests/sandman.yaml`, for people who do not use Helm): the rendering is current,
//! the chart's CRDs are `crds/`, and everything applies cleanly to the local control plane.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use sandman_testenv::harness::{TestContext, repo_root};

const RENDERED: &str = "deploy/manifests/sandman.yaml";

fn render() -> String {
    let chart = repo_root().join("deploy/helm/sandman");
    let body = sandman_testenv::helm::render(&chart, &["--include-crds"]).expect("helm template");
    format!(
        "# Rendered from deploy/helm/sandman with default values:\n#   helm template sandman deploy/helm/sandman --namespace sandman-system --include-crds\n# tests/deploy.rs fails when this file differs from the chart's rendering.\n{body}"
    )
}

#[test]
fn rendered_manifests_match_the_chart() {
    let rendered = render();
    let path = repo_root().join(RENDERED);
    if std::env::var_os("SANDMAN_BLESS").is_some() {
        std::fs::write(&path, &rendered).expect("write the rendering");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == rendered,
        "{RENDERED} is stale; regenerate it with SANDMAN_BLESS=1 cargo test --test deploy"
    );
}

#[test]
fn chart_values_reach_the_flags() {
    let chart = repo_root().join("deploy/helm/sandman");
    let rendered = sandman_testenv::helm::render(
        &chart,
        &[
            "--set",
            "gateway.enabled=true",
            "--set",
            "tracing.otlpEndpoint=http://collector:4318",
            "--set",
            "operator.policyLimits.default.timeout=250ms",
            "--set",
            "operator.policyLimits.max.memory=128Mi",
            "--set",
            "image.pullSecrets={registry-login}",
            "--set",
            "gateway.nodeSelector.pool=edge",
            "--set",
            "operator.priorityClassName=system-cluster-critical",
            "--set",
            "operator.runtimeImage=registry.example/sandman-runtime@sha256:0123",
            "--set",
            "gateway.control=true",
        ],
    )
    .expect("helm template");
    assert_eq!(
        rendered
            .matches("- --otlp-endpoint=http://collector:4318")
            .count(),
        2,
        "operator and gateway both export traces:\n{rendered}"
    );
    assert!(rendered.contains("- --policy-default-timeout=250ms"));
    assert!(rendered.contains("- --policy-max-memory=128Mi"));
    assert!(rendered.contains("- --policy-default-memory=32Mi"));
    assert_eq!(
        rendered.matches("- name: registry-login").count(),
        2,
        "both Deployments pull with the image pull secret"
    );
    assert!(rendered.contains("pool: edge"));
    assert!(rendered.contains("- --runtime-image=registry.example/sandman-runtime@sha256:0123"));
    assert!(rendered.contains("- --control\n"));
    assert!(rendered.contains("resources: [tokenreviews]"));
    assert!(rendered.contains("resources: [subjectaccessreviews]"));
    assert!(rendered.contains("priorityClassName: system-cluster-critical"));
    assert!(
        !rendered
            .lines()
            .any(|l| !l.is_empty() && l.trim().is_empty()),
        "no whitespace-only lines"
    );
    let default = sandman_testenv::helm::render(&chart, &[]).expect("helm template");
    assert!(
        !default.contains("--otlp-endpoint"),
        "no tracing flag unless asked for"
    );
}

/// The operator's allocator starts with the options in `src/main.rs` (jemalloc prints them on
/// exit when asked to in the environment, which adds to them and overrides none of these).
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[test]
fn operator_allocator_returns_freed_memory() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandman"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run sandman");
    let stats = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    for option in [
        "opt.narenas: 2",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
        "opt.background_thread: true",
    ] {
        assert!(stats.contains(option), "{option} not in:\n{stats}");
    }
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let chart =
        std::fs::read_to_string(repo_root().join("deploy/helm/sandman/crds/sandman.dev.yaml"))
            .expect("chart CRDs");
    let generated =
        std::fs::read_to_string(repo_root().join("crds/sandman.dev.yaml")).expect("crds");
    assert!(
        chart == generated,
        "deploy/helm/sandman/crds/sandman.dev.yaml differs from crds/; copy crds/sandman.dev.yaml there"
    );
}

#[tokio::test]
async fn rendered_manifests_apply_cleanly() {
    let ctx = TestContext::new("deploy_apply").await;
    // The rendering names sandman-system; the control plane is shared, so make it once.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    let namespace = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "sandman-system" } });
    namespaces
        .patch(
            "sandman-system",
            &PatchParams::apply("deploy-test"),
            &Patch::Apply(&namespace),
        )
        .await
        .expect("namespace");
    let text = std::fs::read_to_string(repo_root().join(RENDERED)).expect("rendering");
    let discovery = Discovery::new(ctx.client.clone())
        .run()
        .await
        .expect("discovery");
    for dry_run in [true, false] {
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde_json::to_value(
                <serde_yaml::Value as serde::Deserialize>::deserialize(document).expect("YAML"),
            )
            .expect("JSON");
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_json::from_value(value.clone()).expect("object");
            let types = object.types.clone().expect("apiVersion and kind");
            let (group, version) = types
                .api_version
                .split_once('/')
                .unwrap_or(("", types.api_version.as_str()));
            let (resource, capabilities) = discovery
                .resolve_gvk(&kube::api::GroupVersionKind::gvk(
                    group,
                    version,
                    &types.kind,
                ))
                .unwrap_or_else(|| panic!("the control plane does not serve {}", types.kind));
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Namespaced => Api::namespaced_with(
                    ctx.client.clone(),
                    object
                        .metadata
                        .namespace
                        .as_deref()
                        .unwrap_or("sandman-system"),
                    &resource,
                ),
                Scope::Cluster => Api::all_with(ctx.client.clone(), &resource),
            };
            let mut params = PatchParams::apply("deploy-test").force();
            params.dry_run = dry_run;
            let name = object.metadata.name.clone().expect("name");
            api.patch(&name, &params, &Patch::Apply(&value))
                .await
                .unwrap_or_else(|e| {
                    panic!("apply {} {name} (dry run: {dry_run}): {e}", types.kind)
                });
        }
    }
}
