//! The CEL engine as a policy component. The host gives it a SandboxPolicy's `spec.cel` as
//! settings; it compiles the expressions once per instance and evaluates them for each hook. It
//! runs in the same sandbox as any policy (epoch deadline, memory limit, no capabilities), which
//! is what bounds a runaway expression: the `cel` crate itself has no cost budget.

mod activation;
mod compile;
mod shape;
mod spec;

use std::cell::RefCell;
use std::rc::Rc;

use cel::{ExecutionError, Value};
use sandman_policy_sdk::testing::InputBuilder;
use sandman_policy_sdk::types::{Input, IsolationDecision, LifecycleDecision, ResourcesDecision};
use sandman_policy_sdk::{Policy, export_policy, wire};

use compile::Compiled;
use spec::{CelSpec, Hook};

struct Cached {
    settings: String,
    compiled: Rc<Compiled>,
}

thread_local! {
    /// The last compiled policy, keyed by its settings text. The host reuses an instance for
    /// one policy, so this is compiled once, with its functions and settings registered.
    static COMPILED: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

fn compiled(settings: &str) -> Result<Rc<Compiled>, String> {
    if let Some(hit) = COMPILED.with_borrow(|c| {
        c.as_ref()
            .filter(|c| c.settings == settings)
            .map(|c| c.compiled.clone())
    }) {
        return Ok(hit);
    }
    let spec: CelSpec =
        serde_json::from_str(settings).map_err(|e| format!("the CEL policy is malformed: {e}"))?;
    let compiled = Rc::new(compile::compile(&spec)?);
    COMPILED.set(Some(Cached {
        settings: settings.to_string(),
        compiled: compiled.clone(),
    }));
    Ok(compiled)
}

/// Evaluates the variables in order, then the hook's expression; `None` when the policy has no
/// expression for the hook.
fn evaluate(hook: Hook, input: &Input) -> Result<Option<Value>, String> {
    let compiled = compiled(&input.settings)?;
    let Some((program, hook_uses_variables)) = &compiled.hooks[hook.index()] else {
        return Ok(None);
    };
    let needs = &compiled.needs;
    let names = activation::build(input, needs);
    let mut scope = compiled.root.new_inner_scope();
    for (name, value) in [
        ("sandbox", names.sandbox),
        ("activity", names.activity),
        ("namespaceLabels", names.namespace_labels),
        ("now", names.now),
    ] {
        if let Some(value) = value {
            scope.add_variable_from_value(name, value);
        }
    }
    // Each variable sees the ones before it; the map is handed over only to expressions that
    // read it, since every hand-over converts it whole.
    let mut variables = std::collections::HashMap::<String, Value>::new();
    let wanted = &compiled.wanted[hook.index()];
    for (i, (name, program, uses_variables)) in compiled.variables.iter().enumerate() {
        // Only what this hook reads, directly or through other variables.
        if !wanted.get(i).copied().unwrap_or(false) {
            continue;
        }
        if *uses_variables {
            scope.add_variable_from_value("variables", Value::from(variables.clone()));
        }
        let value = program
            .execute(&scope)
            .map_err(|e| format!("spec.cel.variables[{i}] ({name}): {}", describe(&e)))?;
        variables.insert(name.clone(), value);
    }
    if *hook_uses_variables {
        scope.add_variable_from_value("variables", Value::from(variables));
    }
    program
        .execute(&scope)
        .map(Some)
        .map_err(|e| format!("{}: {}", hook.field(), describe(&e)))
}

fn describe(error: &ExecutionError) -> String {
    error.to_string()
}

/// A hook's result in its decision type: `null` abstains, a map must have the decision's shape.
fn decision<W, D>(hook: Hook, input: &Input) -> Result<Option<D>, String>
where
    W: serde::de::DeserializeOwned + Into<D>,
{
    let Some(value) = evaluate(hook, input)? else {
        return Ok(None);
    };
    if matches!(value, Value::Null) {
        return Ok(None);
    }
    if !matches!(value, Value::Map(_)) {
        return Err(format!(
            "{} returned a {}, not a map or null",
            hook.field(),
            value.type_of()
        ));
    }
    let json = value
        .json()
        .map_err(|e| format!("{} returned a value JSON cannot hold: {e}", hook.field()))?;
    let typed: W = serde_json::from_value(json)
        .map_err(|e| format!("{} returned a map of the wrong shape: {e}", hook.field()))?;
    Ok(Some(typed.into()))
}

fn hook_decision(hook: Hook, input: &Input) -> Result<(), String> {
    match hook {
        Hook::Isolation => {
            decision::<wire::IsolationDecision, IsolationDecision>(hook, input).map(|_| ())
        }
        Hook::Resources => {
            decision::<wire::ResourcesDecision, ResourcesDecision>(hook, input).map(|_| ())
        }
        Hook::Lifecycle => {
            decision::<wire::LifecycleDecision, LifecycleDecision>(hook, input).map(|_| ())
        }
    }
}

/// Runs the settings checks in order; the first that is false refuses with its message.
fn check_settings(compiled: &Compiled) -> Result<(), String> {
    for (field, program, message) in &compiled.validations {
        match program.execute(&compiled.root) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => return Err(format!("{message} ({field})")),
            Ok(other) => {
                return Err(format!(
                    "{field} returned a {}, not a bool",
                    other.type_of()
                ));
            }
            Err(error) => return Err(format!("{field}: {}", describe(&error))),
        }
    }
    Ok(())
}

struct CelEngine;

impl Policy for CelEngine {
    /// Compiles and checks every expression, then runs each hook once on a sample Sandbox: a
    /// result of the wrong shape, or a name nothing defines, fails the load. Other evaluation
    /// errors depend on the input (a missing label, say) and are left to evaluation time.
    fn validate_settings(settings: &str) -> Result<(), String> {
        let compiled = compiled(settings)?;
        check_settings(&compiled)?;
        let sample = InputBuilder::new().settings(settings).build();
        for hook in Hook::ALL {
            if let Err(message) = hook_decision(hook, &sample) {
                let input_dependent =
                    !message.contains("returned") && !message.contains("Undeclared reference");
                if !input_dependent {
                    return Err(format!("dry run on a sample Sandbox: {message}"));
                }
            }
        }
        Ok(())
    }

    fn isolation(input: Input) -> Result<Option<IsolationDecision>, String> {
        decision::<wire::IsolationDecision, _>(Hook::Isolation, &input)
    }

    fn resources(input: Input) -> Result<Option<ResourcesDecision>, String> {
        decision::<wire::ResourcesDecision, _>(Hook::Resources, &input)
    }

    fn lifecycle(input: Input) -> Result<Option<LifecycleDecision>, String> {
        decision::<wire::LifecycleDecision, _>(Hook::Lifecycle, &input)
    }
}

export_policy!(CelEngine, [isolation, resources, lifecycle]);
