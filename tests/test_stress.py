"""Stress: the crash, Ctrl-C, timeout and fail-fast scenarios of test_faults.py, 50 times each.

Excluded from the default run (``-m 'not slow'`` in pyproject); run with ``pytest -m slow``.
Every repetition is its own test, so a flake shows which repetition failed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults_helpers import record_timing
from test_faults import (
    BACKENDS,
    CRASHES,
    scenario_crash,
    scenario_ctrl_c,
    scenario_fail_fast,
    scenario_timeout,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPEAT = 50


def _marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


@pytest.mark.parametrize("rep", range(REPEAT))
@pytest.mark.parametrize("how", list(CRASHES))
def test_crash_repeatedly(how: str, rep: int, tmp_path: Path) -> None:
    chunksize = None if rep % 2 == 0 else 4
    record_timing(f"stress:crash:{how}", scenario_crash(how, tmp_path, chunksize))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("rep", range(REPEAT))
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_repeatedly(backend: str, rep: int, tmp_path: Path) -> None:
    record_timing(f"stress:ctrl-c:{backend}", scenario_ctrl_c(backend, tmp_path)["interrupt"])


@pytest.mark.parametrize("rep", range(REPEAT))
@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_repeatedly(backend: str, rep: int, tmp_path: Path) -> None:
    release = threading.Event()
    try:
        record_timing(
            f"stress:timeout:{backend}", scenario_timeout(backend, _marks(tmp_path), release)
        )
    finally:
        release.set()


@pytest.mark.parametrize("rep", range(REPEAT))
@pytest.mark.parametrize("backend", BACKENDS)
def test_fail_fast_repeatedly(backend: str, rep: int, tmp_path: Path) -> None:
    release = threading.Event()
    try:
        record_timing(
            f"stress:fail-fast:{backend}", scenario_fail_fast(backend, _marks(tmp_path), release)
        )
    finally:
        release.set()
