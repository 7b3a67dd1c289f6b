"""Throwaway PostgreSQL and Redis servers on 127.0.0.1, and the Chromium binary.

A missing service skips the test (unittest.SkipTest), or fails it with
RuntimeError when REQUIRE_SERVICES=1, as in CI: there a skip would hide a leg.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from collections.abc import Callable
from pathlib import Path

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "") == "1"


def missing(what: str) -> Exception:
    """The exception for an unavailable service: a skip, or an error when services are required."""
    message = f"{what} is not available"
    if REQUIRE_SERVICES:
        return RuntimeError(f"{message} (REQUIRE_SERVICES=1)")
    return unittest.SkipTest(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceExited(RuntimeError):
    """The process being waited for ended: waiting longer is pointless."""


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `check` until it returns True; RuntimeError after `timeout` seconds.

    An exception from `check` counts as "not yet", except ServiceExited.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ServiceExited:
            raise
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- PostgreSQL --------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or the one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def start_postgres(
    tmpdir: str | None = None, fsync: bool = False, database: str = "chat"
) -> tuple[str, Callable[[], None]]:
    """Start a throwaway PostgreSQL cluster on a free 127.0.0.1 port; return (DATABASE_URL, stop).

    `stop.restart(down_seconds)` restarts it on the same port, as an outage would.

    PostgreSQL refuses to run as root, so as root the cluster runs as the
    `postgres` user in a folder it owns. `fsync=False` suits tests only;
    a benchmark of persistence keeps it on.
    """
    bindir = postgres_bin()
    if bindir is None:
        raise missing("PostgreSQL (initdb)")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise missing("the 'postgres' system user (PostgreSQL will not run as root)") from None
        as_user = ["runuser", "-u", "postgres", "--"]

    base = Path(tempfile.mkdtemp(prefix="chat-pg-", dir=tmpdir))
    base.chmod(0o755)
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "data"
    port = free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*as_user, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def stop() -> None:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
        shutil.rmtree(base, ignore_errors=True)

    options = [
        f"-p {port}",
        f"-k {base}",
        "-c listen_addresses=127.0.0.1",
        "-c max_connections=200",
        f"-c fsync={'on' if fsync else 'off'}",
    ]
    if not fsync:
        options += ["-c synchronous_commit=off", "-c full_page_writes=off"]

    def restart(down_seconds: float = 0.0) -> None:
        """Stop the server (fast: clients are cut off), stay down `down_seconds`, start it again on the same port."""
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        time.sleep(down_seconds)  # the length of the outage itself
        log = str(base / "server.log")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", log, "-o", " ".join(options), "-w", "start")
        wait_until(lambda: _pg_accepts(port), 30, f"PostgreSQL on port {port}")

    stop.restart = restart  # type: ignore[attr-defined]
    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "server.log"),
            "-o",
            " ".join(options),
            "-w",
            "start",
        )
        url = f"postgres://postgres@127.0.0.1:{port}/{database}"
        wait_until(lambda: _pg_accepts(port), 30, f"PostgreSQL on port {port}")
        _pg_create_database(port, database)
    except BaseException:
        stop()
        raise
    return url, stop


def _pg_accepts(port: int) -> bool:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2):
        return True


def _pg_create_database(port: int, database: str) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')


# --- Redis -------------------------------------------------------------------


def start_redis(port: int | None = None) -> tuple[str, Callable[[], None]]:
    """Start a throwaway redis-server on 127.0.0.1 (`port`, or a free one), no persistence; return (REDIS_URL, stop).

    Starting it again on the port of one stopped is a Redis restart: every
    client connection of the first server is gone.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise missing("Redis (redis-server)")
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def accepts() -> bool:
        if process.poll() is not None:
            raise ServiceExited(f"redis-server exited with {process.returncode}")
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    try:
        wait_until(accepts, 30, f"Redis on port {port}")
    except BaseException:
        stop()
        raise
    return f"redis://127.0.0.1:{port}/0", stop


# --- Chromium ----------------------------------------------------------------


def chromium_path() -> str:
    """Path of the system Chromium for Playwright (CHROMIUM_PATH overrides)."""
    for candidate in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise missing("Chromium")
