//! The wasmtime host: one engine, a fresh store per evaluation, and no ambient authority.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::distribution::sha256_hex;

use super::bindings::Policy;
use super::bindings::exports::sandman::policy::{isolation, lifecycle, pool, resources, settings};
use super::bindings::sandman::policy::{host, types};
use super::bindings::{v0_1, v0_2};
use super::bounds;
use super::error::PolicyError;
use super::precompiled::{Compiled, PrecompiledCache};
use super::{contract_v0_1, contract_v0_2};

/// The epoch ticks this often while an evaluation runs, so a timeout is honoured to within
/// about a millisecond. With nothing running the ticker sleeps: a 1 ms ticker that never stops
/// cost an idle operator a thousand wake-ups a second (BENCHMARKS.md, idle CPU).
/// Ticks of 10 ms cost no less per evaluation (BENCHMARKS.md, "Epoch tick") and would make
/// a 100 ms timeout 10% coarse.
pub const TICK: Duration = Duration::from_millis(1);

/// How often a sleeping ticker checks that its engine still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A timeout is a budget of CPU time, not of wall-clock time: on a starved host (load 14 on 2
/// cores) an evaluation that needs 13 µs of CPU once waited past a 100 ms deadline for its turn
/// and held a Sandbox. When the wall-clock deadline comes, the evaluation goes on as long as it
/// has used less CPU than its timeout, but never past this many timeouts of wall-clock time
/// (and at least [`STARVED_WALL_MIN`]).
const STARVED_WALL_FACTOR: u32 = 20;
const STARVED_WALL_MIN: Duration = Duration::from_secs(5);

/// The least time `validate-settings` gets at load time.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The most memory any single policy may be given, whatever its limits say.
const MAX_POLICY_MEMORY: usize = 256 << 20;

/// What one evaluation may print to each of stdout and stderr; writes beyond fail in the guest.
const STDIO_BYTES: usize = 4 << 10;

/// What one evaluation may write through the host's `log`; past it, one line says the rest was
/// dropped. One evaluation once wrote 64 MiB of log.
const LOG_BYTES: usize = 16 << 10;

/// Core instances, linear memories and tables one component may contain. The pooling
/// allocator refuses a component past these when it is compiled, so a component with hundreds
/// of memories cannot take the slots every policy shares. Rust and componentize-py components
/// use one or two memories and a few dozen core instances.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 8;
const MAX_TABLES_PER_COMPONENT: u32 = 32;

/// Pooled slots: every evaluation (and load) holds one store, and a store holds at most one
/// component's worth of memories and tables, so this many run at once and the pool never runs
/// dry; the rest wait for a slot instead of failing.
const TOTAL_MEMORIES: u32 = 256;
const CONCURRENT_EVALUATIONS: usize = (TOTAL_MEMORIES / MAX_MEMORIES_PER_COMPONENT) as usize;

/// Bytes of each pooled linear memory and table kept resident between evaluations.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// What one policy may consume per evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// The largest decision (summed string lengths) the host accepts.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            output_bytes: 64 << 10,
        }
    }
}

/// The decisions a policy may make: three for a Sandbox, and the size of a warm pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Isolation,
    Resources,
    Lifecycle,
    Pool,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Isolation,
        Hook::Resources,
        Hook::Lifecycle,
        Hook::Pool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Isolation => "isolation",
            Hook::Resources => "resources",
            Hook::Lifecycle => "lifecycle",
            Hook::Pool => "pool",
        }
    }

    pub fn parse(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|hook| hook.name() == name)
    }
}

/// One engine for every policy: component model, pooling allocator, epoch interruption, and a
/// background ticker that advances the epoch every millisecond.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<PrecompiledCache>,
    /// Linked components by sha256.
    linked: Mutex<HashMap<String, (Component, InstancePre<GuestState>)>>,
    /// Stores that may exist at once, shared by every policy of this engine; a slot taken is
    /// an evaluation running, which is when the ticker ticks.
    slots: Arc<Slots>,
    /// Told of every evaluation (the operator's metrics); none by default.
    observer: Arc<dyn EvaluationObserver>,
    /// How often the epoch ticks while an evaluation runs.
    tick: Duration,
}

