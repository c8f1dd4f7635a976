//! Compiling a CEL policy once, with the checks that belong at load time: syntax (with the
//! position), names that are neither inputs nor earlier variables, and functions no library
//! provides. Every message names the expression, as in `spec.cel.lifecycle`.

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, ExecutionError, Program};
use kube_cel::KubeCelExt;

use crate::spec::{CelSpec, Hook};

/// The names every expression may use, besides `variables.<name>`.
pub const INPUTS: [&str; 6] = [
    "sandbox",
    "activity",
    "settings",
    "namespaceLabels",
    "now",
    "variables",
];

pub struct Compiled {
    /// The settings checks: where each is, its program and the message of a refusal.
    pub validations: Vec<(String, Program, String)>,
    /// Each variable's program, and whether it reads earlier variables.
    pub variables: Vec<(String, Program, bool)>,
    /// Each hook's program, and whether it reads variables.
    pub hooks: [Option<(Program, bool)>; 3],
    /// Per hook, which variables it needs, by position: those it reads and those they read.
    /// The others are never evaluated for it, so one hook's broken variable cannot break
    /// another hook.
    pub wanted: [Vec<bool>; 3],
    /// The functions, and `settings`, which are the same for every evaluation.
    pub root: Context<'static>,
    /// What the expressions read of their inputs: building only that is most of an
    /// evaluation's saving, since every value added to a CEL context is converted deeply.
    pub needs: Needs,
}

/// The inputs the expressions use: whole (`namespaceLabels[k]`, `size(sandbox.labels)` needs
/// the map) or by field (`sandbox.name` needs only `name` of `sandbox`). Answered from flags
/// worked out once, since it is asked for every field of every evaluation.
#[derive(Debug, Default, Clone)]
pub struct Needs {
    whole: BTreeSet<String>,
    fields: std::collections::BTreeMap<String, BTreeSet<String>>,
    /// Per root in [`ROOTS`]: used at all, and which of its [`FIELDS`] to build.
    flags: [(bool, [bool; MAX_FIELDS]); ROOTS.len()],
}

/// The inputs that are maps of fields, and their fields, in the order the activation builds
/// them.
pub const ROOTS: [&str; 6] = [
    "sandbox",
    "activity",
    "namespaceLabels",
    "now",
    "settings",
    "variables",
];
const MAX_FIELDS: usize = 14;
pub const FIELDS: [&[&str]; 2] = [
    &[
        "name",
        "namespace",
        "uid",
        "labels",
        "annotations",
        "namespaceLabels",
        "containers",
        "isolationLevel",
        "runtimeClassName",
        "operatingMode",
        "phase",
        "template",
        "pool",
        "claim",
    ],
    &[
        "now",
        "createdAt",
        "lastActivityAt",
        "idleSeconds",
        "openConnections",
        "runningSeconds",
        "suspendedSince",
        "suspendedSeconds",
    ],
];

impl Needs {
    /// Whether the expressions use input `root` (an index into [`ROOTS`]) at all.
    pub fn uses(&self, root: usize) -> bool {
        self.flags[root].0
    }

    /// Whether field `field` (an index into `FIELDS[root]`) of input `root` must be built.
    pub fn field(&self, root: usize, field: usize) -> bool {
        self.flags[root].1[field]
    }

    fn merge(&mut self, names: &Names) {
        self.whole.extend(names.whole.iter().cloned());
        for (root, fields) in &names.fields {
            self.fields
                .entry(root.clone())
                .or_default()
                .extend(fields.iter().cloned());
        }
        for (i, root) in ROOTS.iter().enumerate() {
            let whole = self.whole.contains(*root);
            let fields = self.fields.get(*root);
            self.flags[i].0 = whole || fields.is_some();
            if let Some(names) = FIELDS.get(i) {
                for (j, field) in names.iter().enumerate() {
                    self.flags[i].1[j] = whole || fields.is_some_and(|f| f.contains(*field));
                }
            }
        }
    }
}

