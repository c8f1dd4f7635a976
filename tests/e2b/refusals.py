"""What the unmodified E2B Python SDK gets when sandman's gateway refuses it. Run by
tests/e2b.rs as `refusals.py CASE KEY [SANDBOX_ID]`; prints "ok".

- invalid: a key the API server does not know is a 401 (the SDK's AuthenticationException).
- forbidden: a ServiceAccount whose RBAC grants nothing on claims gets a 403 naming the verb.
- foreign: a key with every right in its own namespace finds nothing of another namespace's
  Sandbox SANDBOX_ID, which OWNER_KEY (that namespace's) finds: it is not found, exactly as
  an id that does not exist.
"""
import sys
import time

from e2b import AuthenticationException, Sandbox, SandboxException, SandboxQuery
from e2b.exceptions import NotFoundException, SandboxNotFoundException

case, key = sys.argv[1], sys.argv[2]


def refused(call, *kinds):
    try:
        call()
    except kinds as e:
        return e
    raise AssertionError(f"{call} was not refused with {kinds}")


if case == "invalid":
    refused(lambda: Sandbox.create(template="shell", api_key=key), AuthenticationException)
    refused(lambda: Sandbox.list(api_key=key).next_items(), AuthenticationException)
elif case == "forbidden":
    e = refused(lambda: Sandbox.create(template="shell", api_key=key), SandboxException)
    assert "403" in str(e) and "may not create sandboxclaims" in str(e), e
    e = refused(lambda: Sandbox.list(api_key=key).next_items(), SandboxException)
    assert "403" in str(e) and "may not list" in str(e), e
elif case == "foreign":
    theirs, owner = sys.argv[3], sys.argv[4]
    deadline = time.monotonic() + 60
    while True:
        try:
            assert Sandbox.get_info(theirs, api_key=owner).sandbox_id == theirs
            break
        except SandboxNotFoundException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    missing = "a" * len(theirs)
    not_found = (NotFoundException, SandboxNotFoundException)
    for sandbox_id in (theirs, missing):
        refused(lambda: Sandbox.get_info(sandbox_id, api_key=key), *not_found)
        refused(lambda: Sandbox.connect(sandbox_id, api_key=key), *not_found)
        refused(lambda: Sandbox.set_timeout(sandbox_id, 60, api_key=key), *not_found)
        refused(lambda: Sandbox.pause(sandbox_id, api_key=key), *not_found)
        assert Sandbox.kill(sandbox_id, api_key=key) is False, "kill found it"
    assert Sandbox.list(api_key=key, query=SandboxQuery()).next_items() == []
    assert Sandbox.get_info(theirs, api_key=owner).sandbox_id == theirs, "it is still there"
else:
    raise SystemExit(f"no case {case}")
print("ok", flush=True)
