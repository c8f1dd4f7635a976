//! SandboxPolicies on the local control plane: a component from a ConfigMap decides the
//! isolation of matching Sandboxes, reloads without a restart, and fails safely.

mod common;

use std::time::Duration;

use common::policy::*;
use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandman::api::{Phase, PolicyLimits, SandboxPolicy};
use sandman::policy::Limits;
use sandman::policy::limits::PolicyLimitBounds;
use sandman_testenv::harness::{TestContext, eventually};
use sandman_testenv::policies::policy_wasm;

/// A Sandbox labelled untrusted, which the untrusted-to-gvisor policy moves to gVisor.
fn untrusted_sandbox(name: &str) -> sandman::api::Sandbox {
    let mut untrusted = sandbox(name, false);
    untrusted.metadata.labels = Some(labels(&[("sandman.dev/trust", "untrusted")]));
    untrusted
}

fn runtime_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone())
}

#[tokio::test]
async fn untrusted_sandbox_gets_gvisor_from_a_configmap_policy() {
    let ctx = TestContext::new("untrusted_sandbox_gets_gvisor").await;
    let _operator = Operator::start(&ctx);
    let Installed {
        api,
        name,
        digest,
        loaded,
    } = install_loaded(&ctx, "gvisor", "untrusted_to_gvisor", |_| {}).await;
    let status = loaded.status.expect("status");
    assert!(status.hooks.contains(&"isolation".to_string()));
    assert_eq!(status.digest.as_deref(), Some(digest.as_str()));

    let untrusted = untrusted_sandbox("untrusted");
    create(&ctx, &untrusted).await;
    create(&ctx, &sandbox("trusted", false)).await;
    let running = wait_phase(&ctx, "untrusted", Phase::Running).await;
    wait_phase(&ctx, "trusted", Phase::Running).await;

    let pod = pods(&ctx).get("untrusted").await.expect("pod");
    assert_eq!(runtime_of(&pod).as_deref(), Some("gvisor"));
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(spec.host_users, Some(false));
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let status = running.status.expect("status");
    assert_eq!(status.runtime_class_name.as_deref(), Some("gvisor"));
    let decision = status
        .decisions
        .and_then(|d| d.isolation)
        .expect("the decision is recorded");
    assert_eq!(decision.policy, name);
    assert!(decision.message.unwrap_or_default().contains("untrusted"));
    assert_eq!(
        runtime_of(&pods(&ctx).get("trusted").await.expect("pod")),
        None,
        "the policy abstained"
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn policy_update_takes_effect_without_restart() {
    let ctx = TestContext::new("policy_update_takes_effect").await;
    let _operator = Operator::start(&ctx);
    let Installed { api, name, .. } =
        install_loaded(&ctx, "runtime", "untrusted_to_gvisor", |_| {}).await;
    let mut agent = untrusted_sandbox("agent");
    agent.spec.update_strategy = sandman::api::UpdateStrategy::Recreate;
    create(&ctx, &agent).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    assert_eq!(
        runtime_of(&pods(&ctx).get("agent").await.expect("pod")).as_deref(),
        Some("gvisor")
    );

    let kata =
        serde_json::json!({ "spec": { "wasm": { "settings": { "runtimeClassName": "kata" } } } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(kata))
        .await
        .expect("update the policy");
    eventually("the pod to be replaced under kata", WAIT, || {
        let pods = pods(&ctx);
        async move {
            let pod = pods.get_opt("agent").await.ok().flatten()?;
            (runtime_of(&pod).as_deref() == Some("kata")).then_some(())
        }
    })
    .await;
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn failing_policies_follow_their_failure_policy() {
    let ctx = TestContext::new("failing_policies").await;
    let _operator = Operator::start(&ctx);
    let Installed { api, name, .. } = install_loaded(&ctx, "hostile", "hostile", |hostile| {
        hostile.spec.wasm.as_mut().expect("wasm").settings =
            Some(serde_json::json!({ "mode": "loop" }));
        hostile.spec.wasm.as_mut().expect("wasm").limits.timeout = Some("20ms".into());
    })
    .await;

    create(&ctx, &sandbox("held", false)).await;
    let held = wait_sandbox(
        &ctx,
        "held",
        "the Sandbox to be held by the failing policy",
        |s| condition(s, "Ready").is_some_and(|(_, reason)| reason == "PolicyFailed"),
    )
    .await;
    assert_eq!(held.status.and_then(|s| s.phase), Some(Phase::Pending));
    let pods_api = pods(&ctx);
    sandman_testenv::harness::stays(
        "no pod while the policy fails",
        Duration::from_secs(2),
        || {
            let pods_api = pods_api.clone();
            async move { matches!(pods_api.get_opt("held").await, Ok(None)) }
        },
    )
    .await;

    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": { "failurePolicy": "Ignore" } })),
    )
    .await
    .expect("switch to Ignore");
    wait_phase(&ctx, "held", Phase::Running).await;
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn wrong_digest_is_refused() {
    let ctx = TestContext::new("wrong_digest_is_refused").await;
    let _operator = Operator::start(&ctx);
    publish(&ctx, "untrusted_to_gvisor").await;
    let wrong = "0".repeat(64);
    let api = install(&ctx, &policy(&ctx, "pinned", "untrusted_to_gvisor", &wrong)).await;
    let name = format!("{}-pinned", ctx.namespace);
    let message = ready_message(&wait_ready_reason(&api, &name, "DigestMismatch").await);
    assert!(message.contains(&wrong), "{message}");
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn audit_policy_is_recorded_not_applied() {
    let ctx = TestContext::new("audit_policy_is_recorded").await;
    let _operator = Operator::start(&ctx);
    let Installed { api, name, .. } =
        install_loaded(&ctx, "audit", "untrusted_to_gvisor", |audit| {
            audit.spec.mode = sandman::api::PolicyMode::Audit;
        })
        .await;

    let agent = untrusted_sandbox("agent");
    create(&ctx, &agent).await;
    let running = wait_phase(&ctx, "agent", Phase::Running).await;
    assert_eq!(
        runtime_of(&pods(&ctx).get("agent").await.expect("pod")),
        None,
        "not applied"
    );
    let decisions = running.status.and_then(|s| s.decisions).expect("recorded");
    assert!(decisions.isolation.is_none());
    assert_eq!(decisions.audited.len(), 1);
    assert_eq!(
        (
            decisions.audited[0].policy.as_str(),
            decisions.audited[0].outcome.as_str()
        ),
        (name.as_str(), "gvisor")
    );
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.client.clone(), &ctx.namespace);
    eventually("a PolicyAudit event", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("PolicyAudit"))
                .then_some(())
        }
    })
    .await;
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn resource_defaults_and_caps_reach_the_pod() {
    let ctx = TestContext::new("resource_defaults_and_caps").await;
    let _operator = Operator::start(&ctx);
    let Installed { api, name, .. } =
        install_loaded(&ctx, "tenants", "tenant_resource_defaults", |tenants| {
            tenants.spec.wasm.as_mut().expect("wasm").settings =
                Some(serde_json::json!({ "tenants": { "default": {
                "defaults": { "cpu": "250m", "memory": "512Mi" },
                "caps": { "cpu": "2", "memory": "4Gi" }
            } } }));
        })
        .await;

    create(&ctx, &sandbox("agent", false)).await;
    let running = wait_phase(&ctx, "agent", Phase::Running).await;
    let pod = pods(&ctx).get("agent").await.expect("pod");
    let resources = pod
        .spec
        .and_then(|s| s.containers[0].resources.clone())
        .expect("resources");
    let get = |list: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &str| {
        list.as_ref().and_then(|l| l.get(key)).map(|q| q.0.clone())
    };
    assert_eq!(get(&resources.requests, "cpu").as_deref(), Some("250m"));
    assert_eq!(get(&resources.limits, "memory").as_deref(), Some("4Gi"));
    let recorded = running
        .status
        .and_then(|s| s.decisions)
        .and_then(|d| d.resources)
        .expect("recorded");
    assert_eq!(recorded.policy, name);
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn a_bad_revision_keeps_the_last_good_one() {
    let ctx = TestContext::new("bad_revision_keeps_last_good").await;
    let _operator = Operator::start(&ctx);
    let Installed {
        api, name, digest, ..
    } = install_loaded(&ctx, "pinned", "untrusted_to_gvisor", |_| {}).await;

    // Someone swaps the bytes in the ConfigMap without updating the pinned digest.
    let swapped =
        serde_json::json!({ "binaryData": { "policy.wasm": base64_of(&policy_wasm("hostile")) } });
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ctx.namespace)
        .patch(
            "untrusted-to-gvisor",
            &PatchParams::default(),
            &Patch::Merge(swapped),
        )
        .await
        .expect("swap the ConfigMap's bytes");
    let refused = wait_ready_reason(&api, &name, "DigestMismatch").await;
    let message = refused
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(
        message.contains(&format!(
            "still serving the last good revision sha256:{digest}"
        )),
        "{message}"
    );

    let agent = untrusted_sandbox("agent");
    create(&ctx, &agent).await;
    wait_phase(&ctx, "agent", Phase::Running).await;
    assert_eq!(
        runtime_of(&pods(&ctx).get("agent").await.expect("pod")).as_deref(),
        Some("gvisor")
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

fn base64_of(bytes: &[u8]) -> String {
    serde_json::to_value(ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Replaces a policy's configMap source with `source` (`{"url": …}` or `{"image": …}`).
fn with_source(policy: &mut SandboxPolicy, source: serde_json::Value) {
    let mut value = serde_json::to_value(&*policy).expect("policy");
    let wasm = &mut value["spec"]["wasm"];
    if let Some(wasm) = wasm.as_object_mut() {
        wasm.remove("configMap");
        if let Some(source) = source.as_object() {
            wasm.extend(source.clone());
        }
    }
    *policy = serde_json::from_value(value).expect("policy");
}

/// An untrusted Sandbox gets gVisor from `policy`, which must load first.
async fn gvisor_is_applied_by(ctx: &TestContext, policy: SandboxPolicy) {
    let api = install(ctx, &policy).await;
    let name = policy.metadata.name.clone().expect("name");
    wait_ready_reason(&api, &name, "Loaded").await;
    create(ctx, &untrusted_sandbox("agent")).await;
    wait_phase(ctx, "agent", Phase::Running).await;
    assert_eq!(
        runtime_of(&pods(ctx).get("agent").await.expect("pod")).as_deref(),
        Some("gvisor")
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn oci_sourced_policy_loads_and_applies() {
    let ctx = TestContext::new("oci_sourced_policy").await;
    let _operator = Operator::start(&ctx);
    let wasm = policy_wasm("untrusted_to_gvisor");
    let image = format!(
        "{}/{}/untrusted-to-gvisor:v1",
        sandman_testenv::harness::registry().address(),
        ctx.namespace
    );
    let http = sandman::http_client::HttpClient::new().expect("client");
    let reference = sandman::distribution::oci::Reference::parse(&image).expect("reference");
    let pushed = sandman::distribution::oci::push(&http, &reference, wasm.into(), None)
        .await
        .expect("push");
    let mut from_registry = policy(&ctx, "oci", "untrusted_to_gvisor", &pushed.component_sha256);
    with_source(&mut from_registry, serde_json::json!({ "image": image }));
    gvisor_is_applied_by(&ctx, from_registry).await;
}

#[tokio::test]
async fn image_pull_secret_opens_a_private_registry() {
    use sandman::distribution::auth::Credentials;
    use sandman_testenv::harness::token_registry;
    use sandman_testenv::token_server::{PASSWORD, USER};

    let ctx = TestContext::new("image_pull_secret").await;
    // The operator reads pull secrets from its own namespace: here, the test's.
    let _operator = Operator::start_configured(&ctx, ctx.client.clone(), |options| {
        options.pull_secrets.namespace = ctx.namespace.clone();
    });
    let image = format!(
        "{}/private/{}/untrusted-to-gvisor:v1",
        token_registry().address(),
        ctx.namespace
    );
    let http = sandman::http_client::HttpClient::new().expect("client");
    let reference = sandman::distribution::oci::Reference::parse(&image).expect("reference");
    let user = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let pushed = sandman::distribution::oci::push(
        &http,
        &reference,
        policy_wasm("untrusted_to_gvisor").into(),
        Some(&user),
    )
    .await
    .expect("push");
    let docker_config = serde_json::json!({ "auths": {
        token_registry().address(): { "username": USER, "password": PASSWORD },
    }})
    .to_string();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "registry-login" },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": docker_config },
    }))
    .expect("secret");
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the pull secret");

    // Without the secret the registry refuses, and the status says what is missing.
    let mut anonymous = policy(
        &ctx,
        "anonymous",
        "untrusted_to_gvisor",
        &pushed.component_sha256,
    );
    with_source(&mut anonymous, serde_json::json!({ "image": image }));
    let api = install(&ctx, &anonymous).await;
    let anonymous_name = format!("{}-anonymous", ctx.namespace);
    let message = ready_message(&wait_ready_reason(&api, &anonymous_name, "FetchFailed").await);
    assert!(message.contains("wants credentials"), "{message}");
    api.delete(&anonymous_name, &Default::default())
        .await
        .expect("clean up the policy");

    let mut with_secret = policy(
        &ctx,
        "private",
        "untrusted_to_gvisor",
        &pushed.component_sha256,
    );
    with_source(
        &mut with_secret,
        serde_json::json!({ "image": image, "imagePullSecret": "registry-login" }),
    );
    gvisor_is_applied_by(&ctx, with_secret).await;
}

#[tokio::test]
async fn url_sourced_policy_loads_and_applies() {
    let ctx = TestContext::new("url_sourced_policy").await;
    let _operator = Operator::start(&ctx);
    let server = sandman_testenv::file_server::FileServer::start().expect("file server");
    let wasm = policy_wasm("untrusted_to_gvisor");
    let digest = sha256(&wasm);
    server.put("/gvisor.wasm", wasm);
    let mut from_url = policy(&ctx, "url", "untrusted_to_gvisor", &digest);
    with_source(
        &mut from_url,
        serde_json::json!({ "url": server.url("/gvisor.wasm") }),
    );
    gvisor_is_applied_by(&ctx, from_url).await;
}

#[tokio::test]
async fn wrong_digest_from_url_and_registry_is_refused() {
    let ctx = TestContext::new("wrong_digest_remote").await;
    let _operator = Operator::start(&ctx);
    let server = sandman_testenv::file_server::FileServer::start().expect("file server");
    server.put("/gvisor.wasm", policy_wasm("untrusted_to_gvisor"));
    let image = format!(
        "{}/{}/gvisor:v1",
        sandman_testenv::harness::registry().address(),
        ctx.namespace
    );
    let http = sandman::http_client::HttpClient::new().expect("client");
    let reference = sandman::distribution::oci::Reference::parse(&image).expect("reference");
    sandman::distribution::oci::push(
        &http,
        &reference,
        policy_wasm("untrusted_to_gvisor").into(),
        None,
    )
    .await
    .expect("push");
    // The component pinned is another one: both servers' bytes must be refused.
    let pinned = sha256(&policy_wasm("hostile"));
    let api: Api<SandboxPolicy> = Api::all(ctx.client.clone());
    for (short, source) in [
        (
            "url",
            serde_json::json!({ "url": server.url("/gvisor.wasm") }),
        ),
        ("oci", serde_json::json!({ "image": image })),
    ] {
        let mut wrong = policy(&ctx, short, "untrusted_to_gvisor", &pinned);
        with_source(&mut wrong, source);
        install(&ctx, &wrong).await;
        let name = format!("{}-{short}", ctx.namespace);
        let message = ready_message(&wait_ready_reason(&api, &name, "DigestMismatch").await);
        assert!(message.contains(&pinned), "{message}");
        api.delete(&name, &Default::default())
            .await
            .expect("clean up the policy");
    }
}

#[tokio::test]
async fn two_sources_are_refused_by_the_api_server() {
    let ctx = TestContext::new("two_sources_refused").await;
    let mut both = policy(&ctx, "both", "untrusted_to_gvisor", &"0".repeat(64));
    both.spec.wasm.as_mut().expect("wasm").url = Some("http://127.0.0.1:9/p.wasm".into());
    let error = Api::<SandboxPolicy>::all(ctx.client.clone())
        .create(&PostParams::default(), &both)
        .await
        .expect_err("two sources");
    assert!(error.to_string().contains("exactly one source"), "{error}");
}

#[tokio::test]
async fn metrics_expose_policy_latency_per_policy() {
    let ctx = TestContext::new("metrics_policy_latency").await;
    // The registry is the operator's own: other tests' operators in this process count
    // elsewhere.
    let metrics = std::sync::Arc::new(sandman::metrics::Metrics::new());
    let _operator = Operator::start_configured(&ctx, ctx.client.clone(), |options| {
        options.metrics = metrics.clone();
    });
    let ready = sandman::metrics::Readiness::default();
    let addr = sandman::metrics::serve(
        "127.0.0.1:0".parse().expect("address"),
        ready.clone(),
        metrics.clone(),
    )
    .await
    .expect("serve metrics");
    let Installed { api, name, .. } =
        install_loaded(&ctx, "metrics", "untrusted_to_gvisor", |_| {}).await;
    create(&ctx, &untrusted_sandbox("agent")).await;
    wait_phase(&ctx, "agent", Phase::Running).await;

    let scrape = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        response
    };
    let metrics = scrape("/metrics").await;
    let histogram =
        format!("sandman_policy_evaluation_seconds_count{{policy=\"{name}\",hook=\"isolation\"}}");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&histogram))
        .unwrap_or_else(|| panic!("no {histogram} in:\n{metrics}"));
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(count >= 1.0, "{line}");
    assert!(metrics.contains(&format!(
        "sandman_policy_decisions_total{{policy=\"{name}\",hook=\"isolation\",outcome=\"decided\"}}"
    )));
    assert!(metrics.contains("sandman_reconciles_total{controller=\"sandbox\"}"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sandman_sandboxes{phase=\"Running\"}") && !l.ends_with(" 0")),
        "Sandboxes by phase"
    );
    assert!(scrape("/healthz").await.starts_with("HTTP/1.0 200"));
    assert!(
        scrape("/readyz").await.contains(" 503 "),
        "not ready until told"
    );
    ready.set();
    assert!(scrape("/readyz").await.starts_with("HTTP/1.0 200"));
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn operator_policy_limits_fill_in_and_cap() {
    let ctx = TestContext::new("operator_policy_limits").await;
    let _operator = Operator::start_configured(&ctx, ctx.client.clone(), |options| {
        options.policy_limits = PolicyLimitBounds {
            default: Limits {
                timeout: Duration::from_millis(2500),
                memory_bytes: 48 << 20,
                ..Limits::default()
            },
            max: Limits {
                timeout: Duration::from_secs(3),
                memory_bytes: 64 << 20,
                ..Limits::default()
            },
        };
    });
    // No limits in the policy: the operator's defaults, reported in status.
    let Installed {
        api,
        name,
        loaded,
        digest,
    } = install_loaded(&ctx, "defaults", "untrusted_to_gvisor", |policy| {
        if let Some(wasm) = policy.spec.wasm.as_mut() {
            wasm.limits = Default::default();
        }
    })
    .await;
    let details = loaded.status.expect("status").details;
    assert_eq!(details.get("timeout").map(String::as_str), Some("2.5s"));
    assert_eq!(details.get("memory").map(String::as_str), Some("48Mi"));

    // More than the operator allows: refused, with the field and the ceiling in the message.
    let mut greedy = policy(&ctx, "greedy", "untrusted_to_gvisor", &digest);
    if let Some(wasm) = greedy.spec.wasm.as_mut() {
        wasm.limits = PolicyLimits {
            memory: Some("1Gi".into()),
            ..Default::default()
        };
    }
    install(&ctx, &greedy).await;
    let greedy_name = format!("{}-greedy", ctx.namespace);
    let refused = wait_ready_reason(&api, &greedy_name, "InvalidLimits").await;
    let message = ready_message(&refused);
    assert!(
        message.contains("limits.memory: 1Gi is more than this operator allows"),
        "{message}"
    );
    for name in [name, greedy_name] {
        api.delete(&name, &Default::default())
            .await
            .expect("clean up the policy");
    }
}

#[tokio::test]
async fn unloadable_policy_holds_its_sandboxes_until_it_loads() {
    let ctx = TestContext::new("unloadable_policy_holds").await;
    let _operator = Operator::start(&ctx);
    let digest = publish(&ctx, "untrusted_to_gvisor").await;
    let wrong = "0".repeat(64);
    let api = install(&ctx, &policy(&ctx, "pinned", "untrusted_to_gvisor", &wrong)).await;
    let name = format!("{}-pinned", ctx.namespace);
    let message = ready_message(&wait_ready_reason(&api, &name, "DigestMismatch").await);
    assert!(message.contains("held until it loads"), "{message}");

    // failurePolicy Fail (the default): a policy that never loaded must not be skipped, or the
    // Sandbox would start under runc where the policy asks for gVisor.
    create(&ctx, &untrusted_sandbox("agent")).await;
    let held_message = wait_held(&ctx, "agent").await;
    assert!(
        held_message.contains("has not loaded") && held_message.contains("DigestMismatch"),
        "{held_message}"
    );
    assert!(
        pods(&ctx).get_opt("agent").await.expect("get").is_none(),
        "no pod while the policy is unavailable"
    );

    // The right digest: it loads, and the held Sandbox starts under it.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": { "wasm": { "sha256": digest } } })),
    )
    .await
    .expect("pin the right digest");
    wait_phase(&ctx, "agent", Phase::Running).await;
    let pod = pods(&ctx).get("agent").await.expect("pod");
    assert_eq!(runtime_of(&pod).as_deref(), Some("gvisor"));
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn deleted_policy_stops_applying() {
    let ctx = TestContext::new("deleted_policy_stops").await;
    let _operator = Operator::start(&ctx);
    let Installed { api, name, .. } =
        install_loaded(&ctx, "gvisor", "untrusted_to_gvisor", |_| {}).await;
    create(&ctx, &untrusted_sandbox("before")).await;
    wait_phase(&ctx, "before", Phase::Running).await;
    assert_eq!(
        runtime_of(&pods(&ctx).get("before").await.expect("pod")).as_deref(),
        Some("gvisor")
    );
    api.delete(&name, &Default::default())
        .await
        .expect("delete the policy");
    wait_gone(&api, &name).await;
    // A deletion is no reconcile: the watch's Delete event must take it out of the set.
    eventually(
        "a new Sandbox to start without the deleted policy",
        WAIT,
        || async {
            let probe = format!("after-{}", rand_suffix());
            create(&ctx, &untrusted_sandbox(&probe)).await;
            let running = wait_phase(&ctx, &probe, Phase::Running).await;
            let decided = running
                .status
                .and_then(|s| s.decisions)
                .and_then(|d| d.isolation)
                .is_some();
            (!decided).then_some(())
        },
    )
    .await;
}

fn rand_suffix() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    )
}

