//! The wasmtime host's engine: its configuration (pooling allocator, epoch interruption), the
//! epoch ticker, and loading a policy (compile, cache, link, check its exports and settings).
//! A store per evaluation is `store`'s; calling a hook is `loaded`'s, through the adapter of
//! the component's contract version (`contracts`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::distribution::sha256_hex;

use super::contracts;
use super::error::PolicyError;
use super::hook::{EvaluationObserver, Unobserved};
use super::limits::Limits;
use super::loaded::{HookMask, LoadedPolicy, Reuse};
use super::precompiled::{Compiled, PrecompiledCache};
use super::store::{
    GuestState, MAX_CORE_INSTANCES_PER_COMPONENT, MAX_MEMORIES_PER_COMPONENT,
    MAX_TABLES_PER_COMPONENT, Slots,
};

/// The epoch ticks this often while an evaluation runs, so a timeout is honoured to within
/// about a millisecond. With nothing running the ticker sleeps: a 1 ms ticker that never stops
/// cost an idle operator a thousand wake-ups a second (BENCHMARKS.md, idle CPU).
/// Ticks of 10 ms cost no less per evaluation (BENCHMARKS.md, "Epoch tick") and would make
/// a 100 ms timeout 10% coarse.
pub const TICK: Duration = Duration::from_millis(1);

/// How often a sleeping ticker checks that its engine still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The least time `validate-settings` gets at load time.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The most memory any single policy may be given, whatever its limits say.
const MAX_POLICY_MEMORY: usize = 256 << 20;

/// Pooled slots: every evaluation (and load) holds one store, and a store holds at most one
/// component's worth of memories and tables, so this many run at once and the pool never runs
/// dry; the rest wait for a slot instead of failing.
const TOTAL_MEMORIES: u32 = 256;
const CONCURRENT_EVALUATIONS: usize = (TOTAL_MEMORIES / MAX_MEMORIES_PER_COMPONENT) as usize;

/// Bytes of each pooled linear memory and table kept resident between evaluations.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

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
    /// Where this engine's machine code came from, counted: what `sandman policy` reports,
    /// and what proves a cached run compiled nothing.
    counts: CompileCounts,
}

/// How many components an engine compiled, and how many it read from the on-disk cache.
#[derive(Debug, Default)]
pub struct CompileCounts {
    compiled: std::sync::atomic::AtomicU64,
    from_cache: std::sync::atomic::AtomicU64,
}

impl CompileCounts {
    pub fn compiled(&self) -> u64 {
        self.compiled.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn read_from_cache(&self) -> u64 {
        self.from_cache.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
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
        contracts::link_all(&mut linker).map_err(PolicyError::Engine)?;

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
            counts: CompileCounts::default(),
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
            exports: contracts::exports_of(&pre),
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
                contracts::other_version(&self.engine, &component).unwrap_or(PolicyError::NoHooks)
            );
        }
        policy.validate_settings(LOAD_TIMEOUT)?;
        Ok(policy)
    }
}

impl PolicyEngine {
    /// How many components this engine compiled and read from its cache so far.
    pub fn compile_counts(&self) -> &CompileCounts {
        &self.counts
    }

    /// The on-disk cache's directory, when the engine has one.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(PrecompiledCache::dir)
    }

    /// The component's machine code: from the on-disk cache when it has it, else compiled (and
    /// then cached).
    fn compile(&self, wasm: &[u8], digest: &str) -> Result<(Component, Compiled), PolicyError> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.get(&self.engine, digest)
        {
            self.counts.count(&self.counts.from_cache);
            return Ok((component, Compiled::FromCache));
        }
        let component = Component::new(&self.engine, wasm).map_err(PolicyError::Compile)?;
        self.counts.count(&self.counts.compiled);
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
