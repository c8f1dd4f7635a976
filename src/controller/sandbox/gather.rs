//! The first stage of a reconcile: everything the plan reads, gathered before it is made.
//!
//! From the caches: the pod, the Namespace's labels, the children. The API server is asked
//! only for what the caches may not hold yet (a pod we just made, a child being created). The
//! policies are asked for their decisions, the pod baseline is checked against them, and a
//! pod made to restore a checkpoint has its supervisor asked how it started. Nothing is
//! written here.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::token::{self, TokenSeen};
use super::{baseline, children, ownership};
use crate::api::Sandbox;
use crate::controller::sandbox::checkpointing::{self, StartHeard};
use crate::controller::sandbox::context::Context;
use crate::controller::sandbox::decisions::Decisions;
use crate::controller::{Error, network};
use crate::policy::set::{decide_isolation, decide_lifecycle, decide_resources};
use crate::policy::{Hook, LoadedPolicy, PolicyFailed, input};

/// The annotation every ServiceAccount-token Secret carries.
const SERVICE_ACCOUNT_NAME: &str = "kubernetes.io/service-account.name";

/// What one reconcile read.
pub struct Gathered {
    /// The Sandbox, with the newest status this operator wrote.
    pub sandbox: Arc<Sandbox>,
    pub pod: Option<Pod>,
    pub decisions: Decisions,
    pub children: ChildrenSeen,
    /// What a pod made to restore said of its start, when there was one to ask.
    pub start: Option<StartHeard>,
    /// The Sandbox's own token Secret.
    pub token: TokenSeen,
}

/// What the children the plan may apply are, as far as ownership goes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChildrenSeen {
    /// Claims or a Service the plan would apply that exist and are someone else's, named.
    pub conflicts: Vec<String>,
    /// The cache holds a Service of the Sandbox's name that is someone else's: never deleted.
    pub foreign_service: bool,
    /// A NetworkPolicy of the name the Sandbox's network profile takes is someone else's.
    pub foreign_network_policy: bool,
}

/// Reads what the plan needs for `sandbox`.
pub async fn gather(ctx: &Context, sandbox: Arc<Sandbox>) -> Result<Gathered, Error> {
    let mut sandbox = sandbox;
    let current_status = ctx.written.current(&sandbox);
    if current_status != sandbox.status {
        Arc::make_mut(&mut sandbox).status = current_status;
    }
    let pod = pod(ctx, &sandbox).await?;
    let mut decisions = decide(ctx, &sandbox).await?;
    // The baseline judges the tenant's pod: what the runtime adds is the operator's own (its
    // image read-only, the Sandbox's token Secret, a port), and grants nothing.
    if ctx.pod_baseline {
        check_baseline(ctx, &sandbox, &mut decisions).await?;
    }
    match super::runtime::plan(
        &sandbox,
        ctx.runtime_image.as_deref(),
        decisions.exempted.as_ref(),
    ) {
        Ok(runtime) => decisions.runtime = runtime,
        Err(why) => decisions.runtime_refused = Some(why),
    }
    // Like the runtime, the supervisor is the operator's own, made after the baseline judged
    // what the tenant wrote: its privilege is in no allowance.
    match super::supervisor::plan(&sandbox, ctx.supervisor_image.as_deref()) {
        Ok(supervisor) => decisions.supervisor = supervisor,
        Err(why) => decisions.supervisor_refused = Some(why),
    }
    let mut children = children_seen(ctx, &sandbox, &decisions).await?;
    let token = token::see(ctx, &sandbox).await?;
    if let TokenSeen::Foreign(name) = &token {
        children.conflicts.push(ownership::conflict("Secret", name));
    }
    let start = match checkpointing::start_to_hear(&sandbox, pod.as_ref()) {
        Some(ip) => Some(
            match token::read(ctx, &sandbox, recorded_token(&sandbox)).await {
                Ok(token) => checkpointing::hear_start(&ctx.supervisors, &ip, &token).await,
                Err(error) => StartHeard::Silent(error.to_string()),
            },
        ),
        None => None,
    };
    Ok(Gathered {
        sandbox,
        pod,
        decisions,
        children,
        start,
        token,
    })
}

/// The Sandbox's pod. The cache may lag behind our own create; when the status says a pod
/// should be there and the cache has none, only the API server can say it is gone.
async fn pod(ctx: &Context, sandbox: &Sandbox) -> Result<Option<Pod>, Error> {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let cached = ctx.pods.get(&ObjectRef::new(&name).within(&namespace));
    if let Some(pod) = cached {
        return pod.to_pod().map(Some).map_err(Error::Cached);
    }
    let expects_pod = sandbox
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.expects_pod());
    if !expects_pod {
        return Ok(None);
    }
    pod_from_api(ctx, sandbox).await
}