/// A policy whose URL source accepts connections and never answers: it stays loading.
async fn hung_policy(ctx: &TestContext, name: &str) -> SandboxPolicy {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = hung.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            held.push(stream);
        }
    });
    let mut policy = policy(ctx, name, "untrusted_to_gvisor", &"0".repeat(64));
    with_source(
        &mut policy,
        serde_json::json!({ "url": format!("http://{address}/policy.wasm") }),
    );
    policy
}

#[tokio::test]
async fn a_hung_policy_source_holds_only_its_sandboxes() {
    let ctx = TestContext::new("hung_policy_source").await;
    let mut untrusted_only = hung_policy(&ctx, "hung").await;
    untrusted_only.spec.match_ = Some(
        serde_json::from_value(serde_json::json!({
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ctx.namespace } },
            "selector": { "matchLabels": { "sandman.dev/trust": "untrusted" } },
        }))
        .expect("match"),
    );
    let api = install(&ctx, &untrusted_only).await;
    create(&ctx, &untrusted_sandbox("untrusted")).await;
    create(&ctx, &sandbox("trusted", false)).await;

    // The policy and both Sandboxes exist before the operator starts; its source hangs.
    let _operator = Operator::start_configured(&ctx, ctx.client.clone(), |options| {
        options.policy_load_grace = Duration::from_secs(2);
    });
    // The start-up wait is bounded: a Sandbox the policy does not match starts,
    wait_phase(&ctx, "trusted", Phase::Running).await;
    // and the one it matches is held (failurePolicy Fail), never started without it.
    let message = wait_held(&ctx, "untrusted").await;
    assert!(message.contains("Loading"), "{message}");
    assert!(
        pods(&ctx)
            .get_opt("untrusted")
            .await
            .expect("get")
            .is_none(),
        "no pod without the policy"
    );
    api.delete(&format!("{}-hung", ctx.namespace), &Default::default())
        .await
        .expect("clean up the policy");
}

