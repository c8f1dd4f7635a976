//! What every scaffold decides, the same in each language so that one suite checks them all:
//!
//! - isolation: a Sandbox labelled `sandman.dev/trust: untrusted` runs under
//!   `settings.runtimeClassName` (default `gvisor`), as non-root without privilege escalation;
//! - resources: every container gets default requests, `settings.cpu` and `settings.memory`
//!   (default `250m` and `256Mi`);
//! - lifecycle: a Running Sandbox idle for `settings.idleSeconds` (default 1800) with no open
//!   connection is suspended;
//!
//! and settings with `idleSeconds: 0` are refused.

use super::{Plan, component_path};
use crate::policy::Hook;

/// The SandboxPolicy that installs the policy from a ConfigMap.
pub fn manifest(plan: &Plan) -> String {
    let name = plan.name;
    let about = about(plan.name);
    let schema = SETTINGS_SCHEMA;
    format!(
        r#"# {name} as installed from a ConfigMap: put the component under key policy.wasm, and the
# sha256 that `sandman policy inspect` prints below.
apiVersion: sandman.dev/v1alpha1
kind: SandboxPolicy
metadata:
  name: {name}
{about}spec:
  priority: 50
  failurePolicy: Fail
{schema}  wasm:
    configMap: {{ namespace: sandman-system, name: {name}, key: policy.wasm }}
    sha256: "0000000000000000000000000000000000000000000000000000000000000000"
    settings:
      runtimeClassName: gvisor
      idleSeconds: 1800
    # Python and JavaScript components carry an interpreter: they need more than the
    # defaults (100ms, 32Mi).
    limits: {{ timeout: 2s, memory: 128Mi }}
"#
    )
}

/// What `sandman policy inspect policy.yaml` shows of the policy besides its code.
pub fn about(name: &str) -> String {
    format!(
        r#"  annotations:
    sandman.dev/title: {name}
    sandman.dev/description: Runs untrusted Sandboxes under gVisor and suspends idle ones.
    # sandman.dev/author: Your Name <you@example.com>
"#
    )
}

/// The settings' JSON Schema, the same in every language: checked before the policy loads
/// and in every suite case, ahead of the policy's own checks of meaning.
pub const SETTINGS_SCHEMA: &str = r#"  # The settings' JSON Schema: checked before the policy loads, and in every suite case.
  settingsSchema:
    type: object
    properties:
      runtimeClassName: { type: string, minLength: 1 }
      idleSeconds: { type: integer }
      cpu: { type: string }
      memory: { type: string }
    additionalProperties: false
"#;

/// The example suite: cases for each hook the policy has, and a settings refusal.
pub fn suite(plan: &Plan, lang: super::Lang) -> String {
    let mut cases = String::new();
    if plan.has(Hook::Isolation) {
        cases.push_str(
            r#"  - name: an untrusted Sandbox runs under gVisor
    sandbox: { metadata: { labels: { sandman.dev/trust: untrusted } } }
    expect:
      isolation: { runtimeClassName: gvisor, security: { runAsNonRoot: true, allowPrivilegeEscalation: false } }
  - name: settings choose the runtime
    settings: { runtimeClassName: kata }
    sandbox: { metadata: { labels: { sandman.dev/trust: untrusted } } }
    expect: { isolation: { runtimeClassName: kata } }
  - name: a trusted Sandbox is left alone
    expect: { isolation: null }
"#,
        );
    }
    if plan.has(Hook::Resources) {
        cases.push_str(
            r#"  - name: containers get default requests
    expect:
      resources: { containers: [{ defaults: { cpu: 250m, memory: 256Mi } }] }
"#,
        );
    }
    if plan.has(Hook::Lifecycle) {
        cases.push_str(
            r#"  - name: a Sandbox idle past the limit is suspended
    activity: { idleSeconds: 3600 }
    expect: { lifecycle: { action: suspend, reason: "idle for 3600s" } }
  - name: an open connection keeps it running
    activity: { idleSeconds: 3600, openConnections: 1 }
    expect: { lifecycle: null }
  - name: a recently active Sandbox is left alone
    activity: { idleSeconds: 60 }
    expect: { lifecycle: null }
"#,
        );
    }
    cases.push_str(
        r#"  - name: settings with idleSeconds 0 are refused
    settings: { idleSeconds: 0 }
    expect: { settings: { error: "idleSeconds must be positive" } }
  - name: settings the schema does not allow are refused
    settings: { idleSeconds: "soon" }
    expect: { settings: { error: "do not meet spec.settingsSchema: at /idleSeconds" } }
"#,
    );
    match component_path(plan, lang) {
        Some(component) => format!(
            "# `sandman policy test tests/suite.yaml`: the policy in policy.yaml, with the component\n\
             # that the build makes.\npolicy: ../policy.yaml\nwasm: ../{component}\ncases:\n{cases}"
        ),
        None => format!(
            "# `sandman policy test tests/suite.yaml`: the policy in policy.yaml.\npolicy: ../policy.yaml\ncases:\n{cases}"
        ),
    }
}
