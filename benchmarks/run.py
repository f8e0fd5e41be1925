"""Runs the fastparallel benchmark suite and writes JSON, Markdown and PNG results.

From the repository root::

    python -m benchmarks.run                      # everything, 5 repetitions (~25 min on 2 cores)
    python -m benchmarks.run --quick              # tiny sizes, 1 repetition (what CI runs)
    python -m benchmarks.run --workloads tiny_cold cpu --contenders fastparallel mpire serial
    python -m benchmarks.run --from-json benchmarks/results/<tag>/results.json   # redraw only

Every measurement runs in a fresh interpreter (``python -m benchmarks._one``); within each
repetition the contenders of a workload run one after the other, in a rotating order.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import machine
from benchmarks.calibrate import loops_per_ms
from benchmarks.contenders import CONTENDERS
from benchmarks.core import CaseKey, Measurement
from benchmarks.plan import Planned, plan, schedule
from benchmarks.plots import draw_all
from benchmarks.report import fmt_seconds, markdown, targets_table
from benchmarks.results import ResultSet
from benchmarks.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent


def names(values: Sequence[str] | None, known: Mapping[str, object], what: str) -> list[str]:
    """Accepts space- and comma-separated names; keeps registry order."""
    if not values:
        return list(known)
    wanted = {n for v in values for n in v.split(",") if n}
    unknown = wanted - set(known)
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    return [n for n in known if n in wanted]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workloads", nargs="+", metavar="NAME", help=f"subset of: {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--contenders", nargs="+", metavar="NAME", help=f"subset of: {', '.join(CONTENDERS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and 1 repetition (smoke test)"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions per case (default 5, quick 1)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default benchmarks/results/<tag>)"
    )
    parser.add_argument("--tag", default=None, help="machine tag naming the default output folder")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cases run at once; anything above 1 distorts timings (smoke tests only)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per case (default 600, quick 120)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the matplotlib charts")
    parser.add_argument("--list", action="store_true", help="print the planned cases and exit")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="PATH",
        help="redraw results.md and the plots from a results.json, measuring nothing",
    )
    return parser.parse_args(argv)


def child_env() -> dict[str, str]:
    """The environment for children: the repository (and its src/, if any) on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(ROOT / "src")] if (ROOT / "src" / "fastparallel").is_dir() else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONWARNINGS", "ignore")
    # Measure imports as installed packages behave: with cached bytecode.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_case(key: CaseKey, quick: bool, calibration: float, timeout: float) -> Measurement:
    """Measures one case in a fresh interpreter."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks._one",
        *key.as_args(),
        "--loops-per-ms",
        repr(calibration),
    ]
    if quick:
        cmd.append("--quick")
    try:
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Measurement(None, False, f"timed out after {timeout:.0f} s")
    found = Measurement.from_output(done.stdout)
    if found is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        found = Measurement(None, False, f"exit {done.returncode}, no result: {' | '.join(tail)}")
    return found


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_all(
    args: argparse.Namespace, planned: list[Planned], argv: Sequence[str] | None
) -> tuple[ResultSet, dict[str, Any]]:
    """Runs every planned case ``reps`` times and returns the results and their metadata."""
    reps = args.reps if args.reps is not None else (1 if args.quick else 5)
    timeout = args.timeout if args.timeout is not None else (120.0 if args.quick else 600.0)
    calibration = loops_per_ms()
    results = ResultSet(planned, args.quick)
    total = sum(1 for c in planned if c.skip is None) * reps
    log(f"{total} measurements ({reps} repetition(s)); calibration {calibration:.0f} loops/ms")
    started = time.time()
    done = 0

    def one(key: CaseKey, rep: int) -> None:
        nonlocal done
        measurement = run_case(key, args.quick, calibration, timeout)
        results.add(key, measurement)
        done += 1
        status = (
            fmt_seconds(measurement.seconds)
            if measurement.correct
            else f"FAILED {measurement.error}"
        )
        log(f"[{done}/{total}] rep {rep + 1}: {key}: {status}")

    for rep in range(reps):
        order = schedule(planned, rep)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(one, order, [rep] * len(order)))

    meta = {
        "tag": args.tag or machine.tag(),
        "command": shlex.join(
            ["python", "-m", "benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": args.quick,
        "workloads": list(dict.fromkeys(p.key.workload for p in planned)),
        "contenders": list(dict.fromkeys(p.key.contender for p in planned)),
        "reps": reps,
        "jobs": args.jobs,
        "loops_per_ms": calibration,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "machine": machine.describe(),
        "revision": machine.revision(ROOT),
    }
    return results, meta


def write_outputs(results: ResultSet, meta: dict[str, Any], out: Path, plots: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.to_json(meta), indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, meta))
    written = draw_all(results, out) if plots else []
    print("\n".join(targets_table(results.targets())))
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'} and {len(written)} plot(s)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        results, meta = ResultSet.from_json(data), data["meta"]
        out = args.out or args.from_json.parent
    else:
        workloads = [WORKLOADS[n] for n in names(args.workloads, WORKLOADS, "workloads")]
        contenders = names(args.contenders, CONTENDERS, "contenders")
        planned = plan(workloads, contenders, args.quick)
        if args.list:
            for case in planned:
                print(f"{case.key}" + (f"  [skip: {case.skip}]" if case.skip else ""))
            return 0
        results, meta = measure_all(args, planned, argv)
        out = args.out or ROOT / "benchmarks" / "results" / meta["tag"]
    write_outputs(results, meta, out, plots=not args.no_plots)
    failed = results.failed()
    for failure in failed:
        print(f"FAILED {failure.key}: {'; '.join(dict.fromkeys(failure.failures))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
