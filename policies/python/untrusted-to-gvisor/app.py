"""untrusted-to-gvisor in Python: the same decisions as policies/untrusted-to-gvisor (Rust),
from the same settings, passing the same suite (policies/tests/untrusted-to-gvisor.yaml).

Sandboxes labelled untrusted, or in a namespace labelled untrusted, run under gVisor with a
hardened security context. Settings (all optional):
{"label": "sandman.dev/trust", "value": "untrusted", "runtimeClassName": "gvisor"}

Built by componentize-py (PyPI) against wit/, world `isolation-policy`: see policies/python/build.sh.
"""

import json
from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

DEFAULTS = {"label": "sandman.dev/trust", "value": "untrusted", "runtimeClassName": "gvisor"}


def settings_of(text: str) -> dict:
    try:
        given = json.loads(text or "{}")
    except ValueError as error:
        raise Err(f"invalid settings: {error}")
    if not isinstance(given, dict):
        raise Err("invalid settings: not an object")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise Err(f"invalid settings: unknown field `{unknown[0]}`")
    return {**DEFAULTS, **given}


class Settings(exports.Settings):
    def validate_settings(self, settings: str) -> None:
        if not settings_of(settings)["runtimeClassName"]:
            raise Err("runtimeClassName must not be empty")


class Isolation(exports.Isolation):
    def decide(self, input: types.Input) -> Optional[types.IsolationDecision]:
        settings = settings_of(input.settings)
        label, value = settings["label"], settings["value"]
        sandbox = input.sandbox
        if dict(sandbox.labels).get(label) == value:
            why = f"the Sandbox is labelled {label}={value}"
        elif dict(sandbox.namespace_labels).get(label) == value:
            why = f"namespace {sandbox.namespace} is labelled {label}={value}"
        else:
            return None
        runtime = settings["runtimeClassName"]
        return types.IsolationDecision(
            runtime_class_name=runtime,
            security=types.SecurityOverrides(
                run_as_non_root=True,
                run_as_user=None,
                read_only_root_filesystem=True,
                allow_privilege_escalation=False,
                host_users=False,
                seccomp_profile="RuntimeDefault",
            ),
            node_selector=[],
            tolerations=[],
            network=None,
            reason=f"{why}: {runtime}",
        )
