//! Templates, warm pools and claims on the local control plane: a claim gets a ready warm
//! member at once or a Sandbox of its own, pools replenish and roll by their strategy, two
//! claims never share a member, and each template keeps a default-deny NetworkPolicy that lets
//! the gateway in.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::policy::{install_loaded, install_loaded_cel};
use common::*;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use sandman::api::{OperatingMode, Phase, Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};
use sandman::controller::blueprint::{CLAIM_LABEL, FROM_POOL_LABEL, POOL_LABEL, TEMPLATE_LABEL};
use sandman_testenv::harness::{TestContext, eventually, stays};

fn template(name: &str, extra: serde_json::Value) -> SandboxTemplate {
    let base = sandbox("unused", false);
    let mut value = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "SandboxTemplate",
        "metadata": { "name": name },
        "spec": {
            "podTemplate": serde_json::to_value(&base.spec.pod_template).expect("pod template"),
            "gateway": { "enabled": true, "port": 8080 },
        },
    });
    if let (Some(spec), serde_json::Value::Object(extra)) = (value["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    serde_json::from_value(value).expect("template fixture")
}

fn pool(name: &str, template: &str, replicas: i32, strategy: &str) -> SandboxWarmPool {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "SandboxWarmPool",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "sandboxTemplateRef": { "name": template },
            "updateStrategy": { "type": strategy },
        },
    }))
    .expect("pool fixture")
}

fn claim(name: &str, spec: serde_json::Value) -> SandboxClaim {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "SandboxClaim",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("claim fixture")
}

fn api<K>(ctx: &TestContext) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(ctx.client.clone(), &ctx.namespace)
}

async fn make<K>(ctx: &TestContext, object: &K) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    api::<K>(ctx)
        .create(&PostParams::default(), object)
        .await
        .expect("create")
}

/// Claims a member of `pool`.
async fn claim_pool(ctx: &TestContext, name: &str, pool: &str) {
    make(
        ctx,
        &claim(name, serde_json::json!({ "warmPoolRef": { "name": pool } })),
    )
    .await;
}

/// The pool's unclaimed members.
async fn members(ctx: &TestContext, pool: &str) -> Vec<Sandbox> {
    sandboxes(ctx)
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
        .expect("list members")
        .items
}

/// Waits until the pool has `n` ready members, and returns their names.
async fn ready_members(ctx: &TestContext, pool: &str, n: i32) -> BTreeSet<String> {
    eventually(&format!("{n} ready members in {pool}"), WAIT, || async {
        let status = api::<SandboxWarmPool>(ctx).get(pool).await.ok()?.status?;
        if status.ready_replicas != n || status.replicas != n {
            return None;
        }
        let names: BTreeSet<String> = members(ctx, pool)
            .await
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| s.name_any())
            .collect();
        (names.len() == usize::try_from(n).unwrap_or(0)).then_some(names)
    })
    .await
}

/// Waits until the claim is bound and Ready, and returns its Sandbox's name.
async fn bound(ctx: &TestContext, claim: &str) -> (String, Option<String>) {
    eventually(&format!("claim {claim} to be Ready"), WAIT, || async {
        let status = api::<SandboxClaim>(ctx).get(claim).await.ok()?.status?;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let sandbox = status.sandbox?;
        ready.then_some((sandbox.name, sandbox.from_pool))
    })
    .await
}

#[tokio::test]
async fn claim_binds_a_warm_member_at_once() {
    let ctx = TestContext::new("claim_warm").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &pool("warm", "python", 2, "OnReplenish")).await;
    let before = ready_members(&ctx, "warm", 2).await;

    claim_pool(&ctx, "job", "warm").await;
    let (name, from_pool) = bound(&ctx, "job").await;
    assert!(
        before.contains(&name),
        "{name} was one of the ready members {before:?}"
    );
    assert_eq!(from_pool.as_deref(), Some("warm"));
    let taken = sandboxes(&ctx).get(&name).await.expect("sandbox");
    assert!(
        !taken.labels().contains_key(POOL_LABEL),
        "no longer a member"
    );
    assert_eq!(
        taken.labels().get(FROM_POOL_LABEL).map(String::as_str),
        Some("warm")
    );
    let owner = taken.owner_references().first().cloned().expect("owner");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("SandboxClaim", "job")
    );
    // The pod it had when it was a member is the pod it has now: nothing restarted.
    assert_eq!(taken.status.map(|s| s.restarts), Some(0));
}

#[tokio::test]
async fn claim_of_a_pooled_template_takes_a_warm_member() {
    let ctx = TestContext::new("claim_template_warm").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &template("other", serde_json::json!({}))).await;
    make(&ctx, &pool("elsewhere", "other", 1, "OnReplenish")).await;
    make(&ctx, &pool("warm", "python", 1, "OnReplenish")).await;
    let before = ready_members(&ctx, "warm", 1).await;
    ready_members(&ctx, "elsewhere", 1).await;

    // The claim names the template only, as E2B's `templateID` does.
    make(
        &ctx,
        &claim(
            "job",
            serde_json::json!({ "sandboxTemplateRef": { "name": "python" } }),
        ),
    )
    .await;
    let (name, from_pool) = bound(&ctx, "job").await;
    assert!(before.contains(&name), "{name} is not one of {before:?}");
    assert_eq!(from_pool.as_deref(), Some("warm"));
}

