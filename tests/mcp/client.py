"""The MCP Python SDK (`mcp` from PyPI, pinned) as a client of sandman's MCP server, over
stdio (`sandman mcp`) and over streamable HTTP (the gateway's /mcp). Run by tests/mcp.rs as
`client.py stdio|http SANDMAN_BIN GATEWAY_URL TEMPLATE KEY`; prints "ok"."""
import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

transport, sandman, gateway, template, key = sys.argv[1:6]

TOOLS = {
    "create_sandbox",
    "run_command",
    "read_file",
    "write_file",
    "list_files",
    "pause_sandbox",
    "resume_sandbox",
    "delete_sandbox",
}


async def call(session, tool, **arguments):
    result = await session.call_tool(tool, arguments)
    text = "".join(c.text for c in result.content if getattr(c, "text", None) is not None)
    return result.is_error, text


async def ok(session, tool, **arguments):
    failed, text = await call(session, tool, **arguments)
    assert not failed, f"{tool}: {text}"
    return json.loads(text) if text.startswith("{") else text


async def scenario(session):
    await session.initialize()
    listed = {t.name for t in (await session.list_tools()).tools}
    assert TOOLS <= listed, listed

    created = await ok(session, "create_sandbox", template=template, timeout_seconds=600)
    sandbox = created["sandbox_id"]
    ran = await ok(session, "run_command", sandbox_id=sandbox, command="echo hello; echo oops >&2; exit 3")
    assert ran == {"stdout": "hello\n", "stderr": "oops\n", "exit_code": 3}, ran
    await ok(session, "write_file", sandbox_id=sandbox, path="/workspace/notes/a.txt", content="kept")
    assert await ok(session, "read_file", sandbox_id=sandbox, path="/workspace/notes/a.txt") == "kept"
    entries = (await ok(session, "list_files", sandbox_id=sandbox, path="/workspace/notes"))["entries"]
    assert [e["name"] for e in entries] == ["a.txt"], entries

    paused = await ok(session, "pause_sandbox", sandbox_id=sandbox)
    assert paused["kept"] == "filesystem", paused
    again = await ok(session, "pause_sandbox", sandbox_id=sandbox)
    assert again["kept"] == "already paused", again
    await ok(session, "resume_sandbox", sandbox_id=sandbox)
    assert await ok(session, "read_file", sandbox_id=sandbox, path="/workspace/notes/a.txt") == "kept"

    # Errors are tool errors that say what went wrong.
    failed, text = await call(session, "read_file", sandbox_id=sandbox, path="/workspace/missing")
    assert failed and "/workspace/missing" in text, text
    failed, text = await call(session, "run_command", sandbox_id="a" * 24, command="true")
    assert failed and "not found" in text, text
    failed, text = await call(session, "create_sandbox", template="no-such-template")
    assert failed and "no-such-template" in text, text

    await ok(session, "delete_sandbox", sandbox_id=sandbox)
    failed, text = await call(session, "resume_sandbox", sandbox_id=sandbox)
    assert failed and "not found" in text, text


async def main():
    if transport == "stdio":
        server = StdioServerParameters(
            command=sandman,
            args=["mcp", "--gateway", gateway],
            env={"E2B_API_KEY": key, "PATH": "/usr/bin:/bin"},
        )
        async with stdio_client(server) as (read, write):
            async with ClientSession(read, write) as session:
                await scenario(session)
    else:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with http:
            async with streamable_http_client(f"{gateway}/mcp", http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await scenario(session)
        # Without a key, a tool says so.
        async with create_mcp_http_client() as anonymous:
            async with streamable_http_client(f"{gateway}/mcp", http_client=anonymous) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    failed, text = await call(session, "create_sandbox", template=template)
                    assert failed and "no API key" in text, text
    print("ok", flush=True)


asyncio.run(main())