/// A SandboxPolicy still fetching or compiling was once not in the set, so a Sandbox created
/// meanwhile started without it, even with `failurePolicy: Fail`, and kept that pod.
#[tokio::test]
async fn a_policy_still_loading_holds_the_sandboxes_it_matches() {
    let ctx = TestContext::new("loading_policy_holds").await;
    let _operator = Operator::start(&ctx);
    // The operator is up before the policy exists: this is not the start-up gate.
    create(&ctx, &sandbox("before", false)).await;
    wait_phase(&ctx, "before", Phase::Running).await;
    let slow = hung_policy(&ctx, "slow").await;
    let api = install(&ctx, &slow).await;
    let name = format!("{}-slow", ctx.namespace);
    let loading = wait_ready_reason(&api, &name, "Loading").await;
    assert!(
        ready_message(&loading).contains("held until it loads"),
        "{}",
        ready_message(&loading)
    );
    create(&ctx, &untrusted_sandbox("untrusted")).await;
    let message = wait_held(&ctx, "untrusted").await;
    assert!(message.contains("fetching and compiling"), "{message}");
    assert!(
        pods(&ctx)
            .get_opt("untrusted")
            .await
            .expect("get")
            .is_none(),
        "no pod without the policy"
    );
    api.delete(&name, &Default::default())
        .await
        .expect("clean up the policy");
    // Once the policy is gone, nothing holds the Sandbox.
    wait_phase(&ctx, "untrusted", Phase::Running).await;
}