/// The Sandbox's pod as the API server has it.
pub async fn pod_from_api(ctx: &Context, sandbox: &Sandbox) -> Result<Option<Pod>, Error> {
    let name = sandbox.name_any();
    Api::<Pod>::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default())
        .get_opt(&name)
        .await
        .map_err(Error::child("get", "Pod", &name))
}

/// The labels of the Sandbox's Namespace, which a policy's namespaceSelector matches.
async fn namespace_labels(
    ctx: &Context,
    namespace: &str,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    Ok(match ctx.namespaces.get(&ObjectRef::new(namespace)) {
        Some(ns) => ns.labels().clone(),
        // Not in the cache yet (start-up): a namespaceSelector must still see the labels.
        None => Api::<Namespace>::all(ctx.client.clone())
            .get_opt(namespace)
            .await
            .map_err(Error::child("get", "Namespace", namespace))?
            .map(|ns| ns.labels().clone())
            .unwrap_or_default(),
    })
}

/// Asks the matching isolation, resources and lifecycle policies, off the async runtime (each
/// evaluation is bounded by its policy's timeout).
async fn decide(ctx: &Context, sandbox: &Arc<Sandbox>) -> Result<Decisions, Error> {
    let namespace_labels = namespace_labels(ctx, &sandbox.namespace().unwrap_or_default()).await?;
    let matching = |hook| {
        ctx.policies
            .matching(hook, sandbox.labels(), &namespace_labels)
    };
    let isolation = matching(Hook::Isolation);
    let resources = matching(Hook::Resources);
    let lifecycle = matching(Hook::Lifecycle);
    if isolation.is_empty() && resources.is_empty() && lifecycle.is_empty() {
        return Ok(Decisions::default());
    }
    let has_lifecycle_policy = !lifecycle.is_empty();
    let sandbox = sandbox.clone();
    let now = Timestamp::now();
    // The blocking pool does not inherit the reconcile's span; its lines must still name the Sandbox.
    let span = tracing::Span::current();
    let decided = tokio::task::spawn_blocking(move || {
        let _reconcile = span.enter();
        let input_for = |policy: &LoadedPolicy| {
            input::build(&sandbox, &namespace_labels, now, policy.settings())
        };
        // A lifecycle policy that cannot decide changes nothing: the Sandbox keeps its mode,
        // whatever the failure policy, and the error is logged.
        let lifecycle = decide_lifecycle(&lifecycle, input_for).unwrap_or_else(|failed| {
            tracing::warn!(policy = failed.policy, error = %failed.error, "lifecycle policy failed; nothing changes");
            Default::default()
        });
        let isolation = decide_isolation(&isolation, input_for)?;
        let resources = decide_resources(&resources, input_for)?;
        Ok::<_, PolicyFailed>((isolation, resources, lifecycle))
    })
    .await
    .map_err(Error::Evaluation)?;
    Ok(match decided {
        Ok((isolation, resources, lifecycle)) => {
            for (policy, error) in isolation
                .ignored
                .iter()
                .chain(&resources.ignored)
                .chain(&lifecycle.ignored)
            {
                tracing::warn!(policy, %error, "policy failed; failurePolicy Ignore lets it through");
            }
            Decisions {
                isolation: isolation.decision,
                failure: None,
                audits: isolation.audits,
                resources: resources.merged,
                lifecycle: lifecycle.decision,
                has_lifecycle_policy,
                ..Decisions::default()
            }
        }
        Err(failed) => Decisions {
            failure: Some((failed.policy, failed.error.to_string())),
            has_lifecycle_policy,
            ..Decisions::default()
        },
    })
}

/// What the pod these decisions make asks beyond the pod baseline, given the allowance of the
/// isolation policy that decided it.
async fn check_baseline(
    ctx: &Context,
    sandbox: &Sandbox,
    decisions: &mut Decisions,
) -> Result<(), Error> {
    let pod = children::desired_pod(sandbox, decisions);
    let secrets = match &pod.spec {
        Some(spec) => secret_kinds(ctx, sandbox, spec).await?,
        None => baseline::Secrets::new(),
    };
    let found = baseline::findings(&pod, &sandbox.spec.volume_claim_templates, &secrets);
    let allowing = decisions.isolation.as_ref().and_then(|(name, _)| {
        let allowance = ctx.policies.get(name)?.pod_security.clone();
        (allowance != Default::default()).then(|| (name.clone(), allowance))
    });
    let (policy, allowance) = allowing.unwrap_or_default();
    let judged = baseline::judge(found, &allowance);
    decisions.refused = judged.refused;
    // A Secret that cannot be checked may appear, or be fixed, without the Sandbox changing.
    decisions.recheck = secrets
        .values()
        .any(|k| matches!(k, baseline::SecretKind::Unknown(_)));
    if !judged.exempted.is_empty() {
        decisions.exempted = Some((policy, judged.exempted));
    }
    Ok(())
}

