"""Timings of the unmodified E2B Python SDK against sandman, for benches/e2b.rs: one JSON
line per measurement, `{"what": ..., "ms": ...}`. Run as `bench.py PLAIN POOLED KEEPER KEY N`
(KEEPER: a template whose pods checkpoint)."""
import json
import sys
import time

from e2b import Sandbox

plain, pooled, keeper, key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rounds = int(sys.argv[5])


def emit(what, started):
    print(json.dumps({"what": what, "ms": (time.perf_counter() - started) * 1000}), flush=True)


for template, what in ((pooled, "create_warm"), (plain, "create_cold")):
    for _ in range(rounds):
        started = time.perf_counter()
        sandbox = Sandbox.create(template=template, api_key=key, timeout=600)
        emit(what + "_answer", started)
        assert sandbox.commands.run("echo first").stdout == "first\n"
        emit(what, started)
        sandbox.kill()

sandbox = Sandbox.create(template=plain, api_key=key, timeout=600)
for _ in range(rounds * 20):
    started = time.perf_counter()
    sandbox.commands.run("true")
    emit("run_true", started)
for _ in range(rounds):
    started = time.perf_counter()
    assert sandbox.pause()
    emit("pause", started)
    started = time.perf_counter()
    again = Sandbox.connect(sandbox.sandbox_id, api_key=key)
    assert again.commands.run("echo back").stdout == "back\n"
    emit("connect", started)
sandbox.kill()

# A pause that keeps memory: a background counter goes on after each connect.
sandbox = Sandbox.create(template=keeper, api_key=key, timeout=600)
sandbox.commands.run(
    "mkdir -p /tmp; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done",
    background=True,
)
for _ in range(rounds):
    started = time.perf_counter()
    assert sandbox.pause()
    emit("pause_memory", started)
    started = time.perf_counter()
    again = Sandbox.connect(sandbox.sandbox_id, api_key=key)
    assert int(again.commands.run("cat /tmp/count").stdout) > 0
    emit("connect_memory", started)
sandbox.kill()