/// Hears of each evaluation: which policy and hook, how it ended (`decided`, `abstained`,
/// `timeout`, …), and how long it took. The engine knows nothing of where this goes, so two
/// operators in one process each count their own.
pub trait EvaluationObserver: Send + Sync {
    fn evaluated(&self, policy: &str, hook: Hook, outcome: &str, took: Duration);
}

/// The observer of an engine nobody watches.
struct Unobserved;

impl EvaluationObserver for Unobserved {
    fn evaluated(&self, _: &str, _: Hook, _: &str, _: Duration) {}
}

type Linked = (Component, InstancePre<GuestState>, Compiled);

/// How many linked components the engine keeps in memory.
const LINKED_ENTRIES: usize = 64;

impl PolicyEngine {
    /// An engine that compiles every policy it loads.
    pub fn new() -> Result<Self, PolicyError> {
        Self::build(None, TICK)
    }

    /// An engine that keeps compiled policies in `dir`, so a restart does not recompile them.
    pub fn with_cache_dir(dir: &Path) -> Result<Self, PolicyError> {
        Self::build(Some(dir), TICK)
    }

    /// An engine whose epoch ticks every `tick` while an evaluation runs: timeouts are
    /// honoured to within a tick. For measuring the choice of [`TICK`].
    pub fn with_epoch_tick(tick: Duration) -> Result<Self, PolicyError> {
        Self::build(None, tick.max(Duration::from_micros(100)))
    }

    fn build(cache_dir: Option<&Path>, tick: Duration) -> Result<Self, PolicyError> {
        // The pool reserves its address space up front (about 1 TB of VIRT: 4 GiB per memory
        // slot). Where that is refused (`ulimit -v`, strict overcommit) the engine falls back to
        // allocating on demand with dynamically sized memories, and says so.
        let engine = match Engine::new(&engine_config(Allocation::Pooled)) {
            Ok(engine) => engine,
            Err(error) => {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    "cannot reserve the policy pool's address space (ulimit -v or strict overcommit?); allocating per evaluation instead, which is slower"
                );
                Engine::new(&engine_config(Allocation::OnDemand)).map_err(PolicyError::Engine)?
            }
        };

        let mut linker = Linker::new(&engine);
        // Guests built with std import WASI; they get it with no capabilities (see `store`).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(PolicyError::Engine)?;
        Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(PolicyError::Engine)?;
        v0_2::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(PolicyError::Engine)?;
        v0_1::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(PolicyError::Engine)?;

