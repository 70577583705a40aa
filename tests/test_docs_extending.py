"""docs/extending.md: every Python block runs as written, as its own script, in an empty folder and in sequence.

A reader runs the examples one after another in one folder; none may trip over another's leftovers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def _run_example(number: int, scripts: Path, work: Path) -> None:
    script = scripts / f"example_{number + 1}.py"
    script.write_text(BLOCKS[number], encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, f"example {number + 1}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"example {number + 1} prints what it did"


def test_the_page_has_its_three_examples():
    assert len(BLOCKS) == 3


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_example_runs_as_written(number, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    _run_example(number, tmp_path, work)


@pytest.mark.slow
def test_examples_run_one_after_another_in_one_folder(tmp_path):
    work = tmp_path / "reader"
    work.mkdir()
    for number in range(len(BLOCKS)):
        _run_example(number, tmp_path, work)
