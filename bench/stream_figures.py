"""Figures of bench/streams.py: one row per (target, K) step, the table, and the issue's goals.

Per word of the text a client rebuilt: its arrival is that of the delta
that brought its last character, its latency that arrival minus the delta's
`emitted_at` (when the model produced the delta's first piece, so a batched
delta never flatters). A step passes when every stream completed, every
text equals what is stored, every delta had `emitted_at`, and the p99 of
both latency and windowed lateness (arrival(i) - arrival(i-50) - 50 x
period, i >= 50) are under 200 ms.
"""

from __future__ import annotations

import bisect
import math
import re
from typing import Any

PERIOD_MS = 20
WINDOW = 50
LIMIT_MS = 200
LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


def peer_text(words: int) -> str:
    """What the bare and direct peers send."""
    return "".join(LOREM[i % len(LOREM)] + " " for i in range(words))


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def word_times(result: dict) -> tuple[list[float], list[float], int]:
    """Per word: its arrival and latency; and the number of words whose delta had no `emitted_at`."""
    deltas = result["deltas"]  # (arrival, start, end, emitted_at), in order, covering the text
    starts = [d[1] for d in deltas]
    arrivals, latencies, missing = [], [], 0
    for word in re.finditer(r"\S+", result["text"]):
        arrived, _, _, emitted = deltas[bisect.bisect_right(starts, word.end() - 1) - 1]
        arrivals.append(arrived)
        if emitted is None:
            missing += 1
        else:
            latencies.append(arrived - emitted)
    return arrivals, latencies, missing


def step_row(
    name: str,
    k: int,
    words: int,
    results: list[dict],
    stored: dict[int, tuple[str, str]],
    cpu: float,
    rss: int,
    commits: dict,
) -> dict:
    """Every figure of one step, and whether it passed."""
    errors: list[str] = []
    lost = 0
    latencies: list[float] = []
    lateness: list[float] = []
    first: list[float] = []
    delivered = missing = 0
    for r in results:
        if r["error"]:
            lost += bool(r.get("lost"))
            errors.append(r["error"])
            continue
        truth, status = (
            stored.get(r["thread_id"], ("<no message>", "")) if r.get("thread_id") else (peer_text(words), "")
        )
        if truth != r["text"]:
            lost += 1
            errors.append(f"thread {r.get('thread_id')}: rebuilt {len(r['text'])} characters, stored {truth!r:.60}")
            continue
        if status not in ("", "completed"):
            errors.append(f"thread {r['thread_id']}: the turn ended {status}")
        arrivals, lat, absent = word_times(r)
        delivered += len(arrivals)
        missing += absent
        latencies += lat
        lateness += [arrivals[i] - arrivals[i - WINDOW] - WINDOW * PERIOD_MS for i in range(WINDOW, len(arrivals))]
        if r["deltas"]:
            first.append(r["deltas"][0][0] - r["sent"])
    if missing:
        errors.append(f"{missing} words came in deltas without emitted_at: latency unknown")
    ok = [r for r in results if not r["error"] and r["deltas"]]
    span = (max(r["deltas"][-1][0] for r in ok) - min(r["sent"] for r in ok)) / 1000 if ok else math.nan
    stored_words = sum(len(text.split()) for text, _ in stored.values()) if stored else delivered
    source = "writer" if commits.get("writer") is not None else ("pg" if commits.get("pg") is not None else "")
    count = commits.get(source) if source else None
    row: dict[str, Any] = {
        "target": name,
        "k": k,
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "late_p99_ms": pct(lateness, 0.99),
        "first_p50_ms": pct(first, 0.5),
        "first_p99_ms": pct(first, 0.99),
        "delivered_per_s": delivered / span if span else math.nan,
        "stored_per_s": stored_words / span if span else math.nan,
        "commits_per_1k": 1000 * count / stored_words if count is not None and stored_words else None,
        "commits_source": source,
        "pg_commits_per_1k": 1000 * commits["pg"] / stored_words
        if commits.get("pg") is not None and stored_words
        else None,
        "cpu_s": cpu,
        "cpu_ms_per_word": 1000 * cpu / delivered if delivered else math.nan,
        "rss_mb": rss / 2**20,
        "lost": lost,
        "errors": errors[:3],
        "streams_failed": len(errors),
    }
    row["passed"] = not errors and row["p99_ms"] < LIMIT_MS and row["late_p99_ms"] < LIMIT_MS
    return row


