//! The Rust project: a `cdylib` over sandman's SDK, which it carries (`sdk/`, `policy-wire/`)
//! so that it builds without a sandman checkout.

use super::{CONTRACT, Plan, Project};
use crate::policy::Hook;

const SDK_LIB: &str = include_str!("../../../../policies/sdk/src/lib.rs");
const SDK_QUANTITY: &str = include_str!("../../../../policies/sdk/src/quantity.rs");
const SDK_TESTING: &str = include_str!("../../../../policies/sdk/src/testing.rs");
const SDK_WIRE: &str = include_str!("../../../../policies/sdk/src/wire.rs");
const WIRE_LIB: &str = include_str!("../../../../crates/policy-wire/src/lib.rs");
const WIRE_QUANTITY: &str = include_str!("../../../../crates/policy-wire/src/quantity.rs");

/// The versions the SDK is built with here (`policies/Cargo.toml`).
const WIT_BINDGEN: &str = "0.61";

pub fn add(project: &mut Project, plan: &Plan) {
    project.add("Cargo.toml", cargo_toml(plan));
    project.add(
        ".cargo/config.toml",
        "# `cargo build --release` builds the component.\n[build]\ntarget = \"wasm32-wasip2\"\n",
    );
    project.add(
        "rust-toolchain.toml",
        "# rustup installs the target on first use.\n[toolchain]\nchannel = \"stable\"\ntargets = [\"wasm32-wasip2\"]\n",
    );
    project.add("src/lib.rs", lib_rs(plan));
    project.add("wit/policy.wit", CONTRACT);
    // The SDK as in this release, its `wit/` and `policy-wire` found beside it.
    project.add("sdk/Cargo.toml", sdk_cargo_toml());
    project.add(
        "sdk/src/lib.rs",
        SDK_LIB.replace("\"../../wit\"", "\"../wit\""),
    );
    project.add("sdk/src/quantity.rs", SDK_QUANTITY);
    project.add("sdk/src/testing.rs", SDK_TESTING);
    project.add("sdk/src/wire.rs", SDK_WIRE);
    project.add(
        "policy-wire/Cargo.toml",
        "[package]\nname = \"sandman-policy-wire\"\nedition = \"2024\"\nversion = \"0.1.0\"\nlicense = \"Apache-2.0\"\npublish = false\n\n[dependencies]\nserde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n",
    );
    project.add("policy-wire/src/lib.rs", WIRE_LIB);
    project.add("policy-wire/src/quantity.rs", WIRE_QUANTITY);
}

fn cargo_toml(plan: &Plan) -> String {
    format!(
        r#"[package]
name = "{name}"
edition = "2024"
version = "0.1.0"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
sandman-policy-sdk = {{ path = "sdk" }}
serde = {{ version = "1", features = ["derive"] }}

# A workspace of its own, with the SDK it carries.
[workspace]
members = [".", "sdk", "policy-wire"]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        name = plan.name
    )
}

fn sdk_cargo_toml() -> String {
    format!(
        "[package]\nname = \"sandman-policy-sdk\"\nedition = \"2024\"\nversion = \"0.1.0\"\nlicense = \"Apache-2.0\"\npublish = false\n\n[dependencies]\nwit-bindgen = \"{WIT_BINDGEN}\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\nsandman-policy-wire = {{ path = \"../policy-wire\" }}\n"
    )
}

fn lib_rs(plan: &Plan) -> String {
    let ty = type_name(plan.name);
    let hooks: Vec<&str> = plan.hooks.iter().map(|h| h.name()).collect();
    let mut body = String::new();
    if plan.has(Hook::Isolation) {
        body.push_str(
            r#"
    /// Untrusted Sandboxes run under the runtime of the settings, as non-root.
    fn isolation(input: Input) -> Result<Option<IsolationDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        if label(&input.sandbox.labels, "sandman.dev/trust") != Some("untrusted") {
            return Ok(None);
        }
        let runtime = settings.runtime_class_name.unwrap_or_else(|| "gvisor".into());
        Ok(Some(IsolationDecision {
            runtime_class_name: Some(runtime.clone()),
            security: SecurityOverrides {
                run_as_non_root: Some(true),
                allow_privilege_escalation: Some(false),
                ..no_security_overrides()
            },
            node_selector: Vec::new(),
            tolerations: Vec::new(),
            network: None,
            reason: format!("untrusted: {runtime}"),
        }))
    }
"#,
        );
    }
    if plan.has(Hook::Resources) {
        body.push_str(
            r#"
    /// Every container gets default requests.
    fn resources(input: Input) -> Result<Option<ResourcesDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        let unset = ComputeResources {
            cpu: None,
            memory: None,
            ephemeral_storage: None,
        };
        Ok(Some(ResourcesDecision {
            containers: vec![ContainerResources {
                container: None,
                defaults: ComputeResources {
                    cpu: Some(settings.cpu.unwrap_or_else(|| "250m".into())),
                    memory: Some(settings.memory.unwrap_or_else(|| "256Mi".into())),
                    ephemeral_storage: None,
                },
                caps: unset,
            }],
            reason: "default requests".into(),
        }))
    }
"#,
        );
    }
    if plan.has(Hook::Lifecycle) {
        body.push_str(
            r#"
    /// A running Sandbox idle past the limit, with no open connection, is suspended.
    fn lifecycle(input: Input) -> Result<Option<LifecycleDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        let limit = settings.idle_seconds.unwrap_or(1800);
        let activity = &input.activity;
        let idle = input.sandbox.operating_mode == OperatingMode::Running
            && activity.open_connections == 0
            && activity.idle_seconds >= limit;
        Ok(idle.then(|| LifecycleDecision {
            action: LifecycleAction::Suspend,
            reason: format!("idle for {}s", activity.idle_seconds),
            requeue_after_seconds: None,
            checkpoint: None,
        }))
    }
"#,
        );
    }
    format!(
        r#"//! {name}: a sandman policy. `cargo build --release`, then
//! `sandman policy test tests/suite.yaml`.

#[allow(unused_imports)]
use sandman_policy_sdk::types::*;
#[allow(unused_imports)]
use sandman_policy_sdk::{{Policy, export_policy, label, no_security_overrides, parse_settings}};

/// The policy's settings (`spec.wasm.settings`), all optional.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Settings {{
    runtime_class_name: Option<String>,
    cpu: Option<String>,
    memory: Option<String>,
    idle_seconds: Option<u64>,
}}

struct {ty};

impl Policy for {ty} {{
    /// Called once when the policy loads: refuse settings that cannot work.
    fn validate_settings(settings: &str) -> Result<(), String> {{
        let settings: Settings = parse_settings(settings)?;
        if settings.idle_seconds == Some(0) {{
            return Err("idleSeconds must be positive".into());
        }}
        Ok(())
    }}
{body}}}

// Only the hooks named here are exported: the host never calls the others.
export_policy!({ty}, [{hooks}]);
"#,
        name = plan.name,
        hooks = hooks.join(", "),
    )
}

/// `my-policy` → `MyPolicy`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}
