"""The bare peer of bench/streams.py: a `websockets` server, no Django, no database.

`python bench/bare_peer.py PORT WORDS`: one task per connection; after the
client's first frame it sends WORDS JSON text frames of about 74 bytes, one
every 20 ms (sleeping before each, as the local model does), then
`agent_completed`. Nothing else: what a socket costs without durability.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.server import serve

PERIOD = 0.020
LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


async def main(port: int, words: int) -> None:
    async def handler(ws: Any) -> None:
        await ws.recv()
        offset = 0
        for i in range(words):
            await asyncio.sleep(PERIOD)
            word = LOREM[i % len(LOREM)] + " "
            await ws.send(
                json.dumps({"type": "message_delta", "offset": offset, "d": word, "t": int(time.time() * 1000)})
            )
            offset += len(word)
        await ws.send('{"type": "agent_completed"}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", port, max_queue=None, compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