/// Pushes the untrusted-to-gvisor component to `<registry>/<namespace>/<name>:v1`, signed with
/// `key` when given; returns the pinned image and the component's digest.
async fn push_signed(ctx: &TestContext, name: &str, key: Option<&str>) -> (String, String) {
    let image = format!(
        "{}/{}/{name}:v1",
        sandman_testenv::harness::registry().address(),
        ctx.namespace
    );
    let http = sandman::http_client::HttpClient::new().expect("client");
    let reference = sandman::distribution::oci::Reference::parse(&image).expect("reference");
    let wasm = policy_wasm("untrusted_to_gvisor");
    let pushed = sandman::distribution::oci::push(&http, &reference, wasm.clone().into(), None)
        .await
        .expect("push");
    let pinned = sandman::distribution::oci::Reference {
        tag: None,
        digest: Some(pushed.manifest_digest.clone()),
        ..reference
    };
    if let Some(key) = key {
        sandman::distribution::signature::push_signature(&http, &pinned, key, None)
            .await
            .expect("sign");
    }
    (pinned.to_string(), sha256(&wasm))
}

/// The key pair of a test: the public half in a ConfigMap of the test's namespace.
async fn signing_key(ctx: &TestContext) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let config_map: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "cosign" },
            "data": { "cosign.pub": key.public_key_pem() },
        }))
        .expect("configmap");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the key's ConfigMap");
    key.serialize_pem()
}

