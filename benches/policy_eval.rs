//! Criterion benchmark `policy_eval`: one isolation hook on a fresh instance (new store,
//! instantiate from the cached `InstancePre`, one call), plus what loading a policy costs.
//!
//! ```sh
//! cargo bench --bench policy_eval
//! ```

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sandman::policy::types::{
    Activity, ComputeResources, Container, Input, OperatingMode, Sandbox,
};
use sandman::policy::{Limits, PolicyEngine};
use sandman_testenv::policies::policy_wasm;

fn input(untrusted: bool) -> Input {
    let none = ComputeResources {
        cpu: None,
        memory: None,
        ephemeral_storage: None,
    };
    let labels = if untrusted {
        vec![("sandman.dev/trust".to_string(), "untrusted".to_string())]
    } else {
        Vec::new()
    };
    Input {
        sandbox: Sandbox {
            name: "agent".into(),
            namespace: "team".into(),
            uid: "uid-1".into(),
            labels,
            annotations: Vec::new(),
            namespace_labels: vec![("kubernetes.io/metadata.name".into(), "team".into())],
            containers: vec![Container {
                name: "agent".into(),
                image: "registry.example/agent:1".into(),
                requests: none.clone(),
                limits: none,
            }],
            isolation_level: Some("strong".into()),
            runtime_class_name: None,
            operating_mode: OperatingMode::Running,
            phase: "Pending".into(),
        },
        activity: Activity {
            now: 1_800_000_000,
            created_at: 1_800_000_000,
            last_activity_at: None,
            idle_seconds: 0,
            open_connections: 0,
            running_seconds: 0,
            suspended_since: None,
        },
        settings: "{}".into(),
    }
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
    c.bench_function("load: compile + link + validate settings", |b| {
        b.iter(|| {
            engine
                .load("untrusted-to-gvisor", &wasm, "{}", Limits::default())
                .expect("load")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = policy_eval
}
criterion_main!(benches);
