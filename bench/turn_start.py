"""Turn-start latency: from a user message sent on a socket to its `agent_started`, with and without workers.

Starts a throwaway PostgreSQL and Redis, one web process (daphne) and, for
the worker run, one agent worker (`run_agent_worker`), then sends N short
turns one after another and prints the median and 90th percentile of the
time from sending `user_message` to receiving `agent_started` on the same
socket. Runs:

  inline   the turn runs in the web process (AGENT_WORKERS off)
  workers  the web process queues it on channels-redis; the worker runs it

    .venv/bin/python bench/turn_start.py [--turns 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import free_port, start_postgres, start_redis, wait_until  # noqa: E402

USER, PASSWORD = "bench", "bench-password-1"


def manage(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True)


def login(base: str) -> tuple[str, int]:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/accounts/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": USER, "password": PASSWORD, "csrfmiddlewaretoken": token}).encode()
    opener.open(urllib.request.Request(f"{base}/accounts/login/", data=form))
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    request = urllib.request.Request(
        f"{base}/api/threads/", data=b"{}", headers={"X-CSRFToken": csrf, "Content-Type": "application/json"}
    )
    thread_id = json.loads(opener.open(request).read())["id"]
    return "; ".join(f"{c.name}={c.value}" for c in jar), thread_id


async def measure(base: str, turns: int) -> list[float]:
    import websockets

    cookie, thread_id = await asyncio.to_thread(login, base)
    url = f"{base.replace('http', 'ws')}/ws/threads/{thread_id}/"
    latencies = []
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": base}) as ws:
        await ws.recv()
        for n in range(turns):
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "user_message", "content": "/lorem 1", "turn_id": f"b-{n}"}))
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "agent_started" and frame["turn_id"] == f"b-{n}":
                    latencies.append(time.perf_counter() - sent)
                if frame["type"] == "agent_completed" and frame["turn_id"] == f"b-{n}":
                    break
    return latencies


def run(name: str, env: dict, workers: bool, turns: int) -> None:
    port = free_port()
    logs = open(ROOT / "test-artifacts" / f"bench-turn-start-{name}.log", "ab")
    processes = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "daphne"), "-p", str(port), "chatproject.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
        )
    ]
    if workers:
        processes.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "run_agent_worker"],
                cwd=ROOT,
                env=env,
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200, 60, "the web process")
        time.sleep(2 if workers else 0)  # the worker's start-up (no readiness signal outside the tests)
        latencies = asyncio.run(measure(base, turns))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
    ms = sorted(x * 1000 for x in latencies)
    p90 = ms[int(len(ms) * 0.9) - 1]
    print(f"{name:8} turns={len(ms)} median={statistics.median(ms):.1f} ms p90={p90:.1f} ms max={ms[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    database_url, stop_postgres = start_postgres(fsync=True)
    redis_url, stop_redis = start_redis()
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "LOCAL_MODEL_DELAY_MS": "0",
            "CHAT_MESSAGES_PER_MINUTE": "100000",
            "LOG_LEVEL": "WARNING",
        }
        manage(env, "migrate", "--no-input")
        manage(env, "ensure_demo_user", "--username", USER, "--password", PASSWORD)
        run("inline", {**env, "AGENT_WORKERS": "0"}, False, args.turns)
        run("workers", {**env, "AGENT_WORKERS": "1"}, True, args.turns)
    finally:
        stop_redis()
        stop_postgres()


if __name__ == "__main__":
    main()
