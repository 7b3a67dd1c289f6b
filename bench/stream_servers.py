"""The servers of bench/streams.py: starting, measuring and stopping each target's processes.

Every process and service a target starts is registered with it, and
`Target.stop` ends them all (SIGTERM, then SIGKILL after a bound; the
PostgreSQL cluster with `pg_ctl stop -m immediate`), whatever state the run
is in. Everything listens on 127.0.0.1 only, which `check_loopback` verifies.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

from tests.services import free_port, start_postgres  # noqa: E402

PERIOD_MS = 20
CHAT_TARGETS = ("embedded", "cluster")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WRITER_LINE = re.compile(r"delta writer: (\d+) commits, (\d+) pieces")


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a chat server process: this one without any variable settings.py reads, then the bench's."""
    source = (ROOT / "chatproject" / "settings.py").read_text()
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]*)"', source))
    read |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]*)"', source))
    return {key: value for key, value in os.environ.items() if key not in read} | extra


# --- /proc ----------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds of the process and of its children it waited for, resident bytes)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK, int(fields[21]) * PAGE


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (SigCgt): only then is sending it harmless."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(line.split()[1] for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(mask, 16) >> (signum - 1) & 1)


class Sampler:
    """A step's server CPU (servers, plus services with their children), by role, and the peak of the servers' RSS.

    `servers` and `services` map a pid to its role ("web", "worker",
    "postgres", ...); a service's children count as the service.
    """

    def __init__(self, servers: dict[int, str], services: dict[int, str], timeline: bool = False) -> None:
        self.servers, self.services = servers, services
        self.peak = 0
        self.timeline: list[tuple[float, dict[str, float]]] | None = [] if timeline else None
        self._stop = threading.Event()

    def cpu(self, by_pid: bool = False) -> dict[str, float]:
        """CPU seconds used so far by each role (with by_pid, by each server process: "role pid")."""
        pids = {pid: f"{role} {pid}" for pid, role in self.servers.items()} if by_pid else dict(self.servers)
        for service, role in self.services.items():
            pids |= {pid: role for pid in (service, *children(service))}
        used: dict[str, float] = {}
        for pid, role in pids.items():
            try:
                used[role] = used.get(role, 0.0) + proc_stat(pid)[0]
            except OSError:
                pass
        return used

    def rss(self) -> int:
        total = 0
        for pid in self.servers:
            try:
                total += proc_stat(pid)[1]
            except OSError:
                pass
        return total

    def mark_open(self) -> None:
        """Every socket of the step is open: what was used so far went on opening them."""
        self.cpu_open = sum(self.cpu().values()) - sum(self.cpu_start.values())

    def __enter__(self) -> Sampler:
        self.cpu_open: float | None = None
        self.cpu_start = self.cpu()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.rss())
            if self.timeline is not None:  # each role's CPU so far, every 50 ms (--dump)
                self.timeline.append((time.time(), self.cpu(by_pid=True)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()
        end = self.cpu()
        self.cpu_by_role = {role: used - self.cpu_start.get(role, 0.0) for role, used in end.items()}
        self.cpu_used = sum(self.cpu_by_role.values())


class DiskProbe:
    """The longest fdatasync of a small write, one every 50 ms in `folder`, while the probe runs (a step).

    A server that commits before it sends waits for the disk: a step whose
    streams all stalled at once while no process used a core had waited for
    it (the cluster failed K=4 twice that way in a run of 2026-12-08, 450-570
    ms). The probe tells such a step apart from a slow server.
    """

    INTERVAL = 0.05

    def __init__(self, folder: Path) -> None:
        self.path = folder / "disk-probe"
        self.longest_ms = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DiskProbe:
        self.thread.start()
        return self

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            block = b"\0" * 8192
            while not self.stop.wait(self.INTERVAL):
                os.pwrite(fd, block, 0)
                started = time.perf_counter()
                os.fdatasync(fd)
                self.longest_ms = max(self.longest_ms, 1000 * (time.perf_counter() - started))
        finally:
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def wait_until_idle(
    servers: dict[int, str], services: dict[int, str], share: float = 0.05, window: float = 0.5, timeout: float = 20
) -> float | None:
    """Wait until the processes (services with their children) use under `share` of one core over `window` s.

    Returns the seconds waited, or None when they were still busy after
    `timeout`. A step then starts once the step before it has finished its
    trailing work (sockets closing, garbage collections, PostgreSQL's
    autovacuum) instead of sharing the cores with it.
    """
    sampler = Sampler(servers, services)
    start = time.monotonic()
    before = sum(sampler.cpu().values())
    while time.monotonic() - start < timeout:
        time.sleep(window)  # the sampling window, not a synchronization
        now = sum(sampler.cpu().values())
        if now - before < share * window:
            return time.monotonic() - start
        before = now
    return None


# --- processes ------------------------------------------------------------------


def wait_port(port: int, process: subprocess.Popen, log: Path | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"the process for port {port} exited with {process.returncode}\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def listening(pids: set[int]) -> list[str]:
    """The local addresses on which any of `pids` listens (TCP and UDP)."""
    done = subprocess.run(["ss", "-lntupH"], capture_output=True, text=True, check=True)
    found = []
    for line in done.stdout.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append(line.split()[4])
    return found


class Target:
    """One target's processes, their logs in `folder`, and for the chat server its users and database."""

    def __init__(self, name: str, words: int, folder: Path, extra_env: dict[str, str]) -> None:
        self.name, self.words, self.folder, self.extra_env = name, words, folder, extra_env
        self.processes: list[tuple[str, subprocess.Popen, Path]] = []  # (role, process, log)
        self.web_ports: list[int] = []
        self.services: dict[int, str] = {}  # pid: role
        self.stops: list[Callable[[], None]] = []
        self.pool: list[list[Any]] = []  # chat targets: unused [session_key, thread_id]
        self.batches = 0
        self.database_url = ""
        self.env: dict[str, str] = {}
        self.writer_totals: dict[int, int] = {}
        self.pg_commits_seen: int | None = None
        self._stopped = False

    # --- start and stop

    def spawn(self, role: str, command: list[str], env: dict[str, str] | None, cwd: Path) -> subprocess.Popen:
        log = self.folder / f"{self.name}-{role}-{len(self.processes)}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append((role, process, log))
        if self._stopped:  # stopped while starting (Ctrl-C): this one too
            process.kill()
            raise RuntimeError(f"{self.name} was stopped while starting")
        return process

    def listen(self, role: str, command: list[str], env: dict[str, str] | None, cwd: Path, port: int) -> None:
        process = self.spawn(role, command, env, cwd)
        wait_port(port, process, self.processes[-1][2])
        self.web_ports.append(port)

    def start(self) -> Target:
        if self.name == "bare":
            port = free_port()
            command = [sys.executable, str(BENCH / "bare_peer.py"), str(port), str(self.words)]
            self.listen("peer", command, None, ROOT, port)
        elif self.name in ("direct", "frames"):
            port = free_port()
            env = {**os.environ, "DELAY_MS": str(PERIOD_MS), "WORDS": str(self.words)}
            env["HEAD_FRAMES"] = "3" if self.name == "frames" else "0"
            self.listen("daphne", self.daphne(port, "direct_app:application"), env, BENCH, port)
        else:
            self.start_chat()
        return self

    @staticmethod
    def daphne(port: int, app: str) -> list[str]:
        return [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), app]

    def start_chat(self) -> None:
        env = {
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_hex(32),
            "LOCAL_MODEL_DELAY_MS": str(PERIOD_MS),
            # K users each with their own thread, socket and turn: no cap may refuse one.
            "CHAT_MESSAGES_PER_MINUTE": "100000",
            "CHAT_MAX_SOCKETS_PER_USER": "1000",
            "CHAT_MAX_RUNNING_TURNS": "1000",
            "CHAT_MAX_THREADS_PER_USER": "100000",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        web = 1
        if self.name == "embedded":
            self.database_url = f"sqlite:///{self.folder / 'embedded.sqlite3'}"
        else:
            self.database_url, stop_pg = start_postgres(str(self.folder), fsync=True, database="bench")
            self.stops.append(stop_pg)
            if self._stopped:
                stop_pg()
                raise RuntimeError(f"{self.name} was stopped while starting")
            self.services[self.postmaster()] = "postgres"
            redis_port = free_port()
            redis = shutil.which("redis-server") or "redis-server"
            command = [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            process = self.spawn("redis", command, None, ROOT)
            wait_port(redis_port, process, self.processes[-1][2])
            self.services[process.pid] = "redis"
            env |= {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "AGENT_WORKERS": "1"}
            web = 2
        env["DATABASE_URL"] = self.database_url
        self.env = server_env(env | self.extra_env)
        self.add_users(2, migrate=True)
        for _ in range(web):
            port = free_port()
            self.listen("web", self.daphne(port, "chatproject.asgi:application"), self.env, ROOT, port)
        if self.name == "cluster":
            self.spawn("worker", [sys.executable, "manage.py", "run_agent_worker"], self.env, ROOT)

    def postmaster(self) -> int:
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            (data,) = conn.execute("SHOW data_directory").fetchall()[0]
        return int(Path(data, "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """End every process of the target (bounded), then its services. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        # The servers first (they drain their turns through Redis and PostgreSQL), then the services.
        for group in (
            [p for r, p, _ in self.processes if r != "redis"],
            [p for r, p, _ in self.processes if r == "redis"],
        ):
            running = [process for process in group if process.poll() is None]
            for process in running:
                process.send_signal(signal.SIGTERM)
            for process in running:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for stop in reversed(self.stops):
            stop()

    def alive(self) -> list[str]:
        """Roles of the target's processes that exited (a crash fails the run)."""
        return [f"{role} (exit {p.returncode})" for role, p, _ in self.processes if p.poll() is not None]

    def pids(self) -> set[int]:
        return {p.pid for _, p, _ in self.processes} | set(self.services)

    def server_pids(self) -> dict[int, str]:
        """The processes of the server itself (peer, daphnes, worker), not PostgreSQL or Redis: {pid: role}."""
        return {p.pid: role for role, p, _ in self.processes if role != "redis"}

    # --- users

    def add_users(self, count: int, migrate: bool = False) -> None:
        self.batches += 1
        command = [sys.executable, str(BENCH / "stream_setup.py"), str(count), f"bench{self.batches}"]
        done = subprocess.run(
            command + (["--migrate"] if migrate else []), cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"setting up users of {self.name} failed:\n{done.stderr[-3000:]}")
        self.pool += json.loads(done.stdout.strip().splitlines()[-1])
        self.quiet()

    def quiet(self) -> None:
        """Leave the database nothing to do for the rows just made, so that the next step does not pay for them.

        Users made just before a step had PostgreSQL vacuum, analyze and
        checkpoint them during it: the cluster's step at K=442 then cost
        about 1 s more CPU, and its latency p99 went past 200 ms.
        """
        statements = (
            ["PRAGMA wal_checkpoint(TRUNCATE)"] if self.name == "embedded" else ["VACUUM ANALYZE", "CHECKPOINT"]
        )
        for statement in statements:
            self.query(statement)

    def jobs(self, k: int) -> list[dict]:
        """K clients' jobs, spread over the target's web processes in turn; each chat job a user of its own."""
        if self.name in CHAT_TARGETS and len(self.pool) < k:
            self.add_users(max(k, 2 * k - len(self.pool)))
        out = []
        for i in range(k):
            port = self.web_ports[i % len(self.web_ports)]
            job = {"url": f"ws://127.0.0.1:{port}/", "origin": f"http://127.0.0.1:{port}", "kind": "peer"}
            if self.name in CHAT_TARGETS:
                session, thread_id = self.pool.pop()
                job |= {"kind": "chat", "session": session, "thread_id": thread_id}
                job["url"] = f"ws://127.0.0.1:{port}/ws/threads/{thread_id}/"
            out.append(job)
        return out

    # --- the database

    def query(self, sql: str) -> list[tuple]:
        if self.name == "embedded":
            with sqlite3.connect(self.database_url.removeprefix("sqlite:///"), timeout=30) as conn:
                return conn.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description is not None else []

    def stored(self, thread_ids: list[int]) -> dict[int, tuple[str, str]]:
        """Each thread's assistant message as stored: (content, status)."""
        if self.name not in CHAT_TARGETS or not thread_ids:
            return {}
        marks = ",".join(str(int(t)) for t in thread_ids)
        rows = self.query(
            f"SELECT thread_id, content, status FROM chat_message WHERE role = 'assistant' AND thread_id IN ({marks})"
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    def settle(self, timeout: float = 90) -> None:
        """Wait until no turn of the target still streams (after a step whose clients gave up)."""
        if self.name not in CHAT_TARGETS:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.query("SELECT 1 FROM chat_message WHERE status = 'streaming' LIMIT 1"):
                return
            time.sleep(0.2)

    # --- commits

    def commits(self) -> dict[str, int | None]:
        """Commits since the last call: the delta writers' totals ("writer"), PostgreSQL's write transactions ("pg")."""
        if self.name not in CHAT_TARGETS:
            return {"writer": None, "pg": None}
        return {"writer": self.writer_commits(), "pg": self.pg_write_commits()}

    def writer_commits(self) -> int | None:
        """Growth of the servers' `delta writer: N commits` totals, logged on SIGUSR1; None if no process logs them."""
        asked = []
        for role, process, log in self.processes:
            if role in ("web", "worker") and process.poll() is None and catches(process.pid, signal.SIGUSR1):
                asked.append((process.pid, log, log.stat().st_size))
                process.send_signal(signal.SIGUSR1)
        growth, answered = 0, 0
        for pid, log, size in asked:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with open(log, errors="replace") as f:
                    f.seek(size)
                    found = WRITER_LINE.findall(f.read())
                if found:
                    total = int(found[-1][0])
                    growth += total - self.writer_totals.get(pid, 0)
                    self.writer_totals[pid] = total
                    answered += 1
                    break
                time.sleep(0.02)
        return growth if answered else None

    def pg_write_commits(self) -> int | None:
        """Transactions that wrote, counted by PostgreSQL's transaction ids, since the last call (cluster only).

        `pg_stat_database.xact_commit` would also count every read-only
        statement, and backends report it up to 10 s late; a transaction id is
        given only to a transaction that writes, at once.
        """
        if self.name != "cluster":
            return None
        (xmax,) = self.query("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")[0]
        previous, self.pg_commits_seen = self.pg_commits_seen, xmax
        return None if previous is None else xmax - previous


def check_loopback(targets: list[Target]) -> int:
    """Fail unless every socket the targets' processes listen on is bound to 127.0.0.1; the count of sockets."""
    pids = set().union(*(t.pids() for t in targets)) if targets else set()
    pids |= {c for pid in list(pids) for c in children(pid)}
    addresses = listening(pids)
    wrong = [a for a in addresses if not a.startswith("127.0.0.1:")]
    if wrong:
        raise RuntimeError(f"a bench process listens beyond 127.0.0.1: {wrong}")
    return len(addresses)
