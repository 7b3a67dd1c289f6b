"""The alternative engine: job-start latency of procrastinate on PostgreSQL (not used by the server).

A throwaway PostgreSQL (fsync on) gets procrastinate's schema; a worker
process (LISTEN/NOTIFY on, as by default) runs a task that records when it
started; this process defers N jobs one after another, each in its own
transaction as a user message's job would be, and waits for each to start.
Prints the median and 90th percentile of defer-to-start. Needs
`pip install procrastinate==3.10.0` (a benchmark dependency only).

    .venv/bin/python bench/procrastinate_start.py [--jobs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_app(url: str):  # noqa: ANN201 (a procrastinate.App; imported late, it is optional)
    import procrastinate

    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url.replace("postgres://", "postgresql://"))
    )


async def worker(url: str) -> None:
    import psycopg

    app = make_app(url)

    @app.task(name="record_start", pass_context=False)
    async def record_start(n: int) -> None:
        async with await psycopg.AsyncConnection.connect(
            url.replace("postgres://", "postgresql://"), autocommit=True
        ) as conn:
            await conn.execute("INSERT INTO started (n, at) VALUES (%s, clock_timestamp())", [n])

    async with app.open_async():
        await app.run_worker_async(concurrency=4, install_signal_handlers=True)


async def measure(url: str, jobs: int) -> list[float]:
    import psycopg

    app = make_app(url)
    conninfo = url.replace("postgres://", "postgresql://")
    latencies = []
    async with app.open_async(), await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for n in range(jobs):
            sent = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
            await app.configure_task("record_start").defer_async(n=n)
            while True:
                row = await (await conn.execute("SELECT at FROM started WHERE n = %s", [n])).fetchone()
                if row:
                    latencies.append((row[0] - sent[0]).total_seconds())
                    break
                await asyncio.sleep(0.001)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--worker", default="")
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker))
        return
    import psycopg

    from tests.services import start_postgres

    url, stop = start_postgres(fsync=True)
    try:
        app = make_app(url)

        async def setup() -> None:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

        asyncio.run(setup())
        with psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            conn.execute("CREATE TABLE started (n int PRIMARY KEY, at timestamptz)")
        process = subprocess.Popen([sys.executable, __file__, "--worker", url], cwd=ROOT)
        try:
            time.sleep(3)  # the worker's start-up and LISTEN
            ms = sorted(x * 1000 for x in asyncio.run(measure(url, args.jobs)))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        p90 = ms[int(len(ms) * 0.9) - 1]
        print(
            f"procrastinate jobs={len(ms)} median={statistics.median(ms):.1f} ms p90={p90:.1f} ms max={ms[-1]:.1f} ms"
        )
    finally:
        stop()


if __name__ == "__main__":
    main()
