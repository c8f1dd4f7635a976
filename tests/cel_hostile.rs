//! Hostile CEL: each misbehaviour ends within the policy's limits as a clear error, and the
//! engine stays usable. The bound comes from the Wasm sandbox the CEL engine runs in.

use std::time::{Duration, Instant};

use sandman::api::{CelPolicy, CelVariable};
use sandman::policy::{Limits, LoadedPolicy, PolicyEngine, PolicyError, Reuse, cel};

fn policy(lifecycle: &str, variables: &[(&str, &str)]) -> CelPolicy {
    CelPolicy {
        variables: variables
            .iter()
            .map(|(name, expression)| CelVariable {
                name: name.to_string(),
                expression: expression.to_string(),
            })
            .collect(),
        lifecycle: Some(lifecycle.to_string()),
        ..CelPolicy::default()
    }
}

fn load(
    engine: &PolicyEngine,
    cel: &CelPolicy,
    limits: Limits,
) -> Result<LoadedPolicy, PolicyError> {
    engine.load_with(
        "hostile-cel",
        cel::CEL_ENGINE,
        &cel::engine_settings(cel),
        limits,
        Reuse::Instances,
        Some(cel::hooks(cel)),
    )
}

/// An input that sets off the bomb: the Sandbox is labelled `bomb=yes`. The sample input of the
/// load-time dry run has no labels, so the policy loads and only real evaluations misbehave.
fn armed(policy: &LoadedPolicy) -> sandman::policy::types::Input {
    sandman::policy::input::sample(&[("bomb", "yes")], &[], policy.settings())
}

fn calm(policy: &LoadedPolicy) -> sandman::policy::types::Input {
    sandman::policy::input::sample(&[], &[], policy.settings())
}

fn guarded(bomb: &str) -> String {
    format!("'bomb' in sandbox.labels ? ({bomb} ? null : null) : null")
}

const DIGITS: &str = "[0,1,2,3,4,5,6,7,8,9]";

#[test]
fn nested_comprehensions_stop_at_the_timeout() {
    let engine = PolicyEngine::new().expect("engine");
    // 10^8 iterations: minutes of CPU unbounded.
    let bomb = format!(
        "{DIGITS}.all(a, {DIGITS}.all(b, {DIGITS}.all(c, {DIGITS}.all(d, {DIGITS}.all(e, {DIGITS}.all(f, {DIGITS}.all(g, {DIGITS}.all(h, a + b + c + d + e + f + g + h >= 0))))))))"
    );
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let loaded =
        load(&engine, &policy(&guarded(&bomb), &[]), limits).expect("the dry run abstains");
    let started = Instant::now();
    let result = loaded.lifecycle(&armed(&loaded));
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(PolicyError::Timeout(_))), "{result:?}");
    eprintln!("a runaway comprehension with a 50 ms timeout stopped after {elapsed:?}");
    // The instance that timed out is dropped; the next evaluation starts clean and abstains.
    assert!(matches!(loaded.lifecycle(&calm(&loaded)), Ok(None)));
}

#[test]
fn exponential_strings_stop_at_the_memory_limit() {
    let engine = PolicyEngine::new().expect("engine");
    let mut variables = vec![("s0".to_string(), "'0123456789abcdef'".to_string())];
    for i in 1..40 {
        variables.push((
            format!("s{i}"),
            format!(
                "'bomb' in sandbox.labels ? variables.s{p} + variables.s{p} : ''",
                p = i - 1
            ),
        ));
    }
    let variables: Vec<(&str, &str)> = variables
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_str()))
        .collect();
    let limits = Limits {
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let loaded = load(
        &engine,
        &policy("size(variables.s39) > 0 ? null : null", &variables),
        limits,
    )
    .expect("the dry run builds empty strings");
    let result = loaded.lifecycle(&armed(&loaded));
    assert!(
        matches!(result, Err(PolicyError::OutOfMemory(16_777_216))),
        "{result:?}"
    );
}

#[test]
fn deep_nesting_is_a_bounded_load_error() {
    let engine = PolicyEngine::new().expect("engine");
    let deep = format!("{}1{}", "(".repeat(2_000), ")".repeat(2_000));
    let started = Instant::now();
    let result = load(
        &engine,
        &policy(&format!("{deep} > 0 ? null : null"), &[]),
        Limits::default(),
    );
    let error = result.err().expect("refused");
    assert!(
        matches!(
            error,
            PolicyError::InvalidSettings(_)
                | PolicyError::Trap(_)
                | PolicyError::Timeout(_)
                | PolicyError::OutOfMemory(_)
        ),
        "{error}"
    );
    eprintln!(
        "deep nesting refused after {:?}: {error}",
        started.elapsed()
    );
}

#[test]
fn a_wrong_result_type_is_a_load_error_naming_the_expression() {
    let engine = PolicyEngine::new().expect("engine");
    for (expression, expected) in [
        ("42", "returned a int, not a map or null"),
        ("{'action': 'sleep'}", "unknown variant `sleep`"),
        // Found before any evaluation, with its place in the expression.
        (
            "{'action': 'keep', 'colour': 'blue'}",
            "line 1 column 20: \"colour\" is not a key of a lifecycle decision",
        ),
    ] {
        let error = load(&engine, &policy(expression, &[]), Limits::default())
            .err()
            .expect("refused");
        let message = error.to_string();
        assert!(
            message.contains("spec.cel.lifecycle") && message.contains(expected),
            "{expression}: {message}"
        );
    }
}

#[test]
fn unknown_names_and_functions_are_load_errors() {
    let engine = PolicyEngine::new().expect("engine");
    for (expression, expected) in [
        ("sandbx.name == '' ? null : null", "unknown name \"sandbx\""),
        (
            "variables.later == 1 ? null : null",
            "variables.later is not defined",
        ),
        (
            "frobnicate(1) ? null : null",
            "unknown function frobnicate()",
        ),
        (
            "activity.idleSeconds >",
            "spec.cel.lifecycle: syntax error at line 1, column",
        ),
    ] {
        let message = load(&engine, &policy(expression, &[]), Limits::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(message.contains(expected), "{expression}: {message}");
    }
}

#[test]
fn kubernetes_cel_libraries_are_available() {
    let engine = PolicyEngine::new().expect("engine");
    let expression = "quantity('1Gi').isGreaterThan(quantity('500Mi')) && 'a-b'.split('-').size() == 2 && sandbox.name.matches('^ag') && [3, 1, 2].max() == 3 ? {'action': 'keep', 'reason': 'libraries'} : null";
    let loaded = load(&engine, &policy(expression, &[]), Limits::default()).expect("load");
    let decision = loaded
        .lifecycle(&calm(&loaded))
        .expect("evaluate")
        .expect("decides");
    assert_eq!(decision.reason, "libraries");
}
