//! A loaded policy: compiled and linked once, evaluated per hook under its limits, with what
//! each evaluation did told to the engine's observer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap};

use super::bounds;
use super::contracts::Exports;
use super::error::PolicyError;
use super::hook::{Evaluated, EvaluationObserver, Hook};
use super::limits::Limits;
use super::precompiled::Compiled;
use super::store::{GuestState, Session, Slots};
use super::types;

/// The tracing target of the per-evaluation span, named for what it is rather than for the
/// module that makes it, so that the trace exporter's filter (`telemetry`) keeps finding it
/// wherever the code lives.
pub const EVALUATION_TARGET: &str = "sandman::policy::evaluation";

/// How many idle sessions a reusing policy keeps; more run at once, but only these are kept.
const MAX_IDLE_SESSIONS: usize = 4;

/// Whether evaluations share instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// A fresh instance per evaluation: nothing a guest does carries over. For every
    /// third-party component.
    Fresh,
    /// Instances are kept between evaluations of the same policy (and dropped after any
    /// failure). Only for sandman's own components, such as the CEL engine, whose state is a
    /// cache of compiled programs.
    Instances,
}

/// Which of a component's hooks a policy uses; the CEL engine exports all three, a CEL policy
/// uses those it has expressions for.
pub type HookMask = Option<Vec<Hook>>;

/// A policy ready to evaluate: compiled and linked once, and evaluated in a fresh instance per
/// call unless it was loaded with [`Reuse::Instances`].
pub struct LoadedPolicy {
    pub(super) name: String,
    pub(super) engine: Engine,
    pub(super) pre: InstancePre<GuestState>,
    pub(super) slots: Arc<Slots>,
    pub(super) tick: Duration,
    pub(super) observer: Arc<dyn EvaluationObserver>,
    pub(super) exports: Box<dyn Exports>,
    pub(super) settings_json: String,
    pub(super) limits: Limits,
    pub(super) compiled: Compiled,
    pub(super) sessions: Option<Mutex<Vec<Session>>>,
    pub(super) mask: HookMask,
    /// The most linear memory any one evaluation's store held (memories only grow, so a
    /// store's total after a call is its peak).
    pub(super) peak_memory: std::sync::atomic::AtomicUsize,
}