#[tokio::test]
async fn claim_without_pool_creates_a_sandbox() {
    let ctx = TestContext::new("claim_cold").await;
    let _operator = Operator::start(&ctx);
    make(
        &ctx,
        &template(
            "python",
            serde_json::json!({ "envVarsInjectionPolicy": "Allowed" }),
        ),
    )
    .await;
    make(
        &ctx,
        &claim(
            "job",
            serde_json::json!({
                "sandboxTemplateRef": { "name": "python" },
                "env": [{ "name": "TASK", "value": "42" }],
            }),
        ),
    )
    .await;
    let (name, from_pool) = bound(&ctx, "job").await;
    assert_eq!((name.as_str(), from_pool), ("job", None));
    let pod = pods(&ctx).get("job").await.expect("pod");
    let env = pod.spec.expect("spec").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|v| v.name == "TASK" && v.value.as_deref() == Some("42")),
        "{env:?}"
    );
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get(TEMPLATE_LABEL)
            .map(String::as_str),
        Some("python"),
        "the template's NetworkPolicy selects the pod"
    );

    // A template that forbids env refuses the claim in its status, and makes nothing.
    make(&ctx, &template("locked", serde_json::json!({}))).await;
    make(
        &ctx,
        &claim(
            "greedy",
            serde_json::json!({
                "sandboxTemplateRef": { "name": "locked" },
                "env": [{ "name": "TASK", "value": "1" }],
            }),
        ),
    )
    .await;
    let message = eventually("the refusal in the claim's status", WAIT, || async {
        let status = api::<SandboxClaim>(&ctx).get("greedy").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "Refused")
            .map(|c| c.message)
    })
    .await;
    assert!(message.contains("envVarsInjectionPolicy"), "{message}");
    assert!(
        sandboxes(&ctx)
            .get_opt("greedy")
            .await
            .expect("get")
            .is_none()
    );
}

#[tokio::test]
async fn pool_replenishes_after_claims() {
    let ctx = TestContext::new("pool_replenish").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &pool("warm", "python", 2, "OnReplenish")).await;
    let first = ready_members(&ctx, "warm", 2).await;
    // A claim may find its member not ready yet and get a Sandbox of its own; what must hold
    // is that each member a claim took left the pool and was replaced.
    // The second claim may also take the member made to replace the first one taken.
    let mut taken = std::collections::BTreeSet::new();
    for job in ["a", "b"] {
        claim_pool(&ctx, job, "warm").await;
        if let (name, Some(_)) = bound(&ctx, job).await {
            if job == "a" {
                assert!(first.contains(&name), "{name} was a member: {first:?}");
            }
            taken.insert(name);
        }
    }
    assert!(!taken.is_empty(), "the first claim takes a ready member");
    let second = ready_members(&ctx, "warm", 2).await;
    assert!(
        taken.is_disjoint(&second),
        "the taken members were replaced by new ones: {taken:?} taken, then {second:?}"
    );
}

#[tokio::test]
async fn concurrent_claims_never_share_a_member() {
    let ctx = TestContext::new("claims_race").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &pool("warm", "python", 3, "OnReplenish")).await;
    ready_members(&ctx, "warm", 3).await;
    let names: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| {
        let ctx = &ctx;
        async move {
            make(
                ctx,
                &claim(n, serde_json::json!({ "warmPoolRef": { "name": "warm" } })),
            )
            .await
        }
    }))
    .await;
    let mut bound_to = BTreeSet::new();
    for name in &names {
        let (sandbox, _) = bound(&ctx, name).await;
        assert!(
            bound_to.insert(sandbox.clone()),
            "{sandbox} was given to two claims"
        );
    }
    // Each Sandbox carries exactly one claim's UID.
    let claimed = sandboxes(&ctx)
        .list(&ListParams::default().labels(CLAIM_LABEL))
        .await
        .expect("list")
        .items;
    let uids: BTreeSet<String> = claimed
        .iter()
        .filter_map(|s| s.labels().get(CLAIM_LABEL).cloned())
        .collect();
    assert_eq!(uids.len(), claimed.len());
    assert_eq!(claimed.len(), names.len());
}

#[tokio::test]
async fn template_change_rolls_pool_by_strategy() {
    let ctx = TestContext::new("pool_rollout").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &template("node", serde_json::json!({}))).await;
    make(&ctx, &pool("lazy", "python", 2, "OnReplenish")).await;
    make(&ctx, &pool("eager", "node", 2, "Recreate")).await;
    let lazy = ready_members(&ctx, "lazy", 2).await;
    let eager = ready_members(&ctx, "eager", 2).await;
    let image = serde_json::json!({ "spec": { "podTemplate": { "spec": { "containers": [{
        "name": "agent", "image": "registry.example/agent:2",
    }] } } } });
    for name in ["python", "node"] {
        api::<SandboxTemplate>(&ctx)
            .patch(name, &PatchParams::default(), &Patch::Merge(&image))
            .await
            .expect("change the template");
    }
    // Recreate: the old members go and new ones of the new template come.
    let rolled = eventually("the eager pool to roll", WAIT, || async {
        let now = ready_members(&ctx, "eager", 2).await;
        now.is_disjoint(&eager).then_some(now)
    })
    .await;
    for name in &rolled {
        let sandbox = sandboxes(&ctx).get(name).await.expect("member");
        assert_eq!(
            sandbox.spec.pod_template.spec.containers[0]
                .image
                .as_deref(),
            Some("registry.example/agent:2")
        );
    }
    // OnReplenish: the old members stay until claimed.
    stays(
        "the lazy pool keeps its members",
        Duration::from_secs(3),
        || async {
            let now: BTreeSet<String> = members(&ctx, "lazy")
                .await
                .iter()
                .map(|s| s.name_any())
                .collect();
            now == lazy
        },
    )
    .await;
}

