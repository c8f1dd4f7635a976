//! The wasmtime host runs real policy components compiled from `policies/`, and contains
//! hostile ones: each misbehaviour becomes a typed error and harms nothing else.

use std::time::{Duration, Instant};

use sandman::policy::types::{Input, OperatingMode};
use sandman::policy::{Compiled, Hook, Limits, PolicyEngine, PolicyError};
use sandman_testenv::policies::policy_wasm;

/// Limits for tests of something other than the timeout: generous enough that a loaded CI
/// machine never turns an out-of-memory or a trap into a timeout.
fn patient() -> Limits {
    Limits {
        timeout: Duration::from_secs(30),
        ..Limits::default()
    }
}

fn input(labels: &[(&str, &str)], namespace_labels: &[(&str, &str)], settings: &str) -> Input {
    sandman::policy::input::sample(labels, namespace_labels, settings)
}

#[test]
fn untrusted_sandbox_gets_gvisor() {
    let engine = PolicyEngine::new().expect("engine");
    let policy = engine
        .load(
            "untrusted-to-gvisor",
            &policy_wasm("untrusted_to_gvisor"),
            "{}",
            patient(),
        )
        .expect("load");
    assert!(policy.hooks().contains(&Hook::Isolation));

    let decision = policy
        .isolation(&input(
            &[("sandman.dev/trust", "untrusted")],
            &[],
            policy.settings(),
        ))
        .expect("evaluate")
        .expect("decides for an untrusted Sandbox");
    assert_eq!(decision.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(decision.security.host_users, Some(false));
    assert!(decision.reason.contains("untrusted"), "{}", decision.reason);

    let by_namespace = policy
        .isolation(&input(
            &[],
            &[("sandman.dev/trust", "untrusted")],
            policy.settings(),
        ))
        .expect("evaluate");
    assert!(by_namespace.is_some(), "an untrusted namespace counts too");
    let trusted = policy
        .isolation(&input(&[], &[], policy.settings()))
        .expect("evaluate");
    assert!(trusted.is_none(), "abstains for everyone else");
}

#[test]
fn settings_are_checked_at_load_time() {
    let engine = PolicyEngine::new().expect("engine");
    let settings = r#"{"runtimeClassName": "kata", "label": "tier", "value": "sandbox"}"#;
    let policy = engine
        .load(
            "kata",
            &policy_wasm("untrusted_to_gvisor"),
            settings,
            patient(),
        )
        .expect("load with settings");
    let decision = policy
        .isolation(&input(&[("tier", "sandbox")], &[], policy.settings()))
        .expect("evaluate")
        .expect("decides");
    assert_eq!(decision.runtime_class_name.as_deref(), Some("kata"));

    let error = engine
        .load(
            "bad",
            &policy_wasm("untrusted_to_gvisor"),
            r#"{"runtimeClass": 3}"#,
            patient(),
        )
        .err()
        .expect("unknown settings are refused");
    assert!(
        matches!(error, PolicyError::InvalidSettings(ref m) if m.contains("runtimeClass")),
        "{error}"
    );
}

fn hostile(
    engine: &PolicyEngine,
    mode: &str,
    limits: Limits,
) -> (Result<(), PolicyError>, Duration) {
    let settings = format!(r#"{{"mode": "{mode}"}}"#);
    let policy = engine
        .load("hostile", &policy_wasm("hostile"), &settings, limits)
        .expect("load");
    let started = Instant::now();
    let result = policy.isolation(&input(&[], &[], &settings)).map(|_| ());
    (result, started.elapsed())
}

#[test]
fn infinite_loop_is_interrupted() {
    let engine = PolicyEngine::new().expect("engine");
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let (result, elapsed) = hostile(&engine, "loop", limits);
    assert!(
        matches!(result, Err(PolicyError::Timeout(t)) if t == limits.timeout),
        "{result:?}"
    );
    eprintln!("an infinite loop with a 50 ms timeout stopped after {elapsed:?}");
}

#[test]
fn a_loaded_policy_outlives_its_engine_and_still_times_out() {
    let engine = PolicyEngine::new().expect("engine");
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let settings = r#"{"mode": "loop"}"#;
    let policy = engine
        .load("hostile", &policy_wasm("hostile"), settings, limits)
        .expect("load");
    // An operator that stops mid-evaluation drops its engine; the evaluation must still end.
    drop(engine);
    let result = policy.isolation(&input(&[], &[], settings));
    assert!(matches!(result, Err(PolicyError::Timeout(_))), "{result:?}");
}

#[test]
fn memory_bomb_is_stopped_at_its_limit() {
    let engine = PolicyEngine::new().expect("engine");
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..patient()
    };
    let (result, _) = hostile(&engine, "memory", limits);
    assert!(
        matches!(result, Err(PolicyError::OutOfMemory(16_777_216))),
        "{result:?}"
    );
}

#[test]
fn trap_is_reported() {
    let engine = PolicyEngine::new().expect("engine");
    let (result, _) = hostile(&engine, "trap", patient());
    assert!(matches!(result, Err(PolicyError::Trap(_))), "{result:?}");
}

/// A log sink for one thread: what the host writes while the test's subscriber is the default.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_stderr_reaches_the_log_tagged_with_the_policy() {
    let engine = PolicyEngine::new().expect("engine");
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let (result, _) =
        tracing::subscriber::with_default(subscriber, || hostile(&engine, "trap", patient()));
    assert!(matches!(result, Err(PolicyError::Trap(_))), "{result:?}");
    let text = String::from_utf8(log.0.lock().expect("log lock").clone()).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.contains("the hostile policy traps"))
        .unwrap_or_else(|| panic!("the guest's panic message is not in the log:\n{text}"));
    assert!(
        line.contains("policy=hostile") && line.contains("stream=\"stderr\""),
        "{line}"
    );
}

