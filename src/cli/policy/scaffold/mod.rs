//! `sandman policy new`: a policy project that builds with one command and passes its own
//! suite at once, in Rust, Python, JavaScript or CEL. It carries what it needs (the WIT
//! contract, and for Rust the SDK), so it builds outside this repository; a CEL project is its
//! manifest, with nothing to build.

mod cel;
mod examples;
mod js;
mod python;
mod rust;

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::PolicyCliError;
use crate::policy::Hook;

/// The contract every scaffold carries, as this build of sandman speaks it.
const CONTRACT: &str = include_str!("../../../../wit/policy.wit");

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The policy's name: lowercase letters, digits and `-` (a Kubernetes name).
    pub name: String,
    /// The language of the project.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// The hooks the policy implements, of isolation, resources and lifecycle.
    #[arg(long, value_delimiter = ',', default_value = "isolation")]
    pub hooks: Vec<String>,
    /// Where to write the project (default: a directory named after the policy). It must not
    /// exist, or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    Cel,
}

/// A project to write: its files, relative to its directory.
pub struct Project {
    pub files: Vec<(PathBuf, String)>,
}

impl Project {
    fn add(&mut self, path: &str, text: impl Into<String>) {
        self.files.push((PathBuf::from(path), text.into()));
    }
}

/// What every language's project is made from.
pub struct Plan<'a> {
    pub name: &'a str,
    pub hooks: &'a [Hook],
}

impl Plan<'_> {
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// The name as an identifier (`my-policy` → `my_policy`).
    pub fn ident(&self) -> String {
        self.name.replace('-', "_")
    }
}

pub fn run(args: NewArgs) -> Result<(), PolicyCliError> {
    let hooks = parse_hooks(&args.hooks)?;
    check_name(&args.name)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map_err(|e| PolicyCliError::Read(dir.clone(), e.to_string()))?
            .next()
            .is_some()
    {
        return Err(PolicyCliError::Input(format!(
            "{} exists and is not empty",
            dir.display()
        )));
    }
    let plan = Plan {
        name: &args.name,
        hooks: &hooks,
    };
    let project = project(&plan, args.lang);
    write(&dir, &project)?;
    println!(
        "wrote {} ({:?}, hooks: {}); next:\n  cd {}\n  {}",
        dir.display(),
        args.lang,
        hooks
            .iter()
            .map(|h| h.name())
            .collect::<Vec<_>>()
            .join(", "),
        dir.display(),
        build_command(args.lang),
    );
    Ok(())
}

/// The project for `plan` in `lang`: sources, manifest, suite, README and the contract.
pub fn project(plan: &Plan, lang: Lang) -> Project {
    let mut project = Project { files: Vec::new() };
    if lang != Lang::Cel {
        project.add("policy.yaml", examples::manifest(plan));
    }
    project.add("tests/suite.yaml", examples::suite(plan, lang));
    project.add(".gitignore", gitignore(lang));
    match lang {
        Lang::Rust => rust::add(&mut project, plan),
        Lang::Python => python::add(&mut project, plan),
        Lang::Js => js::add(&mut project, plan),
        Lang::Cel => cel::add(&mut project, plan),
    }
    project.add("README.md", readme(plan, lang));
    project
}

/// The world the Python and JavaScript builds use: `base` and the hooks of the plan. It joins
/// the contract's package, so the contract file stays as it is.
pub fn world(plan: &Plan) -> String {
    let exports: String = plan
        .hooks
        .iter()
        .map(|hook| format!("    export {};\n", hook.name()))
        .collect();
    format!(
        "// The world this project builds: every policy's base, and the hooks it implements.\nworld scaffold {{\n    include base;\n{exports}}}\n"
    )
}

pub fn build_command(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "cargo build --release",
        Lang::Python => "bash build.sh",
        Lang::Js => "npm install && npm run build",
        // Nothing to build: policy.yaml is the policy.
        Lang::Cel => "sandman policy test tests/suite.yaml",
    }
}

/// Where the build leaves the component; a CEL policy has none.
pub fn component_path(plan: &Plan, lang: Lang) -> Option<String> {
    match lang {
        Lang::Rust => Some(format!(
            "target/wasm32-wasip2/release/{}.wasm",
            plan.ident()
        )),
        Lang::Python | Lang::Js => Some("policy.wasm".into()),
        Lang::Cel => None,
    }
}

fn parse_hooks(names: &[String]) -> Result<Vec<Hook>, PolicyCliError> {
    let mut hooks = Vec::new();
    for name in names {
        let hook = match Hook::parse(name.trim()) {
            Some(hook @ (Hook::Isolation | Hook::Resources | Hook::Lifecycle)) => hook,
            Some(Hook::Pool) => {
                return Err(PolicyCliError::Input(
                    "the scaffold writes Sandbox hooks (isolation, resources, lifecycle); a pool hook is added by hand (see policies/pool-by-claim-rate)".into(),
                ));
            }
            None => {
                return Err(PolicyCliError::Input(format!(
                    "unknown hook {name:?}: the hooks are isolation, resources and lifecycle"
                )));
            }
        };
        if !hooks.contains(&hook) {
            hooks.push(hook);
        }
    }
    hooks.sort();
    if hooks.is_empty() {
        return Err(PolicyCliError::Input("name at least one hook".into()));
    }
    Ok(hooks)
}

