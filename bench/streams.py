"""Concurrent streams: how many users can stream an answer at once, against peers without durability.

K users, each with its own thread and socket, send `/lorem 200` at the same
moment to the local model at LOCAL_MODEL_DELAY_MS=20 (50 words/s); the
clients run in 3 processes. Targets, interleaved at each K (the order
rotates) so they share the machine's load:

- `bare`: a `websockets` server (bench/bare_peer.py), a ~74-byte frame every 20 ms;
- `direct`: daphne + a Channels consumer sending straight to its socket (bench/direct_app.py);
- `frames`: the same consumer, sending first the three frames the contract puts
  before a turn's first delta: the floor of the time to first delta on daphne;
- `embedded`: this server on its defaults (SQLite, in-memory layer, one daphne);
- `cluster`: PostgreSQL (fsync on) + Redis, 2 daphne web processes and 1 agent
  worker (`manage.py run_agent_worker`), clients alternating between the web processes.

A failing step is rerun once; a target stops at the K it fails again. One
lost or duplicated character fails the run (exit status 1). bench/README.md
says how to read the table.

    .venv/bin/python bench/streams.py             # every target, the whole ladder; writes bench/README.md
    .venv/bin/python bench/streams.py --smoke     # K = 1, 2 and 60 words, every target (CI)
    .venv/bin/python bench/streams.py --targets embedded,cluster,bare --ks 10,14,20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from stream_figures import cpu_roles, disk_note, largest, line, step_row, summary, table
from stream_servers import (
    BENCH,
    CHAT_TARGETS,
    DiskProbe,
    Sampler,
    Target,
    check_loopback,
    proc_stat,
    wait_until_idle,
)

TARGETS = ["bare", "direct", "frames", "embedded", "cluster"]
# Steps of at most x1.42 from 5 on; K=20 is on it (a goal compares CPU per word there).
LADDER = [1, 2, 3, 4, 5, 6, 8, 11, 15, 20, 28, 39, 55, 78, 110, 156, 221, 313, 442, 626, 884]
CLIENT_PROCESSES = 3
WARM_UP = 2  # streams of each target's unmeasured first step
IDLE_SOCKETS = 200


def run_clients(jobs: list[dict], words: int, on_open: Callable[[], None] | None = None) -> list[dict]:
    """Spread the jobs over 3 client processes; once every socket is open (`on_open`), all send at the same moment."""
    timeout = 60 + 2 * words * 0.02
    processes = []
    try:
        for share in (jobs[i::CLIENT_PROCESSES] for i in range(CLIENT_PROCESSES)):
            if not share:
                continue
            process = subprocess.Popen(
                [sys.executable, str(BENCH / "stream_clients.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps({"jobs": share, "words": words, "timeout": timeout}) + "\n")
            process.stdin.flush()
            processes.append(process)
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process failed before its sockets were open")
        if on_open is not None:
            on_open()
        start_at = time.time() + 0.05
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(f"go {start_at}\n")
            process.stdin.close()
        results = []
        for process in processes:
            assert process.stdout is not None
            results += json.loads(process.stdout.readline())
            process.wait(30)
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def measure(target: Target, k: int, dump: Path | None = None) -> dict:
    jobs = target.jobs(k)
    target.commits()  # the baseline
    with (
        Sampler(target.server_pids(), target.services, timeline=dump is not None) as sampler,
        DiskProbe(target.folder) as disk,
    ):
        results = run_clients(jobs, target.words, sampler.mark_open)
    commits = target.commits()
    stored = target.stored([r["thread_id"] for r in results if r.get("thread_id")])
    row = step_row(target.name, k, target.words, results, stored, sampler.cpu_used, sampler.peak, commits)
    row["cpu_by_role"], row["cpu_open_s"] = sampler.cpu_by_role, sampler.cpu_open
    row["disk_ms"] = disk.longest_ms
    if dump is not None:  # each client's deltas, and the server its socket went to
        urls = {job.get("thread_id"): job["url"] for job in jobs}
        for result in results:
            result["url"] = urls.get(result.get("thread_id"), "")
        dump.mkdir(parents=True, exist_ok=True)
        path = dump / f"{target.name}-{k}-{time.strftime('%H%M%S')}.json"
        path.write_text(json.dumps({"cpu": sampler.timeline, "results": results}))
    if exited := target.alive():
        row["passed"] = False
        row["errors"].insert(0, f"server processes exited: {', '.join(exited)}")
    if row["streams_failed"]:
        target.settle()
    return row


def wait_for_idle_servers(running: dict[str, Target], smoke: bool) -> None:
    """Before a step: wait until every target's servers and services are idle (see wait_until_idle)."""
    servers: dict[int, str] = {}
    services: dict[int, str] = {}
    for target in running.values():
        servers |= target.server_pids()
        services |= target.services
    waited = wait_until_idle(servers, services, timeout=5 if smoke else 20)
    if waited is None:
        print("warning: the servers were still busy after the wait; the step starts anyway", flush=True)
    elif waited > 1:
        print(f"waited {waited:.1f} s for the servers to go idle", flush=True)