#[tokio::test]
async fn claim_deletion_follows_policy() {
    let ctx = TestContext::new("claim_deletion").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("scratch", serde_json::json!({}))).await;
    make(
        &ctx,
        &template(
            "keep",
            serde_json::json!({ "claimDeletionPolicy": "Retain" }),
        ),
    )
    .await;
    for (job, tpl) in [("scratch-job", "scratch"), ("keep-job", "keep")] {
        make(
            &ctx,
            &claim(
                job,
                serde_json::json!({ "sandboxTemplateRef": { "name": tpl } }),
            ),
        )
        .await;
        bound(&ctx, job).await;
        api::<SandboxClaim>(&ctx)
            .delete(job, &Default::default())
            .await
            .expect("delete claim");
        wait_gone(&api::<SandboxClaim>(&ctx), job).await;
    }
    // Delete: the Sandbox goes with the claim.
    wait_gone(&sandboxes(&ctx), "scratch-job").await;
    // Retain: it is suspended, kept, and no longer claimed.
    let kept = wait_phase(&ctx, "keep-job", Phase::Suspended).await;
    assert_eq!(kept.spec.operating_mode, OperatingMode::Suspended);
    assert!(kept.owner_references().is_empty());
    assert!(!kept.labels().contains_key(CLAIM_LABEL));
}

#[tokio::test]
async fn network_profile_creates_network_policy() {
    let ctx = TestContext::new("network_profile").await;
    let _operator = Operator::start(&ctx);
    make(
        &ctx,
        &template(
            "python",
            serde_json::json!({ "networkPolicy": { "egress": [{
                "to": [{ "ipBlock": { "cidr": "203.0.113.0/24" } }],
                "ports": [{ "protocol": "TCP", "port": 443 }],
            }] } }),
        ),
    )
    .await;
    let policies: Api<NetworkPolicy> = api(&ctx);
    let policy = eventually("the template's NetworkPolicy", WAIT, || async {
        policies
            .get_opt("sandman-template-python")
            .await
            .ok()
            .flatten()
    })
    .await;
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.pod_selector
            .and_then(|s| s.match_labels)
            .and_then(|l| l.get(TEMPLATE_LABEL).cloned())
            .as_deref(),
        Some("python")
    );
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".into(), "Egress".into()])
    );
    // Ingress: only the gateway's pods, in the gateway's namespace, on the gateway port; and
    // the operator's, on the checkpoint supervisor's port.
    let ingress = spec.ingress.unwrap_or_default();
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    let from = ingress[0].from.clone().unwrap_or_default();
    let peer = &from[0];
    let gateway_labels = peer
        .pod_selector
        .clone()
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert_eq!(
        gateway_labels
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("gateway")
    );
    assert_eq!(
        peer.namespace_selector
            .clone()
            .and_then(|s| s.match_labels)
            .and_then(|l| l.get("kubernetes.io/metadata.name").cloned())
            .as_deref(),
        Some("sandman-system")
    );
    let ports = ingress[0].ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
    );
    assert_eq!(component(&ingress[1]).as_deref(), Some("operator"));
    assert_eq!(
        ingress[1].ports.clone().unwrap_or_default()[0].port,
        Some(
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(
                sandman::checkpoint::SUPERVISOR_PORT
            ))
        )
    );
    // Egress: DNS, then the template's allow-list.
    let egress = spec.egress.unwrap_or_default();
    assert_eq!(egress.len(), 2, "{egress:?}");
    assert_eq!(
        egress[1].to.clone().unwrap_or_default()[0]
            .ip_block
            .clone()
            .map(|b| b.cidr),
        Some("203.0.113.0/24".into())
    );

    // Edited by hand, it is put back.
    let open = serde_json::json!({ "spec": { "ingress": [{}] } });
    policies
        .patch(
            "sandman-template-python",
            &PatchParams::default(),
            &Patch::Merge(&open),
        )
        .await
        .expect("tamper");
    eventually("the NetworkPolicy to be repaired", WAIT, || async {
        let policy = policies.get("sandman-template-python").await.ok()?;
        let ingress = policy.spec?.ingress?;
        (ingress.len() == 2 && ingress[0].from.is_some()).then_some(())
    })
    .await;

    // Unmanaged: sandman removes its own.
    api::<SandboxTemplate>(&ctx)
        .patch(
            "python",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({ "spec": { "networkPolicyManagement": "Unmanaged" } }),
            ),
        )
        .await
        .expect("unmanage");
    wait_gone(&policies, "sandman-template-python").await;
}

#[tokio::test]
async fn policy_sizes_the_pool() {
    let ctx = TestContext::new("pool_policy").await;
    let _operator = Operator::start(&ctx);
    // One member, plus one per claim of the last hour, up to 10; the pool's own bound is 2.
    let installed = install_loaded(&ctx, "pool-size", "pool_by_claim_rate", |policy| {
        policy.spec.wasm.as_mut().expect("wasm").settings = Some(serde_json::json!({
            "min": 1, "max": 10, "perClaim": 1, "windowSeconds": 3600,
        }));
    })
    .await;
    make(&ctx, &template("python", serde_json::json!({}))).await;
    let mut sized = pool("sized", "python", 5, "OnReplenish");
    sized.spec.max_replicas = Some(2);
    make(&ctx, &sized).await;

    // The policy, not `replicas: 5`, sizes the pool.
    let status = eventually("the policy to size the pool to 1", WAIT, || async {
        let status = api::<SandboxWarmPool>(&ctx)
            .get("sized")
            .await
            .ok()?
            .status?;
        (status.desired_replicas == 1 && status.sized_by.is_some()).then_some(status)
    })
    .await;
    let sizing = status.sized_by.expect("sized by a policy");
    assert_eq!(sizing.policy, installed.name);
    assert!(sizing.reason.contains("0 claims"), "{}", sizing.reason);
    ready_members(&ctx, "sized", 1).await;
    stays(
        "the pool to keep one member",
        Duration::from_secs(3),
        || async { members(&ctx, "sized").await.len() <= 1 },
    )
    .await;

    // Two claims: the policy asks for 3 (one per claim on top of one), and the pool's
    // maxReplicas keeps it at 2.
    for name in ["first", "second"] {
        claim_pool(&ctx, name, "sized").await;
        bound(&ctx, name).await;
    }
    let status = eventually("the pool to grow with the claims", WAIT, || async {
        let status = api::<SandboxWarmPool>(&ctx)
            .get("sized")
            .await
            .ok()?
            .status?;
        let sizing = status.sized_by.clone()?;
        (sizing.replicas == 3 && status.desired_replicas == 2).then_some(status)
    })
    .await;
    assert!(
        status.sized_by.expect("sized").reason.contains("2 claims"),
        "the reason says why"
    );
    ready_members(&ctx, "sized", 2).await;
}

