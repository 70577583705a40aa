"""The faults catalogue as a table: runs the fault tests with pytest and tallies each category.

Usage::

    python benchmarks/faults_report.py            # every fault test, slow ones included (as CI runs them)
    python benchmarks/faults_report.py --quick    # skip the tests marked slow
    python benchmarks/faults_report.py --junit out.xml --details

Per category (interrupted training, checkpoints, images, annotations, queries, service, access, footage):

- *cases tried*: hostile inputs / kill moments exercised; a test reports its count with
  ``record_property("cases", n)`` (a hypothesis test once per example); 1 when it reports none;
- *faults survived*: the cases of the tests that passed;
- *data lost*: the tests named ``test_no_data_lost_*`` (each checks that no good checkpoint,
  prepared output or index was lost or half-written) that did not pass, known bugs (xfail) included;
- *known bugs*: tests marked xfail that failed as expected (each names the bug in its reason).

Every figure comes from the junit XML of the run; the last column reproduces the row.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = [  # (name, test file, -k expression or None)
    ("interrupted training", "tests/test_faults_training.py", None),
    ("checkpoints", "tests/test_faults_checkpoints.py", None),
    ("images", "tests/test_faults_images.py", None),
    ("annotations", "tests/test_faults_annotations.py", "not query"),
    ("queries", "tests/test_faults_annotations.py", "query"),
    ("service", "tests/test_faults_service.py", None),
    ("access", "tests/test_faults_access.py", None),
    ("footage", "tests/test_video_faults.py", None),
]


def run_pytest(junit: Path, quick: bool) -> tuple:
    """Run every fault test file in one pytest session; returns (exit status, seconds)."""
    files = sorted({file for _, file, _ in CATEGORIES})
    command = [
        sys.executable,
        "-m",
        "pytest",
        *files,
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit1",
        "-q",
        "-rfEX",
    ]
    if quick:
        command += ["-m", "not slow"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT)
    return proc.returncode, time.perf_counter() - started


def outcome(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    skipped = case.find("skipped")
    if skipped is not None:
        return "xfail" if "xfail" in (skipped.get("type", "") + skipped.get("message", "")) else "skipped"
    return "passed"


def read_cases(junit: Path) -> list:
    """One dict per test case: file, name, outcome, seconds, cases, other properties."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        props = [(p.get("name"), p.get("value")) for p in case.iter("property")]
        counted = [int(value) for name, value in props if name == "cases"]
        module = case.get("classname", "").split(".")[-1]
        rows.append(
            {
                "file": f"tests/{module}.py",
                "name": case.get("name", ""),
                "outcome": outcome(case),
                "seconds": float(case.get("time", 0) or 0),
                "cases": sum(counted) if counted else 1,
                "notes": {name: value for name, value in props if name != "cases"},
            }
        )
    return rows


def _selected(row: dict, file: str, keyword) -> bool:
    if row["file"] != file:
        return False
    if keyword is None:
        return True
    has = "query" in row["name"]
    return has if keyword == "query" else not has


def tally(rows: list) -> list:
    table = []
    for name, file, keyword in CATEGORIES:
        mine = [r for r in rows if _selected(r, file, keyword)]
        command = f"python -m pytest {file}" + (f" -k '{keyword}'" if keyword else "")
        table.append(
            {
                "category": name,
                "tests": len(mine),
                "tried": sum(r["cases"] for r in mine if r["outcome"] != "skipped"),
                "survived": sum(r["cases"] for r in mine if r["outcome"] == "passed"),
                "failed": sum(r["outcome"] == "failed" for r in mine),
                "lost": sum(r["outcome"] != "passed" for r in mine if r["name"].startswith("test_no_data_lost")),
                "integrity": sum(r["name"].startswith("test_no_data_lost") for r in mine),
                "known": sum(r["outcome"] == "xfail" for r in mine),
                "seconds": sum(r["seconds"] for r in mine),
                "command": command,
            }
        )
    return table


def markdown(table: list) -> str:
    lines = [
        "| category | tests | cases tried | faults survived | failed tests | data lost (integrity checks) "
        "| known bugs (xfail) | time (s) | reproduce |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['category']} | {row['tests']} | {row['tried']} | {row['survived']} | {row['failed']} "
            f"| {row['lost']} ({row['integrity']}) | {row['known']} | {row['seconds']:.1f} "
            f"| `{row['command']}` |"
        )
    return "\n".join(lines)


def details(rows: list) -> str:
    lines = []
    for row in rows:
        notes = "; ".join(f"{k}={v}" for k, v in row["notes"].items())
        lines.append(
            f"  {row['outcome']:7s} {row['cases']:5d} {row['seconds']:7.1f}s  {row['file']}::{row['name']}"
            + (f"  [{notes}]" if notes else "")
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="deselect the tests marked slow")
    parser.add_argument("--junit", type=Path, default=None, help="keep the junit XML here")
    parser.add_argument("--from-junit", type=Path, default=None, help="tabulate an existing junit XML, run nothing")
    parser.add_argument("--details", action="store_true", help="also list every test case")
    args = parser.parse_args(argv)
    if args.from_junit:
        junit, status, seconds = args.from_junit, 0, None
    else:
        junit = args.junit or Path(tempfile.mkdtemp(prefix="ssan-faults-")) / "faults.xml"
        status, seconds = run_pytest(junit, args.quick)
    rows = read_cases(junit)
    table = tally(rows)
    print()
    print(markdown(table))
    total = {key: sum(r[key] for r in table) for key in ("tests", "tried", "survived", "failed", "lost", "known")}
    print(
        f"\ntotal: {total['tests']} tests, {total['tried']} cases tried, {total['survived']} survived, "
        f"{total['failed']} failed tests, data lost {total['lost']}, known bugs {total['known']}"
        + (f"; pytest wall time {seconds:.1f} s" if seconds is not None else "")
    )
    notes = [(r["file"], r["name"], r["notes"]) for r in rows if r["notes"]]
    for file, name, extra in notes:
        print(f"  {file}::{name}: " + "; ".join(f"{k} = {v}" for k, v in extra.items()))
    if args.details:
        print(details(rows))
    return 1 if status not in (0,) or total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
