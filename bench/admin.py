"""Benchmark the staff pages: server time of Live turns data, the message list and the Usage report.

Two databases side by side, the same but for their history: 10,000 and
100,000 stored messages, each with 1,000 running turns (pieces and tool
calls, as the runtime writes them), the same 100 turns finished in the last
two minutes and the same 5,000 messages of the last 30 days; the rest of the
stored messages are older. Rows are made directly in the database, in bulk.
One worker process per database answers each page in Django's test client
(middleware, view, template, JSON); the rounds alternate between the two
databases, so load from elsewhere on the machine hits both alike, and
medians are reported. Goals: with 100,000 stored messages each page takes
at most 1.2x its time with 10,000, and under 200 ms.

    .venv/bin/python bench/admin.py                 # SQLite and a throwaway PostgreSQL; writes bench/README.md
    .venv/bin/python bench/admin.py --only sqlite --rounds 5 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import unittest
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (10_000, 100_000)
RUNNING = 1_000
RECENT_FINISHED = 100
LAST_30_DAYS = 5_000
MESSAGES_PER_THREAD = 50
USERS = 200
PIECE = "lorem ipsum dolor si"  # 20 code points, a batched delta
PAGES = {
    "live_data": "/admin/chat/message/live/data/",
    "message_list": "/admin/chat/message/",
    "usage_report": "/admin/chat/tokenusage/report/",
}
GOAL_RATIO = 1.2
GOAL_MS = 200.0
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- bench/admin.py results -->", "<!-- end of bench/admin.py results -->"


# --- worker: one database ----------------------------------------------------


def _setup_django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
    django.setup()


def build(stored: int) -> dict:
    """Migrate and fill the database: `stored` finished messages plus RUNNING running turns."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from chat.models import AgentAction, Message, MessageChunk, Thread, TokenUsage

    call_command("migrate", verbosity=0)
    # Rows keep the times given here: the bench writes history, not "now".
    for model, name in ((Message, "created_at"), (Message, "updated_at"), (Thread, "created_at")):
        model._meta.get_field(name).auto_now_add = False
    for model, name in ((Message, "updated_at"), (Thread, "updated_at")):
        model._meta.get_field(name).auto_now = False
    TokenUsage._meta.get_field("created_at").auto_now_add = False
    AgentAction._meta.get_field("started_at").auto_now_add = False

    User = get_user_model()
    User.objects.create_superuser("root", password="bench-password")
    users = User.objects.bulk_create(User(username=f"user{i}") for i in range(USERS))
    now = datetime.now(UTC)
    # Times: the newest LAST_30_DAYS messages spread over 30 days, the rest over the years before.
    older = stored - LAST_30_DAYS

    def created(index: int) -> datetime:
        if index >= older:
            return now - timedelta(days=30) * (stored - index) / LAST_30_DAYS
        return now - timedelta(days=31) - timedelta(days=3 * 365) * (older - index) / max(older, 1)

    threads = Thread.objects.bulk_create(
        Thread(
            owner=users[t % USERS],
            title=f"Thread {t} about a topic",
            last_seq=MESSAGES_PER_THREAD,
            created_at=created(t * MESSAGES_PER_THREAD),
            updated_at=created(min(stored - 1, (t + 1) * MESSAGES_PER_THREAD - 1)),
        )
        for t in range(stored // MESSAGES_PER_THREAD)
    )
    recent_cut = stored - RECENT_FINISHED * 2
    batch = 5_000
    for first in range(0, stored, batch):
        rows = []
        for index in range(first, min(stored, first + batch)):
            thread = threads[index // MESSAGES_PER_THREAD]
            seq = index % MESSAGES_PER_THREAD + 1
            user = seq % 2 == 1
            at = created(index) if index < recent_cut else now - timedelta(seconds=(stored - index) / 2)
            text = (f"question {index} " * 8) if user else ("an answer with some words " * 30)
            rows.append(
                Message(
                    thread=thread,
                    seq=seq,
                    turn_id=f"t-{index // 2}",
                    role=Message.Role.USER if user else Message.Role.ASSISTANT,
                    content=text,
                    content_length=len(text),
                    status=Message.Status.COMPLETED,
                    metadata={"streaming": False, "agent": "local", "model": "local"},
                    created_at=at,
                    updated_at=at,
                )
            )
        made = Message.objects.bulk_create(rows)
        answers = [m for m in made if m.role == Message.Role.ASSISTANT]
        TokenUsage.objects.bulk_create(
            TokenUsage(
                message=m,
                thread_id=m.thread_id,
                user_id=m.thread.owner_id,
                model="local" if m.pk % 3 else "gpt-4o-mini",
                prompt_tokens=120,
                completion_tokens=150,
                total_tokens=270,
                cost_micros=0 if m.pk % 3 else 108,
                created_at=m.created_at,
            )
            for m in answers
        )
        AgentAction.objects.bulk_create(
            AgentAction(
                message=m,
                call_id="call-1",
                tool="calculator",
                input={"expression": "2+3"},
                output={"result": 5},
                status="success",
                started_at=m.created_at,
                finished_at=m.created_at,
            )
            for m in answers[::4]
        )
    # Running turns, one per thread of their own, each with a question, pieces and sometimes a pending call.
    live_threads = Thread.objects.bulk_create(
        Thread(owner=users[i % USERS], title=f"Live {i}", last_seq=2, created_at=now, updated_at=now)
        for i in range(RUNNING)
    )
    started = now - timedelta(seconds=60)
    Message.objects.bulk_create(
        Message(
            thread=t, seq=1, turn_id=f"live-{i}", role="user", content="/lorem 2000", created_at=started, updated_at=now
        )
        for i, t in enumerate(live_threads)
    )
    lengths = [len(PIECE) * (1 + i % 400) for i in range(RUNNING)]  # 20 to 8,000 code points
    running = Message.objects.bulk_create(
        Message(
            thread=t,
            seq=2,
            turn_id=f"live-{i}",
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            content_length=lengths[i],
            metadata={"streaming": True, "cancelled": False, "has_error": False, "agent": "local", "model": "local"},
            heartbeat_at=now,
            created_at=started,
            updated_at=now,
        )
        for i, t in enumerate(live_threads)
    )
    chunks = (
        MessageChunk(message=m, start=start, text=PIECE)
        for m, length in zip(running, lengths, strict=True)
        for start in range(0, length, len(PIECE))
    )
    MessageChunk.objects.bulk_create(chunks, batch_size=10_000)
    AgentAction.objects.bulk_create(
        AgentAction(message=m, call_id="call-1", tool="clock", input={}, started_at=now) for m in running[::4]
    )
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # what autovacuum does for a running system
    return {
        "messages": Message.objects.count(),
        "stored": stored,
        "pieces": MessageChunk.objects.count(),
        "usage_rows": TokenUsage.objects.count(),
    }


def serve(stored: int) -> None:
    """Build the database, then answer one line per command on stdin: `round` times every page once."""
    _setup_django()
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    info = build(stored)
    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_version()" if connection.vendor == "sqlite" else "SHOW server_version")
        info["server"] = f"{connection.vendor} {cursor.fetchone()[0]}"
    client = Client()
    client.login(username="root", password="bench-password")
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        times = {}
        for name, url in PAGES.items():
            start = time.perf_counter()
            response = client.get(url)
            times[name] = 1000 * (time.perf_counter() - start)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}")
        print(json.dumps(times), flush=True)


# --- parent: both sizes, alternating -----------------------------------------


class Worker:
    def __init__(self, database_url: str, stored: int) -> None:
        env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "chatproject.settings"}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(stored)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a worker died (exit {self.process.wait()})")
        return json.loads(line)

    def round(self) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run(urls: dict[int, str], rounds: int, warmup: int = 3) -> dict:
    workers = {size: Worker(url, size) for size, url in urls.items()}
    try:
        infos = {size: worker.read() for size, worker in workers.items()}
        samples: dict[int, list[dict]] = {size: [] for size in workers}
        for index in range(warmup + rounds):
            order = list(workers) if index % 2 == 0 else list(reversed(workers))
            for size in order:
                result = workers[size].round()
                if index >= warmup:
                    samples[size].append(result)
    finally:
        for worker in workers.values():
            worker.stop()
    medians = {size: {page: statistics.median(s[page] for s in samples[size]) for page in PAGES} for size in samples}
    return {"infos": infos, "medians": medians, "rounds": rounds}