#[tokio::test]
async fn policies_see_template_pool_and_claim() {
    let ctx = TestContext::new("pool_input").await;
    let _operator = Operator::start(&ctx);
    // An Audit-mode isolation policy records what it saw, and changes nothing.
    install_loaded_cel(
        &ctx,
        "origin",
        "Audit",
        serde_json::json!({
            "variables": [
                { "name": "template", "expression": "sandbox.template == null ? '-' : sandbox.template" },
                { "name": "pool", "expression": "sandbox.pool == null ? '-' : sandbox.pool" },
                { "name": "claim", "expression": "sandbox.claim == null ? '-' : sandbox.claim" },
            ],
            "isolation": "{'reason': 'template=' + variables.template + ' pool=' + variables.pool + ' claim=' + variables.claim}",
        }),
    )
    .await;
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &pool("warm", "python", 1, "OnReplenish")).await;

    let audited = |sandbox: &Sandbox| {
        sandbox
            .status
            .as_ref()
            .and_then(|s| s.decisions.as_ref())
            .and_then(|d| d.audited.first())
            .and_then(|d| d.message.clone())
    };
    let member = ready_members(&ctx, "warm", 1).await;
    let member = member.first().expect("a member").clone();
    eventually("the policy to see a warm member", WAIT, || async {
        let sandbox = sandboxes(&ctx).get(&member).await.ok()?;
        (audited(&sandbox)? == "template=python pool=warm claim=-").then_some(())
    })
    .await;

    claim_pool(&ctx, "job", "warm").await;
    let (bound_to, _) = bound(&ctx, "job").await;
    assert_eq!(bound_to, member, "the claim took the warm member");
    eventually("the policy to see the claim", WAIT, || async {
        let sandbox = sandboxes(&ctx).get(&member).await.ok()?;
        (audited(&sandbox)? == "template=python pool=- claim=job").then_some(())
    })
    .await;
}