        // The ticker runs while any clone of the engine lives, not just this PolicyEngine: a
        // loaded policy evaluating on another thread keeps the engine alive, and without ticks
        // its deadline would never come. (Stopping with the PolicyEngine once hung a test whose
        // operator was dropped mid-evaluation of an infinite loop.) It ticks only while an
        // evaluation runs: deadlines are counted in ticks from when they are set, so ticks
        // nobody waits for are not needed.
        let weak = engine.weak();
        let slots = Arc::new(Slots::new(CONCURRENT_EVALUATIONS));
        let ticker = slots.clone();
        std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while ticker.wait_for_work(IDLE_CHECK, || weak.upgrade().is_some()) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(PolicyError::Ticker)?;
        let cache = cache_dir
            .map(|dir| PrecompiledCache::open(dir, &engine))
            .transpose()
            .map_err(PolicyError::Cache)?;
        Ok(Self {
            engine,
            linker,
            cache,
            linked: Mutex::default(),
            slots,
            observer: Arc::new(Unobserved),
            tick,
        })
    }

    /// The same engine, telling `observer` of every evaluation of the policies it loads from
    /// now on.
    pub fn observed_by(mut self, observer: Arc<dyn EvaluationObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Compiles, links and checks a policy: it must export at least one hook, and accept its
    /// settings.
    pub fn load(
        &self,
        name: &str,
        wasm: &[u8],
        settings_json: &str,
        limits: Limits,
    ) -> Result<LoadedPolicy, PolicyError> {
        self.load_with(name, wasm, settings_json, limits, Reuse::Fresh, None)
    }

    /// [`load`](Self::load), choosing whether instances are reused and which exported hooks
    /// the policy uses.
    pub fn load_with(
        &self,
        name: &str,
        wasm: &[u8],
        settings_json: &str,
        limits: Limits,
        reuse: Reuse,
        mask: HookMask,
    ) -> Result<LoadedPolicy, PolicyError> {
        let limits = Limits {
            memory_bytes: limits.memory_bytes.min(MAX_POLICY_MEMORY),
            ..limits
        };
        let (component, pre, compiled) = self.link(wasm)?;
        let policy = LoadedPolicy {
            name: name.to_string(),
            engine: self.engine.clone(),
            exports: Exports::of(&pre),
            pre,
            slots: self.slots.clone(),
            tick: self.tick,
            observer: self.observer.clone(),
            settings_json: settings_json.to_string(),
            limits,
            compiled,
            sessions: (reuse == Reuse::Instances).then(Mutex::default),
            mask,
            peak_memory: std::sync::atomic::AtomicUsize::new(0),
        };
        if policy.exported_hooks().is_empty() {
            return Err(
                other_contract_version(&self.engine, &component).unwrap_or(PolicyError::NoHooks)
            );
        }
        let missing = PolicyError::NoSettings;
        // Validation runs once, off the hot path: it gets at least five seconds even when the
        // policy's evaluations get 100 ms.
        let validation = LOAD_TIMEOUT.max(limits.timeout);
        match &policy.exports {
            Exports::Current { .. } => {
                let settings = settings::GuestIndices::new(&policy.pre).map_err(missing)?;
                policy.run_within(validation, |store, instance| {
                    let guest = settings.load(&mut *store, instance)?;
                    guest.call_validate_settings(&mut *store, settings_json)
                })?
            }
            Exports::V0_2 { .. } => {
                let settings =
                    v0_2::exports::sandman::policy::settings::GuestIndices::new(&policy.pre)
                        .map_err(missing)?;
                policy.run_within(validation, |store, instance| {
                    let guest = settings.load(&mut *store, instance)?;
                    guest.call_validate_settings(&mut *store, settings_json)
                })?
            }
            Exports::V0_1 { .. } => {
                let settings =
                    v0_1::exports::sandman::policy::settings::GuestIndices::new(&policy.pre)
                        .map_err(missing)?;
                policy.run_within(validation, |store, instance| {
                    let guest = settings.load(&mut *store, instance)?;
                    guest.call_validate_settings(&mut *store, settings_json)
                })?
            }
        }
        .map_err(PolicyError::InvalidSettings)?;
        Ok(policy)
    }
}

impl PolicyEngine {
    pub(super) fn wasmtime(&self) -> &Engine {
        &self.engine
    }

    /// The component's machine code: from the on-disk cache when it has it, else compiled (and
    /// then cached).
    fn compile(&self, wasm: &[u8], digest: &str) -> Result<(Component, Compiled), PolicyError> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.get(&self.engine, digest)
        {
            return Ok((component, Compiled::FromCache));
        }
        let component = Component::new(&self.engine, wasm).map_err(PolicyError::Compile)?;
        if let Some(cache) = &self.cache {
            cache.put(digest, &component);
        }
        Ok((component, Compiled::Fresh))
    }

    /// Drops every linked component the engine keeps; loaded policies keep theirs. The next
    /// load of a component reads the on-disk cache or compiles.
    pub fn forget_linked(&self) {
        if let Ok(mut linked) = self.linked.lock() {
            linked.clear();
        }
    }

    /// The component linked against the host, shared by every policy that uses the same
    /// component (one module, several settings, is the common case).
    fn link(&self, wasm: &[u8]) -> Result<Linked, PolicyError> {
        let digest = sha256_hex(wasm);
        if let Some((component, pre)) = self
            .linked
            .lock()
            .ok()
            .and_then(|l| l.get(&digest).cloned())
        {
            return Ok((component, pre, Compiled::InMemory));
        }
        let (component, compiled) = self.compile(wasm, &digest)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(PolicyError::Link)?;
        if let Ok(mut linked) = self.linked.lock() {
            // Old revisions are not tracked one by one: past the bound, start over.
            if linked.len() >= LINKED_ENTRIES {
                linked.clear();
            }
            linked.insert(digest, (component.clone(), pre.clone()));
        }
        Ok((component, pre, compiled))
    }
}