def idle_socket_kb(target: Target, count: int) -> float:
    """RSS growth of the embedded server per idle socket: connected, snapshot read, nothing sent."""
    import asyncio

    from websockets.asyncio.client import connect

    jobs = target.jobs(count)
    pid = next(iter(target.server_pids()))

    async def hold() -> float:
        before = proc_stat(pid)[1]
        sockets = []
        for job in jobs:
            headers = {"Cookie": f"sessionid={job['session']}"}
            sockets.append(await connect(job["url"], origin=job["origin"], additional_headers=headers))
            await sockets[-1].recv()
        await asyncio.sleep(0.5)
        after = proc_stat(pid)[1]
        for ws in sockets:
            await ws.close()
        return (after - before) / count / 1024

    return asyncio.run(hold())


def start_all(names: list[str], words: int, folder: Path, extra: dict[str, str], running: dict[str, Target]) -> None:
    """Start the targets side by side (nothing is measured yet); each is in `running` before it starts."""
    for name in names:
        running[name] = Target(name, words, folder, extra)
    with ThreadPoolExecutor(len(names)) as pool:
        for future in [pool.submit(running[name].start) for name in names]:
            future.result()


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_all(running: dict[str, Target]) -> None:
    """Stop every target; a second Ctrl-C cannot cut this short."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
    for target in running.values():
        target.stop()


def write_readme(report: str) -> None:
    path = BENCH / "README.md"
    text = path.read_text()
    begin, end = "<!-- streams:begin -->", "<!-- streams:end -->"
    block = f"{begin}\n{report}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text += f"\n{block}\n"
    path.write_text(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="K = 1, 2 and 60 words, no warm-up: that it all works")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--ks", help="comma-separated K values (default: the ladder 1 ... 884)")
    parser.add_argument("--words", type=int, help="words per stream (default 200; 60 with --smoke)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the chat servers (embedded and cluster); repeatable")  # fmt: skip
    readme = parser.add_mutually_exclusive_group()
    parser.add_argument("--dump", type=Path, metavar="DIR", help="write each step's client results (JSON) into DIR")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (their folder is printed)")
    readme.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    readme.add_argument("--no-readme", action="store_true", help="never write bench/README.md")
    args = parser.parse_args()
    args.targets = [t for t in args.targets.split(",") if t]
    if unknown := [t for t in args.targets if t not in TARGETS]:
        parser.error(f"unknown targets {unknown}")
    full = not args.smoke and not args.ks and args.targets == TARGETS
    args.ks = [int(k) for k in args.ks.split(",")] if args.ks else ([1, 2] if args.smoke else LADDER)
    args.words = args.words or (60 if args.smoke else 200)
    args.write = not args.smoke and not args.no_readme and (args.readme or full)
    args.extra = dict(item.split("=", 1) for item in args.server_env)
    return args


def main() -> int:
    args = parse_args()
    # SIGINT too: a process started in the background by a shell inherits it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    folder = Path(tempfile.mkdtemp(prefix="streams-bench-"))
    folder.chmod(0o755)
    running: dict[str, Target] = {}
    rows: list[dict] = []
    idle_kb = None
    writers: dict[str, dict[int, int]] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        start_all(args.targets, args.words, folder, args.extra, running)
        sockets = check_loopback(list(running.values()))
        pids = sorted(set().union(*(t.pids() for t in running.values())))
        print(f"started {', '.join(args.targets)}; {sockets} sockets listen, all on 127.0.0.1; pids {pids}", flush=True)
        for name in args.targets:
            target = running[name]
            if name in CHAT_TARGETS:  # every step's users, made before any is measured
                idle = (20 if args.smoke else IDLE_SOCKETS) if name == "embedded" else 0
                target.add_users(sum(args.ks) + (0 if args.smoke else WARM_UP) + idle)
                print(f"{name}: {len(target.pool)} users made and the database quiet before any step", flush=True)
            if not args.smoke:  # one unmeasured step: imports, connections, caches
                run_clients(target.jobs(WARM_UP), args.words)
            if name == "embedded":
                idle_kb = idle_socket_kb(target, 20 if args.smoke else IDLE_SOCKETS)
        active = list(args.targets)
        for index, k in enumerate(args.ks):
            for name in active[index % len(active) :] + active[: index % len(active)]:
                target = running[name]
                wait_for_idle_servers(running, args.smoke)
                row = measure(target, k, args.dump)
                if not row["passed"] and not args.smoke and not row["lost"]:
                    # A busy machine stalls even the bare peer now and then: a failing step gets one rerun.
                    print(line(row, rows), "failed, rerun:", row["errors"], disk_note(row), flush=True)
                    wait_for_idle_servers(running, args.smoke)
                    row = measure(target, k, args.dump) | {"rerun": True}
                rows.append(row)
                print(line(row, rows), row["errors"] or "", disk_note(row), flush=True)
                if not row["passed"] and not args.smoke:
                    active.remove(name)
                    target.stop()
            if not active:
                break
        writers = {n: t.writer_totals for n, t in running.items() if n in CHAT_TARGETS}
    except BaseException:
        print(f"the servers' logs are kept in {folder}", file=sys.stderr)
        raise
    finally:
        stop_all(running)
    load = os.getloadavg()[0]
    command = "bench/streams.py " + " ".join(sys.argv[1:])
    header = (
        f"Run of {started}: `{command.strip()}`, {args.words} words per stream, {os.cpu_count()} CPUs, "
        f"load average at the end {load:.1f}. Commits per 1,000 words: the delta writers' totals; "
        "(pg N): every PostgreSQL transaction that wrote; (pg) alone: no server process reports writer totals."
    )
    rows.sort(key=lambda r: (args.targets.index(r["target"]), r["k"]))
    report = f"{header}\n\n{table(rows)}\n\n{summary(rows, args.targets, idle_kb)}\n"
    if by_role := cpu_roles(rows):
        report += f"\nServer CPU seconds of each step by role (targets of several processes):\n\n{by_role}\n"
    print("\n" + report)
    print(f"delta writer totals per process at the end: {writers}")
    if args.write:
        write_readme(report)
    if args.keep_logs:
        print(f"the servers' logs are kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if lost := sum(r["lost"] for r in rows):
        print(f"FAILED: {lost} streams lost or duplicated characters", file=sys.stderr)
        return 1
    if args.smoke and any(r["errors"] for r in rows):  # timings do not fail a smoke run; incomplete streams do
        print("FAILED: a smoke step did not complete", file=sys.stderr)
        return 1
    if "bare" in args.targets and max(args.ks) >= 100 and largest(rows, "bare") < 100:
        print("warning: the bare peer stayed below K=100; the machine was busy: rerun", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process of the bench was stopped", file=sys.stderr)
        sys.exit(130)
