//! The SandboxPolicy watcher: fetches each policy's component, checks its digest, compiles it
//! away from the Sandbox reconciles, and swaps it into the [`PolicySet`]. A revision that fails
//! to load never replaces the last good one; the policy's status says what happened.

pub mod fetch;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

use crate::api::FailurePolicy;
use crate::api::conditions::{self, Desired, READY};
use crate::api::{SandboxPolicy, SandboxPolicyStatus};
use crate::http_client::HttpClient;
use crate::policy::limits::{PolicyLimitBounds, format_memory};
use crate::policy::loader::{self, Component, LoadError};
use crate::policy::set::Unavailable;
use crate::policy::{ActivePolicy, Hook, LoadedPolicy, PolicyEngine, PolicyError, PolicySet, cel};
use fetch::{ClusterFetcher, PullSecrets};

/// Reasons of a SandboxPolicy's Ready condition.
pub mod reason {
    pub const LOADED: &str = "Loaded";
    pub const FETCH_FAILED: &str = "FetchFailed";
    pub const DIGEST_MISMATCH: &str = "DigestMismatch";
    pub const COMPILE_FAILED: &str = "CompileFailed";
    pub const INVALID_SETTINGS: &str = "InvalidSettings";
    /// `spec.*.limits` does not parse, or asks for more than the operator allows.
    pub const INVALID_LIMITS: &str = "InvalidLimits";
    pub const NO_HOOKS: &str = "NoHooks";
    /// Still loading when the start-up grace ran out (a source that does not answer).
    pub const LOADING: &str = "Loading";
    /// A CEL expression does not parse, names something unknown, or returns the wrong shape.
    pub const INVALID_EXPRESSION: &str = "InvalidExpression";
    /// `spec.wasm.verify` asks for a signature, and none verifies under its key.
    pub const SIGNATURE_INVALID: &str = "SignatureInvalid";
}

/// How soon a policy whose source could not be fetched is tried again.
const FETCH_RETRY: Duration = Duration::from_secs(30);

