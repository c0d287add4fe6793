"""The official MCP Python SDK (2.x) subscribed to a service's capacity.

Usage: subscribe_port.py TARGET MODE PORT
  TARGET: the headroom binary (served with `serve --stdio`) or an http:// URL
  MODE:   legacy (initialize era: resources/subscribe, updates through the
          message handler) | auto (2026-07-28: Client.listen)
  PORT:   a service on this host (tests/python/hold_listener.py), nofile-bound
Crosses 70% (in a batch, then waits for quiet), then crosses 90% with one
connection; prints one JSON line: the notifications after that connection
(seconds after it, URI), and the protocol version.
"""

import asyncio
import json
import socket
import sys
import time

import anyio
from mcp import Client, StdioServerParameters


def nofile(doc_text: str):
    doc = json.loads(doc_text)
    c = next(c for c in doc["prediction"]["constraints"] if c["name"] == "nofile")
    assert doc["prediction"]["binding"] == "nofile", doc["prediction"]["binding"]
    return c["limit"], c["used"], c["reserve"]


async def main(target: str, mode: str, port: int) -> dict:
    uri = f"headroom://port/{port}"
    events: list = []  # (monotonic time, uri)
    wake = anyio.Event()

    def seen(u: str) -> None:
        events.append((time.monotonic(), u))

    async def on_message(msg) -> None:
        # Initialize era only: at 2026-07-28 the listen stream delivers them.
        root = getattr(msg, "root", msg)
        if mode == "legacy" and getattr(root, "method", None) == "notifications/resources/updated":
            seen(str(root.params.uri))

    server = target if target.startswith("http") else StdioServerParameters(command=target, args=["serve", "--stdio"])
    held = []
    async with Client(server, mode=mode, message_handler=on_message) as client:
        out = {"protocol_version": client.protocol_version}

        async def used() -> tuple:
            r = await client.read_resource(uri)
            return nofile(r.contents[0].text)

        limit, used0, reserve = await used()
        at90 = next(k for k in range(limit + 1) if k / limit >= 0.9) - reserve

        start = time.monotonic()

        async def run() -> None:
            async def quiet(seconds: float, at_most: float = 15.0) -> None:
                end = time.monotonic() + at_most
                while time.monotonic() < end:
                    n = len(events)
                    await anyio.sleep(seconds)
                    if len(events) == n:
                        return
                raise RuntimeError("notifications kept coming")

            await anyio.sleep(1.5)
            out["quiet_at_start"] = len(events)
            for _ in range(at90 - used0 - 1):
                held.append(socket.create_connection(("127.0.0.1", port)))
            for _ in range(100):
                if (await used())[1] == at90 - 1:
                    break
                await anyio.sleep(0.05)
            await quiet(2.0)
            out["before"] = [[round(t - start, 3), u] for t, u in events]
            events.clear()
            t0 = time.monotonic()
            held.append(socket.create_connection(("127.0.0.1", port)))
            await anyio.sleep(3.0)
            out["after_crossing"] = [[round(t - t0, 3), u] for t, u in events]

        if mode == "legacy":
            await client.subscribe_resource(uri)
            await run()
        else:
            async with client.listen(resource_subscriptions=[uri]) as sub:
                out["honored"] = list(sub.honored.resource_subscriptions or [])

                async def pump() -> None:
                    async for event in sub:
                        seen(event.uri)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump)
                    await run()
                    tg.cancel_scope.cancel()
    for s in held:
        s.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