/// What each Secret the pod names is. Only metadata is read, never data: a Secret of type
/// `kubernetes.io/service-account-token` must carry the ServiceAccount's name annotation
/// (the API server validates that), which is what marks it.
async fn secret_kinds(
    ctx: &Context,
    sandbox: &Sandbox,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Result<baseline::Secrets, Error> {
    let names = baseline::referenced_secrets(spec);
    let mut kinds = baseline::Secrets::new();
    if names.is_empty() {
        return Ok(kinds);
    }
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    for name in names {
        let kind = match api.get_metadata_opt(&name).await {
            Ok(Some(meta)) if meta.annotations().contains_key(SERVICE_ACCOUNT_NAME) => {
                baseline::SecretKind::ServiceAccountToken
            }
            Ok(Some(_)) => baseline::SecretKind::Plain,
            Ok(None) => baseline::SecretKind::Unknown("it does not exist".into()),
            Err(kube::Error::Api(status)) if status.code == 403 => baseline::SecretKind::Unknown(
                format!("sandman may not read it: {}", status.message),
            ),
            Err(e) => return Err(Error::child("get", "Secret", &name)(e)),
        };
        kinds.insert(name, kind);
    }
    Ok(kinds)
}

/// Whether the claims and Service of this Sandbox's names are its own. The caches hold only
/// labelled objects, so a name missing from them is asked of the API server: one read per
/// child while it is being created, and none after. An expired Sandbox applies neither, so
/// neither is asked.
async fn children_seen(
    ctx: &Context,
    sandbox: &Sandbox,
    decisions: &Decisions,
) -> Result<ChildrenSeen, Error> {
    let name = sandbox.name_any();
    let namespace = sandbox.namespace().unwrap_or_default();
    let cached_service = ctx
        .services
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|s| s.to_service())
        .transpose()
        .map_err(Error::Cached)?;
    let mut seen = ChildrenSeen {
        foreign_service: cached_service
            .as_ref()
            .is_some_and(|s| !ownership::service_is_ours(s, sandbox)),
        ..ChildrenSeen::default()
    };
    if expired(sandbox) {
        return Ok(seen);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    for template in &sandbox.spec.volume_claim_templates {
        let template_name = children::claim_template_name(template);
        let claim_name = children::claim_name(&template_name, &name);
        let existing = match ctx
            .claims
            .get(&ObjectRef::new(&claim_name).within(&namespace))
        {
            Some(cached) => Some((*cached).clone()),
            None => claims.get_opt(&claim_name).await.map_err(Error::child(
                "get",
                "PersistentVolumeClaim",
                &claim_name,
            ))?,
        };
        if existing.is_some_and(|c| !ownership::claim_is_ours(&c, sandbox, &template_name)) {
            seen.conflicts
                .push(ownership::conflict("PersistentVolumeClaim", &claim_name));
        }
    }
    if sandbox.spec.wants_service() {
        let existing = match cached_service {
            Some(cached) => Some(cached),
            None => Api::<Service>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(&name)
                .await
                .map_err(Error::child("get", "Service", &name))?,
        };
        if existing.is_some_and(|s| !ownership::service_is_ours(&s, sandbox)) {
            seen.conflicts.push(ownership::conflict("Service", &name));
        }
    }
    let wants_network_policy = decisions
        .isolation
        .as_ref()
        .is_some_and(|(_, d)| d.network.is_some());
    if wants_network_policy {
        let policy_name = network::sandbox_policy_name(&name);
        let existing = match ctx
            .network_policies
            .get(&ObjectRef::new(&policy_name).within(&namespace))
        {
            Some(cached) => Some((*cached).clone()),
            None => Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(&policy_name)
                .await
                .map_err(Error::child("get", "NetworkPolicy", &policy_name))?,
        };
        if existing.is_some_and(|p| !network::owned_by(&p, sandbox)) {
            seen.conflicts
                .push(ownership::conflict("NetworkPolicy", &policy_name));
            seen.foreign_network_policy = true;
        }
    }
    Ok(seen)
}

/// `shutdownTime` has passed (the phase machine's first rule, asked early so nothing is read
/// for children an expired Sandbox never applies).
fn expired(sandbox: &Sandbox) -> bool {
    sandbox
        .spec
        .shutdown_time
        .as_ref()
        .is_some_and(|t| t.0 <= Timestamp::now())
}

/// The token the Sandbox's status records.
fn recorded_token(sandbox: &Sandbox) -> Option<&crate::api::GatewayTokenStatus> {
    sandbox.status.as_ref()?.gateway_token.as_ref()
}