/// How the engine allocates instances.
#[derive(Clone, Copy)]
enum Allocation {
    /// Slots reserved once and reused: fastest, but needs the address space up front.
    Pooled,
    /// Allocated per evaluation, with memories that grow in place of a 4 GiB reservation.
    OnDemand,
}

fn engine_config(allocation: Allocation) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if std::env::var_os("SANDMAN_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    match allocation {
        Allocation::Pooled => {
            let mut pooling = PoolingAllocationConfig::default();
            pooling
                .total_component_instances(256)
                .total_core_instances(
                    CONCURRENT_EVALUATIONS as u32 * MAX_CORE_INSTANCES_PER_COMPONENT,
                )
                .total_memories(TOTAL_MEMORIES)
                .total_tables(CONCURRENT_EVALUATIONS as u32 * MAX_TABLES_PER_COMPONENT)
                .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
                .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
                .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
                .max_memory_size(MAX_POLICY_MEMORY)
                // Resetting a used memory slot with madvise costs page faults and TLB
                // shootdowns on the next use: two thirds of an evaluation. Keeping the low pages
                // resident and resetting only the dirty ones (PAGEMAP_SCAN, Linux 6.7+) took a
                // hook from 36 µs to 12.6 µs (BENCHMARKS.md). Older kernels fall back to memset
                // of the kept region.
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        }
        Allocation::OnDemand => {
            // No per-memory reservation: bounds are checked explicitly, and the limiter (total
            // bytes, and memories, tables and instances per store) still bounds each store.
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            config.memory_reservation(0);
            config.memory_guard_size(0);
            config.memory_reservation_for_growth(1 << 20);
        }
    }
    config
}

/// The contract this host speaks.
const CONTRACT: &str = "sandman:policy/";
pub const CONTRACT_VERSION: &str = "0.3.0";
/// Every version the host loads, newest first.
pub(super) const CONTRACT_VERSIONS: [&str; 3] = [CONTRACT_VERSION, "0.2.0", "0.1.0"];

/// A clear error for a component built against another version of the contract, whose exports
/// the host therefore does not see.
fn other_contract_version(engine: &Engine, component: &Component) -> Option<PolicyError> {
    let versions: Vec<String> = component
        .component_type()
        .exports(engine)
        .filter_map(|(name, _)| name.strip_prefix(CONTRACT).map(str::to_string))
        .filter_map(|rest| rest.split_once('@').map(|(_, version)| version.to_string()))
        .filter(|version| !CONTRACT_VERSIONS.contains(&version.as_str()))
        .collect();
    let version = versions.first()?;
    Some(PolicyError::OtherContractVersion {
        found: version.clone(),
        supported: CONTRACT_VERSIONS.to_vec(),
    })
}

/// The hooks a component exports, by the contract version it was built against. A component
/// speaks one version: its exports are all of the same package version.
enum Exports {
    Current {
        isolation: Option<isolation::GuestIndices>,
        resources: Option<resources::GuestIndices>,
        lifecycle: Option<lifecycle::GuestIndices>,
        pool: Option<pool::GuestIndices>,
    },
    V0_2 {
        isolation: Option<v0_2::exports::sandman::policy::isolation::GuestIndices>,
        resources: Option<v0_2::exports::sandman::policy::resources::GuestIndices>,
        lifecycle: Option<v0_2::exports::sandman::policy::lifecycle::GuestIndices>,
        pool: Option<v0_2::exports::sandman::policy::pool::GuestIndices>,
    },
    V0_1 {
        isolation: Option<v0_1::exports::sandman::policy::isolation::GuestIndices>,
        resources: Option<v0_1::exports::sandman::policy::resources::GuestIndices>,
        lifecycle: Option<v0_1::exports::sandman::policy::lifecycle::GuestIndices>,
    },
}