/// agent-sandbox's example SandboxTemplates, SandboxWarmPools and SandboxClaims (v0.5.6), with
/// only the apiVersion changed, and the placeholders the examples leave to their reader filled
/// in (`${VAR}` for `envsubst`, one image).
fn upstream_manifests(namespace: &str) -> Vec<(String, serde_json::Value)> {
    let path = sandman_testenv::harness::repo_root()
        .join("tests/fixtures/agent-sandbox-v0.5.6/extensions.yaml");
    let text = std::fs::read_to_string(&path).expect("read the upstream manifests");
    let mut manifests = Vec::new();
    for (document, source) in text.split("\n---\n").skip(1).zip(
        text.lines()
            .filter_map(|l| l.strip_prefix("# source: "))
            .map(str::to_string),
    ) {
        let filled = fill_placeholders(document);
        let mut value: serde_json::Value = serde_yaml::from_str(&filled).expect("YAML");
        assert!(
            value["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("extensions.agents.x-k8s.io/")),
            "{source}"
        );
        value["apiVersion"] = "sandman.dev/v1alpha1".into();
        value["metadata"]["namespace"] = namespace.into();
        // ray-autopilot-setup.yaml leaves its image for the reader (`image: # REPLACE_WITH_YOUR_IMAGE`).
        if let Some(containers) = value
            .pointer_mut("/spec/podTemplate/spec/containers")
            .and_then(|c| c.as_array_mut())
        {
            for container in containers.iter_mut().filter(|c| c["image"].is_null()) {
                container["image"] = "registry.example/your-image:1".into();
            }
        }
        manifests.push((source, value));
    }
    manifests
}

/// `${SANDBOX_NAMESPACE}` becomes `sandbox-namespace`, as `envsubst` would fill it in.
fn fill_placeholders(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push_str(
            &rest[start + 2..start + end]
                .to_lowercase()
                .replace('_', "-"),
        );
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Server-side applies `manifest` (as a dry run when asked), refusing unknown fields.
async fn apply_upstream(
    ctx: &TestContext,
    manifest: &serde_json::Value,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    let mut params = PatchParams::apply("upstream-port").validation_strict();
    params.dry_run = dry_run;
    let patch = Patch::Apply(manifest);
    match manifest["kind"].as_str() {
        Some("SandboxTemplate") => api::<SandboxTemplate>(ctx)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        Some("SandboxWarmPool") => api::<SandboxWarmPool>(ctx)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        Some("SandboxClaim") => api::<SandboxClaim>(ctx)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        other => panic!("unexpected kind {other:?}"),
    }
}

#[tokio::test]
async fn upstream_extension_manifests_port() {
    let ctx = TestContext::new("upstream_port").await;
    let manifests = upstream_manifests(&ctx.namespace);
    assert_eq!(manifests.len(), 43, "every example in the fixture");
    // Every one is accepted as written, with unknown fields refused rather than dropped.
    let mut refused = Vec::new();
    for (source, manifest) in &manifests {
        if let Err(error) = apply_upstream(&ctx, manifest, true).await {
            refused.push(format!("{source} ({}): {error}", manifest["kind"]));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));

    // And they work: aider's template, pool and claim, and the hermes claims.
    let _operator = Operator::start(&ctx);
    let by_source = |file: &str| {
        manifests
            .iter()
            .filter(|(source, _)| source.ends_with(file))
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
    };
    for file in [
        "aider-sandbox/template.yaml",
        "aider-sandbox/warmpool.yaml",
        "aider-sandbox/claim.yaml",
        "hermes-agents-as-a-service/10-sandboxtemplate.yaml",
        "hermes-agents-as-a-service/20-sandboxwarmpool.yaml",
        "hermes-agents-as-a-service/30-claim-alice.yaml",
        "hermes-agents-as-a-service/40-claim-rejected.yaml",
    ] {
        for manifest in by_source(file) {
            apply_upstream(&ctx, manifest, false)
                .await
                .unwrap_or_else(|e| panic!("apply {file}: {e}"));
        }
    }

    // The aider template's own rules, on top of the default-deny profile.
    let policy = eventually("aider's NetworkPolicy", WAIT, || async {
        api::<NetworkPolicy>(&ctx)
            .get_opt("sandman-template-aider-browser-template")
            .await
            .ok()
            .flatten()
    })
    .await;
    let spec = policy.spec.expect("spec");
    let ports = |rules: Vec<Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>>| {
        rules
            .into_iter()
            .flatten()
            .flatten()
            .map(|p| {
                let port = match p.port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                        n.to_string()
                    }
                    other => format!("{other:?}"),
                };
                format!("{}/{port}", p.protocol.unwrap_or_default())
            })
            .collect::<BTreeSet<String>>()
    };
    let ingress = ports(
        spec.ingress
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.ports)
            .collect(),
    );
    assert!(ingress.contains("TCP/8501"), "{ingress:?}");
    let egress = ports(
        spec.egress
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.ports)
            .collect(),
    );
    for port in ["UDP/53", "TCP/53", "TCP/443"] {
        assert!(egress.contains(port), "{port} in {egress:?}");
    }
    // The hermes template is Unmanaged: no NetworkPolicy.
    stays(
        "no NetworkPolicy for hermes",
        Duration::from_secs(2),
        || async {
            api::<NetworkPolicy>(&ctx)
                .get_opt("sandman-template-hermes-agent")
                .await
                .is_ok_and(|p| p.is_none())
        },
    )
    .await;

    // The pool keeps a member with the template's volume; the claim gets a Sandbox (its own:
    // on fake nodes the member's volume never binds, so it never becomes ready to take).
    let member = eventually("aider's pool member", WAIT, || async {
        members(&ctx, "aider-warmpool").await.into_iter().next()
    })
    .await;
    assert_eq!(
        member.labels().get(TEMPLATE_LABEL).map(String::as_str),
        Some("aider-browser-template")
    );
    let volumes: Vec<String> = member
        .spec
        .volume_claim_templates
        .iter()
        .filter_map(|t| t.metadata.as_ref()?.name.clone())
        .collect();
    assert_eq!(volumes, vec!["workspace-volume".to_string()]);
    let claimed = |name: &'static str| {
        let ctx = &ctx;
        async move {
            eventually(
                &format!("claim {name} to name its Sandbox"),
                WAIT,
                || async {
                    api::<SandboxClaim>(ctx)
                        .get(name)
                        .await
                        .ok()?
                        .status?
                        .sandbox
                },
            )
            .await
        }
    };
    claimed("user-session-aider").await;

    // hermes: alice's pod metadata reaches her Sandbox's pod template; mallory's env is
    // refused, because the template's envVarsInjectionPolicy is Disallowed.
    let alice = claimed("hermes-alice").await;
    let sandbox = sandboxes(&ctx)
        .get(&alice.name)
        .await
        .expect("alice's Sandbox");
    let labels = sandbox
        .spec
        .pod_template
        .metadata
        .clone()
        .unwrap_or_default()
        .labels;
    assert_eq!(
        labels
            .get("sandbox.users.io/hermes-user")
            .map(String::as_str),
        Some("alice")
    );
    let refusal = eventually("mallory's claim to be refused", WAIT, || async {
        let status = api::<SandboxClaim>(&ctx)
            .get("hermes-mallory")
            .await
            .ok()?
            .status?;
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.reason == "Refused")
            .map(|c| c.message.clone())
    })
    .await;
    assert!(refusal.contains("envVarsInjectionPolicy"), "{refusal}");
}

