//! The JavaScript project: `policy.js` made into a component by componentize-js (npm), through
//! its `componentize()` API (`build.mjs`).

use super::{CONTRACT, Plan, Project, world};
use crate::policy::Hook;

/// The componentize-js release the scaffold is tested with.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The WASI shim componentize-js imports without depending on it (an optional peer of one of
/// its dependencies): named here, or a second `npm install` removes it and the build fails.
pub const PREVIEW2_SHIM: &str = "0.25.0";

pub fn add(project: &mut Project, plan: &Plan) {
    project.add("wit/policy.wit", CONTRACT);
    project.add("wit/scaffold.wit", world(plan));
    project.add(
        "package.json",
        format!(
            r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{ "build": "node build.mjs" }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}"
  }}
}}
"#,
            name = plan.name
        ),
    );
    project.add(
        "build.mjs",
        r#"// Builds policy.wasm from policy.js and wit/ (world `scaffold`). A policy has no clock,
// randomness, stdio or network: those engine features are left out.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const { component } = await componentize({
  sourcePath: "policy.js",
  witPath: "wit",
  worldName: "scaffold",
  disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
});
await writeFile("policy.wasm", component);
console.log(`policy.wasm: ${component.length} bytes`);
"#,
    );
    project.add("policy.js", policy_js(plan));
}

fn policy_js(plan: &Plan) -> String {
    let mut out = format!(
        r#"// {name}: a sandman policy. `npm install && npm run build`, then
// `sandman policy test tests/suite.yaml`.
//
// Each hook is an object named after its interface; `decide` returns a decision, or
// undefined to abstain, and throws a string to fail. WIT u64 and s64 values (seconds,
// timestamps) are BigInts. Only the hooks of wit/scaffold.wit are exported.

const KNOWN_SETTINGS = ["runtimeClassName", "cpu", "memory", "idleSeconds"];

function settingsOf(text) {{
  let settings;
  try {{
    settings = JSON.parse(text || "{{}}");
  }} catch (error) {{
    throw `invalid settings: ${{error}}`;
  }}
  const unknown = Object.keys(settings).filter((key) => !KNOWN_SETTINGS.includes(key));
  if (unknown.length > 0) throw `invalid settings: unknown field ${{unknown[0]}}`;
  return settings;
}}

function label(pairs, key) {{
  const pair = pairs.find(([k]) => k === key);
  return pair ? pair[1] : undefined;
}}

export const settings = {{
  validateSettings(text) {{
    if (settingsOf(text).idleSeconds === 0) throw "idleSeconds must be positive";
  }},
}};
"#,
        name = plan.name
    );
    if plan.has(Hook::Isolation) {
        out.push_str(
            r#"
// Untrusted Sandboxes run under the runtime of the settings, as non-root.
export const isolation = {
  decide(input) {
    const settings = settingsOf(input.settings);
    if (label(input.sandbox.labels, "sandman.dev/trust") !== "untrusted") return undefined;
    const runtime = settings.runtimeClassName ?? "gvisor";
    return {
      runtimeClassName: runtime,
      security: { runAsNonRoot: true, allowPrivilegeEscalation: false },
      nodeSelector: [],
      tolerations: [],
      reason: `untrusted: ${runtime}`,
    };
  },
};
"#,
        );
    }
    if plan.has(Hook::Resources) {
        out.push_str(
            r#"
// Every container gets default requests.
export const resources = {
  decide(input) {
    const settings = settingsOf(input.settings);
    return {
      containers: [
        {
          defaults: { cpu: settings.cpu ?? "250m", memory: settings.memory ?? "256Mi" },
          caps: {},
        },
      ],
      reason: "default requests",
    };
  },
};
"#,
        );
    }
    if plan.has(Hook::Lifecycle) {
        out.push_str(
            r#"
// A running Sandbox idle past the limit, with no open connection, is suspended.
export const lifecycle = {
  decide(input) {
    const limit = BigInt(settingsOf(input.settings).idleSeconds ?? 1800);
    const activity = input.activity;
    if (
      input.sandbox.operatingMode === "running" &&
      activity.openConnections === 0 &&
      activity.idleSeconds >= limit
    ) {
      return { action: "suspend", reason: `idle for ${activity.idleSeconds}s` };
    }
    return undefined;
  },
};
"#,
        );
    }
    out
}