#[test]
fn compiled_policies_are_cached_on_disk_across_engines() {
    let dir = std::env::temp_dir().join(format!("sandman-policy-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let wasm = policy_wasm("untrusted_to_gvisor");
    let load = || {
        // A new engine each time, as after a restart: nothing is linked in memory yet.
        let engine = PolicyEngine::with_cache_dir(&dir).expect("engine");
        let policy = engine.load("gvisor", &wasm, "{}", patient()).expect("load");
        let decision = policy
            .isolation(&input(&[("sandman.dev/trust", "untrusted")], &[], "{}"))
            .expect("evaluate")
            .expect("decides");
        assert_eq!(decision.runtime_class_name.as_deref(), Some("gvisor"));
        policy.compiled()
    };
    assert_eq!(load(), Compiled::Fresh);
    assert_eq!(
        load(),
        Compiled::FromCache,
        "a second engine reads the first one's code"
    );

    // Entries live in a subdirectory only the operator's user may write.
    let entries: Vec<_> = std::fs::read_dir(dir.join("private"))
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    std::fs::write(&entries[0], b"not machine code").expect("corrupt the entry");
    assert_eq!(
        load(),
        Compiled::Fresh,
        "a corrupt entry is recompiled, not trusted"
    );
    assert_eq!(load(), Compiled::FromCache, "and replaced");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The operator evaluates on tokio's blocking pool; a guest that prints must work there (WASI's
/// synchronous streams block on a runtime, which tokio refuses on an async worker thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_policy_is_safe_on_the_blocking_pool() {
    let result = tokio::task::spawn_blocking(|| {
        let engine = PolicyEngine::new().expect("engine");
        hostile(&engine, "trap", patient()).0
    })
    .await
    .expect("the blocking task ends without a panic");
    assert!(matches!(result, Err(PolicyError::Trap(_))), "{result:?}");
}

#[test]
fn one_component_is_compiled_once_for_several_policies() {
    let engine = PolicyEngine::new().expect("engine");
    let wasm = policy_wasm("untrusted_to_gvisor");
    let gvisor = engine.load("gvisor", &wasm, "{}", patient()).expect("load");
    let kata = engine
        .load("kata", &wasm, r#"{"runtimeClassName": "kata"}"#, patient())
        .expect("load");
    assert_eq!(gvisor.compiled(), Compiled::Fresh);
    assert_eq!(kata.compiled(), Compiled::InMemory);
    let untrusted = |settings: &str| input(&[("sandman.dev/trust", "untrusted")], &[], settings);
    let runtime = |policy: &sandman::policy::LoadedPolicy| {
        policy
            .isolation(&untrusted(policy.settings()))
            .expect("evaluate")
            .and_then(|d| d.runtime_class_name)
    };
    assert_eq!(runtime(&gvisor).as_deref(), Some("gvisor"));
    assert_eq!(
        runtime(&kata).as_deref(),
        Some("kata"),
        "settings stay per policy"
    );
}

#[test]
fn oversized_output_is_refused() {
    let engine = PolicyEngine::new().expect("engine");
    let (result, _) = hostile(&engine, "huge-output", patient());
    assert!(
        matches!(result, Err(PolicyError::OutputTooLarge { .. })),
        "{result:?}"
    );
}

#[test]
fn guest_error_is_reported() {
    let engine = PolicyEngine::new().expect("engine");
    let (result, _) = hostile(&engine, "error", patient());
    assert!(
        matches!(result, Err(PolicyError::Guest(ref m)) if m.contains("refuses")),
        "{result:?}"
    );
}

#[test]
fn hostile_policies_leave_the_engine_usable() {
    let engine = PolicyEngine::new().expect("engine");
    let limits = Limits {
        timeout: Duration::from_millis(20),
        memory_bytes: 8 << 20,
        ..Limits::default()
    };
    for mode in ["loop", "memory", "trap", "huge-output"] {
        assert!(hostile(&engine, mode, limits).0.is_err(), "{mode}");
    }
    let (result, _) = hostile(&engine, "abstain", patient());
    assert!(
        result.is_ok(),
        "a well-behaved evaluation still works: {result:?}"
    );
}

#[test]
fn component_importing_what_the_host_does_not_give_fails_to_load() {
    let engine = PolicyEngine::new().expect("engine");
    let wat = r#"(component
        (import "example:secrets/vault" (instance (export "read" (func (param "key" string) (result string))))))"#;
    let error = engine
        .load("greedy", wat.as_bytes(), "{}", Limits::default())
        .err()
        .expect("refused");
    assert!(
        matches!(error, PolicyError::Link(_))
            && error.to_string().contains("example:secrets/vault"),
        "{error}"
    );
}

#[test]
fn component_for_another_contract_version_fails_to_load() {
    let engine = PolicyEngine::new().expect("engine");
    let wat = r#"(component
        (instance $i)
        (export "sandman:policy/isolation@1.0.0" (instance $i)))"#;
    let error = engine
        .load("future", wat.as_bytes(), "{}", Limits::default())
        .err()
        .expect("refused");
    assert!(
        matches!(error, PolicyError::OtherContractVersion { ref found, .. } if found == "1.0.0")
            && error.to_string().contains("sandman:policy@1.0.0"),
        "{error}"
    );
}

#[test]
fn component_without_hooks_is_refused() {
    let engine = PolicyEngine::new().expect("engine");
    let error = engine
        .load("empty", b"(component)", "{}", Limits::default())
        .err()
        .expect("refused");
    assert!(matches!(error, PolicyError::NoHooks), "{error}");
    let garbage = engine
        .load("garbage", b"not wasm", "{}", Limits::default())
        .err()
        .expect("refused");
    assert!(matches!(garbage, PolicyError::Compile(_)), "{garbage}");
}

#[test]
fn tenant_resource_defaults_follow_the_namespace() {
    let engine = PolicyEngine::new().expect("engine");
    let settings = r#"{"tenants": {
        "default": {"defaults": {"cpu": "250m", "memory": "512Mi"}, "caps": {"cpu": "2", "memory": "4Gi"}},
        "gold": {"defaults": {"cpu": "1"}, "caps": {"cpu": "8"}}}}"#;
    let policy = engine
        .load(
            "tenants",
            &policy_wasm("tenant_resource_defaults"),
            settings,
            patient(),
        )
        .expect("load");
    assert_eq!(
        policy.hooks(),
        vec![Hook::Resources],
        "the SDK exports only the hooks a policy names"
    );
    let gold = policy
        .resources(&input(&[], &[("tenant", "gold")], policy.settings()))
        .expect("evaluate")
        .expect("decides");
    assert_eq!(gold.containers[0].defaults.cpu.as_deref(), Some("1"));
    assert_eq!(gold.containers[0].caps.cpu.as_deref(), Some("8"));
    let other = policy
        .resources(&input(&[], &[], policy.settings()))
        .expect("evaluate")
        .expect("decides");
    assert_eq!(
        other.containers[0].defaults.memory.as_deref(),
        Some("512Mi")
    );
    assert!(
        matches!(
            policy.isolation(&input(&[], &[], policy.settings())),
            Err(PolicyError::MissingHook("isolation"))
        ),
        "a hook the policy does not export is never called"
    );
    let error = engine
        .load(
            "tenants",
            &policy_wasm("tenant_resource_defaults"),
            r#"{"tenants": {}}"#,
            patient(),
        )
        .err()
        .expect("refused");
    assert!(matches!(error, PolicyError::InvalidSettings(_)), "{error}");
}

