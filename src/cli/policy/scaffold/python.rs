//! The Python project: `app.py` made into a component by componentize-py (PyPI), which
//! `build.sh` installs into `.venv` on first use.

use super::{CONTRACT, Plan, Project, world};
use crate::policy::Hook;

/// The componentize-py release the scaffold is tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

pub fn add(project: &mut Project, plan: &Plan) {
    project.add("wit/policy.wit", CONTRACT);
    project.add("wit/scaffold.wit", world(plan));
    project.add(
        "build.sh",
        format!(
            r#"#!/usr/bin/env bash
# Builds policy.wasm from app.py and wit/ with componentize-py, installed into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet "componentize-py=={COMPONENTIZE_PY}"
fi
.venv/bin/componentize-py -d wit -w scaffold componentize app -o policy.wasm
"#
        ),
    );
    project.add("app.py", app_py(plan));
}

fn app_py(plan: &Plan) -> String {
    let mut out = format!(
        r#""""{name}: a sandman policy. `bash build.sh`, then `sandman policy test tests/suite.yaml`.

Each hook is a class named after its interface; `decide` returns a decision, or None to
abstain, and raises Err(message) to fail. Only the hooks of wit/scaffold.wit are exported.
"""

import json
from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

KNOWN_SETTINGS = {{"runtimeClassName", "cpu", "memory", "idleSeconds"}}


def settings_of(text: str) -> dict:
    try:
        settings = json.loads(text or "{{}}")
    except ValueError as error:
        raise Err(f"invalid settings: {{error}}")
    if not isinstance(settings, dict):
        raise Err("invalid settings: not an object")
    unknown = sorted(set(settings) - KNOWN_SETTINGS)
    if unknown:
        raise Err(f"invalid settings: unknown field {{unknown[0]}}")
    return settings


class Settings(exports.Settings):
    def validate_settings(self, settings: str) -> None:
        if settings_of(settings).get("idleSeconds") == 0:
            raise Err("idleSeconds must be positive")
"#,
        name = plan.name
    );
    if plan.has(Hook::Isolation) {
        out.push_str(
            r#"

class Isolation(exports.Isolation):
    """Untrusted Sandboxes run under the runtime of the settings, as non-root."""

    def decide(self, input: types.Input) -> Optional[types.IsolationDecision]:
        settings = settings_of(input.settings)
        if dict(input.sandbox.labels).get("sandman.dev/trust") != "untrusted":
            return None
        runtime = settings.get("runtimeClassName", "gvisor")
        return types.IsolationDecision(
            runtime_class_name=runtime,
            security=types.SecurityOverrides(
                run_as_non_root=True,
                run_as_user=None,
                read_only_root_filesystem=None,
                allow_privilege_escalation=False,
                host_users=None,
                seccomp_profile=None,
            ),
            node_selector=[],
            tolerations=[],
            network=None,
            reason=f"untrusted: {runtime}",
        )
"#,
        );
    }
    if plan.has(Hook::Resources) {
        out.push_str(
            r#"

class Resources(exports.Resources):
    """Every container gets default requests."""

    def decide(self, input: types.Input) -> Optional[types.ResourcesDecision]:
        settings = settings_of(input.settings)
        return types.ResourcesDecision(
            containers=[
                types.ContainerResources(
                    container=None,
                    defaults=types.ComputeResources(
                        cpu=settings.get("cpu", "250m"),
                        memory=settings.get("memory", "256Mi"),
                        ephemeral_storage=None,
                    ),
                    caps=types.ComputeResources(cpu=None, memory=None, ephemeral_storage=None),
                )
            ],
            reason="default requests",
        )
"#,
        );
    }
    if plan.has(Hook::Lifecycle) {
        out.push_str(
            r#"

class Lifecycle(exports.Lifecycle):
    """A running Sandbox idle past the limit, with no open connection, is suspended."""

    def decide(self, input: types.Input) -> Optional[types.LifecycleDecision]:
        limit = settings_of(input.settings).get("idleSeconds", 1800)
        activity = input.activity
        if (
            input.sandbox.operating_mode == types.OperatingMode.RUNNING
            and activity.open_connections == 0
            and activity.idle_seconds >= limit
        ):
            return types.LifecycleDecision(
                action=types.LifecycleAction.SUSPEND,
                reason=f"idle for {activity.idle_seconds}s",
                requeue_after_seconds=None,
                checkpoint=None,
            )
        return None
"#,
        );
    }
    out
}