struct PolicyContext {
    client: Client,
    http: HttpClient,
    engine: Arc<PolicyEngine>,
    set: PolicySet,
    changed: mpsc::UnboundedSender<()>,
    limits: PolicyLimitBounds,
    pull_secrets: PullSecrets,
    /// The policies tried at least once since start, loaded or not.
    tried: watch::Sender<BTreeSet<String>>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// How the SandboxPolicy controller is configured.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Load only the SandboxPolicies with these labels.
    pub selector: Option<String>,
    pub limits: PolicyLimitBounds,
    pub pull_secrets: PullSecrets,
    /// How long Sandboxes wait at start for the policies present then; one still loading after
    /// that counts as unavailable (failing closed or open by its failurePolicy) until it loads.
    pub load_grace: Duration,
    /// Where load failures are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            selector: None,
            limits: PolicyLimitBounds::default(),
            pull_secrets: PullSecrets::default(),
            load_grace: Duration::from_secs(10),
            metrics: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyControllerError {
    #[error("write SandboxPolicy status: {0}")]
    Status(#[source] kube::Error),
}

/// The status reason and message for a load that failed.
fn failure(error: LoadError) -> LoadFailure {
    let reason = match &error {
        LoadError::NoSource | LoadError::NoWasmSource | LoadError::Fetch(_) => reason::FETCH_FAILED,
        LoadError::DigestMismatch { .. } => reason::DIGEST_MISMATCH,
        LoadError::SignatureInvalid(_) => reason::SIGNATURE_INVALID,
        LoadError::InvalidExpression(_) => reason::INVALID_EXPRESSION,
        LoadError::Policy(PolicyError::InvalidSettings(_)) | LoadError::SettingsSchema(_) => {
            reason::INVALID_SETTINGS
        }
        LoadError::Policy(PolicyError::NoHooks) => reason::NO_HOOKS,
        LoadError::Policy(_) => reason::COMPILE_FAILED,
    };
    LoadFailure {
        reason,
        message: error.to_string(),
    }
}

/// Why a revision did not load: the condition reason and a message.
struct LoadFailure {
    reason: &'static str,
    message: String,
}

/// Runs the SandboxPolicy controller. Every change to the loaded set is announced on `changed`,
/// so that the Sandbox controller re-evaluates its Sandboxes. `first_pass` turns true once
/// every policy that existed at start has been tried (loaded, or refused with a reason).
pub async fn run(
    client: Client,
    settings: Settings,
    engine: Arc<PolicyEngine>,
    set: PolicySet,
    changed: mpsc::UnboundedSender<()>,
    first_pass: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let policies: Api<SandboxPolicy> = Api::all(client.clone());
    // Metadata-only requests: a ConfigMap's bytes are read when a policy loads, never cached.
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = Api::all(client.clone());
    let mut config = watcher::Config::default().any_semantic();
    if let Some(selector) = &settings.selector {
        config = config.labels(selector);
    }
    // Our own reflector rather than `Controller::new`, because a deletion is not a reconcile:
    // deleted policies must leave the set here, from the watch's events.
    let (store, writer) = reflector::store();
    let events = reflector(writer, watcher::watcher(policies, config))
        .default_backoff()
        .inspect_ok({
            let (set, changed, store) = (set.clone(), changed.clone(), store.clone());
            move |event| forget_deleted(event, &store, &set, &changed)
        })
        .applied_objects();
    let controller = Controller::for_stream(events, store.clone());
    let (tried, tried_rx) = watch::channel(BTreeSet::new());
    tokio::spawn(announce_first_pass(
        store.clone(),
        tried_rx,
        first_pass,
        FirstPassGrace {
            grace: settings.load_grace,
            set: set.clone(),
            changed: changed.clone(),
        },
    ));
    let http = match HttpClient::new() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "no HTTP client: the SandboxPolicy controller cannot run");
            return;
        }
    };
    let context = Arc::new(PolicyContext {
        client,
        http,
        engine,
        set,
        changed,
        limits: settings.limits,
        pull_secrets: settings.pull_secrets,
        tried,
        metrics: settings.metrics,
    });
    controller
        // A policy whose ConfigMap changes is reloaded at once: hot reload without a restart.
        .watches(config_maps, watcher::Config::default(), move |cm| {
            using_config_map(&store, &cm)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

/// The policies whose source is the ConfigMap `cm`.
fn using_config_map(
    store: &Store<SandboxPolicy>,
    cm: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<SandboxPolicy>> {
    let (namespace, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
    store
        .state()
        .into_iter()
        .filter(|p| {
            let source = p.spec.wasm.as_ref().and_then(|w| w.config_map.as_ref());
            source.is_some_and(|source| source.namespace == namespace && source.name == name)
        })
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// Takes deleted policies (or ones that left the selector) out of the set: at a Delete event,
/// and after a relist, whatever the new listing no longer has.
fn forget_deleted(
    event: &watcher::Event<SandboxPolicy>,
    store: &Store<SandboxPolicy>,
    set: &PolicySet,
    changed: &mpsc::UnboundedSender<()>,
) {
    let removed = match event {
        watcher::Event::Delete(policy) => set.remove(&policy.name_any()),
        watcher::Event::InitDone => set.retain(|name| store.get(&ObjectRef::new(name)).is_some()),
        _ => false,
    };
    if removed {
        tracing::info!("a SandboxPolicy is gone; its decisions no longer apply");
        let _ = changed.send(());
    }
}

/// What the first pass does when its grace runs out.
struct FirstPassGrace {
    grace: Duration,
    set: PolicySet,
    changed: mpsc::UnboundedSender<()>,
}

/// Waits until every policy in the first listing has been tried, or has gone, or the grace has
/// run out: then the ones still loading enter the set as unavailable, so that the Sandboxes they
/// match are held (or let through) by their failurePolicy rather than wait on a hung source.
async fn announce_first_pass(
    store: Store<SandboxPolicy>,
    mut tried: watch::Receiver<BTreeSet<String>>,
    first_pass: watch::Sender<bool>,
    grace: FirstPassGrace,
) {
    if !crate::controller::caches::synced(&store).await {
        return;
    }
    let initial: Vec<ObjectRef<SandboxPolicy>> = store
        .state()
        .iter()
        .map(|p| ObjectRef::from_obj(&**p))
        .collect();
    tracing::info!(policies = initial.len(), "loading SandboxPolicies");
    let deadline = tokio::time::Instant::now() + grace.grace;
    loop {
        let pending: Vec<Arc<SandboxPolicy>> = {
            let seen = tried.borrow_and_update();
            initial
                .iter()
                .filter(|p| !seen.contains(&p.name))
                .filter_map(|p| store.get(p))
                .collect()
        };
        if pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let failure = LoadFailure {
                reason: reason::LOADING,
                message: format!("still loading {:?} after start", grace.grace),
            };
            for policy in &pending {
                tracing::warn!(policy = %policy.name_any(), "still loading; unavailable until it loads");
                grace.set.insert_if_absent(unavailable(policy, &failure));
            }
            let _ = grace.changed.send(());
            break;
        }
        // A deletion is not a reconcile, so the store is looked at again now and then.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), tried.changed()).await {
            return;
        }
    }
    tracing::info!("SandboxPolicies tried once; Sandboxes may be reconciled");
    first_pass.send_replace(true);
}

fn error_policy(
    _: Arc<SandboxPolicy>,
    error: &PolicyControllerError,
    _: Arc<PolicyContext>,
) -> Action {
    tracing::warn!(%error, "SandboxPolicy reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(name = "policy.reconcile", skip_all, fields(policy = %policy.name_any()))]
async fn reconcile(
    policy: Arc<SandboxPolicy>,
    ctx: Arc<PolicyContext>,
) -> Result<Action, PolicyControllerError> {
    let name = policy.name_any();
    if policy.meta().deletion_timestamp.is_some() {
        if ctx.set.remove(&name) {
            let _ = ctx.changed.send(());
        }
        ctx.tried
            .send_if_modified(|tried| tried.insert(name.clone()));
        return Ok(Action::await_change());
    }
    let serving = ctx.set.get(&name);
    if serving.is_none() {
        hold_while_loading(&policy, &ctx).await?;
    }
    let outcome = load(&policy, &ctx).await;
    // In the set before it counts as tried, so that no Sandbox is reconciled without it.
    let entry = match &outcome {
        Ok((active, _)) => Some(active.clone()),
        // The last good revision keeps serving.
        Err(_) if serving.as_ref().is_some_and(|s| s.loaded.is_ok()) => None,
        Err(failure) => Some(unavailable(&policy, failure)),
    };
    if let Some(entry) = entry
        && !unchanged(serving.as_deref(), &entry)
    {
        match &entry.loaded {
            Ok(_) => tracing::info!(digest = %entry.digest, "policy loaded"),
            Err(_) => tracing::warn!(
                failure_policy = ?entry.failure_policy,
                "policy unavailable; its evaluations fail until it loads"
            ),
        }
        ctx.set.insert(entry);
        let _ = ctx.changed.send(());
    }
    ctx.tried
        .send_if_modified(|tried| tried.insert(name.clone()));
    let retry_fetch = matches!(&outcome, Err(f) if f.reason == reason::FETCH_FAILED);
    if let Err(failure) = &outcome {
        ctx.metrics
            .policy_load_failures
            .get_or_create(&crate::metrics::PolicyReason {
                policy: name.clone(),
                reason: failure.reason.into(),
            })
            .inc();
    }
    let status = status_of(&policy, &outcome, serving.as_deref());
    if policy.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &name, &status).await?;
    }
    // A URL or registry may come back; a ConfigMap that appears is seen by the watch anyway.
    if retry_fetch {
        return Ok(Action::requeue(FETCH_RETRY));
    }
    Ok(Action::await_change())
}

/// The policy's status after this load: what it serves (hooks, digest, limits in force) and
/// its Ready condition, or why it does not load and what is served meanwhile.
fn status_of(
    policy: &SandboxPolicy,
    outcome: &Result<(ActivePolicy, Arc<LoadedPolicy>), LoadFailure>,
    serving: Option<&ActivePolicy>,
) -> SandboxPolicyStatus {
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = policy.meta().generation;
    let desired = match outcome {
        Ok((active, loaded)) => {
            status.hooks = loaded
                .hooks()
                .iter()
                .map(|h| h.name().to_string())
                .collect();
            status.digest = Some(active.digest.clone());
            status
                .details
                .insert("compiled".into(), loaded.compiled().as_str().into());
            // The limits in force, after the operator's defaults.
            let limits = loaded.limits();
            status
                .details
                .insert("timeout".into(), format!("{:?}", limits.timeout));
            status
                .details
                .insert("memory".into(), format_memory(limits.memory_bytes));
            Desired::new(
                READY,
                true,
                reason::LOADED,
                format!("serving sha256:{}", active.digest),
            )
        }
        Err(failure) => {
            let kept = match serving.filter(|s| s.loaded.is_ok()) {
                Some(good) => format!(
                    "; still serving the last good revision sha256:{}",
                    good.digest
                ),
                None if policy.spec.failure_policy == FailurePolicy::Fail => {
                    "; the Sandboxes it matches are held until it loads (failurePolicy Fail)".into()
                }
                None => {
                    "; the Sandboxes it matches go ahead without it (failurePolicy Ignore)".into()
                }
            };
            Desired::new(
                READY,
                false,
                failure.reason,
                format!("{}{kept}", failure.message),
            )
        }
    };
    status.conditions = conditions::merge(
        &status.conditions,
        &[desired],
        policy.meta().generation,
        &Time(Timestamp::now()),
    );
    status
}

/// Whether `active` is what is already served, so that nothing needs re-evaluating.
fn unchanged(serving: Option<&ActivePolicy>, active: &ActivePolicy) -> bool {
    serving.is_some_and(|s| {
        s.digest == active.digest
            && s.priority == active.priority
            && s.mode == active.mode
            && s.failure_policy == active.failure_policy
            && s.matcher == active.matcher
            && s.pod_security == active.pod_security
            && match (&s.loaded, &active.loaded) {
                (Ok(a), Ok(b)) => a.settings() == b.settings() && a.limits() == b.limits(),
                (Err(a), Err(b)) => a == b,
                _ => false,
            }
    })
}

/// The set's entry for a policy that has never loaded.
fn unavailable(policy: &SandboxPolicy, failure: &LoadFailure) -> ActivePolicy {
    let spec = &policy.spec;
    let hooks = match &spec.cel {
        Some(cel) => cel::hooks(cel),
        None => Hook::ALL.to_vec(),
    };
    ActivePolicy {
        name: policy.name_any(),
        priority: spec.priority,
        mode: spec.mode,
        failure_policy: spec.failure_policy,
        matcher: spec.match_.clone().unwrap_or_default(),
        pod_security: spec.pod_security.clone().unwrap_or_default(),
        digest: String::new(),
        loaded: Err(Unavailable {
            hooks,
            reason: format!("{}: {}", failure.reason, failure.message),
        }),
    }
}

/// A policy new to this operator enters the set as unavailable before it is fetched and
/// compiled, which can take seconds: a Sandbox it matches that is created meanwhile is held
/// (failurePolicy Fail) rather than started without it and kept so until its next resume. The
/// status says so for a revision not yet reported on (not after a mere operator restart).
async fn hold_while_loading(
    policy: &SandboxPolicy,
    ctx: &PolicyContext,
) -> Result<(), PolicyControllerError> {
    let loading = LoadFailure {
        reason: reason::LOADING,
        message: "fetching and compiling".into(),
    };
    ctx.set.insert_if_absent(unavailable(policy, &loading));
    let mut status = policy.status.clone().unwrap_or_default();
    if status.observed_generation == policy.meta().generation {
        return Ok(());
    }
    let held = match policy.spec.failure_policy {
        FailurePolicy::Fail => "the Sandboxes it matches are held until it loads",
        FailurePolicy::Ignore => "the Sandboxes it matches go ahead without it",
    };
    status.observed_generation = policy.meta().generation;
    status.conditions = conditions::merge(
        &status.conditions,
        &[Desired::new(
            READY,
            false,
            reason::LOADING,
            format!("fetching and compiling; {held}"),
        )],
        policy.meta().generation,
        &Time(Timestamp::now()),
    );
    write_status(&ctx.client, &policy.name_any(), &status).await
}

async fn write_status(
    client: &Client,
    name: &str,
    status: &SandboxPolicyStatus,
) -> Result<(), PolicyControllerError> {
    let api: Api<SandboxPolicy> = Api::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": SandboxPolicy::api_version(&()),
        "kind": SandboxPolicy::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(PolicyControllerError::Status)?;
    Ok(())
}

async fn load(
    policy: &SandboxPolicy,
    ctx: &PolicyContext,
) -> Result<(ActivePolicy, Arc<LoadedPolicy>), LoadFailure> {
    let spec = &policy.spec;
    let limits = ctx
        .limits
        .apply(&spec.limits())
        .map_err(|message| LoadFailure {
            reason: reason::INVALID_LIMITS,
            message,
        })?;
    let fetcher = ClusterFetcher {
        client: &ctx.client,
        http: &ctx.http,
        pull_secrets: &ctx.pull_secrets,
    };
    let prepared = loader::prepare(spec, &fetcher, Component::FromSource)
        .await
        .map_err(failure)?;
    let digest = prepared.digest.clone();

    // Compiling takes milliseconds to seconds of CPU: off the async runtime.
    let engine = ctx.engine.clone();
    let name = policy.name_any();
    let span = tracing::Span::current();
    let loaded = tokio::task::spawn_blocking(move || {
        let _reconcile = span.enter();
        prepared.compile(&engine, &name, &prepared.settings, limits)
    })
    .await
    .map_err(|e| LoadFailure {
        reason: reason::COMPILE_FAILED,
        message: format!("the compiler task failed: {e}"),
    })?
    .map_err(failure)?;
    let loaded = Arc::new(loaded);
    let active = ActivePolicy {
        name: policy.name_any(),
        priority: spec.priority,
        mode: spec.mode,
        failure_policy: spec.failure_policy,
        matcher: spec.match_.clone().unwrap_or_default(),
        pod_security: spec.pod_security.clone().unwrap_or_default(),
        digest,
        loaded: Ok(loaded.clone()),
    };
    Ok((active, loaded))
}