impl Exports {
    fn of(pre: &InstancePre<GuestState>) -> Self {
        let current = Exports::Current {
            isolation: isolation::GuestIndices::new(pre).ok(),
            resources: resources::GuestIndices::new(pre).ok(),
            lifecycle: lifecycle::GuestIndices::new(pre).ok(),
            pool: pool::GuestIndices::new(pre).ok(),
        };
        if !current.hooks().is_empty() {
            return current;
        }
        let v0_2 = Exports::V0_2 {
            isolation: v0_2::exports::sandman::policy::isolation::GuestIndices::new(pre).ok(),
            resources: v0_2::exports::sandman::policy::resources::GuestIndices::new(pre).ok(),
            lifecycle: v0_2::exports::sandman::policy::lifecycle::GuestIndices::new(pre).ok(),
            pool: v0_2::exports::sandman::policy::pool::GuestIndices::new(pre).ok(),
        };
        if !v0_2.hooks().is_empty() {
            return v0_2;
        }
        let old = Exports::V0_1 {
            isolation: v0_1::exports::sandman::policy::isolation::GuestIndices::new(pre).ok(),
            resources: v0_1::exports::sandman::policy::resources::GuestIndices::new(pre).ok(),
            lifecycle: v0_1::exports::sandman::policy::lifecycle::GuestIndices::new(pre).ok(),
        };
        if old.hooks().is_empty() { current } else { old }
    }

    /// Whether the component exports `hook`: asked on every evaluation, so no allocation.
    fn has(&self, hook: Hook) -> bool {
        match (self, hook) {
            (Exports::Current { isolation, .. }, Hook::Isolation) => isolation.is_some(),
            (Exports::Current { resources, .. }, Hook::Resources) => resources.is_some(),
            (Exports::Current { lifecycle, .. }, Hook::Lifecycle) => lifecycle.is_some(),
            (Exports::Current { pool, .. }, Hook::Pool) => pool.is_some(),
            (Exports::V0_2 { isolation, .. }, Hook::Isolation) => isolation.is_some(),
            (Exports::V0_2 { resources, .. }, Hook::Resources) => resources.is_some(),
            (Exports::V0_2 { lifecycle, .. }, Hook::Lifecycle) => lifecycle.is_some(),
            (Exports::V0_2 { pool, .. }, Hook::Pool) => pool.is_some(),
            (Exports::V0_1 { isolation, .. }, Hook::Isolation) => isolation.is_some(),
            (Exports::V0_1 { resources, .. }, Hook::Resources) => resources.is_some(),
            (Exports::V0_1 { lifecycle, .. }, Hook::Lifecycle) => lifecycle.is_some(),
            (Exports::V0_1 { .. }, Hook::Pool) => false,
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        Hook::ALL
            .into_iter()
            .filter(|hook| self.has(*hook))
            .collect()
    }
}

/// A store with an instantiated policy, and how much of its output has been logged.
struct Session {
    store: Store<GuestState>,
    instance: wasmtime::component::Instance,
    stdout: (MemoryOutputPipe, usize),
    stderr: (MemoryOutputPipe, usize),
}

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
    name: String,
    engine: Engine,
    pre: InstancePre<GuestState>,
    slots: Arc<Slots>,
    tick: Duration,
    observer: Arc<dyn EvaluationObserver>,
    exports: Exports,
    settings_json: String,
    limits: Limits,
    compiled: Compiled,
    sessions: Option<Mutex<Vec<Session>>>,
    mask: HookMask,
    /// The most linear memory any one evaluation's store held (memories only grow, so a
    /// store's total after a call is its peak).
    peak_memory: std::sync::atomic::AtomicUsize,
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

    fn exported_hooks(&self) -> Vec<Hook> {
        self.exports.hooks()
    }