impl LoadedPolicy {
    /// The most linear memory one evaluation (or the load's validation) has held so far.
    pub fn peak_memory_bytes(&self) -> usize {
        self.peak_memory.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this load compiled the component or read it from the on-disk cache.
    pub fn compiled(&self) -> Compiled {
        self.compiled
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The settings the policy was loaded with, as JSON (they go into every input).
    pub fn settings(&self) -> &str {
        &self.settings_json
    }

    /// The hooks the policy decides: those the component exports, narrowed by its mask.
    pub fn hooks(&self) -> Vec<Hook> {
        self.exported_hooks()
            .into_iter()
            .filter(|hook| self.mask.as_ref().is_none_or(|mask| mask.contains(hook)))
            .collect()
    }

    fn uses(&self, hook: Hook) -> bool {
        self.mask.as_ref().is_none_or(|mask| mask.contains(&hook))
    }

    pub(super) fn exported_hooks(&self) -> Vec<Hook> {
        Hook::ALL
            .into_iter()
            .filter(|hook| self.exports.has(*hook))
            .collect()
    }

    /// The contract version the component was built against.
    pub fn contract_version(&self) -> &'static str {
        self.exports.version()
    }

    /// Whether the policy decides `hook` (exported, and not masked out).
    pub fn decides(&self, hook: Hook) -> bool {
        self.uses(hook) && self.exports.has(hook)
    }

    fn check_uses(&self, hook: Hook) -> Result<(), PolicyError> {
        if self.decides(hook) {
            Ok(())
        } else {
            Err(PolicyError::MissingHook(hook.name()))
        }
    }

    pub fn isolation(
        &self,
        input: &types::Input,
    ) -> Result<Option<types::IsolationDecision>, PolicyError> {
        self.check_uses(Hook::Isolation)?;
        self.decide(
            Hook::Isolation,
            bounds::check_isolation,
            |store, instance| self.exports.isolation(store, instance, input),
        )
    }

    pub fn resources(
        &self,
        input: &types::Input,
    ) -> Result<Option<types::ResourcesDecision>, PolicyError> {
        self.check_uses(Hook::Resources)?;
        self.decide(
            Hook::Resources,
            bounds::check_resources,
            |store, instance| self.exports.resources(store, instance, input),
        )
    }

    pub fn lifecycle(
        &self,
        input: &types::Input,
    ) -> Result<Option<types::LifecycleDecision>, PolicyError> {
        self.check_uses(Hook::Lifecycle)?;
        self.decide(
            Hook::Lifecycle,
            bounds::check_lifecycle,
            |store, instance| self.exports.lifecycle(store, instance, input),
        )
    }

    /// The size of a warm pool (contract 0.2.0 and later).
    pub fn pool(
        &self,
        input: &types::PoolInput,
    ) -> Result<Option<types::PoolDecision>, PolicyError> {
        self.check_uses(Hook::Pool)?;
        self.decide(Hook::Pool, bounds::check_pool, |store, instance| {
            self.exports.pool(store, instance, input)
        })
    }

    /// Checks, at load, that the component accepts its settings. It runs once, off the hot
    /// path, so it gets at least `floor` even when evaluations get 100 ms.
    pub(super) fn validate_settings(&self, floor: Duration) -> Result<(), PolicyError> {
        if !self.exports.has_settings() {
            return Err(PolicyError::NoSettings(wasmtime::format_err!(
                "no settings interface of contract {}",
                self.exports.version()
            )));
        }
        self.run_within(floor.max(self.limits.timeout), |store, instance| {
            self.exports
                .validate_settings(store, instance, &self.settings_json)
        })?
        .map_err(PolicyError::InvalidSettings)
    }

    /// Runs one hook and checks what it returned: an `err` from the guest (cut to a bounded
    /// length), or a decision past the bounds of [`bounds`], is an error like any trap.
    fn decide<D>(
        &self,
        hook: Hook,
        check: impl Fn(&D, usize) -> Result<(), PolicyError>,
        call: impl FnOnce(
            &mut Store<GuestState>,
            &wasmtime::component::Instance,
        ) -> wasmtime::Result<Result<Option<D>, String>>,
    ) -> Result<Option<D>, PolicyError> {
        // Debug level: at info it would cost the text logger about 2 µs per evaluation
        // (BENCHMARKS.md); the trace exporter asks for it explicitly.
        let span = tracing::debug_span!(
            target: EVALUATION_TARGET,
            "policy.evaluate",
            policy = %self.name,
            hook = hook.name(),
            outcome = tracing::field::Empty
        );
        let _evaluating = span.enter();
        let started = std::time::Instant::now();
        let result = self
            .run_within(self.limits.timeout, call)
            .and_then(|r| r.map_err(|e| PolicyError::Guest(bounds::guest_error(e))))
            .and_then(|decision| {
                if let Some(decision) = &decision {
                    check(decision, self.limits.output_bytes)?;
                }
                Ok(decision)
            });
        let outcome = match &result {
            Ok(Some(_)) => Evaluated::Decided,
            Ok(None) => Evaluated::Abstained,
            Err(error) => Evaluated::Failed(error),
        };
        span.record("outcome", outcome.label());
        self.observer
            .evaluated(&self.name, hook, outcome, started.elapsed());
        result
    }

    /// Runs `call` in a session (store + instance) under this policy's memory limit and the
    /// given deadline. The session is fresh, or, for a policy loaded with [`Reuse::Instances`],
    /// one an earlier call left behind; a session whose call failed is never reused.
    fn run_within<R>(
        &self,
        timeout: Duration,
        call: impl FnOnce(&mut Store<GuestState>, &wasmtime::component::Instance) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        // A slot first: past the pool's size, evaluations wait rather than fail to instantiate.
        // The ticker runs while any slot is taken, so from here until the store is gone.
        let _slot = self.slots.acquire();
        let idle = self
            .sessions
            .as_ref()
            .and_then(|pool| pool.lock().ok().and_then(|mut p| p.pop()));
        let mut session = match idle {
            Some(session) => session,
            None => self.new_session()?,
        };
        session.arm(timeout, self.tick);
        let outcome = call(&mut session.store, &session.instance);
        self.peak_memory.fetch_max(
            session.store.data().limiter.total_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
        session.forward_stdio(&self.name);
        match outcome {
            Ok(result) => {
                if let Some(pool) = &self.sessions
                    && let Ok(mut pool) = pool.lock()
                    && pool.len() < MAX_IDLE_SESSIONS
                {
                    pool.push(session);
                }
                Ok(result)
            }
            Err(error) => Err(self.classify(error, session.store.data(), timeout)),
        }
    }

    fn new_session(&self) -> Result<Session, PolicyError> {
        let timeout = self.limits.timeout;
        Session::new(
            &self.engine,
            &self.pre,
            &self.name,
            self.limits.memory_bytes,
            timeout,
            self.tick,
        )
        .map_err(|(error, store)| self.classify(error, store.data(), timeout))
    }

    fn classify(
        &self,
        error: wasmtime::Error,
        state: &GuestState,
        timeout: Duration,
    ) -> PolicyError {
        if state.limiter.exceeded {
            return PolicyError::OutOfMemory(self.limits.memory_bytes);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout(timeout),
            Some(trap) => PolicyError::Trap(*trap),
            None => PolicyError::Failed(error),
        }
    }
}
