"""Drives `headroom serve --stdio` with the official MCP Python SDK (2.x).

Usage: server_stdio.py HEADROOM_BIN MODE   (MODE: auto | legacy)
Prints one JSON line with what it saw; exits non-zero on any failure.
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters


async def main(binary: str, mode: str) -> dict:
    params = StdioServerParameters(command=binary, args=["serve", "--stdio"])
    async with Client(params, mode=mode) as client:
        seen: dict = {"protocol_version": client.protocol_version}
        info = client.server_info
        seen["server_name"] = info.name if info else None
        tools = await client.list_tools()
        seen["tools"] = [t.name for t in tools.tools]
        r = await client.call_tool("echo", {"message": "from python"})
        seen["echo"] = r.content[0].text
        seen["echo_is_error"] = bool(r.is_error)
        r = await client.call_tool("host_capacity", {})
        seen["binding"] = (r.structured_content or {}).get("prediction", {}).get("binding")
        resources = await client.list_resources()
        seen["resources"] = sorted(str(x.uri) for x in resources.resources)
        r = await client.read_resource("headroom://capacity")
        seen["capacity_binding"] = json.loads(r.contents[0].text)["prediction"]["binding"]
        prompts = await client.list_prompts()
        seen["prompts"] = [p.name for p in prompts.prompts]
        try:
            await client.call_tool("no_such_tool", {})
            seen["unknown_tool"] = "no error"
        except Exception as e:  # the SDK raises on a JSON-RPC error
            seen["unknown_tool"] = type(e).__name__
        return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
