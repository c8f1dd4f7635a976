"""The unmodified E2B Python SDK on a template whose pods checkpoint: a pause keeps the
sandbox's memory, so a command started before it runs on after connect. Run by tests/e2b.rs
with the template and the key; prints "ok"."""
import sys

from e2b import Sandbox

from waiting import eventually

template, key = sys.argv[1], sys.argv[2]


def count(sandbox):
    # The counter writes to the root's /tmp, which under gVisor is memory too: a sandbox
    # started afresh has no such file at all.
    result = sandbox.commands.run("cat /tmp/count 2>/dev/null || echo 0")
    return int(result.stdout.strip() or "0")


sandbox = Sandbox.create(template=template, api_key=key, timeout=600)
counter = sandbox.commands.run(
    "mkdir -p /tmp; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done",
    background=True,
)
before = eventually("the counter to count", lambda: count(sandbox) > 1 and count(sandbox))

assert sandbox.pause()
assert Sandbox.get_info(sandbox.sandbox_id, api_key=key).state.value == "paused"
again = Sandbox.connect(sandbox.sandbox_id, api_key=key)
after = count(again)
assert after >= before, f"the count went back: {after} after {before}: memory was not kept"
eventually("the restored counter to go on", lambda: count(again) > after)
assert any(p.pid == counter.pid for p in again.commands.list()), "the counter is gone"
assert again.kill()
print("ok", flush=True)