fn verified(ctx: &TestContext, short: &str, image: &str, digest: &str) -> SandboxPolicy {
    let mut wanted = policy(ctx, short, "untrusted_to_gvisor", digest);
    with_source(&mut wanted, serde_json::json!({ "image": image }));
    wanted.spec.wasm.as_mut().expect("wasm").verify = Some(
        serde_json::from_value(serde_json::json!({
            "configMap": { "namespace": ctx.namespace, "name": "cosign", "key": "cosign.pub" },
        }))
        .expect("verify"),
    );
    wanted
}

#[tokio::test]
async fn signed_policy_loads() {
    let ctx = TestContext::new("signed_policy").await;
    let _operator = Operator::start(&ctx);
    let key = signing_key(&ctx).await;
    let (image, digest) = push_signed(&ctx, "signed", Some(&key)).await;
    let api = install(&ctx, &verified(&ctx, "signed", &image, &digest)).await;
    wait_ready_reason(&api, &format!("{}-signed", ctx.namespace), "Loaded").await;
    create(&ctx, &untrusted_sandbox("agent")).await;
    let running = wait_phase(&ctx, "agent", Phase::Running).await;
    assert_eq!(
        running.status.and_then(|s| s.runtime_class_name).as_deref(),
        Some("gvisor")
    );
}