    /// The contract version the component was built against.
    pub fn contract_version(&self) -> &'static str {
        match self.exports {
            Exports::Current { .. } => CONTRACT_VERSION,
            Exports::V0_2 { .. } => "0.2.0",
            Exports::V0_1 { .. } => "0.1.0",
        }
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
            |store, instance| match &self.exports {
                Exports::Current {
                    isolation: Some(indices),
                    ..
                } => indices
                    .load(&mut *store, instance)?
                    .call_decide(&mut *store, input),
                Exports::V0_2 {
                    isolation: Some(indices),
                    ..
                } => {
                    let decision = indices
                        .load(&mut *store, instance)?
                        .call_decide(&mut *store, &contract_v0_2::translate(input)?)?;
                    contract_v0_2::decision(decision)
                }
                Exports::V0_1 {
                    isolation: Some(indices),
                    ..
                } => Ok(indices
                    .load(&mut *store, instance)?
                    .call_decide(&mut *store, &contract_v0_1::input(input))?
                    .map(|decision| decision.map(Into::into))),
                _ => Err(wasmtime::format_err!("no isolation export")),
            },
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
            |store, instance| match &self.exports {
                Exports::Current {
                    resources: Some(indices),
                    ..
                } => indices
                    .load(&mut *store, instance)?
                    .call_decide(&mut *store, input),
                Exports::V0_2 {
                    resources: Some(indices),
                    ..
                } => {
                    let decision = indices
                        .load(&mut *store, instance)?
                        .call_decide(&mut *store, &contract_v0_2::translate(input)?)?;
                    contract_v0_2::decision(decision)
                }
                Exports::V0_1 {
                    resources: Some(indices),
                    ..
                } => Ok(indices
                    .load(&mut *store, instance)?
                    .call_decide(&mut *store, &contract_v0_1::input(input))?
                    .map(|decision| decision.map(Into::into))),
                _ => Err(wasmtime::format_err!("no resources export")),
            },
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
            |store, instance| match &self.exports {
                Exports::Current {
                    lifecycle: Some(indices),
                    ..
                } => indices
                    .load(&mut *store, instance)?
                    .call_decide(&mut *store, input),
                Exports::V0_2 {
                    lifecycle: Some(indices),
                    ..
                } => {
                    let decision = indices
                        .load(&mut *store, instance)?
                        .call_decide(&mut *store, &contract_v0_2::translate(input)?)?;
                    contract_v0_2::decision(decision)
                }
                Exports::V0_1 {
                    lifecycle: Some(indices),
                    ..
                } => Ok(indices
                    .load(&mut *store, instance)?
                    .call_decide(&mut *store, &contract_v0_1::input(input))?
                    .map(|decision| decision.map(Into::into))),
                _ => Err(wasmtime::format_err!("no lifecycle export")),
            },
        )
    }

    /// The size of a warm pool (contract 0.2.0 and later).
    pub fn pool(
        &self,
        input: &types::PoolInput,
    ) -> Result<Option<types::PoolDecision>, PolicyError> {
        self.check_uses(Hook::Pool)?;
        self.decide(
            Hook::Pool,
            bounds::check_pool,
            |store, instance| match &self.exports {
                Exports::Current {
                    pool: Some(indices),
                    ..
                } => indices
                    .load(&mut *store, instance)?
                    .call_decide(&mut *store, input),
                Exports::V0_2 {
                    pool: Some(indices),
                    ..
                } => {
                    let decision = indices
                        .load(&mut *store, instance)?
                        .call_decide(&mut *store, &contract_v0_2::translate(input)?)?;
                    contract_v0_2::decision(decision)
                }
                _ => Err(wasmtime::format_err!("no pool export")),
            },
        )
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
            Ok(Some(_)) => "decided",
            Ok(None) => "abstained",
            Err(error) => error.metric_label(),
        };
        span.record("outcome", outcome);
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
        let ticks = ticks_in(timeout, self.tick);
        session.store.set_epoch_deadline(ticks);
        session.store.data_mut().log_budget = LOG_BYTES;
        session.store.data_mut().budget = Budget::start(timeout, self.tick);
        let outcome = call(&mut session.store, &session.instance);
        self.peak_memory.fetch_max(
            session.store.data().limiter.total_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.forward_stdio(&mut session);
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
        let stdout = MemoryOutputPipe::new(STDIO_BYTES);
        let stderr = MemoryOutputPipe::new(STDIO_BYTES);
        let mut store = Store::new(
            &self.engine,
            GuestState {
                wasi: no_capabilities(stdout.clone(), stderr.clone()),
                table: ResourceTable::new(),
                limiter: MemoryLimiter::new(self.limits.memory_bytes),
                budget: Budget::start(self.limits.timeout, self.tick),
                policy: self.name.clone(),
                log_budget: LOG_BYTES,
            },
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|store| Ok(store.data().budget.on_deadline()));
        store.set_epoch_deadline(ticks_in(self.limits.timeout, self.tick));
        store.data_mut().budget = Budget::start(self.limits.timeout, self.tick);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|error| self.classify(error, store.data(), self.limits.timeout))?;
        Ok(Session {
            store,
            instance,
            stdout: (stdout, 0),
            stderr: (stderr, 0),
        })
    }

    /// What the guest printed since the last call goes to the operator's log, a line per event,
    /// tagged with the policy: a panicking policy's message is there to read.
    fn forward_stdio(&self, session: &mut Session) {
        for (stream, (pipe, forwarded)) in [
            ("stdout", &mut session.stdout),
            ("stderr", &mut session.stderr),
        ] {
            let bytes = pipe.contents();
            let Some(new) = bytes.get(*forwarded..).filter(|b| !b.is_empty()) else {
                continue;
            };
            *forwarded = bytes.len();
            for line in String::from_utf8_lossy(new).lines() {
                if !line.trim().is_empty() {
                    let line = crate::text::one_line(line);
                    tracing::info!(policy = %self.name, stream, "{line}");
                }
            }
        }
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

/// WASI with nothing in it: no preopened directories, no environment, no arguments, no network,
/// no name lookups. Stdout and stderr are bounded buffers the host reads after the call.
fn no_capabilities(stdout: MemoryOutputPipe, stderr: MemoryOutputPipe) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(stdout)
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// Per-evaluation state of a guest.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    policy: String,
    /// Bytes the guest may still log in this evaluation.
    log_budget: usize,
    /// The time this evaluation may take.
    budget: Budget,
}