#[tokio::test]
async fn claim_pod_metadata_reaches_a_warm_member_in_place() {
    let ctx = TestContext::new("claim_metadata").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &pool("warm", "python", 1, "OnReplenish")).await;
    let member = ready_members(&ctx, "warm", 1).await;
    let member = member.first().expect("a member").clone();
    let before = pods(&ctx).get(&member).await.expect("the member's pod");

    make(
        &ctx,
        &claim(
            "alice",
            serde_json::json!({
                "warmPoolRef": { "name": "warm" },
                "additionalPodMetadata": {
                    "labels": { "example.com/user": "alice" },
                    "annotations": { "example.com/note": "first" },
                },
            }),
        ),
    )
    .await;
    let (name, from_pool) = bound(&ctx, "alice").await;
    assert_eq!(
        name, member,
        "pod metadata alone does not force a cold start"
    );
    assert_eq!(from_pool.as_deref(), Some("warm"));
    // The running pod got them in place: the same pod, not a new one.
    let labelled = eventually("the claim's labels on the running pod", WAIT, || async {
        let pod = pods(&ctx).get(&member).await.ok()?;
        (pod.labels().get("example.com/user").map(String::as_str) == Some("alice")).then_some(pod)
    })
    .await;
    assert_eq!(
        labelled.uid(),
        before.uid(),
        "the warm pod was not replaced"
    );
    assert_eq!(
        labelled
            .annotations()
            .get("example.com/note")
            .map(String::as_str),
        Some("first")
    );
    stays("the warm pod to stay", Duration::from_secs(3), || async {
        pods(&ctx)
            .get(&member)
            .await
            .is_ok_and(|p| p.uid() == before.uid())
    })
    .await;

    // A pod made later (after a suspend and resume) carries them too.
    sandboxes(&ctx)
        .patch(
            &member,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": "Suspended" } })),
        )
        .await
        .expect("suspend");
    wait_phase(&ctx, &member, Phase::Suspended).await;
    sandboxes(&ctx)
        .patch(
            &member,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": "Running" } })),
        )
        .await
        .expect("resume");
    let resumed = eventually("a new pod with the claim's labels", WAIT, || async {
        let pod = pods(&ctx).get(&member).await.ok()?;
        (pod.uid() != before.uid()).then_some(pod)
    })
    .await;
    assert_eq!(
        resumed.labels().get("example.com/user").map(String::as_str),
        Some("alice")
    );

    // Reserved keys are refused, warm or not.
    make(
        &ctx,
        &claim(
            "mallory",
            serde_json::json!({
                "warmPoolRef": { "name": "warm" },
                "additionalPodMetadata": { "labels": { "sandman.dev/sandbox": "alice" } },
            }),
        ),
    )
    .await;
    eventually("the reserved key to be refused", WAIT, || async {
        let status = api::<SandboxClaim>(&ctx)
            .get("mallory")
            .await
            .ok()?
            .status?;
        status
            .conditions
            .iter()
            .find(|c| c.reason == "Refused" && c.message.contains("sandman.dev/"))
            .map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn isolation_policy_network_profile_keeps_a_network_policy_per_sandbox() {
    let ctx = TestContext::new("sandbox_network").await;
    let _operator = Operator::start(&ctx);
    // Sandboxes labelled `locked` get a network profile: port 9000 open, egress to 10/8 only.
    install_loaded_cel(
        &ctx,
        "locked",
        "Enforce",
        serde_json::json!({
            "isolation": "'locked' in sandbox.labels ? {'network': {'ingressPorts': [9000], 'egressCidrs': ['10.0.0.0/8']}, 'reason': 'locked down'} : null",
        }),
    )
    .await;

    let mut locked: Sandbox = serde_json::from_value({
        let mut value = serde_json::to_value(sandbox("agent", false)).expect("fixture");
        value["metadata"]["labels"] = serde_json::json!({ "locked": "yes" });
        value["spec"]["gateway"] = serde_json::json!({ "enabled": true, "port": 8080 });
        value
    })
    .expect("Sandbox");
    locked.metadata.namespace = Some(ctx.namespace.clone());
    create(&ctx, &locked).await;
    let running = wait_phase(&ctx, "agent", Phase::Running).await;
    let pod_uid = pods(&ctx).get("agent").await.expect("pod").uid();

    let policies_api: Api<NetworkPolicy> = api(&ctx);
    let network = eventually("the Sandbox's NetworkPolicy", WAIT, || async {
        policies_api
            .get_opt("sandman-sandbox-agent")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(
        network.owner_references()[0].uid,
        running.uid().expect("uid"),
        "owned by the Sandbox, so it goes with it"
    );
    let spec = network.spec.expect("spec");
    assert_eq!(
        spec.pod_selector
            .and_then(|s| s.match_labels)
            .and_then(|l| l.get("sandman.dev/sandbox").cloned())
            .as_deref(),
        Some("agent"),
        "this Sandbox's pod only"
    );
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".into(), "Egress".into()])
    );
    let port = |n: i32| Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n));
    let ingress = spec.ingress.unwrap_or_default();
    assert_eq!(ingress.len(), 3, "{ingress:?}");
    // The gateway's own traffic stays allowed: its pods, in its namespace, on the gateway port.
    let gateway = &ingress[0];
    assert_eq!(component(gateway).as_deref(), Some("gateway"));
    assert_eq!(
        gateway.ports.clone().unwrap_or_default()[0].port,
        port(8080)
    );
    // The operator may ask a supervising pod for a checkpoint, on the supervisor's port only.
    let operator = &ingress[1];
    assert_eq!(component(operator).as_deref(), Some("operator"));
    assert_eq!(
        operator.ports.clone().unwrap_or_default()[0].port,
        port(i32::from(sandman::checkpoint::SUPERVISOR_PORT))
    );
    assert_eq!(ingress[2].from, None, "the profile's port, from anywhere");
    assert_eq!(
        ingress[2].ports.clone().unwrap_or_default()[0].port,
        port(9000)
    );
    let egress = spec.egress.unwrap_or_default();
    assert_eq!(egress.len(), 2, "DNS, then the profile's CIDRs: {egress:?}");
    assert_eq!(
        egress[0].ports.clone().unwrap_or_default()[0].port,
        port(53)
    );
    assert_eq!(
        egress[1].to.clone().unwrap_or_default()[0]
            .ip_block
            .clone()
            .map(|b| b.cidr),
        Some("10.0.0.0/8".into())
    );

    // Edited by hand, it is put back.
    policies_api
        .patch(
            "sandman-sandbox-agent",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "egress": [{}] } })),
        )
        .await
        .expect("tamper");
    eventually("the NetworkPolicy to be repaired", WAIT, || async {
        let spec = policies_api.get("sandman-sandbox-agent").await.ok()?.spec?;
        (spec.egress?.len() == 2).then_some(())
    })
    .await;

    // The policy no longer chooses a profile: the NetworkPolicy goes, the pod stays.
    sandboxes(&ctx)
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "metadata": { "labels": { "locked": null } } })),
        )
        .await
        .expect("unlabel");
    eventually("the NetworkPolicy to go", WAIT, || async {
        policies_api
            .get_opt("sandman-sandbox-agent")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        pods(&ctx).get("agent").await.expect("pod").uid(),
        pod_uid,
        "a network profile is not part of the pod: the pod was not replaced"
    );
}