pub fn compile(spec: &CelSpec) -> Result<Compiled, String> {
    let mut root = Context::default().with_all();
    root.add_variable_from_value("settings", json_to_cel(&spec.settings));
    let functions = &root;
    let mut needs = Needs::default();
    let mut defined: Vec<String> = Vec::new();
    let mut variables = Vec::new();
    // What each variable reads of the ones before it.
    let mut reads: Vec<BTreeSet<String>> = Vec::new();
    for (i, variable) in spec.variables.iter().enumerate() {
        let field = format!("spec.cel.variables[{i}] ({})", variable.name);
        if !is_identifier(&variable.name) {
            return Err(format!("{field}: the name must be a CEL identifier"));
        }
        if defined.contains(&variable.name) {
            return Err(format!("{field}: defined twice"));
        }
        let program = parse(&field, &variable.expression)?;
        let names = check(&field, &variable.expression, &program, &defined, functions)?;
        crate::shape::check_fields(&field, &variable.expression, &names.fields)?;
        needs.merge(&names);
        defined.push(variable.name.clone());
        reads.push(names.earlier.clone());
        variables.push((variable.name.clone(), program, names.uses_variables()));
    }
    let validations = compile_validations(spec, functions)?;
    let mut hooks: [Option<(Program, bool)>; 3] = [None, None, None];
    let mut wanted: [Vec<bool>; 3] = Default::default();
    for hook in Hook::ALL {
        if let Some(source) = hook.expression(spec) {
            let program = parse(hook.field(), source)?;
            let names = check(hook.field(), source, &program, &defined, functions)?;
            crate::shape::check_fields(hook.field(), source, &names.fields)?;
            crate::shape::check_result(hook.field(), source, hook, program.expression())?;
            needs.merge(&names);
            wanted[hook.index()] = closure(&defined, &reads, &names.earlier);
            hooks[hook.index()] = Some((program, names.uses_variables()));
        }
    }
    Ok(Compiled {
        validations,
        variables,
        hooks,
        wanted,
        root,
        needs,
    })
}

/// The settings checks, which see nothing but `settings`: they run before any Sandbox exists.
fn compile_validations(
    spec: &CelSpec,
    functions: &Context<'_>,
) -> Result<Vec<(String, Program, String)>, String> {
    let mut compiled = Vec::new();
    for (i, validation) in spec.settings_validations.iter().enumerate() {
        let field = format!("spec.cel.settingsValidations[{i}]");
        let program = parse(&field, &validation.expression)?;
        let names = check(&field, &validation.expression, &program, &[], functions)?;
        if let Some(other) = names.variables.iter().find(|v| *v != "settings") {
            return Err(format!(
                "{}: a settings check sees only settings, not {other}",
                crate::shape::at(&field, &validation.expression, other)
            ));
        }
        if validation.message.trim().is_empty() {
            return Err(format!("{field}: give the message a refusal shows"));
        }
        compiled.push((field, program, validation.message.clone()));
    }
    Ok(compiled)
}

