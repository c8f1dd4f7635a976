//! The CEL project: no build at all. `policy.yaml` is the policy, with the same decisions and
//! settings as the other languages' scaffolds (see `examples`), and the same suite checks it.

use super::{Plan, Project};
use crate::policy::Hook;

pub fn add(project: &mut Project, plan: &Plan) {
    project.add("policy.yaml", manifest(plan));
}

/// The SandboxPolicy, expressions included.
fn manifest(plan: &Plan) -> String {
    let mut hooks = String::new();
    if plan.has(Hook::Isolation) {
        hooks.push_str(
            r#"    # Untrusted Sandboxes run under the runtime of the settings, as non-root.
    isolation: |
      !('sandman.dev/trust' in sandbox.labels && sandbox.labels['sandman.dev/trust'] == 'untrusted') ? null : {
        "runtimeClassName": variables.runtime,
        "security": { "runAsNonRoot": true, "allowPrivilegeEscalation": false },
        "reason": "untrusted: " + variables.runtime
      }
"#,
        );
    }
    if plan.has(Hook::Resources) {
        hooks.push_str(
            r#"    # Every container gets default requests.
    resources: |
      {
        "containers": [{ "defaults": {
          "cpu": 'cpu' in settings ? settings.cpu : '250m',
          "memory": 'memory' in settings ? settings.memory : '256Mi'
        } }],
        "reason": "default requests"
      }
"#,
        );
    }
    if plan.has(Hook::Lifecycle) {
        hooks.push_str(
            r#"    # A running Sandbox idle past the limit, with no open connection, is suspended.
    lifecycle: |
      sandbox.operatingMode == 'Running' && activity.openConnections == 0
          && activity.idleSeconds >= variables.idleLimit
        ? { "action": "suspend", "reason": "idle for " + string(activity.idleSeconds) + "s" }
        : null
"#,
        );
    }
    let name = plan.name;
    let about = super::examples::about(name);
    let schema = super::examples::SETTINGS_SCHEMA;
    format!(
        r#"# {name}: a sandman policy in CEL. There is nothing to build: this manifest is the policy.
#   sandman policy test tests/suite.yaml     # the example suite
#   kubectl apply -f policy.yaml             # installs it
apiVersion: sandman.dev/v1alpha1
kind: SandboxPolicy
metadata:
  name: {name}
{about}spec:
  priority: 50
  failurePolicy: Fail
{schema}  cel:
    settings:
      runtimeClassName: gvisor
      idleSeconds: 1800
    # Checked when the policy loads (and by `expect: {{settings: {{error: …}}}}` in the suite).
    settingsValidations:
      - expression: "!('idleSeconds' in settings) || settings.idleSeconds > 0"
        message: idleSeconds must be positive
    variables:
      - name: runtime
        expression: "'runtimeClassName' in settings ? settings.runtimeClassName : 'gvisor'"
      - name: idleLimit
        expression: "'idleSeconds' in settings ? settings.idleSeconds : 1800"
{hooks}"#
    )
}