# --- the table ------------------------------------------------------------------


def fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def first_gap(row: dict, rows: list[dict]) -> float | None:
    """The row's p99 time to first delta minus the bare peer's at the same K, in the same run."""
    bare = next((r for r in rows if r["target"] == "bare" and r["k"] == row["k"]), None)
    if bare is None or row["target"] == "bare":
        return None
    return row["first_p99_ms"] - bare["first_p99_ms"]


def cells(row: dict, rows: list[dict]) -> list[str]:
    commits = fmt(row["commits_per_1k"], 1)
    if row["commits_source"] == "pg":
        commits += " (pg)"
    elif row["pg_commits_per_1k"] is not None:  # beside the writers': every transaction that wrote
        commits += f" (pg {fmt(row['pg_commits_per_1k'], 1)})"
    passed = "yes" if row["passed"] else "**no**"
    return [
        row["target"],
        str(row["k"]),
        passed + (" (rerun)" if row.get("rerun") else ""),
        f"{fmt(row['p50_ms'])} / {fmt(row['p99_ms'])}",
        fmt(row["late_p99_ms"]),
        f"{fmt(row['first_p50_ms'])} / {fmt(row['first_p99_ms'])}",
        fmt(first_gap(row, rows)),
        f"{fmt(row['delivered_per_s'])} / {fmt(row['stored_per_s'])}",
        commits,
        fmt(row["cpu_s"], 2),
        fmt(row["cpu_ms_per_word"], 2),
        fmt(row["rss_mb"]),
    ]


HEADER = [
    "target",
    "K",
    "pass",
    "latency p50 / p99 ms",
    "lateness p99 ms",
    "first delta p50 / p99 ms",
    "first p99 - bare's ms",
    "words/s delivered / stored",
    "commits / 1k words",
    "server CPU s",
    "CPU ms / word",
    "peak RSS MB",
]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(cells(row, rows)) + " |" for row in rows]
    return "\n".join(lines)


ROLES = ["web", "worker", "postgres", "redis"]


def cpu_roles(rows: list[dict]) -> str:
    """Where the server CPU of each step of a target of several processes went: seconds by role."""
    picked = [r for r in rows if len(r.get("cpu_by_role", {})) > 1]
    if not picked:
        return ""
    roles = [role for role in ROLES if any(role in r["cpu_by_role"] for r in picked)]
    roles += sorted({role for r in picked for role in r["cpu_by_role"]} - set(roles))
    lines = [
        "| target | K | " + " | ".join(roles) + " | total | of it, opening the sockets |",
        "|" + " --- |" * (len(roles) + 4),
    ]
    for r in picked:
        used = [fmt(r["cpu_by_role"].get(role), 2) for role in roles]
        total, opening = fmt(r["cpu_s"], 2), fmt(r.get("cpu_open_s"), 2)
        lines.append(f"| {r['target']} | {r['k']} | " + " | ".join(used) + f" | {total} | {opening} |")
    return "\n".join(lines)


def line(row: dict, rows: list[dict]) -> str:
    """One row as the run prints it while going."""
    return "| " + " | ".join(cells(row, rows)) + " |"


# --- largest K and goals ----------------------------------------------------------


def largest(rows: list[dict], target: str) -> int:
    return max([r["k"] for r in rows if r["target"] == target and r["passed"]], default=0)


def at(rows: list[dict], target: str, k: int) -> dict | None:
    return next((r for r in rows if r["target"] == target and r["k"] == k and r["passed"]), None) or next(
        (r for r in rows if r["target"] == target and r["k"] == k), None
    )


def goal(name: str, met: bool | None, measured: str) -> str:
    verdict = "n/a" if met is None else ("yes" if met else "**no**")
    return f"| {name} | {verdict} | {measured} |"


