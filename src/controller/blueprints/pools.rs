//! The SandboxWarmPool controller: keeps `replicas` unclaimed members of the pool's template,
//! makes more as claims take them, and replaces stale members under `Recreate`.
//!
//! Members are counted from the API server, not a cache, so a pool never makes a member twice
//! because its cache had not seen the last one yet.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::PartialObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::instrument;

use crate::api::{
    Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool, SandboxWarmPoolStatus,
    WarmPoolUpdateStrategyType,
};
use crate::controller::api_call::{ApiCallFailed, failed, scoped};
use crate::controller::blueprint::{self, FROM_POOL_LABEL, POOL_LABEL};
use crate::controller::blueprints::pool_sizing::{self, Members};
use crate::policy::PolicySet;

/// How often a pool whose template is missing looks again.
const MISSING_RETRY: Duration = Duration::from_secs(30);

/// Why a pool reconcile failed.
pub type PoolError = ApiCallFailed;

pub struct PoolContext {
    pub client: Client,
    /// Pool policies decide a pool's size when one selects it.
    pub policies: PolicySet,
}

/// The metadata of the Sandboxes that carry `label`, as they change.
fn pool_sandboxes(
    sandboxes: &Api<PartialObjectMeta<Sandbox>>,
    config: &watcher::Config,
    label: &str,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Sandbox>, watcher::Error>> + Send + 'static
{
    watcher::watcher(sandboxes.clone(), config.clone().labels(label))
        .default_backoff()
        .touched_objects()
}

/// The pool a Sandbox's `label` names.
fn pool_of(
    sandbox: &PartialObjectMeta<Sandbox>,
    label: &str,
) -> Option<ObjectRef<SandboxWarmPool>> {
    let pool = sandbox.labels().get(label)?;
    Some(ObjectRef::new(pool).within(sandbox.namespace().as_deref()?))
}

/// Runs the SandboxWarmPool controller until `shutdown`.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    (policies, policy_changes): (PolicySet, impl futures::Stream<Item = ()> + Send + 'static),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = namespace.as_deref();
    let pools: Api<SandboxWarmPool> = scoped(&client, namespace);
    let sandboxes: Api<PartialObjectMeta<Sandbox>> = scoped(&client, namespace);
    let templates: Api<SandboxTemplate> = scoped(&client, namespace);
    let claims: Api<SandboxClaim> = scoped(&client, namespace);
    let config = watcher::Config::default().any_semantic();
    let controller = Controller::new(pools, config.clone());
    let store = controller.store();
    let pools_of_claims = controller.store();
    controller
        // Members, and Sandboxes just taken from a pool (they no longer carry its label):
        // only their labels are read, so only their metadata is watched, and only of
        // Sandboxes that carry one of the two labels (a selector cannot say "either").
        .watches_stream(
            pool_sandboxes(&sandboxes, &config, POOL_LABEL),
            move |sandbox| pool_of(&sandbox, POOL_LABEL),
        )
        .watches_stream(
            pool_sandboxes(&sandboxes, &config, FROM_POOL_LABEL),
            move |sandbox| pool_of(&sandbox, FROM_POOL_LABEL),
        )
        // A new claim may change the size a pool policy decides, even one served cold.
        .watches(claims, config.clone(), move |claim: SandboxClaim| {
            pools_of_claims
                .state()
                .into_iter()
                .filter(|pool| {
                    pool.namespace() == claim.namespace() && pool_sizing::for_pool(&claim, pool)
                })
                .map(|pool| ObjectRef::from_obj(&*pool))
                .collect::<Vec<_>>()
        })
        // A template change reaches every pool of that template.
        .watches(templates, config, move |template: SandboxTemplate| {
            let namespace = template.namespace();
            let name = template.name_any();
            store
                .state()
                .into_iter()
                .filter(|pool| {
                    pool.namespace() == namespace && pool.spec.sandbox_template_ref.name == name
                })
                .map(|pool| ObjectRef::from_obj(&*pool))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(policy_changes)
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            error_policy,
            Arc::new(PoolContext { client, policies }),
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(pool: Arc<SandboxWarmPool>, error: &PoolError, _: Arc<PoolContext>) -> Action {
    tracing::warn!(pool = %pool.name_any(), %error, "pool reconcile failed");
    Action::requeue(crate::controller::ERROR_REQUEUE)
}

/// What a pool does now, from its members: pure, so the rules are unit-tested.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PoolPlan {
    pub create: usize,
    /// Members to delete: name, UID and the resourceVersion they were judged at.
    pub delete: Vec<(String, String, String)>,
}

pub fn plan(
    members: &[Sandbox],
    desired: usize,
    current_hash: &str,
    strategy: WarmPoolUpdateStrategyType,
) -> PoolPlan {
    let live: Vec<&Sandbox> = members
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    let mut delete: Vec<&Sandbox> = Vec::new();
    let mut keep: Vec<&Sandbox> = Vec::new();
    for member in live {
        if strategy == WarmPoolUpdateStrategyType::Recreate
            && blueprint::is_stale(member, current_hash)
        {
            delete.push(member);
        } else {
            keep.push(member);
        }
    }
    if keep.len() > desired {
        // Shed the ones a claim would take last: not ready, stale, then the youngest.
        keep.sort_by_key(|s| {
            (
                !blueprint::is_takeable(s),
                blueprint::is_stale(s, current_hash),
                s.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        });
        delete.extend(keep.split_off(desired));
    }
    PoolPlan {
        create: desired.saturating_sub(keep.len()),
        delete: delete
            .into_iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.uid().unwrap_or_default(),
                    s.resource_version().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

#[instrument(name = "pool.reconcile", skip_all, fields(namespace = %pool.namespace().unwrap_or_default(), pool = %pool.name_any()))]
async fn reconcile(pool: Arc<SandboxWarmPool>, ctx: Arc<PoolContext>) -> Result<Action, PoolError> {
    if pool.metadata.deletion_timestamp.is_some() {
        // Members are owned by the pool: the garbage collector takes them.
        return Ok(Action::await_change());
    }
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let templates: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
    let template_name = &pool.spec.sandbox_template_ref.name;
    let Some(template) = templates
        .get_opt(template_name)
        .await
        .map_err(failed("get", format!("SandboxTemplate {template_name}")))?
    else {
        tracing::info!(template = %template_name, "the pool's template does not exist");
        return Ok(Action::requeue(MISSING_RETRY));
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
    let members = sandboxes
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
        .await
        .map_err(failed("list", format!("members of {name}")))?
        .items
        .into_iter()
        // The label selects; only the pool's own owner reference makes a member.
        .filter(|s| blueprint::is_member_of(s, &pool))
        .collect::<Vec<_>>();
    let unclaimed: Vec<&Sandbox> = members
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let size = pool_sizing::size(
        &ctx.client,
        &ctx.policies,
        &pool,
        Members {
            unclaimed: count(unclaimed.len()),
            ready: count(
                unclaimed
                    .iter()
                    .filter(|s| blueprint::is_takeable(s))
                    .count(),
            ),
        },
    )
    .await?;
    let desired = usize::try_from(size.replicas).unwrap_or(0);
    let current = blueprint::blueprint_hash(&template.spec);
    let todo = plan(&members, desired, &current, pool.spec.strategy());
    carry_out(&sandboxes, &pool, &template, &todo).await?;
    let kept: Vec<&Sandbox> = members
        .iter()
        .filter(|s| !todo.delete.iter().any(|(n, _, _)| *n == s.name_any()))
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    let status = SandboxWarmPoolStatus {
        replicas: i32::try_from(kept.len() + todo.create).unwrap_or(i32::MAX),
        ready_replicas: i32::try_from(kept.iter().filter(|s| blueprint::is_takeable(s)).count())
            .unwrap_or(i32::MAX),
        desired_replicas: size.replicas,
        sized_by: size.sized_by.clone(),
        selector: Some(format!("{POOL_LABEL}={name}")),
        observed_generation: pool.metadata.generation,
    };
    if pool.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &pool, &status).await?;
    }
    // A policy that sized the pool by time or by claims is asked again when it says.
    Ok(size
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// Deletes and creates the members `todo` says.
async fn carry_out(
    sandboxes: &Api<Sandbox>,
    pool: &SandboxWarmPool,
    template: &SandboxTemplate,
    todo: &PoolPlan,
) -> Result<(), PoolError> {
    for (member, uid, version) in &todo.delete {
        // Guarded by the version it was judged at: a member a claim took since (its labels
        // and owner changed) is not the pool's to delete any more, and the delete conflicts.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: Some(version.clone()),
            }),
            ..DeleteParams::default()
        };
        match sandboxes.delete(member, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(failed("delete", format!("member {member}"))(e)),
        }
    }
    let params = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    for _ in 0..todo.create {
        sandboxes
            .create(&params, &blueprint::pool_member(pool, template))
            .await
            .map_err(failed("create", format!("a member of {}", pool.name_any())))?;
    }
    Ok(())
}

async fn write_status(
    client: &Client,
    pool: &SandboxWarmPool,
    status: &SandboxWarmPoolStatus,
) -> Result<(), PoolError> {
    let name = pool.name_any();
    let api: Api<SandboxWarmPool> =
        Api::namespaced(client.clone(), &pool.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": SandboxWarmPool::api_version(&()),
        "kind": SandboxWarmPool::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(failed("write status of", format!("SandboxWarmPool {name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    fn member(name: &str, age: i64, hash: &str) -> Sandbox {
        let mut s = Sandbox::new(name, Default::default());
        s.metadata.uid = Some(format!("{name}-uid"));
        s.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_800_000_000 - age).expect("time"),
        ));
        s.metadata.labels = Some(BTreeMap::from([
            (POOL_LABEL.to_string(), "pool".to_string()),
            (
                blueprint::BLUEPRINT_HASH_LABEL.to_string(),
                hash.to_string(),
            ),
        ]));
        s
    }

    #[test]
    fn a_short_pool_is_replenished() {
        let members = vec![member("a", 10, "h")];
        assert_eq!(
            plan(&members, 3, "h", WarmPoolUpdateStrategyType::OnReplenish),
            PoolPlan {
                create: 2,
                delete: vec![]
            }
        );
    }

    #[test]
    fn stale_members_go_at_once_only_under_recreate() {
        let members = vec![member("old", 10, "h1"), member("new", 5, "h2")];
        let on_replenish = plan(&members, 2, "h2", WarmPoolUpdateStrategyType::OnReplenish);
        assert_eq!(on_replenish, PoolPlan::default());
        let recreate = plan(&members, 2, "h2", WarmPoolUpdateStrategyType::Recreate);
        assert_eq!(
            recreate,
            PoolPlan {
                create: 1,
                delete: vec![("old".into(), "old-uid".into(), String::new())]
            }
        );
    }

    #[test]
    fn a_pool_too_large_sheds_its_youngest() {
        let members = vec![member("elder", 30, "h"), member("young", 1, "h")];
        assert_eq!(
            plan(&members, 1, "h", WarmPoolUpdateStrategyType::OnReplenish).delete,
            vec![("young".into(), "young-uid".into(), String::new())]
        );
    }
}
