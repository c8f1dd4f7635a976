"""The unmodified E2B Python SDK (e2b on PyPI) against sandman-runtime, as a client that
nobody here wrote meets it. Run by tests/e2b_sdk.rs with the runtime's URL, token and a
scratch directory; every check is an assert, so a failure names itself."""
import sys
import time

from packaging.version import Version
from e2b import CommandExitException, Sandbox
from e2b.connection_config import ConnectionConfig
from e2b.sandbox.commands.command_handle import PtySize

url, token, scratch = sys.argv[1], sys.argv[2], sys.argv[3]
config = ConnectionConfig(
    api_key="unused",
    sandbox_url=url,
    # What Sandbox.create() sets from the control API's answer.
    extra_sandbox_headers={"E2b-Sandbox-Id": "probe", "E2b-Sandbox-Port": "49983", "X-Access-Token": token},
)
# The constructor Sandbox.create() and Sandbox.connect() end in, without the control API.
sandbox = Sandbox(
    sandbox_id="probe",
    sandbox_domain=None,
    envd_version=Version("0.5.7"),
    envd_access_token=token,
    traffic_access_token=None,
    connection_config=config,
)

result = sandbox.commands.run("echo hello; echo oops >&2")
assert (result.stdout, result.stderr, result.exit_code) == ("hello\n", "oops\n", 0), result
try:
    sandbox.commands.run("exit 3")
    raise AssertionError("a failing command raised nothing")
except CommandExitException as failed:
    assert failed.exit_code == 3, failed

background = sandbox.commands.run("sleep 60", background=True)
assert background.pid in [p.pid for p in sandbox.commands.list()]
assert sandbox.commands.kill(background.pid)

reader = sandbox.commands.run("cat", background=True, stdin=True)
sandbox.commands.send_stdin(reader.pid, "piped\n")
sandbox.commands.close_stdin(reader.pid)
assert reader.wait().stdout == "piped\n"

path = f"{scratch}/dir/a.txt"
sandbox.files.write(path, "content")
assert sandbox.files.read(path) == "content"
assert sandbox.files.exists(path) and not sandbox.files.exists(f"{scratch}/none")
info = sandbox.files.get_info(path)
assert (info.name, info.size, info.permissions[0]) == ("a.txt", 7, "-"), info
assert [e.name for e in sandbox.files.list(f"{scratch}/dir")] == ["a.txt"]
assert sandbox.files.make_dir(f"{scratch}/made") is True
assert sandbox.files.make_dir(f"{scratch}/made") is False
sandbox.files.rename(path, f"{scratch}/made/b.txt")
assert sandbox.files.read(f"{scratch}/made/b.txt") == "content"
sandbox.files.remove(f"{scratch}/made")
assert not sandbox.files.exists(f"{scratch}/made")

watch = sandbox.files.watch_dir(scratch)
sandbox.files.write(f"{scratch}/watched.txt", "x")
events = []
for _ in range(100):
    events += watch.get_new_events()
    if any(e.name == "watched.txt" for e in events):
        break
    time.sleep(0.05)
watch.stop()
assert any(e.name == "watched.txt" for e in events), events

seen = bytearray()
terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
output = iter(terminal)


def read_until(needle):
    for _, _, chunk in output:
        if chunk:
            seen.extend(chunk)
        if needle in seen.decode(errors="replace"):
            return
    raise AssertionError(f"the PTY ended before {needle!r}: {seen!r}")


sandbox.pty.send_stdin(terminal.pid, b"stty size\n")
read_until("24 80")
sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
sandbox.pty.send_stdin(terminal.pid, b"stty size\n")
read_until("30 100")
sandbox.pty.send_stdin(terminal.pid, b"exit 5\n")
try:
    terminal.wait()
    raise AssertionError("exit 5 raised nothing")
except CommandExitException as ended:
    assert ended.exit_code == 5, ended
print("ok")