/// The time one evaluation may take: `timeout` of its thread's CPU time, within
/// [`STARVED_WALL_FACTOR`] times that (at least [`STARVED_WALL_MIN`]) of wall-clock time.
struct Budget {
    timeout: Duration,
    tick: Duration,
    started: std::time::Instant,
    cpu_at_start: Option<Duration>,
}

/// How many ticks of `tick` cover `span` (at least one).
fn ticks_in(span: Duration, tick: Duration) -> u64 {
    let ticks = span.as_nanos().div_ceil(tick.as_nanos().max(1)).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// CPU time this thread has used. Evaluations are synchronous, so it is the guest's.
fn thread_cpu() -> Option<Duration> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

impl Budget {
    fn start(timeout: Duration, tick: Duration) -> Self {
        Self {
            timeout,
            tick,
            started: std::time::Instant::now(),
            cpu_at_start: thread_cpu(),
        }
    }

    /// At the wall-clock deadline: interrupt a guest that has used its CPU time (or waited too
    /// long in all), else give it the ticks its CPU time still allows.
    fn on_deadline(&self) -> wasmtime::UpdateDeadline {
        let waited = self.started.elapsed();
        let used = self
            .cpu_at_start
            .zip(thread_cpu())
            .map(|(start, now)| now.saturating_sub(start));
        match used {
            Some(used)
                if used < self.timeout
                    && waited
                        < self
                            .timeout
                            .saturating_mul(STARVED_WALL_FACTOR)
                            .max(STARVED_WALL_MIN) =>
            {
                let left = self.timeout - used;
                wasmtime::UpdateDeadline::Continue(ticks_in(left, self.tick))
            }
            _ => wasmtime::UpdateDeadline::Interrupt,
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for GuestState {}
impl v0_1::sandman::policy::types::Host for GuestState {}
impl v0_2::sandman::policy::types::Host for GuestState {}

impl v0_2::sandman::policy::host::Host for GuestState {
    fn log(&mut self, level: v0_2::sandman::policy::types::LogLevel, message: String) {
        let level = match level {
            v0_2::sandman::policy::types::LogLevel::Debug => types::LogLevel::Debug,
            v0_2::sandman::policy::types::LogLevel::Info => types::LogLevel::Info,
            v0_2::sandman::policy::types::LogLevel::Warn => types::LogLevel::Warn,
            v0_2::sandman::policy::types::LogLevel::Error => types::LogLevel::Error,
        };
        host::Host::log(self, level, message);
    }
}

impl v0_1::sandman::policy::host::Host for GuestState {
    fn log(&mut self, level: v0_1::sandman::policy::types::LogLevel, message: String) {
        host::Host::log(self, level.into(), message);
    }
}

impl host::Host for GuestState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let policy = self.policy.as_str();
        if self.log_budget == 0 {
            return;
        }
        if message.len() > self.log_budget {
            self.log_budget = 0;
            tracing::warn!(
                policy,
                "the policy logged more than {LOG_BYTES} bytes in one evaluation; the rest is dropped"
            );
            return;
        }
        self.log_budget -= message.len();
        // A newline in the message must not start a forged line of the operator's own.
        let message = crate::text::one_line(&message);
        match level {
            types::LogLevel::Debug => tracing::debug!(policy = %policy, "{message}"),
            types::LogLevel::Info => tracing::info!(policy = %policy, "{message}"),
            types::LogLevel::Warn => tracing::warn!(policy = %policy, "{message}"),
            types::LogLevel::Error => tracing::error!(policy = %policy, "{message}"),
        }
    }
}

/// Refuses memory growth that would take the store past the policy's limit, counted over all
/// of its linear memories together (a component with many memories once used 539 MB under a
/// 32 Mi limit), and remembers that it did, so the trap that follows is reported as
/// out-of-memory rather than as a bug in the policy.
struct MemoryLimiter {
    max_bytes: usize,
    /// Bytes of every linear memory of the store, as last granted.
    total_bytes: usize,
    exceeded: bool,
}

impl MemoryLimiter {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            total_bytes: 0,
            exceeded: false,
        }
    }
}

