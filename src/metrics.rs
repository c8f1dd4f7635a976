//! Prometheus metrics, and the `/metrics`, `/healthz` and `/readyz` endpoints. One registry per
//! operator or gateway, handed down to what counts into it: two operators in one process (the
//! tests') do not overwrite each other's counts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyHook {
    pub policy: String,
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyOutcome {
    pub policy: String,
    pub hook: String,
    /// decided, abstained, error, timeout, trap, out_of_memory, …
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyReason {
    pub policy: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

fn seconds_histogram() -> Histogram {
    // 10 µs to about 42 s.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub policy_evaluation_seconds: Family<PolicyHook, Histogram, fn() -> Histogram>,
    pub policy_decisions: Family<PolicyOutcome, Counter>,
    pub policy_load_failures: Family<PolicyReason, Counter>,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub reconcile_errors: Family<ControllerLabel, Counter>,
    pub reconcile_seconds: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    /// Sandbox transitions by Event reason: Suspended, Resuming, PolicySuspended, …
    pub transitions: Family<ReasonLabel, Counter>,
    pub gateway_requests: Family<CodeLabel, Counter>,
    pub gateway_held: Gauge,
    pub gateway_wake_seconds: Histogram,
    /// From a resume (spec back to Running) until the pod is Ready again.
    pub resume_seconds: Histogram,
    sandboxes: Family<PhaseLabel, Gauge>,
    /// The phase each Sandbox is counted under, by uid, so the gauges move one step per change.
    phases: Mutex<PhaseBook>,
}

#[derive(Default)]
struct PhaseBook {
    by_uid: std::collections::HashMap<String, String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::policy::EvaluationObserver for Metrics {
    fn evaluated(
        &self,
        policy: &str,
        hook: crate::policy::Hook,
        outcome: crate::policy::Evaluated<'_>,
        took: Duration,
    ) {
        self.policy_evaluated(policy, hook.name(), outcome.label(), took);
    }
}

impl Metrics {
    /// A registry of its own: each operator or gateway counts into the one it is given.
    pub fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("sandman")),
            policy_evaluation_seconds: Family::new_with_constructor(seconds_histogram),
            policy_decisions: Family::default(),
            policy_load_failures: Family::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_seconds: Family::new_with_constructor(seconds_histogram),
            transitions: Family::default(),
            gateway_requests: Family::default(),
            gateway_held: Gauge::default(),
            gateway_wake_seconds: seconds_histogram(),
            resume_seconds: seconds_histogram(),
            sandboxes: Family::default(),
            phases: Mutex::default(),
        };
        if let Ok(mut registry) = metrics.registry.lock() {
            registry.register(
                "policy_evaluation_seconds",
                "Time of one policy hook evaluation",
                metrics.policy_evaluation_seconds.clone(),
            );
            registry.register(
                "policy_decisions",
                "Policy hook evaluations by outcome",
                metrics.policy_decisions.clone(),
            );
            registry.register(
                "policy_load_failures",
                "Policy revisions that failed to load, by reason",
                metrics.policy_load_failures.clone(),
            );
            registry.register("reconciles", "Reconciles", metrics.reconciles.clone());
            registry.register(
                "reconcile_errors",
                "Reconciles that failed",
                metrics.reconcile_errors.clone(),
            );
            registry.register(
                "reconcile_seconds",
                "Time of one reconcile",
                metrics.reconcile_seconds.clone(),
            );
            registry.register(
                "sandbox_transitions",
                "Sandbox transitions by Event reason",
                metrics.transitions.clone(),
            );
            registry.register(
                "gateway_requests",
                "Gateway requests by status code",
                metrics.gateway_requests.clone(),
            );
            registry.register(
                "gateway_held_requests",
                "Requests held while their Sandbox wakes",
                metrics.gateway_held.clone(),
            );
            registry.register(
                "resume_seconds",
                "From a resume until the pod is Ready again",
                metrics.resume_seconds.clone(),
            );
            registry.register(
                "sandboxes",
                "Sandboxes by phase, kept from the watch",
                metrics.sandboxes.clone(),
            );
            registry.register(
                "gateway_wake_seconds",
                "From a request to a Suspended Sandbox until it can be forwarded",
                metrics.gateway_wake_seconds.clone(),
            );
        }
        metrics
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        }
        text
    }

    /// A Sandbox was seen with `phase`; `None` when it is gone.
    pub fn sandbox_phase(&self, uid: &str, phase: Option<String>) {
        let Ok(mut book) = self.phases.lock() else {
            return;
        };
        let previous = match &phase {
            Some(phase) => book.by_uid.insert(uid.to_string(), phase.clone()),
            None => book.by_uid.remove(uid),
        };
        if previous == phase {
            return;
        }
        if let Some(previous) = previous {
            self.sandboxes
                .get_or_create(&PhaseLabel { phase: previous })
                .dec();
        }
        if let Some(phase) = phase {
            self.sandboxes.get_or_create(&PhaseLabel { phase }).inc();
        }
    }

    pub fn policy_evaluated(&self, policy: &str, hook: &str, outcome: &str, took: Duration) {
        let labels = PolicyHook {
            policy: policy.into(),
            hook: hook.into(),
        };
        self.policy_evaluation_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.policy_decisions
            .get_or_create(&PolicyOutcome {
                policy: policy.into(),
                hook: hook.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// One watch's share of the phase gauges: the Sandboxes it reported, so that a relist forgets
/// only those it no longer lists (several watches may feed one registry: a namespaced operator
/// per tenant, or the tests' in-process operators).
#[derive(Default)]
pub struct PhaseWatch {
    reported: std::collections::HashSet<String>,
    /// Uids seen since a relist began; the rest went away while the watch was down.
    relisting: Option<std::collections::HashSet<String>>,
}

impl PhaseWatch {
    pub fn phase(&mut self, metrics: &Metrics, uid: &str, phase: Option<String>) {
        if phase.is_some() {
            self.reported.insert(uid.to_string());
            if let Some(seen) = self.relisting.as_mut() {
                seen.insert(uid.to_string());
            }
        } else {
            self.reported.remove(uid);
        }
        metrics.sandbox_phase(uid, phase);
    }

    /// A relist begins: Sandboxes not seen again before it ends are gone.
    pub fn relisting(&mut self) {
        self.relisting = Some(Default::default());
    }

    pub fn relisted(&mut self, metrics: &Metrics) {
        let Some(seen) = self.relisting.take() else {
            return;
        };
        let gone: Vec<String> = self.reported.difference(&seen).cloned().collect();
        for uid in gone {
            self.phase(metrics, &uid, None);
        }
    }
}

/// Whether the process is ready to serve: set once caches have synced (and, for the operator,
/// policies have been read). A standby replica is ready: it does what it should, which is wait.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Connections the metrics server serves at once, and how long a request's headers may take.
const METRICS_CONNECTIONS: usize = 64;
const METRICS_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen`; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    ready: Readiness,
    metrics: Arc<Metrics>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // Probes and scrapes need few connections; the bound keeps a flood from taking the
    // process's file descriptors, and an accept error no longer stops the server.
    let listener = crate::listener::Bounded::new(listener, METRICS_CONNECTIONS);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await;
            let (stream, slot) = (accepted.stream, accepted.slot);
            let ready = ready.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let ready = ready.clone();
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(answer(request.uri().path(), &ready, &metrics)) }
                });
                let _slot = slot;
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(METRICS_HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(path: &str, ready: &Readiness, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.encode()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if ready.is_ready() => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if path == "/metrics" {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(metrics: &Metrics, phase: &str) -> i64 {
        metrics
            .sandboxes
            .get_or_create(&PhaseLabel {
                phase: phase.into(),
            })
            .get()
    }

    #[test]
    fn phase_gauges_move_one_step_per_change_and_relists_prune() {
        let metrics = Metrics::new();
        let mut watch = PhaseWatch::default();
        watch.phase(&metrics, "a", Some("Running".into()));
        watch.phase(&metrics, "b", Some("Running".into()));
        watch.phase(&metrics, "a", Some("Running".into()));
        assert_eq!(
            count(&metrics, "Running"),
            2,
            "an unchanged phase counts once"
        );
        watch.phase(&metrics, "a", Some("Suspended".into()));
        assert_eq!(
            (count(&metrics, "Running"), count(&metrics, "Suspended")),
            (1, 1)
        );
        watch.phase(&metrics, "a", None);
        assert_eq!(count(&metrics, "Suspended"), 0);
        // b went away while the watch was down: the relist does not see it.
        watch.relisting();
        watch.phase(&metrics, "c", Some("Pending".into()));
        watch.relisted(&metrics);
        assert_eq!(
            (count(&metrics, "Running"), count(&metrics, "Pending")),
            (0, 1)
        );
    }

    #[test]
    fn a_relist_forgets_only_its_own_watch_sandboxes() {
        let metrics = Metrics::new();
        let (mut tenant_a, mut tenant_b) = (PhaseWatch::default(), PhaseWatch::default());
        tenant_a.phase(&metrics, "a", Some("Running".into()));
        tenant_b.relisting();
        tenant_b.phase(&metrics, "b", Some("Running".into()));
        tenant_b.relisted(&metrics);
        assert_eq!(count(&metrics, "Running"), 2);
    }
}
