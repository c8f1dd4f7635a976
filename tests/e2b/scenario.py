"""The unmodified E2B Python SDK against sandman's gateway: E2B_API_URL and E2B_SANDBOX_URL
are the gateway, the API key is a Kubernetes ServiceAccount token. Run by tests/e2b.rs with
a template without a warm pool, one with, and the key. It prints the sandbox id, waits for a
line on stdin (the test looks at the claim meanwhile), then prints "ok"."""
import sys
import time

from e2b import (
    CommandExitException,
    FilesystemEventType,
    Sandbox,
    SandboxNotFoundException,
    SandboxQuery,
)

from waiting import eventually

plain, pooled, key = sys.argv[1], sys.argv[2], sys.argv[3]


# From a warm pool: the claim takes the pool's Sandbox.
warm = Sandbox.create(template=pooled, api_key=key, timeout=600)
assert warm.commands.run("echo warm").stdout == "warm\n"
assert warm.kill()

sandbox = Sandbox.create(
    template=plain, api_key=key, timeout=600, metadata={"suite": "e2b", "run": "one"}
)
print(sandbox.sandbox_id, flush=True)
sys.stdin.readline()

# Commands: output and exit code, a failure with its stderr, env and cwd.
result = sandbox.commands.run("echo hello")
assert (result.stdout, result.exit_code) == ("hello\n", 0), result
try:
    sandbox.commands.run("echo oops >&2; exit 3")
    raise AssertionError("a failing command did not raise")
except CommandExitException as e:
    assert e.exit_code == 3 and "oops" in e.stderr, e
result = sandbox.commands.run('echo "$GREETING from $(pwd)"', envs={"GREETING": "hi"}, cwd="/tmp")
assert result.stdout == "hi from /tmp\n", result

# A background command, listed and killed.
background = sandbox.commands.run("sleep 600", background=True)
assert any(p.pid == background.pid for p in sandbox.commands.list())
assert sandbox.commands.kill(background.pid)
eventually(
    "the killed command to leave the list",
    lambda: all(p.pid != background.pid for p in sandbox.commands.list()),
)

# Stdin.
cat = sandbox.commands.run("cat", background=True, stdin=True)
sandbox.commands.send_stdin(cat.pid, "typed\n")
sandbox.commands.close_stdin(cat.pid)
assert cat.wait().stdout == "typed\n"

# Files: binary bytes kept exactly, list, make_dir, exists, rename, remove, and a watch.
blob = bytes(range(256)) * 257
assert sandbox.files.make_dir("/workspace/work")
sandbox.files.write("/workspace/work/blob.bin", blob)
assert sandbox.files.read("/workspace/work/blob.bin", format="bytes") == blob
assert [e.name for e in sandbox.files.list("/workspace/work")] == ["blob.bin"]
assert sandbox.files.exists("/workspace/work/blob.bin")
sandbox.files.rename("/workspace/work/blob.bin", "/workspace/work/moved.bin")
assert not sandbox.files.exists("/workspace/work/blob.bin")
sandbox.files.remove("/workspace/work/moved.bin")
assert not sandbox.files.exists("/workspace/work/moved.bin")
watch = sandbox.files.watch_dir("/workspace/work")
sandbox.files.write("/workspace/work/seen.txt", "x")
eventually(
    "the watch to see the write",
    lambda: any(
        e.name == "seen.txt" and e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE)
        for e in watch.get_new_events()
    ),
)
watch.stop()

# Timeout, info, listing by metadata.
sandbox.files.write("/workspace/kept.txt", "kept across pause")
sandbox.set_timeout(900)
info = sandbox.get_info()
assert info.state.value == "running" and info.metadata == {"suite": "e2b", "run": "one"}, info
assert info.end_at.timestamp() - time.time() > 800, info
found = Sandbox.list(api_key=key, query=SandboxQuery(metadata={"suite": "e2b"})).next_items()
assert [s.sandbox_id for s in found] == [sandbox.sandbox_id], found
assert Sandbox.list(api_key=key, query=SandboxQuery(metadata={"suite": "other"})).next_items() == []

# Pause, then connect: on a template that does not checkpoint, the files are kept.
assert sandbox.pause()
assert Sandbox.get_info(sandbox.sandbox_id, api_key=key).state.value == "paused"
assert not sandbox.pause(), "a second pause says it was paused already"
again = Sandbox.connect(sandbox.sandbox_id, api_key=key)
assert again.files.read("/workspace/kept.txt") == "kept across pause"
assert again.get_info().state.value == "running"
assert again.get_metrics() == []

assert again.kill()
# Killed means not found at once, as in E2B: the Sandbox's own deletion may still be under
# way, and a connect then must not wait for it (the gateway's hold time) or resume it.
try:
    Sandbox.connect(sandbox.sandbox_id, api_key=key)
    raise AssertionError("a killed sandbox was connected to")
except SandboxNotFoundException:
    pass

# autoPause (`on_timeout: pause`): at its timeout the sandbox is paused, not killed; connect
# resumes it with its files, and a new end (E2B's default), or it would pause again at once.
napping = Sandbox.create(
    template=plain, api_key=key, timeout=20, lifecycle={"on_timeout": "pause"}
)
napping.files.write("/workspace/nap.txt", "kept across auto-pause")
eventually(
    "the timeout to pause it",
    lambda: Sandbox.get_info(napping.sandbox_id, api_key=key).state.value == "paused",
    120,
)
woken = Sandbox.connect(napping.sandbox_id, api_key=key)
assert woken.files.read("/workspace/nap.txt") == "kept across auto-pause"
info = woken.get_info()
assert info.state.value == "running" and info.end_at.timestamp() - time.time() > 200, info
assert woken.kill()
print("ok", flush=True)