def table(name: str, result: dict) -> list[str]:
    small, large = SIZES
    info = result["infos"][large]
    lines = [
        f"**{name}** ({info['server']}; {result['rounds']} rounds, medians; {info['pieces']:,} pieces"
        f" of running answers; {result['infos'][small]['usage_rows']:,} / {info['usage_rows']:,} usage rows)",
        "",
        f"| page | {small:,} messages | {large:,} messages | ratio | goal (<= {GOAL_RATIO}x and < {GOAL_MS:.0f} ms) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for page in PAGES:
        a, b = result["medians"][small][page], result["medians"][large][page]
        ratio = b / a
        met = ratio <= GOAL_RATIO and b < GOAL_MS and a < GOAL_MS
        lines.append(f"| {page} | {a:.1f} ms | {b:.1f} ms | {ratio:.2f} | {'met' if met else 'NOT met'} |")
    return lines


def write_readme(lines: list[str]) -> None:
    text = README.read_text()
    block = "\n".join([BEGIN, *lines, END])
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    README.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sqlite", "pg"], help="run one database only")
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds per database and size")
    parser.add_argument("--no-write", action="store_true", help="print the results without writing bench/README.md")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args.worker)
        return

    load = os.getloadavg()[0]
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" load average {load:.1f} at the start.",
        "",
    ]
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="admin-bench-") as folder:
            urls = {size: f"sqlite:///{folder}/bench-{size}.sqlite3" for size in SIZES}
            lines += table("SQLite", run(urls, args.rounds)) + [""]
            print("\n".join(lines), flush=True)
    if args.only in (None, "pg"):
        from tests.services import start_postgres

        try:
            url, stop = start_postgres(fsync=False, database="bench_small")
        except unittest.SkipTest as exc:
            print(f"postgresql skipped: {exc}")
        else:
            try:
                import psycopg

                with psycopg.connect(url.replace("/bench_small", "/postgres"), autocommit=True) as conn:
                    conn.execute('CREATE DATABASE "bench_large"')
                urls = {SIZES[0]: url, SIZES[1]: url.replace("/bench_small", "/bench_large")}
                lines += table("PostgreSQL", run(urls, args.rounds)) + [""]
            finally:
                stop()
    lines.append(f"Load average {os.getloadavg()[0]:.1f} at the end (2 cores: above 2, the figures are inflated).")
    print("\n".join(lines))
    if not args.no_write:
        write_readme(lines)


if __name__ == "__main__":
    main()
