"""Benchmark chat.turns.append_content: does an append cost more when the message is long?

Grows assistant messages to 1 KB and to 1 MB with 20-character deltas, one
committed append_content call per delta, and prints appends/s for each and
their ratio on SQLite and on PostgreSQL, plus the rate over the last 4% of
the 1 MB message (appends made when it is already ~1 MB long). Goal: the 1 MB rate within 1.5x of
the 1 KB rate (ratio >= 0.67).

    .venv/bin/python bench/append.py            # SQLite and a throwaway PostgreSQL
    DATABASE_URL=postgres://... .venv/bin/python bench/append.py   # that PostgreSQL instead
    .venv/bin/python bench/append.py --only sqlite

The throwaway PostgreSQL cluster keeps fsync on: a persistence benchmark
without it measures nothing. SQLite uses a temporary file with the project's
settings (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DELTA = "x" * 19 + "é"  # 20 code points, 21 bytes in UTF-8
SMALL = 1024
LARGE = 1024 * 1024
LARGE_PER_SMALL = 4  # appends to the 1 MB message per append to 1 KB messages
TAIL = 0.04  # the last 4% of the 1 MB message's growth, appended at ~1 MB


def measure() -> dict:
    """Run in a process whose DATABASE_URL selects the database: migrate, then time the appends.

    The two sizes are interleaved in short rounds (a slice of the 1 MB message,
    then one whole 1 KB message), so load from elsewhere on the machine hits
    both alike; the tail compares the rounds at ~1 MB with the 1 KB messages
    grown in those same rounds.
    """
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from chat import turns
    from chat.models import Thread

    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="append-bench")
    thread = Thread.objects.create(owner=user, title="append benchmark")
    per_small = -(-SMALL // len(DELTA))
    per_large = -(-LARGE // len(DELTA))
    slice_size = per_small * LARGE_PER_SMALL
    rounds = []  # (large appends, large seconds, small appends, small seconds)

    def grow(message_id: int, appends: int) -> float:
        start = time.perf_counter()
        for _ in range(appends):
            turns.append_content(message_id, DELTA)
        return time.perf_counter() - start

    def finalize(message_id: int) -> float:
        start = time.perf_counter()
        turns.finalize_assistant_turn(message_id, "completed")
        return time.perf_counter() - start

    small_finalize = 0.0
    try:
        large_id = turns.persist_assistant_shell(thread.pk, "large").id
        done = 0
        while done < per_large:
            appends = min(slice_size, per_large - done)
            large_seconds = grow(large_id, appends)
            done += appends
            small_id = turns.persist_assistant_shell(thread.pk, f"small-{len(rounds)}").id
            small_seconds = grow(small_id, per_small)
            small_finalize += finalize(small_id)
            rounds.append((appends, large_seconds, per_small, small_seconds))
        large_finalize = finalize(large_id)
    finally:
        thread.delete()

    def rate(selected: list, first: int) -> dict:
        appends = sum(r[first] for r in selected)
        seconds = sum(r[first + 1] for r in selected)
        return {"appends": appends, "seconds": seconds, "rate": appends / seconds}

    tail = rounds[-max(1, round(len(rounds) * TAIL)) :]
    return {
        "backend": connection.vendor,
        "server": _server_version(connection),
        "small": {**rate(rounds, 2), "messages": len(rounds), "finalize_ms": 1000 * small_finalize / len(rounds)},
        "large": {**rate(rounds, 0), "finalize_ms": 1000 * large_finalize},
        "large_tail": rate(tail, 0),
        "small_tail": rate(tail, 2),
    }


def _server_version(connection) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_version()" if connection.vendor == "sqlite" else "SHOW server_version")
        return cursor.fetchone()[0]


def run_worker(database_url: str) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "chatproject.settings"}
    done = subprocess.run([sys.executable, __file__, "--worker"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark on {database_url} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict) -> None:
    small, large, large_tail, small_tail = (results[k] for k in ("small", "large", "large_tail", "small_tail"))
    print(f"\n{results['backend']} {results['server']}")
    print(f"  {'message':30} {'appends':>8} {'seconds':>8} {'appends/s':>10} {'finalize ms':>12}")
    rows = [
        (f"1 KB (x{small['messages']})", small, f"{small['finalize_ms']:.1f}"),
        ("1 MB", large, f"{large['finalize_ms']:.1f}"),
        ("1 MB, last 4% (at ~1 MB)", large_tail, ""),
        ("1 KB, same rounds as last 4%", small_tail, ""),
    ]
    for label, r, finalize_ms in rows:
        print(f"  {label:30} {r['appends']:>8} {r['seconds']:>8.2f} {r['rate']:>10.0f} {finalize_ms:>12}")
    ratio = large["rate"] / small["rate"]
    tail_ratio = large_tail["rate"] / small_tail["rate"]
    verdict = "met" if min(ratio, tail_ratio) >= 1 / 1.5 else "NOT met"
    print(
        f"  ratio 1MB/1KB appends/s: {ratio:.2f} (at ~1 MB: {tail_ratio:.2f}); "
        f"goal >= 0.67, i.e. within 1.5x: {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sqlite", "pg"], help="run one database only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure()))
        return

    print(f"append_content, {len(DELTA)}-character deltas, one transaction per append")
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="append-bench-") as folder:
            report(run_worker(f"sqlite:///{folder}/bench.sqlite3"))
    if args.only in (None, "pg"):
        given = os.environ.get("DATABASE_URL", "")
        if given.startswith(("postgres://", "postgresql://")):
            report(run_worker(given))
        else:
            from tests.services import start_postgres

            try:
                url, stop = start_postgres(fsync=True, database="bench")
            except unittest.SkipTest as exc:
                print(f"\npostgresql skipped: {exc}")
                return
            try:
                report(run_worker(url))
            finally:
                stop()


if __name__ == "__main__":
    main()
