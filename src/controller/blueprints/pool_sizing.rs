//! A warm pool's size: `spec.replicas`, unless a SandboxPolicy with a `pool` hook selects the
//! pool (by its labels and namespace, as Sandboxes are selected), in which case the first
//! Enforce-mode policy that decides sets it, within `spec.maxReplicas`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::{PoolSizing, SandboxClaim, SandboxWarmPool};
use crate::controller::api_call::{ApiCallFailed, failed};
use crate::policy::set::decide_pool;
use crate::policy::types::{PoolActivity, PoolInput};
use crate::policy::{Hook, LoadedPolicy, PolicyFailed, PolicySet, PoolOutcome};

/// How far back the input's claim times go, and how many it holds at most.
const CLAIM_HISTORY: Duration = Duration::from_secs(3600);
const MAX_CLAIM_TIMES: usize = 256;

/// The bounds on when a pool policy asks to be called again.
const MIN_REQUEUE: Duration = Duration::from_secs(1);
const MAX_REQUEUE: Duration = Duration::from_secs(3600);

/// The size the pool keeps now, and when to ask its policy again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub replicas: i32,
    pub sized_by: Option<PoolSizing>,
    pub requeue: Option<Duration>,
}

/// What the pool's members look like to a policy.
pub struct Members {
    pub unclaimed: u32,
    pub ready: u32,
}

/// Decides the pool's size. Without a matching pool policy this is `spec.replicas` and no API
/// call is made. A policy that fails under `failurePolicy: Fail` keeps the size the pool had.
pub async fn size(
    client: &Client,
    policies: &PolicySet,
    pool: &SandboxWarmPool,
    members: Members,
) -> Result<Size, ApiCallFailed> {
    let spec_size = Size {
        replicas: pool.spec.replicas(),
        sized_by: None,
        requeue: None,
    };
    let namespace = pool.namespace().unwrap_or_default();
    let namespace_labels = if policies.has(Hook::Pool) {
        Api::<Namespace>::all(client.clone())
            .get_opt(&namespace)
            .await
            .map_err(failed("get", format!("Namespace {namespace}")))?
            .map(|ns| ns.labels().clone())
            .unwrap_or_default()
    } else {
        return Ok(spec_size);
    };
    let matching = policies.matching(Hook::Pool, pool.labels(), &namespace_labels);
    if matching.is_empty() {
        return Ok(spec_size);
    }
    let now = Timestamp::now();
    let claims = claim_times(client, pool, now).await?;
    let input = PoolInput {
        pool: crate::policy::types::Pool {
            name: pool.name_any(),
            namespace,
            labels: pairs(pool.labels()),
            namespace_labels: pairs(&namespace_labels),
            template: pool.spec.sandbox_template_ref.name.clone(),
            replicas: u32::try_from(pool.spec.replicas()).unwrap_or(0),
        },
        activity: PoolActivity {
            now: now.as_second(),
            members: members.unclaimed,
            ready_members: members.ready,
            claims,
        },
        settings: String::new(),
    };
    let span = tracing::Span::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let _reconcile = span.enter();
        decide_pool(&matching, |policy: &LoadedPolicy| PoolInput {
            settings: policy.settings().to_string(),
            ..input.clone()
        })
    })
    .await;
    Ok(sized(pool, outcome, spec_size))
}

/// The size the pool policies' outcome gives: the first decision within `maxReplicas`, the
/// spec's without one, or the size the pool had when the evaluation failed.
fn sized(
    pool: &SandboxWarmPool,
    outcome: Result<Result<PoolOutcome, PolicyFailed>, tokio::task::JoinError>,
    spec_size: Size,
) -> Size {
    let kept = || Size {
        replicas: pool
            .status
            .as_ref()
            .map_or(pool.spec.replicas(), |s| s.desired_replicas),
        sized_by: pool.status.as_ref().and_then(|s| s.sized_by.clone()),
        requeue: Some(crate::controller::ERROR_REQUEUE),
    };
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(failed)) => {
            tracing::warn!(policy = failed.policy, error = %failed.error, "pool policy failed; the pool keeps its size");
            return kept();
        }
        Err(error) => {
            tracing::warn!(%error, "pool policy evaluation did not finish; the pool keeps its size");
            return kept();
        }
    };
    for (policy, error) in &outcome.ignored {
        tracing::warn!(policy, %error, "pool policy failed; failurePolicy Ignore lets it through");
    }
    match outcome.decision {
        Some((policy, decision)) => Size {
            replicas: i32::try_from(decision.replicas)
                .unwrap_or(i32::MAX)
                .min(pool.spec.max_replicas()),
            sized_by: Some(PoolSizing {
                policy,
                replicas: i32::try_from(decision.replicas).unwrap_or(i32::MAX),
                reason: decision.reason,
            }),
            requeue: decision
                .requeue_after_seconds
                .map(|s| Duration::from_secs(s).clamp(MIN_REQUEUE, MAX_REQUEUE)),
        },
        None => spec_size,
    }
}

/// When claims for the pool (by its name, or by its template) were made in the last hour,
/// oldest first, at most [`MAX_CLAIM_TIMES`] of the newest.
async fn claim_times(
    client: &Client,
    pool: &SandboxWarmPool,
    now: Timestamp,
) -> Result<Vec<i64>, ApiCallFailed> {
    let namespace = pool.namespace().unwrap_or_default();
    let claims = Api::<SandboxClaim>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(failed("list", format!("SandboxClaims in {namespace}")))?
        .items;
    let since = now.as_second() - i64::try_from(CLAIM_HISTORY.as_secs()).unwrap_or(i64::MAX);
    let mut times: Vec<i64> = claims
        .iter()
        .filter(|claim| for_pool(claim, pool))
        .filter_map(|claim| claim.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second())
        .filter(|&at| at >= since)
        .collect();
    times.sort_unstable();
    let extra = times.len().saturating_sub(MAX_CLAIM_TIMES);
    times.drain(..extra);
    Ok(times)
}

/// Whether `claim` asks for this pool, or for the pool's template.
pub fn for_pool(claim: &SandboxClaim, pool: &SandboxWarmPool) -> bool {
    let by_pool = claim
        .spec
        .warm_pool_ref
        .as_ref()
        .is_some_and(|r| Some(&r.name) == pool.metadata.name.as_ref());
    let by_template = claim
        .spec
        .sandbox_template_ref
        .as_ref()
        .is_some_and(|r| r.name == pool.spec.sandbox_template_ref.name);
    by_pool || by_template
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
