//! What one evaluation runs in: a store with no WASI capabilities, bounded memory and
//! output, and a budget of CPU time; the one place that arms a store's deadline and budget for
//! a call; and the slots that bound how many run at once.

use std::time::Duration;

use wasmtime::component::{Instance, InstancePre, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::sandman::policy::{host, types};

/// What one evaluation may print to each of stdout and stderr; writes beyond fail in the guest.
const STDIO_BYTES: usize = 4 << 10;

/// What one evaluation may write through the host's `log`; past it, one line says the rest was
/// dropped. One evaluation once wrote 64 MiB of log.
const LOG_BYTES: usize = 16 << 10;

/// A timeout is a budget of CPU time, not of wall-clock time: on a starved host (load 14 on 2
/// cores) an evaluation that needs 13 µs of CPU once waited past a 100 ms deadline for its turn
/// and held a Sandbox. When the wall-clock deadline comes, the evaluation goes on as long as it
/// has used less CPU than its timeout, but never past this many timeouts of wall-clock time
/// (and at least [`STARVED_WALL_MIN`]).
const STARVED_WALL_FACTOR: u32 = 20;
const STARVED_WALL_MIN: Duration = Duration::from_secs(5);

/// Core instances, linear memories and tables one component may contain. The pooling
/// allocator refuses a component past these when it is compiled, so a component with hundreds
/// of memories cannot take the slots every policy shares. Rust and componentize-py components
/// use one or two memories and a few dozen core instances.
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 8;
pub const MAX_TABLES_PER_COMPONENT: u32 = 32;

/// A store with an instantiated policy, and how much of its output has been logged.
pub struct Session {
    pub store: Store<GuestState>,
    pub instance: Instance,
    stdout: (MemoryOutputPipe, usize),
    stderr: (MemoryOutputPipe, usize),
}

impl Session {
    /// A fresh store for policy `policy`, limited to `memory_bytes`, with `pre` instantiated
    /// in it under `timeout`. On failure, the error and the store's state, to tell why.
    pub fn new(
        engine: &Engine,
        pre: &InstancePre<GuestState>,
        policy: &str,
        memory_bytes: usize,
        timeout: Duration,
        tick: Duration,
    ) -> Result<Self, (wasmtime::Error, Store<GuestState>)> {
        let stdout = MemoryOutputPipe::new(STDIO_BYTES);
        let stderr = MemoryOutputPipe::new(STDIO_BYTES);
        let mut store = Store::new(
            engine,
            GuestState {
                wasi: no_capabilities(stdout.clone(), stderr.clone()),
                table: ResourceTable::new(),
                limiter: MemoryLimiter::new(memory_bytes),
                budget: Budget::start(timeout, tick),
                policy: policy.to_string(),
                log_budget: LOG_BYTES,
            },
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|store| Ok(store.data().budget.on_deadline()));
        arm(&mut store, timeout, tick);
        match pre.instantiate(&mut store) {
            Ok(instance) => Ok(Self {
                store,
                instance,
                stdout: (stdout, 0),
                stderr: (stderr, 0),
            }),
            Err(error) => Err((error, store)),
        }
    }

    /// Readies the session for one call that may take `timeout`.
    pub fn arm(&mut self, timeout: Duration, tick: Duration) {
        arm(&mut self.store, timeout, tick);
    }

    /// What the guest printed since the last call goes to the operator's log, a line per
    /// event, tagged with the policy: a panicking policy's message is there to read.
    pub fn forward_stdio(&mut self, policy: &str) {
        for (stream, (pipe, forwarded)) in
            [("stdout", &mut self.stdout), ("stderr", &mut self.stderr)]
        {
            let bytes = pipe.contents();
            let Some(new) = bytes.get(*forwarded..).filter(|b| !b.is_empty()) else {
                continue;
            };
            *forwarded = bytes.len();
            for line in String::from_utf8_lossy(new).lines() {
                if !line.trim().is_empty() {
                    let line = crate::text::one_line(line);
                    tracing::info!(policy = %policy, stream, "{line}");
                }
            }
        }
    }
}

/// The one place a store's time is set: its epoch deadline (`timeout` in ticks of `tick`), the
/// CPU-time budget the deadline callback checks, and the log budget, all from now.
fn arm(store: &mut Store<GuestState>, timeout: Duration, tick: Duration) {
    store.set_epoch_deadline(ticks_in(timeout, tick));
    let state = store.data_mut();
    state.log_budget = LOG_BYTES;
    state.budget = Budget::start(timeout, tick);
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
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
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
pub struct MemoryLimiter {
    max_bytes: usize,
    /// Bytes of every linear memory of the store, as last granted.
    pub total_bytes: usize,
    pub exceeded: bool,
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
pub struct Slots {
    total: usize,
    free: std::sync::Mutex<usize>,
    released: std::sync::Condvar,
    taken: std::sync::Condvar,
}

impl Slots {
    pub fn new(count: usize) -> Self {
        Self {
            total: count,
            free: std::sync::Mutex::new(count),
            released: std::sync::Condvar::new(),
            taken: std::sync::Condvar::new(),
        }
    }

    /// Blocks while no slot is taken, checking `alive` every `check`; false once it is not.
    pub fn wait_for_work(&self, check: Duration, alive: impl Fn() -> bool) -> bool {
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

    pub fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.released.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        self.taken.notify_one();
        SlotGuard(self)
    }
}

pub struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