fn check_name(name: &str) -> Result<(), PolicyCliError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(PolicyCliError::Input(format!(
            "{name:?} is not a policy name: lowercase letters, digits and '-', starting with a letter"
        )))
    }
}

fn write(dir: &Path, project: &Project) -> Result<(), PolicyCliError> {
    for (path, text) in &project.files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| PolicyCliError::Read(parent.to_path_buf(), e.to_string()))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| PolicyCliError::Read(path.clone(), e.to_string()))?;
    }
    Ok(())
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/target\n",
        Lang::Python => "/policy.wasm\n/bindings\n/.venv\n__pycache__/\n",
        Lang::Js => "/policy.wasm\n/node_modules\n",
        Lang::Cel => "",
    }
}

fn readme(plan: &Plan, lang: Lang) -> String {
    let hooks: Vec<&str> = plan.hooks.iter().map(|h| h.name()).collect();
    let Some(component) = component_path(plan, lang) else {
        return cel_readme(plan, &hooks);
    };
    let (source, notes) = match lang {
        Lang::Rust => (
            "src/lib.rs",
            "`sdk/` is sandman's Rust SDK and `policy-wire/` its decision types, copied here so the \
             project builds without a sandman checkout; `rust-toolchain.toml` installs the \
             `wasm32-wasip2` target on first build.",
        ),
        Lang::Python => (
            "app.py",
            "`build.sh` installs componentize-py (PyPI) into `.venv` on first use and builds \
             `policy.wasm` from `app.py` and `wit/`. A Python component is large (about 18 MB, \
             most of it the interpreter) and slower to load than a Rust one: give it \
             `limits: { timeout: 1s, memory: 64Mi }` or more.",
        ),
        Lang::Js => (
            "policy.js",
            "`npm run build` runs componentize-js (npm) on `policy.js` and `wit/`. A JavaScript \
             component carries its engine (about 10 MB): give it `limits: { timeout: 1s, memory: \
             64Mi }` or more.",
        ),
        Lang::Cel => return cel_readme(plan, &hooks),
    };
    format!(
        r#"# {name}

A sandman policy ({lang:?}) with the hooks {hooks}. `{source}` holds the decisions;
`wit/policy.wit` is the contract it implements (`sandman:policy@{version}`).

```sh
{build}                                              # builds {component}
sandman policy test tests/suite.yaml --wasm {component}   # the example suite: PASS per case
sandman policy inspect {component}                       # hooks, size, sha256
```

`policy.yaml` installs it as a SandboxPolicy from a ConfigMap: put the component in the
ConfigMap and the sha256 that `inspect` prints in `spec.wasm.sha256`. To publish it signed instead:
`sandman policy push {component} REGISTRY/{name}:v1 --sign key.pem`.

{notes}
"#,
        name = plan.name,
        hooks = hooks.join(", "),
        version = crate::policy::CONTRACT_VERSION,
        build = build_command(lang),
    )
}

fn cel_readme(plan: &Plan, hooks: &[&str]) -> String {
    format!(
        r#"# {name}

A sandman policy in CEL with the hooks {hooks}. `policy.yaml` is the whole policy: its
expressions, settings and the checks of its settings. Nothing is built.

```sh
sandman policy test tests/suite.yaml   # the example suite: PASS per case
kubectl apply -f policy.yaml           # installs it
```

An error in an expression is reported at load with its `policy.yaml:line:column`.
"#,
        name = plan.name,
        hooks = hooks.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_and_names_are_checked() {
        assert_eq!(
            parse_hooks(&["lifecycle".into(), "isolation".into(), "lifecycle".into()]).ok(),
            Some(vec![Hook::Isolation, Hook::Lifecycle])
        );
        assert!(parse_hooks(&["isolaton".into()]).is_err());
        assert!(parse_hooks(&["pool".into()]).is_err());
        assert!(check_name("my-policy2").is_ok());
        for bad in ["", "My", "-a", "a-", "a_b", "1a"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_project_carries_the_contract_manifest_and_suite() {
        let hooks = [Hook::Isolation, Hook::Lifecycle];
        let plan = Plan {
            name: "demo",
            hooks: &hooks,
        };
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::Cel] {
            let project = project(&plan, lang);
            let has = |p: &str| project.files.iter().any(|(path, _)| path == Path::new(p));
            for file in ["policy.yaml", "tests/suite.yaml", "README.md"] {
                assert!(has(file), "{lang:?}: {file}");
            }
            if lang == Lang::Cel {
                continue;
            }
            assert!(
                project
                    .files
                    .iter()
                    .any(|(path, text)| path.ends_with("policy.wit") && text == CONTRACT),
                "{lang:?} carries the contract"
            );
        }
    }
}
