"""Drives `headroom serve` with the official Python SDK (2.x) `Client` and
prints what it saw as one JSON object, for tests/interop_python.rs to assert.

    interop_client.py --mode auto|legacy --url http://HOST:PORT/mcp
    interop_client.py --mode auto|legacy --stdio HEADROOM_BIN

It negotiates (auto: server/discover first, falling back to initialize;
legacy: initialize), lists tools, calls `echo` (at once, and with a delay and
progress), lists resources, reads headroom://capacity and fetches a prompt.
"""

import argparse
import asyncio
import json
import sys

from mcp import Client, StdioServerParameters


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=["auto", "legacy"])
    ap.add_argument("--url")
    ap.add_argument("--stdio")
    a = ap.parse_args()
    if a.url:
        target = a.url
    else:
        target = StdioServerParameters(command=a.stdio, args=["serve", "--stdio"])

    progress = []

    async def on_progress(p, total, message):
        progress.append([p, total])

    out = {}
    async with Client(target, mode=a.mode, read_timeout_seconds=20) as c:
        out["protocol_version"] = c.protocol_version
        info = c.server_info
        out["server_name"] = info.name if info else None
        tools = await c.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        r = await c.call_tool("echo", {"message": "hello interop"})
        out["echo"] = [b.text for b in r.content]
        out["echo_is_error"] = bool(r.is_error)
        r = await c.call_tool(
            "echo",
            {"message": "later", "delay_ms": 50, "steps": 2},
            progress_callback=on_progress,
        )
        out["echo_delayed"] = [b.text for b in r.content]
        out["progress"] = progress
        res = await c.list_resources()
        out["resources"] = sorted(str(x.uri) for x in res.resources)
        cap = await c.read_resource("headroom://capacity")
        doc = json.loads(cap.contents[0].text)
        out["capacity_keys"] = sorted(doc.keys())
        prompts = await c.list_prompts()
        out["prompts"] = sorted(p.name for p in prompts.prompts)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


asyncio.run(main())