#[tokio::test]
async fn unsigned_policy_is_refused_when_verification_is_required() {
    let ctx = TestContext::new("unsigned_policy").await;
    let _operator = Operator::start(&ctx);
    let key = signing_key(&ctx).await;
    let api: Api<SandboxPolicy> = Api::all(ctx.client.clone());
    // Not signed at all.
    let (unsigned, digest) = push_signed(&ctx, "unsigned", None).await;
    install(&ctx, &verified(&ctx, "unsigned", &unsigned, &digest)).await;
    let message = ready_message(
        &wait_ready_reason(
            &api,
            &format!("{}-unsigned", ctx.namespace),
            "SignatureInvalid",
        )
        .await,
    );
    assert!(message.contains("no signature"), "{message}");
    // Signed, but by another key.
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let (forged, digest) = push_signed(&ctx, "forged", Some(&stranger.serialize_pem())).await;
    install(&ctx, &verified(&ctx, "forged", &forged, &digest)).await;
    let message = ready_message(
        &wait_ready_reason(
            &api,
            &format!("{}-forged", ctx.namespace),
            "SignatureInvalid",
        )
        .await,
    );
    assert!(message.contains("verifies with the key"), "{message}");
    // A Sandbox the failing policies match is held (failurePolicy Fail, the default).
    let _ = key;
    create(&ctx, &untrusted_sandbox("agent")).await;
    wait_held(&ctx, "agent").await;
}