#[test]
fn idle_suspend_decides_every_lifecycle_action() {
    use sandman::policy::types::LifecycleAction;
    let engine = PolicyEngine::new().expect("engine");
    let settings = r#"{"idleSeconds": 600, "terminateAfterSeconds": 3600}"#;
    let policy = engine
        .load("idle", &policy_wasm("idle_suspend"), settings, patient())
        .expect("load");
    let decide = |configure: &dyn Fn(&mut Input)| {
        let mut input = input(&[], &[], settings);
        configure(&mut input);
        policy
            .lifecycle(&input)
            .expect("evaluate")
            .expect("decides")
    };
    let busy = decide(&|i| i.activity.idle_seconds = 60);
    assert_eq!(busy.action, LifecycleAction::Keep);
    assert_eq!(
        busy.requeue_after_seconds,
        Some(540),
        "asks again when it would go idle"
    );
    assert_eq!(
        decide(&|i| i.activity.idle_seconds = 601).action,
        LifecycleAction::Suspend
    );
    let long_call = decide(&|i| {
        i.activity.idle_seconds = 5000;
        i.activity.open_connections = 1;
    });
    assert_eq!(
        long_call.action,
        LifecycleAction::Keep,
        "an open connection is activity"
    );
    let asleep = decide(&|i| {
        i.sandbox.operating_mode = OperatingMode::Suspended;
        i.activity.suspended_since = Some(i.activity.now - 4000);
    });
    assert_eq!(asleep.action, LifecycleAction::Terminate);
}

