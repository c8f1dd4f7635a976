//! Criterion benchmark `cel_eval`: one CEL hook evaluation in the CEL engine component (a
//! reused instance holding the compiled programs), and what loading a CEL policy costs.
//!
//! ```sh
//! cargo bench --bench cel_eval
//! ```

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sandman::api::{CelPolicy, CelVariable};
use sandman::policy::{Limits, LoadedPolicy, PolicyEngine, Reuse, cel};

fn load(engine: &PolicyEngine, policy: &CelPolicy) -> LoadedPolicy {
    engine
        .load_with(
            "bench",
            cel::CEL_ENGINE,
            &cel::engine_settings(policy),
            Limits::default(),
            Reuse::Instances,
            Some(cel::hooks(policy)),
        )
        .expect("load")
}

/// An example from `policies/cel/`.
fn example(file: &str) -> CelPolicy {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies/cel")
            .join(file),
    )
    .expect("read the example");
    let policy: sandman::api::SandboxPolicy = serde_yaml::from_str(&text).expect("policy");
    policy.spec.cel.expect("a CEL policy")
}

/// Ten expressions: nine variables and a hook that uses them.
fn ten_expressions() -> CelPolicy {
    let mut variables: Vec<CelVariable> = (0..9)
        .map(|i| CelVariable {
            name: format!("v{i}"),
            expression: format!(
                "sandbox.labels.exists(k, k.startsWith('team-{i}')) || activity.idleSeconds > {i} * 60"
            ),
        })
        .collect();
    variables.push(CelVariable {
        name: "any".into(),
        expression: "variables.v0 || variables.v1 || variables.v2 || variables.v3 || variables.v4 || variables.v5 || variables.v6 || variables.v7 || variables.v8".into(),
    });
    CelPolicy {
        variables,
        lifecycle: Some("variables.any ? {'action': 'keep', 'reason': 'busy'} : null".into()),
        ..CelPolicy::default()
    }
}

fn cel_eval(c: &mut Criterion) {
    let engine = PolicyEngine::new().expect("engine");
    let started = Instant::now();
    let policy = load(&engine, &example("idle-suspend.yaml"));
    eprintln!(
        "first CEL load (compile the {} KiB engine, link, compile and dry-run the expressions): {:?}",
        cel::CEL_ENGINE.len() / 1024,
        started.elapsed()
    );
    let mut input = sandman::policy::input::sample(&[], &[], policy.settings());
    input.activity.idle_seconds = 3600;
    c.bench_function("CEL lifecycle hook (idle-suspend), reused instance", |b| {
        b.iter(|| {
            policy
                .lifecycle(&input)
                .expect("evaluate")
                .expect("decides")
        })
    });
    let gvisor = load(&engine, &example("untrusted-to-gvisor.yaml"));
    let untrusted = sandman::policy::input::sample(
        &[("sandman.dev/trust", "untrusted")],
        &[],
        gvisor.settings(),
    );
    c.bench_function(
        "CEL isolation hook (untrusted-to-gvisor), reused instance",
        |b| {
            b.iter(|| {
                gvisor
                    .isolation(&untrusted)
                    .expect("evaluate")
                    .expect("decides")
            })
        },
    );
    // The floor: host call, input lowering and the engine's fixed work around an expression.
    let abstains = load(
        &engine,
        &CelPolicy {
            lifecycle: Some("null".into()),
            ..CelPolicy::default()
        },
    );
    let input = sandman::policy::input::sample(&[], &[], abstains.settings());
    c.bench_function("CEL hook `null` (abstains), reused instance", |b| {
        b.iter(|| abstains.lifecycle(&input).expect("evaluate"))
    });
    let ten = ten_expressions();
    c.bench_function(
        "load a CEL policy with 10 expressions (engine linked): compile + check + dry run",
        |b| b.iter(|| load(&engine, &ten)),
    );
    let loaded = load(&engine, &ten);
    let input = sandman::policy::input::sample(&[], &[], loaded.settings());
    c.bench_function("CEL hook with 10 expressions, reused instance", |b| {
        b.iter(|| loaded.lifecycle(&input).expect("evaluate"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = cel_eval
}
criterion_main!(benches);
