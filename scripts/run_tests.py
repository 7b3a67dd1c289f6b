"""Run the whole test suite in legs and print one summary line.

Legs (select with LEGS=lint,sqlite,pg,cluster,browser,django,node; default all):
  lint     ruff (lint and format), mypy and the import-linter layers contract;
           each check counts as one test
  sqlite   pytest over tests/ except tests/browser and tests/cluster, on the SQLite test database
  pg       the same tests on a throwaway PostgreSQL cluster started here
  cluster  pytest tests/cluster on a throwaway PostgreSQL: real web processes,
           agent workers, Redis, nginx and their faults (kill -9, SIGTERM,
           restarts of Redis and PostgreSQL); and the smoke run of
           bench/streams.py (tests/test_bench_streams.py), which starts its
           own PostgreSQL and Redis
  browser  pytest tests/browser in its own invocation (Playwright's sync API
           does not mix with the async tests of the other legs)
  django   every test once more under Django's own runner (`manage.py test`),
           on SQLite, so that both runners keep working (the cluster tests,
           tagged `cluster`, run only in their own leg)
  node     `node --test tests/js/`: the chat page's pure JavaScript modules,
           counted from node's summary lines (`# pass N`, `# fail N`, ...)

Arguments are passed to every pytest invocation (`scripts/test -k seq`); test
paths among them narrow the legs to those paths (a path under tests/js to the
node leg). The django and node legs do not run when pytest options are given.
REQUIRE_SERVICES=1 turns a missing PostgreSQL, Redis, Chromium or node into a
failure instead of a skip. The last line printed is
`tests: N passed, N failed, N skipped`; the exit status is non-zero when any
leg failed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
BROWSER = "tests/browser"
JS = "tests/js"
CLUSTER = "tests/cluster"
BENCH_SMOKE = "tests/test_bench_streams.py"  # runs in the cluster leg only
CLUSTER_PATHS = (CLUSTER, BENCH_SMOKE)
ALL_LEGS = ("lint", "sqlite", "pg", "cluster", "browser", "django", "node")
NO_TESTS_COLLECTED = 5

sys.path.insert(0, str(ROOT))


@dataclass
class LegResult:
    name: str
    ok: bool
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    note: str = ""


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Separate test paths (existing files or folders, with optional ::node ids) from pytest options."""
    paths, options = [], []
    for arg in args:
        if not arg.startswith("-") and (ROOT / arg.split("::")[0]).exists():
            paths.append(arg)
        else:
            options.append(arg)
    return paths, options


def is_under(path: str, folder: str) -> bool:
    resolved = (ROOT / path.split("::")[0]).resolve()
    return resolved == ROOT / folder or (ROOT / folder) in resolved.parents


def is_browser_path(path: str) -> bool:
    return is_under(path, BROWSER)


def is_js_path(path: str) -> bool:
    return is_under(path, JS)


def is_cluster_path(path: str) -> bool:
    return any(is_under(path, folder) for folder in CLUSTER_PATHS)