/// Which of sandman's components a NetworkPolicy rule lets in (by its first peer's pod labels).
fn component(rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule) -> Option<String> {
    rule.from.clone().unwrap_or_default()[0]
        .pod_selector
        .clone()
        .and_then(|s| s.match_labels)
        .and_then(|l| l.get("app.kubernetes.io/component").cloned())
}

/// A Sandbox a tenant writes with a pool's labels, or with a copy of a member's owner
/// reference short of `blockOwnerDeletion`, is not a member: the pool neither counts it nor
/// hands it to a claim, which gets a genuine member. The forgeries come first, so that a pool
/// that trusted labels would make no member of its own and hand out a forgery.
#[tokio::test]
async fn forged_pool_member_is_not_claimed() {
    let ctx = TestContext::new("forged_member").await;
    let _operator = Operator::start(&ctx);
    let python = make(&ctx, &template("python", serde_json::json!({}))).await;
    let hash = sandman::controller::blueprint::blueprint_hash(&python.spec);
    // The pool's uid is readable by anyone who may read the pool; make it first, empty.
    let pool_object = make(&ctx, &pool("warm", "python", 0, "OnReplenish")).await;
    for (name, owner) in [
        ("forged-label", None),
        (
            "forged-owner",
            Some(serde_json::json!([{
                "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxWarmPool",
                "name": "warm", "uid": pool_object.uid().expect("uid"), "controller": true,
            }])),
        ),
    ] {
        let mut forged = serde_json::to_value(sandbox(name, false)).expect("json");
        forged["metadata"]["labels"] = serde_json::json!({
            POOL_LABEL: "warm", TEMPLATE_LABEL: "python",
            sandman::controller::blueprint::BLUEPRINT_HASH_LABEL: hash,
        });
        if let Some(owner) = owner {
            forged["metadata"]["ownerReferences"] = owner;
        }
        forged["spec"]["podTemplate"]["spec"]["containers"][0]["image"] =
            serde_json::json!("registry.example/backdoor:1");
        create(&ctx, &serde_json::from_value(forged).expect("forged")).await;
        wait_phase(&ctx, name, Phase::Running).await;
    }
    api::<SandboxWarmPool>(&ctx)
        .patch(
            "warm",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .expect("scale the pool");
    let genuine = eventually("a genuine member, Ready", WAIT, || async {
        let status = api::<SandboxWarmPool>(&ctx)
            .get("warm")
            .await
            .ok()?
            .status?;
        let made: Vec<String> = members(&ctx, "warm")
            .await
            .iter()
            .filter(|s| !s.name_any().starts_with("forged"))
            .map(|s| s.name_any())
            .collect();
        (status.ready_replicas == 1 && status.replicas == 1 && made.len() == 1).then_some(made)
    })
    .await;
    claim_pool(&ctx, "job", "warm").await;
    let (name, _) = bound(&ctx, "job").await;
    assert_eq!(genuine, [name]);
    for forged in ["forged-label", "forged-owner"] {
        let untouched = sandboxes(&ctx).get(forged).await.expect("forged");
        assert!(
            !untouched.labels().contains_key(CLAIM_LABEL),
            "{forged} was claimed"
        );
    }
}

/// A template's gateway token was copied to every Sandbox made from it, so one claim's token
/// opened every other claim's Sandbox. Now each Sandbox gets its own, in a Secret it owns, and
/// a template cannot name one.
#[tokio::test]
async fn template_sandboxes_get_their_own_tokens() {
    use common::gateway::{get, options, play_container};
    use k8s_openapi::api::core::v1::Secret;
    let ctx = TestContext::new("template_tokens").await;
    let _operator = Operator::start(&ctx);
    let shared = template(
        "shared",
        serde_json::json!({ "gateway": { "enabled": true, "port": 8080,
            "tokenSHA256": "0".repeat(64) } }),
    );
    let refused = api::<SandboxTemplate>(&ctx)
        .create(&PostParams::default(), &shared)
        .await
        .expect_err("a template with a token is refused");
    assert!(
        refused
            .to_string()
            .contains("a template cannot name a tokenSHA256"),
        "{refused}"
    );
    make(&ctx, &template("python", serde_json::json!({}))).await;
    make(&ctx, &pool("warm", "python", 1, "OnReplenish")).await;
    ready_members(&ctx, "warm", 1).await;
    claim_pool(&ctx, "alice", "warm").await;
    make(
        &ctx,
        &claim(
            "bob",
            serde_json::json!({ "sandboxTemplateRef": { "name": "python" } }),
        ),
    )
    .await;
    let secrets: Api<Secret> = api(&ctx);
    let (mut tokens, mut servers) = (Vec::new(), Vec::new());
    for claim in ["alice", "bob"] {
        let (name, _) = bound(&ctx, claim).await;
        let sandbox = wait_phase(&ctx, &name, Phase::Running).await;
        let recorded = sandbox
            .status
            .and_then(|s| s.gateway_token)
            .expect("the token is recorded");
        let secret = secrets.get(&recorded.secret).await.expect("token Secret");
        assert_eq!(
            secret.owner_references()[0].uid,
            sandbox.metadata.uid.clone().expect("uid"),
            "owned by the Sandbox"
        );
        let token = secret
            .data
            .and_then(|d| d.get("token").cloned())
            .map(|b| String::from_utf8(b.0).expect("utf-8"))
            .expect("a token");
        assert_eq!(
            sandman::distribution::sha256_hex(token.as_bytes()),
            recorded.sha256
        );
        servers.push(play_container(&ctx, &name).await.expect("container"));
        tokens.push((name, token));
    }
    assert_ne!(tokens[0].1, tokens[1].1, "each Sandbox its own token");
    let gateway = sandman::gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    let path = |name: &str| format!("/sandboxes/{}/{name}/", ctx.namespace);
    let ((alice, alice_token), (bob, bob_token)) = (&tokens[0], &tokens[1]);
    let (status, _, body) = get(&gateway, &path(alice), Some(alice_token)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, format!("hello from {alice}").as_str())
    );
    let (status, _, _) = get(&gateway, &path(bob), Some(alice_token)).await;
    assert_eq!(status, 401, "alice's token does not open bob's Sandbox");
    let (status, _, _) = get(&gateway, &path(bob), None).await;
    assert_eq!(status, 401, "nor does no token");
    let (status, _, _) = get(&gateway, &path(bob), Some(bob_token)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn claim_lifecycle_may_change_but_not_what_it_claims() {
    let ctx = TestContext::new("claim_lifecycle_changes").await;
    make(&ctx, &template("scratch", serde_json::json!({}))).await;
    make(&ctx, &template("other", serde_json::json!({}))).await;
    make(
        &ctx,
        &claim(
            "job",
            serde_json::json!({ "sandboxTemplateRef": { "name": "scratch" } }),
        ),
    )
    .await;
    let claims = api::<SandboxClaim>(&ctx);
    let later =
        serde_json::json!({ "spec": { "lifecycle": { "shutdownTime": "2099-01-01T00:00:00Z" } } });
    claims
        .patch("job", &Default::default(), &kube::api::Patch::Merge(&later))
        .await
        .expect("a claim's end may move");
    let other = serde_json::json!({ "spec": { "sandboxTemplateRef": { "name": "other" } } });
    let refused = claims
        .patch("job", &Default::default(), &kube::api::Patch::Merge(&other))
        .await
        .expect_err("a claim's template may not change");
    assert!(
        refused.to_string().contains("immutable but for lifecycle"),
        "{refused}"
    );
    let env = serde_json::json!({ "spec": { "env": [{ "name": "A", "value": "1" }] } });
    assert!(
        claims
            .patch("job", &Default::default(), &kube::api::Patch::Merge(&env))
            .await
            .is_err(),
        "a claim's env may not be added"
    );
}

#[tokio::test]
async fn expired_claim_under_suspend_keeps_its_sandbox_suspended() {
    let ctx = TestContext::new("claim_suspend").await;
    let _operator = Operator::start(&ctx);
    make(&ctx, &template("napper", serde_json::json!({}))).await;
    make(
        &ctx,
        &claim(
            "nap",
            serde_json::json!({
                "sandboxTemplateRef": { "name": "napper" },
                "lifecycle": { "shutdownTime": "2099-01-01T00:00:00Z", "shutdownPolicy": "Suspend" },
            }),
        ),
    )
    .await;
    let (name, _) = bound(&ctx, "nap").await;

    // At its end (moved to now) the Sandbox is suspended, not deleted, and the claim says so.
    let now = serde_json::json!({ "spec": { "lifecycle": {
        "shutdownTime": k8s_openapi::jiff::Timestamp::now().to_string() } } });
    api::<SandboxClaim>(&ctx)
        .patch("nap", &Default::default(), &Patch::Merge(&now))
        .await
        .expect("end it now");
    wait_phase(&ctx, &name, Phase::Suspended).await;
    let reason = eventually("the claim to say Suspended", WAIT, || async {
        let status = api::<SandboxClaim>(&ctx).get("nap").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "Suspended")
            .map(|c| c.message)
    })
    .await;
    assert!(reason.contains("shutdownTime"), "{reason}");
    stays(
        "the Sandbox and the claim to stay",
        Duration::from_secs(3),
        || async {
            sandboxes(&ctx)
                .get_opt(&name)
                .await
                .ok()
                .flatten()
                .is_some()
                && api::<SandboxClaim>(&ctx)
                    .get_opt("nap")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
        },
    )
    .await;

    // A new end and a resume (E2B's connect) run it again, and it stays running.
    let later =
        serde_json::json!({ "spec": { "lifecycle": { "shutdownTime": "2099-01-01T00:00:00Z" } } });
    api::<SandboxClaim>(&ctx)
        .patch("nap", &Default::default(), &Patch::Merge(&later))
        .await
        .expect("move the end");
    let running = serde_json::json!({ "spec": { "operatingMode": "Running" } });
    sandboxes(&ctx)
        .patch(&name, &Default::default(), &Patch::Merge(&running))
        .await
        .expect("resume");
    wait_phase(&ctx, &name, Phase::Running).await;
    bound(&ctx, "nap").await;
    stays(
        "the Sandbox to stay running",
        Duration::from_secs(3),
        || async {
            sandboxes(&ctx)
                .get(&name)
                .await
                .is_ok_and(|s| s.spec.operating_mode == OperatingMode::Running)
        },
    )
    .await;
}