/// 600,000 empty tolerations passed the old string-bytes check and reached a pod.
#[test]
fn a_flood_of_empty_list_items_is_refused() {
    let engine = PolicyEngine::new().expect("engine");
    let (result, _) = hostile(&engine, "many-tolerations", patient());
    assert!(
        matches!(result, Err(PolicyError::InvalidDecision(ref m)) if m.contains("tolerations has 100000 entries")),
        "{result:?}"
    );
}

/// A 28 MB guest error once made every status write fail with 413.
#[test]
fn a_huge_guest_error_is_cut() {
    let engine = PolicyEngine::new().expect("engine");
    let (result, _) = hostile(&engine, "huge-error", patient());
    match result {
        Err(PolicyError::Guest(message)) => {
            assert!(
                message.starts_with("the hostile policy refuses"),
                "{message:.80}"
            );
            assert!(message.len() <= 2048, "{} bytes kept", message.len());
            assert!(message.ends_with("more bytes cut)"), "{message:.80}");
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}

/// One evaluation once wrote 64 MiB of log, with forged ERROR lines.
#[test]
fn guest_logging_is_bounded_and_cannot_forge_lines() {
    let engine = PolicyEngine::new().expect("engine");
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let (result, _) =
        tracing::subscriber::with_default(subscriber, || hostile(&engine, "log-flood", patient()));
    assert!(result.is_ok(), "{result:?}");
    let text = String::from_utf8(log.0.lock().expect("log lock").clone()).expect("utf-8");
    assert!(
        text.len() < 64 << 10,
        "{} bytes of log from one evaluation",
        text.len()
    );
    assert!(text.contains("the rest is dropped"), "{text:.400}");
    assert!(
        !text
            .lines()
            .any(|l| l.contains("ERROR sandman::controller") && !l.contains("policy=hostile")),
        "a forged line stands alone in the log"
    );
}

/// A component with hundreds of linear memories once used 539 MB under a 32 Mi limit and could
/// take every pooled slot. It is refused when it is loaded.
#[test]
fn a_component_with_many_memories_is_refused_at_load() {
    let engine = PolicyEngine::new().expect("engine");
    let mut wat = String::from("(component (core module $m (memory 1))");
    for i in 0..40 {
        wat.push_str(&format!(" (core instance $i{i} (instantiate $m))"));
    }
    wat.push(')');
    let error = engine
        .load("greedy", wat.as_bytes(), "{}", Limits::default())
        .err()
        .expect("refused");
    assert!(
        matches!(error, PolicyError::Compile(_))
            && error.to_string().contains("40 Wasm linear memories"),
        "{error}"
    );
}

/// Under CPU starvation (load 10 to 14 on 2 cores) an evaluation needing about 13 µs of CPU
/// once hit its 100 ms wall-clock timeout and held a Sandbox with `PolicyFailed`. Timeouts are
/// now CPU time: here a few dozen spinning threads starve the evaluating one, and a thousand
/// evaluations with a 50 ms timeout all decide, while an infinite loop is still stopped. (With
/// 5 ms, 2 of 1000 timed out once on 2026-12-02 while the rest of the suite ran beside it:
/// an evaluation's own CPU time, instantiation and page faults included, is not 13 µs every
/// time, and the test must not depend on how fast the machine is.)
#[test]
fn starved_cpu_does_not_hold_sandboxes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let engine = PolicyEngine::new().expect("engine");
    let tight = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let tight_policy = engine
        .load(
            "gvisor-tight",
            &policy_wasm("untrusted_to_gvisor"),
            "{}",
            tight,
        )
        .expect("load");
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..24)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            })
        })
        .collect();
    let input = input(&[("sandman.dev/trust", "untrusted")], &[], "{}");
    let timeouts = (0..1000)
        .filter(|_| matches!(tight_policy.isolation(&input), Err(PolicyError::Timeout(_))))
        .count();
    let (looping, _) = hostile(&engine, "loop", tight);
    stop.store(true, Ordering::Relaxed);
    for burner in burners {
        let _ = burner.join();
    }
    assert_eq!(timeouts, 0, "evaluations timed out only for want of CPU");
    assert!(
        matches!(looping, Err(PolicyError::Timeout(_))),
        "a real runaway is still stopped: {looping:?}"
    );
}

