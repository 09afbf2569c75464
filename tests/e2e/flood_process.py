"""A room's pages and a teacher token flooding it, in a process of their own.

    python -m tests.e2e.flood_process < {"base": .., "room": .., "pages": [tokens],
                                         "teacher": token, "seconds": s}

Opens one event socket per page token and reads everything it is sent (as 300 projector pages
would), then sends `lesson` messages from the teacher's token, about 20,000 a second,
opening a new socket whenever the relay closes one, for `seconds`. Prints `{"event": "ready"}`
once the pages are open and `{"sent": n, "sockets": k}` at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp


async def page(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
    async with http.ws_connect(url) as ws:
        while not stop.is_set():
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                return


async def flood(http: aiohttp.ClientSession, url: str, seconds: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    sent = sockets = 0
    while loop.time() < deadline:
        sockets += 1
        try:
            async with http.ws_connect(url) as ws:
                replies = asyncio.ensure_future(_drain(ws))
                while loop.time() < deadline and not replies.done():
                    await ws.send_str(json.dumps({"type": "lesson", "title": f"spam {sent}"}))
                    sent += 1
                    if sent % 20 == 0:  # at most ~20,000 a second: 4,000 times the
                        await asyncio.sleep(0.001)  # allowance, without taking a whole core
                replies.cancel()
        except (aiohttp.ClientError, ConnectionError):
            await asyncio.sleep(0.05)
    return {"sent": sent, "sockets": sockets}


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read replies until the relay closes the socket."""
    while (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
        pass


async def main(job: dict[str, Any]) -> None:
    events = f"{job['base']}/api/rooms/{job['room']}/events?token="
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        pages = [asyncio.ensure_future(page(http, events + t, stop)) for t in job["pages"]]
        await asyncio.sleep(2.0)  # let them connect
        print(json.dumps({"event": "ready"}), flush=True)
        result = await flood(http, events + job["teacher"], job["seconds"])
        stop.set()
        for task in pages:
            task.cancel()
        await asyncio.gather(*pages, return_exceptions=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.stdin.readline())))
