"""The unmodified E2B Python SDK against sandman's gateway: E2B_API_URL and E2B_SANDBOX_URL
are the gateway, the API key is a Kubernetes ServiceAccount token. Run by tests/e2b.rs;
prints the sandbox id, then "ok"."""
import sys

from e2b import Sandbox
from e2b.exceptions import AuthenticationException, SandboxException

template, allowed, refused = sys.argv[1], sys.argv[2], sys.argv[3]

sandbox = Sandbox.create(template=template, api_key=allowed, timeout=600)
print(sandbox.sandbox_id, flush=True)
result = sandbox.commands.run("echo hello from $(hostname)")
assert result.stdout.startswith("hello from "), result
sandbox.files.write("/tmp/note.txt", "kept")
assert sandbox.files.read("/tmp/note.txt") == "kept"
info = sandbox.get_info()
assert info.sandbox_id == sandbox.sandbox_id and info.state.value == "running", info
again = Sandbox.connect(sandbox.sandbox_id, api_key=allowed)
assert again.commands.run("cat /tmp/note.txt").stdout == "kept"
sys.stdin.readline()  # the test looks at the claim meanwhile
sandbox.kill()

# A token whose RBAC grants nothing gets nothing.
try:
    Sandbox.create(template=template, api_key=refused, timeout=60)
    raise AssertionError("a token without rights made a sandbox")
except (AuthenticationException, SandboxException) as e:
    assert "403" in str(e) or "forbidden" in str(e).lower(), e
print("ok", flush=True)
