"""Client processes of bench/streams.py: many users' sockets in one process, started together.

`python bench/stream_clients.py` reads one JSON line on stdin ({"jobs", "words",
"timeout"}), connects every job's socket (a chat socket also reads its
snapshot), prints `ready`, waits for a line `go START_AT` (epoch seconds),
then at that moment every socket sends its first frame (`/lorem WORDS` for
the chat server) and records each delta's arrival. It prints the results as
one JSON line. Errors are reported per stream, never raised.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from typing import Any

from websockets.asyncio.client import connect


def now_ms() -> float:
    return time.time() * 1000


class Stream:
    """One user: its socket, and every delta that added text (arrival, start, end, emitted_at)."""

    def __init__(self, job: dict) -> None:
        self.job = job
        self.result: dict[str, Any] = {"thread_id": job.get("thread_id"), "deltas": [], "error": None, "text": ""}
        self.ws: Any = None

    async def open(self) -> None:
        headers = {"Cookie": f"sessionid={self.job['session']}"} if self.job.get("session") else {}
        try:
            self.ws = await connect(
                self.job["url"], origin=self.job["origin"], additional_headers=headers, max_size=None, compression=None
            )
            if self.job["kind"] == "chat":
                snapshot = json.loads(await self.ws.recv())
                if snapshot.get("type") != "snapshot":
                    raise AssertionError(f"first frame is not a snapshot: {snapshot}")
        except Exception as exc:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        self.result["error"] = self.result["error"] or f"{type(exc).__name__}: {exc}"

    async def run(self, start_at: float, words: int, timeout: float) -> dict:
        if self.ws is None:
            return self.result
        try:
            async with asyncio.timeout(timeout):
                await asyncio.sleep(max(0.0, start_at - time.time()))
                await self.converse(words)
        except Exception as exc:  # reported: it fails the step
            self.fail(exc)
        finally:
            await self.ws.close()
        return self.result

    async def converse(self, words: int) -> None:
        result, text = self.result, ""
        turn_id = f"b-{secrets.token_hex(6)}"
        result["sent"] = now_ms()
        await self.ws.send(json.dumps({"type": "user_message", "content": f"/lorem {words}", "turn_id": turn_id}))
        async for raw in self.ws:
            arrived = now_ms()
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "message_delta":
                data = frame.get("data", frame)
                offset, delta = data["offset"], data.get("delta", data.get("d"))
                if offset > len(text) or delta[: len(text) - offset] != text[offset:][: len(delta)]:
                    result["lost"] = True  # a gap, or a delta that contradicts the text already sent
                    raise AssertionError(
                        f"a delta at offset {offset} does not continue the {len(text)} characters known"
                    )
                added = delta[len(text) - offset :]
                if added:
                    result["deltas"].append(
                        (arrived, len(text), len(text) + len(added), data.get("emitted_at", data.get("t")))
                    )
                    text += added
            elif kind == "agent_completed":
                if self.job["kind"] == "chat" and frame.get("turn_id") != turn_id:
                    continue
                result["status"] = frame.get("data", {}).get("status", "completed")
                break
            elif kind == "error":
                raise AssertionError(f"error frame: {frame}")
        else:
            raise AssertionError("the socket closed before agent_completed")
        result["text"] = text


async def main() -> None:
    spec = json.loads(sys.stdin.readline())
    streams = [Stream(job) for job in spec["jobs"]]
    await asyncio.gather(*(stream.open() for stream in streams))
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    start_at = float(line.split()[1])
    results = await asyncio.gather(*(s.run(start_at, spec["words"], spec["timeout"]) for s in streams))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
