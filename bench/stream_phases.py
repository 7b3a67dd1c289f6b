"""Where one stream's server CPU goes, phase by phase: a diagnostic beside bench/streams.py.

`python bench/stream_phases.py --target cluster -k 20 --rounds 3` starts
the target as bench/streams.py does, then for each round opens K users'
sockets (snapshot read), has each send a one-word turn (`/lorem 1`: the
start and the end of a turn, nearly no streaming), holds the sockets idle
(4 s), has each send `/lorem 200` (the bench's stream), and closes them.
Before each phase it waits for idle servers; it prints each phase's server
CPU per socket by role (ms; /proc ticks are 10 ms, so K=20 resolves
0.5 ms) and the first delta's p50 and max. The close phase lasts until the
servers are idle again, so it holds their work on the closed sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stream_servers import Sampler, Target, wait_until_idle
from websockets.asyncio.client import connect


async def open_socket(job: dict) -> Any:
    socket = await connect(
        job["url"],
        origin=job["origin"],
        additional_headers={"Cookie": f"sessionid={job['session']}"},
        max_size=None,
        compression=None,
    )
    await socket.recv()  # the snapshot
    return socket


async def turn(socket: Any, words: int) -> float:
    """Send `/lorem WORDS`, read to its agent_completed; the first delta's time (ms)."""
    turn_id = f"p-{secrets.token_hex(6)}"
    sent = time.monotonic()
    first = float("nan")
    await socket.send(json.dumps({"type": "user_message", "content": f"/lorem {words}", "turn_id": turn_id}))
    async for raw in socket:
        frame = json.loads(raw)
        if frame["type"] == "message_delta" and first != first:
            first = 1000 * (time.monotonic() - sent)
        elif frame["type"] == "agent_completed" and frame.get("turn_id") == turn_id:
            break
    return first


async def one_round(target: Target, k: int, words: int, idle_seconds: float) -> None:
    servers, services = target.server_pids(), target.services
    jobs = target.jobs(k)
    sockets: list[Any] = []

    async def opening() -> list[float]:
        sockets[:] = await asyncio.gather(*(open_socket(job) for job in jobs))
        return []

    async def closing() -> list[float]:
        await asyncio.gather(*(s.close() for s in sockets))
        await asyncio.to_thread(wait_until_idle, servers, services)
        return []

    async def idle() -> list[float]:
        await asyncio.sleep(idle_seconds)
        return []

    phases: list[tuple[str, Callable[[], Awaitable[list[float]]]]] = [
        ("open", opening),
        ("turn /lorem 1", lambda: asyncio.gather(*(turn(s, 1) for s in sockets))),
        (f"idle {idle_seconds:g} s", idle),
        (f"turn /lorem {words}", lambda: asyncio.gather(*(turn(s, words) for s in sockets))),
        ("close", closing),
    ]
    for name, phase in phases:
        await asyncio.to_thread(wait_until_idle, servers, services)
        with Sampler(servers, services) as sampler:
            started = time.monotonic()
            firsts = sorted(await phase())
            wall = time.monotonic() - started
        roles = " ".join(f"{role} {1000 * used / k:.1f}" for role, used in sorted(sampler.cpu_by_role.items()))
        line = f"{name:16} {wall:5.2f} s  CPU ms per socket: {1000 * sampler.cpu_used / k:5.1f} ({roles})"
        if firsts:
            line += f"  first delta p50 {firsts[len(firsts) // 2]:.1f} max {firsts[-1]:.1f} ms"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["embedded", "cluster"], default="cluster")
    parser.add_argument("-k", type=int, default=20, help="sockets, each a user with a thread of its own")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--words", type=int, default=200, help="words of the streaming turn")
    parser.add_argument("--idle", type=float, default=4.0, help="seconds the sockets are held idle")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stream-phases-"))
    folder.chmod(0o755)  # PostgreSQL runs as its own user
    target = Target(args.target, 200, folder, {})
    try:
        target.start()
        print(f"started {args.target}; pids {sorted(target.pids())}", flush=True)
        target.add_users(args.k * args.rounds)
        for number in range(1, args.rounds + 1):
            print(f"{args.target}, K={args.k}, round {number}", flush=True)
            asyncio.run(one_round(target, args.k, args.words, args.idle))
    finally:
        target.stop()


if __name__ == "__main__":
    sys.exit(main())
