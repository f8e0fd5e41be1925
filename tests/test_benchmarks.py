"""Smoke test of the benchmark suite: every workload and contender at --quick sizes.

It checks that each measured combination produced correct results and that the JSON and
Markdown reports were written. It never asserts a speed: timings here come from a busy CI
machine with two cases running at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

for _dep in ("fastcore", "mpire", "joblib", "tqdm", "numpy", "sklearn", "PIL", "matplotlib"):
    pytest.importorskip(_dep)

ROOT = Path(__file__).resolve().parent.parent
QUICK_RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--jobs", "2", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # A bound against a hang, not a speed: 150 s with two busy loops beside it, over 280 s
        # on a machine with a load of 10 on 2 cores.
        timeout=QUICK_RUN_TIMEOUT,
        check=False,
    )
    return done, out


@pytest.mark.timeout(QUICK_RUN_TIMEOUT + 60)  # the quick run is in the setup
def test_quick_suite_runs_every_combination_correctly(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    assert (out / "results.json").is_file(), done.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    cases = report["cases"]
    assert len(report["meta"]["workloads"]) >= 12
    assert {c["workload"] for c in cases} == set(report["meta"]["workloads"])
    assert {c["contender"] for c in cases} == set(report["meta"]["contenders"])
    measured = [c for c in cases if "skipped" not in c]
    assert measured, "nothing was measured"
    wrong = [
        f"{c['workload']}/{c['size']}/{c['mode']}/{c['contender']}: {c['failures']}"
        for c in measured
        if not c["correct"]
    ]
    assert not wrong, "\n".join(wrong)
    assert all(c["skipped"] for c in cases if "skipped" in c), "every skip needs a reason"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.timeout(QUICK_RUN_TIMEOUT + 60)  # the quick run is in the setup
def test_quick_suite_writes_reports(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    markdown = (out / "results.md").read_text()
    assert "## Targets" in markdown and "## Results" in markdown
    report = json.loads((out / "results.json").read_text())
    assert report["meta"]["quick"] is True
    assert {"target", "value", "limit", "status"} <= set(report["targets"][0])
    assert list(out.glob("*.png")), "no plots were drawn"