def count(junit: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) test cases in a pytest --junitxml file; an error counts as failed.

    Counted per <testcase> element: the suite totals also count passed subtests.
    """
    if not junit.exists():
        return 0, 0, 0
    passed = failed = skipped = 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcomes = {child.tag for child in case}
        if outcomes & {"failure", "error"}:
            failed += 1
        elif "skipped" in outcomes:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


# Each check of the lint leg: a name and its command (run from the project folder).
LINT_CHECKS = (
    ("ruff check", ["-m", "ruff", "check", "."]),
    ("ruff format", ["-m", "ruff", "format", "--check", "."]),
    ("mypy", ["-m", "mypy"]),
    (
        "import layers",
        ["-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"],
    ),
)


def lint_leg(paths: list[str], options: list[str]) -> LegResult:
    """Run every check of LINT_CHECKS over the whole tree (paths and options do not narrow it)."""
    print("\n=== lint leg", flush=True)
    passed = failed = 0
    for name, args in LINT_CHECKS:
        code = subprocess.call([sys.executable, *args], cwd=ROOT, env=base_env())
        print(f"{name}: {'ok' if code == 0 else f'FAILED (exit status {code})'}", flush=True)
        passed, failed = (passed + 1, failed) if code == 0 else (passed, failed + 1)
    return LegResult("lint", failed == 0, passed, failed, 0, "" if failed == 0 else "see the output above")


def run_pytest(leg: str, targets: list[str], options: list[str], env: dict[str, str]) -> LegResult:
    ARTIFACTS.mkdir(exist_ok=True)
    junit = ARTIFACTS / f"junit-{leg}.xml"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", *targets, f"--junitxml={junit}", *options]
    print(f"\n=== {leg} leg: {' '.join(command[1:])}", flush=True)
    code = subprocess.call(command, cwd=ROOT, env=env)
    passed, failed, skipped = count(junit)
    ok = code in (0, NO_TESTS_COLLECTED)
    if not ok and failed == 0:
        failed = 1  # pytest failed without reporting a test (usage or internal error)
    return LegResult(leg, ok, passed, failed, skipped, "" if ok else f"pytest exit status {code}")


def base_env() -> dict[str, str]:
    """The environment of a leg: SQLite unless the leg sets DATABASE_URL."""
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def database_targets(paths: list[str]) -> list[str] | None:
    if not paths:
        return ["tests", f"--ignore={BROWSER}", *(f"--ignore={path}" for path in CLUSTER_PATHS)]
    chosen = [p for p in paths if not is_browser_path(p) and not is_js_path(p) and not is_cluster_path(p)]
    return chosen or None


def sqlite_leg(paths: list[str], options: list[str]) -> LegResult:
    targets = database_targets(paths)
    if targets is None:
        return LegResult("sqlite", True, note="no selected tests")
    return run_pytest("sqlite", targets, options, base_env())


def pg_leg(paths: list[str], options: list[str]) -> LegResult:
    from tests.services import start_postgres

    targets = database_targets(paths)
    if targets is None:
        return LegResult("pg", True, note="no selected tests")
    try:
        url, stop = start_postgres(tempfile.gettempdir())
    except unittest.SkipTest as exc:
        print(f"\n=== pg leg skipped: {exc}", flush=True)
        return LegResult("pg", True, note=f"skipped: {exc}")
    except Exception as exc:
        print(f"\n=== pg leg failed to start PostgreSQL: {exc}", flush=True)
        return LegResult("pg", False, failed=1, note=f"PostgreSQL did not start: {exc}")
    try:
        print(f"\n=== PostgreSQL at {url}", flush=True)
        return run_pytest("pg", targets, options, {**base_env(), "DATABASE_URL": url})
    finally:
        stop()


def cluster_leg(paths: list[str], options: list[str]) -> LegResult:
    """tests/cluster and the bench smoke (or the selected paths among them) on a throwaway PostgreSQL cluster."""
    from tests.services import start_postgres

    targets = [p for p in paths if is_cluster_path(p)] if paths else list(CLUSTER_PATHS)
    if not targets:
        return LegResult("cluster", True, note="no selected tests")
    try:
        url, stop = start_postgres(tempfile.gettempdir())
    except unittest.SkipTest as exc:
        print(f"\n=== cluster leg skipped: {exc}", flush=True)
        return LegResult("cluster", True, note=f"skipped: {exc}")
    except Exception as exc:
        return LegResult("cluster", False, failed=1, note=f"PostgreSQL did not start: {exc}")
    try:
        return run_pytest("cluster", targets, options, {**base_env(), "DATABASE_URL": url})
    finally:
        stop()


def browser_leg(paths: list[str], options: list[str]) -> LegResult:
    if paths:
        targets = [p for p in paths if is_browser_path(p)]
        if not targets:
            return LegResult("browser", True, note="no selected tests")
    else:
        targets = [BROWSER]
    if not (ROOT / BROWSER).is_dir():
        return LegResult("browser", True, note=f"no {BROWSER} folder yet")
    return run_pytest("browser", targets, options, base_env())


def django_leg(paths: list[str], options: list[str]) -> LegResult:
    """`manage.py test` over the selected paths (as dotted labels); pytest options do not apply to it."""
    if options:
        return LegResult("django", True, note="not run: pytest options given")
    python_paths = [p for p in paths if not is_js_path(p)]
    if paths and not python_paths:
        return LegResult("django", True, note="no selected tests")
    labels = [p.split("::")[0].removesuffix(".py").rstrip("/").replace("/", ".") for p in python_paths]
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "django-runner.log"
    command = [sys.executable, "manage.py", "test", "--exclude-tag=cluster", *labels]
    print(f"\n=== django leg: {' '.join(command[1:])} (output in {log.relative_to(ROOT)})", flush=True)
    with log.open("w") as out:
        code = subprocess.call(command, cwd=ROOT, env=base_env(), stdout=out, stderr=subprocess.STDOUT)
    ran, failed, skipped = unittest_counts(log.read_text(errors="replace"))
    print(f"django runner: ran {ran}, {failed} failed, {skipped} skipped, exit status {code}", flush=True)
    ok = code == 0
    if not ok and failed == 0:
        failed = 1
    return LegResult("django", ok, ran - failed - skipped, failed, skipped, "" if ok else f"exit status {code}")


def unittest_counts(output: str) -> tuple[int, int, int]:
    """(ran, failed, skipped) from unittest's closing lines: `Ran N tests` and `OK` / `FAILED (failures=..)`."""
    ran = sum(int(n) for n in re.findall(r"^Ran (\d+) tests?", output, re.MULTILINE))
    counts = {key: 0 for key in ("failures", "errors", "skipped", "expected failures", "unexpected successes")}
    for summary in re.findall(r"^(?:OK|FAILED) \((.*)\)$", output, re.MULTILINE):
        for key, value in re.findall(r"([a-z ]+)=(\d+)", summary):
            counts[key.strip()] = counts.get(key.strip(), 0) + int(value)
    return ran, counts["failures"] + counts["errors"] + counts["unexpected successes"], counts["skipped"]


