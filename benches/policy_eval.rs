//! Criterion benchmark `policy_eval`: one isolation hook on a fresh instance (new store,
//! instantiate from the cached `InstancePre`, one call), plus what loading a policy costs.
//!
//! ```sh
//! cargo bench --bench policy_eval
//! ```

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sandman::policy::types::Input;
use sandman::policy::{Compiled, Limits, PolicyEngine};
use sandman_testenv::policies::policy_wasm;

fn input(untrusted: bool) -> Input {
    let labels: &[(&str, &str)] = if untrusted {
        &[("sandman.dev/trust", "untrusted")]
    } else {
        &[]
    };
    sandman::policy::input::sample(labels, &[("kubernetes.io/metadata.name", "team")], "{}")
}

fn policy_eval(c: &mut Criterion) {
    let wasm = policy_wasm("untrusted_to_gvisor");
    let engine = PolicyEngine::new().expect("engine");
    let started = Instant::now();
    let policy = engine
        .load("untrusted-to-gvisor", &wasm, "{}", Limits::default())
        .expect("load");
    eprintln!(
        "load (compile {} KiB component, link, validate settings): {:?}",
        wasm.len() / 1024,
        started.elapsed()
    );
    let decides = input(true);
    let abstains = input(false);
    c.bench_function("isolation hook, fresh instance, decides", |b| {
        b.iter(|| policy.isolation(&decides).expect("evaluate"))
    });
    c.bench_function("isolation hook, fresh instance, abstains", |b| {
        b.iter(|| policy.isolation(&abstains).expect("evaluate"))
    });
    // The epoch ticker wakes every tick while an evaluation runs: what does a finer tick (a
    // more precise timeout) cost one evaluation? Same policy, engines of 1 ms and 10 ms ticks.
    for tick_ms in [1u64, 10] {
        let ticking = PolicyEngine::with_epoch_tick(std::time::Duration::from_millis(tick_ms))
            .expect("engine");
        let policy = ticking
            .load("untrusted-to-gvisor", &wasm, "{}", Limits::default())
            .expect("load");
        c.bench_function(
            &format!("isolation hook, decides, epoch tick {tick_ms} ms"),
            |b| b.iter(|| policy.isolation(&decides).expect("evaluate")),
        );
    }
    // As in the operator: a text logger at `info` is installed, so the evaluation's span is live.
    let logger = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(logger, || {
        c.bench_function("isolation hook, decides, under an info-level logger", |b| {
            b.iter(|| policy.isolation(&decides).expect("evaluate"))
        });
    });
    // The engine links each component once; `inspect` compiles afresh every time.
    c.bench_function("compile the component (inspect)", |b| {
        b.iter(|| engine.inspect(&wasm).expect("compile"))
    });
    c.bench_function("load, component already linked: validate settings", |b| {
        b.iter(|| {
            let policy = engine
                .load("untrusted-to-gvisor", &wasm, "{}", Limits::default())
                .expect("load");
            assert_eq!(policy.compiled(), Compiled::InMemory);
            policy
        })
    });
    let cache_dir =
        std::env::temp_dir().join(format!("sandman-bench-cache-{}", std::process::id()));
    let cached = PolicyEngine::with_cache_dir(&cache_dir).expect("engine");
    cached
        .load("untrusted-to-gvisor", &wasm, "{}", Limits::default())
        .expect("fill the cache");
    c.bench_function(
        "load from the on-disk cache: read + link + validate settings",
        |b| {
            b.iter(|| {
                cached.forget_linked();
                let policy = cached
                    .load("untrusted-to-gvisor", &wasm, "{}", Limits::default())
                    .expect("load");
                assert_eq!(policy.compiled(), Compiled::FromCache);
                policy
            })
        },
    );
    let _ = std::fs::remove_dir_all(&cache_dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = policy_eval
}
criterion_main!(benches);