/// JSON to CEL, with every integer that fits an `int` as an `int`: settings like
/// `idleSeconds: 1800` must compare with `activity.idleSeconds` without a `uint()` cast.
pub fn json_to_cel(value: &serde_json::Value) -> cel::Value {
    use std::sync::Arc;
    match value {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(map) => cel::Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect::<std::collections::HashMap<String, cel::Value>>(),
        ),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse(field: &str, source: &str) -> Result<Program, String> {
    Program::compile(source).map_err(|errors| {
        errors
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{field}: syntax error at line {}, column {}: {}",
                    e.pos.0,
                    e.pos.1 + 1,
                    e.msg
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Which variables (by position) an expression that reads `direct` needs: those, and what they
/// read, back to the first. Variables only read earlier ones, so one pass from the end does it.
fn closure(defined: &[String], reads: &[BTreeSet<String>], direct: &BTreeSet<String>) -> Vec<bool> {
    let mut needed: BTreeSet<String> = direct.clone();
    let mut wanted = vec![false; defined.len()];
    for (i, name) in defined.iter().enumerate().rev() {
        if needed.contains(name) {
            wanted[i] = true;
            needed.extend(reads[i].iter().cloned());
        }
    }
    wanted
}

/// Names the expression uses, minus those its own comprehensions bind.
#[derive(Default)]
struct Names {
    variables: BTreeSet<String>,
    earlier: BTreeSet<String>,
    functions: BTreeSet<String>,
    /// Inputs used as a whole, and inputs used only through `root.field`.
    whole: BTreeSet<String>,
    fields: std::collections::BTreeMap<String, BTreeSet<String>>,
}

impl Names {
    fn uses_variables(&self) -> bool {
        self.variables.contains("variables")
    }
}

/// The names an expression uses, each checked; an error names the expression and, where the
/// name is found in its source, the line and column (which the CLI turns into `file:line`).
fn check(
    field: &str,
    source: &str,
    program: &Program,
    defined: &[String],
    functions: &Context<'_>,
) -> Result<Names, String> {
    let mut names = Names::default();
    collect(program.expression(), &mut Vec::new(), &mut names);
    let at = |needle: &str| crate::shape::at(field, source, needle);
    if let Some(unknown) = names
        .variables
        .iter()
        .find(|v| !INPUTS.contains(&v.as_str()))
    {
        return Err(format!(
            "{}: unknown name {unknown:?}; expressions see {} and variables.<name>",
            at(unknown),
            INPUTS[..5].join(", ")
        ));
    }
    if let Some(unknown) = names.earlier.iter().find(|v| !defined.contains(v)) {
        return Err(format!(
            "{}: variables.{unknown} is not defined before this expression",
            at(&format!("variables.{unknown}"))
        ));
    }
    if let Some(unknown) = names.functions.iter().find(|f| !is_function(f, functions)) {
        let name = unknown.rsplit('.').next().unwrap_or(unknown);
        return Err(format!("{}: unknown function {unknown}()", at(name)));
    }
    Ok(names)
}

/// Operators and macros are not looked up by name; everything else must be registered.
fn is_operator(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('@') || name.starts_with('!')
}

/// The interpreter looks a function up before it evaluates the arguments, so calling it with
/// none tells whether it exists: an unknown one is an undeclared reference to its own name.
fn is_function(name: &str, functions: &Context<'_>) -> bool {
    let Ok(probe) = Program::compile(&format!("{name}()")) else {
        return false;
    };
    let (prefix, last) = name.rsplit_once('.').unwrap_or(("", name));
    !matches!(
        probe.execute(functions),
        Err(ExecutionError::UndeclaredReference(ref r)) if r.as_str() == last || r.as_str() == prefix
    )
}

fn collect(expr: &IdedExpr, bound: &mut Vec<String>, names: &mut Names) {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(name) {
                names.variables.insert(name.clone());
                names.whole.insert(name.clone());
            }
        }
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(root) if !bound.contains(root) => {
                if root == "variables" {
                    names.earlier.insert(select.field.clone());
                }
                names.variables.insert(root.clone());
                names
                    .fields
                    .entry(root.clone())
                    .or_default()
                    .insert(select.field.clone());
            }
            _ => collect(&select.operand, bound, names),
        },
        Expr::Call(call) => {
            if !is_operator(&call.func_name) {
                match call.target.as_deref() {
                    // `sets.contains(…)`: a namespaced function, not a method on a variable.
                    Some(IdedExpr {
                        expr: Expr::Ident(prefix),
                        ..
                    }) if !bound.contains(prefix) && !INPUTS.contains(&prefix.as_str()) => {
                        names
                            .functions
                            .insert(format!("{prefix}.{}", call.func_name));
                    }
                    Some(target) => {
                        names.functions.insert(call.func_name.clone());
                        collect(target, bound, names);
                    }
                    None => {
                        names.functions.insert(call.func_name.clone());
                    }
                }
            } else if let Some(target) = &call.target {
                collect(target, bound, names);
            }
            for arg in &call.args {
                collect(arg, bound, names);
            }
        }
        Expr::Comprehension(comprehension) => {
            collect(&comprehension.iter_range, bound, names);
            let depth = bound.len();
            bound.push(comprehension.iter_var.clone());
            bound.extend(comprehension.iter_var2.clone());
            bound.push(comprehension.accu_var.clone());
            collect(&comprehension.accu_init, bound, names);
            collect(&comprehension.loop_cond, bound, names);
            collect(&comprehension.loop_step, bound, names);
            collect(&comprehension.result, bound, names);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &list.elements {
                collect(element, bound, names);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(entry) = &entry.expr {
                    collect(&entry.key, bound, names);
                    collect(&entry.value, bound, names);
                }
            }
        }
        Expr::Struct(structure) => {
            for entry in &structure.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    collect(&field.value, bound, names);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Variable;

    fn spec(lifecycle: &str, variables: &[(&str, &str)]) -> CelSpec {
        CelSpec {
            variables: variables
                .iter()
                .map(|(name, expression)| Variable {
                    name: name.to_string(),
                    expression: expression.to_string(),
                })
                .collect(),
            isolation: None,
            resources: None,
            lifecycle: Some(lifecycle.to_string()),
            settings: serde_json::json!({}),
            settings_validations: Vec::new(),
        }
    }

    #[test]
    fn settings_checks_see_only_settings_and_need_a_message() {
        let with = |expression: &str, message: &str| {
            let mut spec = spec("null", &[]);
            spec.settings_validations = vec![crate::spec::Validation {
                expression: expression.into(),
                message: message.into(),
            }];
            compile(&spec).map(|c| c.validations.len())
        };
        assert_eq!(with("'idleSeconds' in settings", "give idleSeconds"), Ok(1));
        let sandbox = with("sandbox.name != ''", "no").expect_err("reads sandbox");
        assert!(
            sandbox.contains("sees only settings, not sandbox"),
            "{sandbox}"
        );
        assert!(sandbox.contains("line 1 column 1"), "{sandbox}");
        let silent = with("true", " ").expect_err("no message");
        assert!(silent.contains("give the message"), "{silent}");
    }

    #[test]
    fn needs_follow_what_the_expressions_read() {
        let compiled = compile(&spec(
            "sandbox.operatingMode == 'Running' && size(namespaceLabels) > 0 ? null : null",
            &[],
        ))
        .expect("compile");
        let needs = &compiled.needs;
        assert!(needs.uses(0) && needs.field(0, 9), "sandbox.operatingMode");
        assert!(!needs.field(0, 0), "sandbox.name is not read");
        assert!(!needs.uses(1), "activity is not read");
        assert!(needs.uses(2), "namespaceLabels is read whole");
    }

    #[test]
    fn comprehension_variables_are_not_unknown_names() {
        compile(&spec(
            "sandbox.labels.exists(k, k.startsWith('team')) && [1, 2].all(x, x > 0) ? null : null",
            &[],
        ))
        .expect("comprehension variables are bound");
    }

    #[test]
    fn variables_must_come_before_their_use() {
        let error = compile(&spec("null", &[("a", "variables.b"), ("b", "1")]))
            .err()
            .expect("refused");
        assert!(error.contains("variables.b is not defined"), "{error}");
        compile(&spec(
            "variables.b > 0 ? null : null",
            &[("a", "1"), ("b", "variables.a + 1")],
        ))
        .expect("in order");
    }

    #[test]
    fn a_hook_needs_only_the_variables_it_reads() {
        let compiled = compile(&spec(
            "variables.c > 0 ? null : null",
            &[("a", "1"), ("b", "2"), ("c", "variables.a + 1")],
        ))
        .expect("compile");
        assert_eq!(
            compiled.wanted[Hook::Lifecycle.index()],
            vec![true, false, true],
            "c, and a through c; never b"
        );
    }
}