def summary(rows: list[dict], targets: list[str], idle_kb: float | None) -> str:
    """The largest K of each target with its ratio to the bare peer's, then the issue's goals, met or not."""
    best = {t: largest(rows, t) for t in targets}
    bare = best.get("bare", 0)
    top = max((r["k"] for r in rows), default=0)
    out = ["| target | largest K | ratio to bare |", "| --- | ---: | ---: |"]
    for t in targets:
        # A target that passed the run's largest K may go further: its K is a floor, a ratio to it a ceiling.
        k = f"{best[t]} (top of the run: at least)" if best[t] and best[t] == top else f"{best[t]}"
        ratio = f"{best[t] / bare:.2f}" if bare else "-"
        out.append(f"| {t} | {k} | {ratio}{' (at most)' if bare == top and t != 'bare' else ''} |")
    out += ["", "| goal | met | measured |", "| --- | --- | --- |"]
    if "embedded" in best:
        e = best["embedded"]
        out.append(goal("embedded: largest K >= 0.5 x bare's", e >= 0.5 * bare if bare else None, f"{e} vs {bare}"))
    if "cluster" in best:
        c, embedded = best["cluster"], best.get("embedded")
        met = (c >= 0.3 * bare and (embedded is None or c >= embedded)) if bare else None
        measured = f"{c} vs {bare} (embedded {embedded})"
        out.append(goal("cluster: largest K >= 0.3 x bare's and >= embedded's", met, measured))
    for t in (t for t in ("embedded", "cluster") if t in best):
        out += chat_goals(rows, t, best[t])
    out.append(
        goal(
            "an idle socket < 100 KB of RSS (embedded)",
            None if idle_kb is None else idle_kb < 100,
            fmt(idle_kb) + " KB",
        )
    )
    out.append(goal("an append at 1 MB within 1.5x of one at 1 KB", None, "measured by bench/append.py"))
    lost = sum(r["lost"] for r in rows)
    out.append(goal("nothing lost or duplicated", lost == 0, f"{lost} streams differ"))
    if "bare" in best and max((r["k"] for r in rows), default=0) >= 100:
        out.append(goal("a sane machine: the bare peer reaches K >= 100", bare >= 100, f"{bare}"))
    if probed := [r for r in rows if r.get("disk_ms") is not None]:
        stalled = [f"{r['target']} K={r['k']} {fmt(r['disk_ms'])} ms" for r in probed if r["disk_ms"] >= LIMIT_MS]
        measured = f"longest {fmt(max(r['disk_ms'] for r in probed))} ms" + (
            f"; {', '.join(stalled)}" if stalled else ""
        )
        out.append(goal(f"a sane disk: the probe's fdatasync under {LIMIT_MS} ms in every step", not stalled, measured))
    return "\n".join(out)


def disk_note(row: dict) -> str:
    """What the printed line of a step adds when the disk stalled during it."""
    if row.get("disk_ms", 0) < LIMIT_MS:
        return ""
    return f"(the disk stalled: an fdatasync of the probe took {fmt(row['disk_ms'])} ms)"


def chat_goals(rows: list[dict], t: str, top: int) -> list[str]:
    if not top:
        return [goal(f"{t}: commits, first delta and CPU per word at its largest K", False, "no step passed")]
    out = []
    row = at(rows, t, top) if top else None
    c = row["commits_per_1k"] if row else None
    source = f" ({row['commits_source']})" if row and row["commits_source"] else ""
    out.append(
        goal(
            f"{t}: <= 50 commits / 1,000 words at its largest K ({top})",
            None if c is None else c <= 50,
            fmt(c, 1) + source,
        )
    )
    for k, limit in ((1, 20), (top, 100)):
        row = at(rows, t, k) if k else None
        gap = first_gap(row, rows) if row else None
        met = None if gap is None or math.isnan(gap) else gap <= limit
        measured = fmt(gap) + " ms"
        if (floor := at(rows, "frames", k)) is not None:
            measured += f" (the frames peer: {fmt(first_gap(floor, rows))} ms)"
        out.append(goal(f"{t}: first delta p99 - bare's <= {limit} ms at K={k}", met, measured))
    row, peer = at(rows, t, 20), at(rows, "direct", 20)
    ratio = row["cpu_ms_per_word"] / peer["cpu_ms_per_word"] if row and peer and peer["cpu_ms_per_word"] else None
    ours, theirs = (fmt(r["cpu_ms_per_word"], 2) if r else "-" for r in (row, peer))
    measured = f"{fmt(ratio, 1)}x ({ours} vs {theirs} ms)"
    out.append(
        goal(f"{t}: CPU per delivered word at K=20 <= 3 x direct's", None if ratio is None else ratio <= 3, measured)
    )
    return out