#[test]
fn components_built_against_0_1_keep_working() {
    let engine = PolicyEngine::new().expect("engine");
    let frozen = engine
        .load("frozen", &policy_wasm("contract_0_1"), "{}", patient())
        .expect("a 0.1.0 component loads");
    assert_eq!(frozen.contract_version(), "0.1.0");
    assert_eq!(
        frozen.hooks(),
        vec![Hook::Isolation, Hook::Resources, Hook::Lifecycle],
        "0.1.0 has no pool hook"
    );

    // The 0.2.0 input, with the fields 0.1.0 does not know set, is handed down without them.
    let mut untrusted = input(&[("trust", "untrusted")], &[], "{}");
    untrusted.sandbox.template = Some("python".into());
    untrusted.sandbox.claim = Some("job".into());
    let decision = frozen
        .isolation(&untrusted)
        .expect("evaluate")
        .expect("decides for an untrusted Sandbox");
    assert_eq!(decision.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(decision.security.allow_privilege_escalation, Some(false));
    assert!(decision.reason.contains("0.1.0"), "{}", decision.reason);

    let mut idle = input(&[], &[], "{}");
    idle.activity.idle_seconds = 120;
    let decision = frozen
        .lifecycle(&idle)
        .expect("evaluate")
        .expect("suspends an idle Sandbox");
    assert_eq!(
        decision.action,
        sandman::policy::types::LifecycleAction::Suspend
    );
    assert!(matches!(
        frozen.pool(&sandman::policy::input::sample_pool(&[], "{}")),
        Err(PolicyError::MissingHook("pool"))
    ));

    // A component of the current contract sees the new fields and exports the pool hook.
    let current = engine
        .load(
            "pool-by-claim-rate",
            &policy_wasm("pool_by_claim_rate"),
            r#"{"min": 1, "max": 4}"#,
            patient(),
        )
        .expect("load");
    assert_eq!(current.contract_version(), "0.3.0");
    assert!(current.hooks().contains(&Hook::Pool));
}

#[test]
fn components_built_against_0_2_keep_working() {
    let engine = PolicyEngine::new().expect("engine");
    let frozen = engine
        .load("frozen", &policy_wasm("contract_0_2"), "{}", patient())
        .expect("a 0.2.0 component loads");
    assert_eq!(frozen.contract_version(), "0.2.0");
    assert_eq!(frozen.hooks(), Hook::ALL.to_vec());

    // It sees the fields 0.2.0 added, and its decisions read as current ones.
    let mut python = input(&[], &[], "{}");
    python.sandbox.template = Some("python".into());
    let decision = frozen
        .isolation(&python)
        .expect("evaluate")
        .expect("decides for the python template");
    assert_eq!(decision.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(decision.network.map(|n| n.ingress_ports), Some(vec![8080]));

    let mut idle = input(&[], &[], "{}");
    idle.activity.idle_seconds = 120;
    let decision = frozen
        .lifecycle(&idle)
        .expect("evaluate")
        .expect("suspends an idle Sandbox");
    assert_eq!(
        decision.action,
        sandman::policy::types::LifecycleAction::Suspend
    );
    assert_eq!(decision.requeue_after_seconds, Some(30));
    assert_eq!(
        decision.checkpoint, None,
        "0.2.0 cannot ask for a checkpoint"
    );

    let sized = frozen
        .pool(&sandman::policy::input::sample_pool(&[], "{}"))
        .expect("evaluate")
        .expect("sizes the pool");
    assert_eq!(sized.replicas, 3);
}

#[test]
fn lifecycle_policy_asks_for_a_checkpoint_with_its_suspend() {
    let engine = PolicyEngine::new().expect("engine");
    let load = |settings: &str| {
        engine
            .load(
                "idle-suspend",
                &policy_wasm("idle_suspend"),
                settings,
                patient(),
            )
            .expect("load")
    };
    let idle = |settings: &str| {
        let mut idle = input(&[], &[], settings);
        idle.activity.idle_seconds = 120;
        idle
    };
    let asking = r#"{"idleSeconds": 60, "checkpoint": true}"#;
    let decision = load(asking)
        .lifecycle(&idle(asking))
        .expect("evaluate")
        .expect("decides");
    assert_eq!(
        decision.action,
        sandman::policy::types::LifecycleAction::Suspend
    );
    assert_eq!(decision.checkpoint, Some(true));
    // Without the setting it leaves the choice to the Sandbox's spec.
    let silent = r#"{"idleSeconds": 60}"#;
    let decision = load(silent)
        .lifecycle(&idle(silent))
        .expect("evaluate")
        .expect("decides");
    assert_eq!(decision.checkpoint, None);
}

#[test]
fn pool_policy_sizes_by_recent_claims() {
    let engine = PolicyEngine::new().expect("engine");
    let settings = r#"{"min": 1, "max": 4, "perClaim": 1, "windowSeconds": 600}"#;
    let policy = engine
        .load(
            "pool-by-claim-rate",
            &policy_wasm("pool_by_claim_rate"),
            settings,
            patient(),
        )
        .expect("load");
    let mut quiet = sandman::policy::input::sample_pool(&[], settings);
    let decision = policy.pool(&quiet).expect("evaluate").expect("decides");
    assert_eq!(decision.replicas, 1, "{}", decision.reason);
    assert_eq!(decision.requeue_after_seconds, None);

    let now = quiet.activity.now;
    // Two claims in the window, one older than it.
    quiet.activity.claims = vec![now - 900, now - 300, now - 10];
    let busy = policy.pool(&quiet).expect("evaluate").expect("decides");
    assert_eq!(busy.replicas, 3, "{}", busy.reason);
    assert_eq!(
        busy.requeue_after_seconds,
        Some(300),
        "asks again when the older claim leaves the window"
    );

    quiet.activity.claims = (0..10).map(|i| now - i).collect();
    let capped = policy.pool(&quiet).expect("evaluate").expect("decides");
    assert_eq!(capped.replicas, 4, "never past max");

    let refused = engine.load(
        "pool-by-claim-rate",
        &policy_wasm("pool_by_claim_rate"),
        r#"{"min": 5, "max": 4}"#,
        patient(),
    );
    assert!(matches!(refused, Err(PolicyError::InvalidSettings(m)) if m.contains("min")));
}