def node_leg(paths: list[str], options: list[str]) -> LegResult:
    """`node --test` over tests/js (or the selected files there): spec output here, TAP in test-artifacts/."""
    from tests.services import missing

    if options:
        return LegResult("node", True, note="not run: pytest options given")
    targets = [p for p in paths if is_js_path(p)] if paths else [f"{JS}/"]
    if not targets:
        return LegResult("node", True, note="no selected tests")
    node = shutil.which("node")
    if node is None:
        problem = missing("node")
        print(f"\n=== node leg: {problem}", flush=True)
        if isinstance(problem, unittest.SkipTest):
            return LegResult("node", True, note=f"skipped: {problem}")
        return LegResult("node", False, failed=1, note=str(problem))
    ARTIFACTS.mkdir(exist_ok=True)
    tap = ARTIFACTS / "node-tests.tap"
    tap.unlink(missing_ok=True)
    reporters = ["--test-reporter=spec", "--test-reporter-destination=stdout"]
    reporters += ["--test-reporter=tap", f"--test-reporter-destination={tap}"]
    command = [node, "--test", *reporters, *targets]
    print(f"\n=== node leg: node --test {' '.join(targets)} (TAP in {tap.relative_to(ROOT)})", flush=True)
    code = subprocess.call(command, cwd=ROOT, env=base_env())
    passed, failed, skipped = node_counts(tap.read_text(errors="replace") if tap.exists() else "")
    ok = code == 0
    if not ok and failed == 0:
        failed = 1  # node failed without reporting a test (a bad flag, a file that does not load)
    return LegResult("node", ok, passed, failed, skipped, "" if ok else f"exit status {code}")


def node_counts(output: str) -> tuple[int, int, int]:
    """(passed, failed, skipped) from the summary lines of node's TAP output; a cancelled test counts as failed."""

    def total(name: str) -> int:
        return sum(int(n) for n in re.findall(rf"^# {name} (\d+)$", output, re.MULTILINE))

    return total("pass"), total("fail") + total("cancelled"), total("skipped")


def main(argv: list[str]) -> int:
    legs = [leg.strip() for leg in os.environ.get("LEGS", ",".join(ALL_LEGS)).split(",") if leg.strip()]
    unknown = [leg for leg in legs if leg not in ALL_LEGS]
    if unknown:
        print(f"unknown leg(s) {', '.join(unknown)}; choose from {', '.join(ALL_LEGS)}", file=sys.stderr)
        return 2
    paths, options = split_args(argv)
    runners = {
        "lint": lint_leg,
        "sqlite": sqlite_leg,
        "pg": pg_leg,
        "cluster": cluster_leg,
        "browser": browser_leg,
        "django": django_leg,
        "node": node_leg,
    }
    results = [runners[leg](paths, options) for leg in legs]

    print("\n=== legs")
    for r in results:
        status = "ok" if r.ok else "FAILED"
        note = f" ({r.note})" if r.note else ""
        print(f"{r.name:8} {status:6} {r.passed} passed, {r.failed} failed, {r.skipped} skipped{note}")
    passed, failed, skipped = (sum(getattr(r, key) for r in results) for key in ("passed", "failed", "skipped"))
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