/// Table elements one store may hold in all.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    /// Also called with `current` 0 when a memory is created, so instantiation counts too.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .total_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        self.total_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_COMPONENT as usize
    }
}

/// A counting semaphore for the blocking threads policies run on. Slots taken are evaluations
/// running, so the epoch ticker waits on it too, and sleeps while every slot is free.
struct Slots {
    total: usize,
    free: std::sync::Mutex<usize>,
    released: std::sync::Condvar,
    taken: std::sync::Condvar,
}

impl Slots {
    fn new(count: usize) -> Self {
        Self {
            total: count,
            free: std::sync::Mutex::new(count),
            released: std::sync::Condvar::new(),
            taken: std::sync::Condvar::new(),
        }
    }

    /// Blocks while no slot is taken, checking `alive` every `check`; false once it is not.
    fn wait_for_work(&self, check: Duration, alive: impl Fn() -> bool) -> bool {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == self.total {
            if !alive() {
                return false;
            }
            free = self
                .taken
                .wait_timeout(free, check)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.released.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        self.taken.notify_one();
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_limited_across_all_memories_of_a_store() {
        let mut limiter = MemoryLimiter::new(32 << 20);
        // Three memories of 12 MiB each are created: the third takes the store past 32 MiB.
        assert!(matches!(
            limiter.memory_growing(0, 12 << 20, None),
            Ok(true)
        ));
        assert!(matches!(
            limiter.memory_growing(0, 12 << 20, None),
            Ok(true)
        ));
        assert!(matches!(
            limiter.memory_growing(0, 12 << 20, None),
            Ok(false)
        ));
        assert!(limiter.exceeded);
        // Growing one memory counts only the growth.
        let mut limiter = MemoryLimiter::new(32 << 20);
        assert!(matches!(
            limiter.memory_growing(0, 16 << 20, None),
            Ok(true)
        ));
        assert!(matches!(
            limiter.memory_growing(16 << 20, 32 << 20, None),
            Ok(true)
        ));
        assert!(matches!(
            limiter.memory_growing(32 << 20, 33 << 20, None),
            Ok(false)
        ));
    }

    #[test]
    fn slots_bound_concurrent_evaluations() {
        let slots = Arc::new(Slots::new(2));
        let a = slots.acquire();
        let _b = slots.acquire();
        let (sent, received) = std::sync::mpsc::channel();
        let waiting = slots.clone();
        let third = std::thread::spawn(move || {
            let _c = waiting.acquire();
            let _ = sent.send(());
        });
        // The third waits while two are held (a bounded window), and runs once one goes.
        assert!(received.recv_timeout(Duration::from_millis(200)).is_err());
        drop(a);
        assert!(received.recv_timeout(Duration::from_secs(30)).is_ok());
        let _ = third.join();
    }
}
