"""Typing, lint, packaging and import hygiene, checked in CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return [path]


@pytest.mark.timeout(300)
def test_mypy_strict():
    proc = subprocess.run(
        _tool("mypy") + ["--strict"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff():
    paths = ["src", "tests", "benchmarks", "docs/examples"]
    lint = subprocess.run(
        _tool("ruff") + ["check", *paths], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    layout = subprocess.run(
        _tool("ruff") + ["format", "--check", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert layout.returncode == 0, layout.stdout + layout.stderr


def test_imports_go_one_way():
    """The import-linter contracts in pyproject.toml: layers, and who may import what."""
    proc = subprocess.run(
        _tool("lint-imports"), cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_import_cycles_and_a_short_top_level():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("fastparallel")
    cycles = [
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    ]
    assert not cycles, cycles
    top = sorted(p.name for p in (ROOT / "src" / "fastparallel").glob("*.py"))
    assert len(top) <= 10, top


def test_import_has_no_side_effects():
    code = (
        "import sys, threading, multiprocessing as mp, signal\n"
        "handler = signal.getsignal(signal.SIGINT)\n"
        "import logging\n"
        "import fastparallel\n"
        "assert 'fastprogress' not in sys.modules, 'fastprogress imported eagerly'\n"
        "assert 'cloudpickle' not in sys.modules, 'cloudpickle imported eagerly'\n"
        "assert threading.active_count() == 1, 'a thread started at import'\n"
        "assert mp.get_start_method(allow_none=True) is None, 'start method set at import'\n"
        "assert signal.getsignal(signal.SIGINT) is handler, 'signal handler installed at import'\n"
        "assert not logging.getLogger('fastparallel').handlers, 'logging handler installed'\n"
        "assert not mp.active_children()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_single_version_source():
    import fastparallel

    version = re.search(
        r'__version__ = "([^"]+)"', (ROOT / "src" / "fastparallel" / "__init__.py").read_text()
    )
    assert version is not None and fastparallel.__version__ == version.group(1)
    assert (ROOT / "src" / "fastparallel" / "py.typed").exists()
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_the_demo(tmp_path):
    pytest.importorskip("build")
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1 and list(dist.glob("*.tar.gz"))
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "fastparallel/py.typed" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheels[0])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(
        [str(py), "-m", "fastparallel", "demo", "--scale", "0.2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "predicted" in proc.stdout and "<- advised" in proc.stdout and "chose " in proc.stdout
    assert "speedup" in proc.stdout and "processes" in proc.stdout
    assert (
        str(ROOT / "src")
        not in subprocess.run(
            [str(py), "-c", "import fastparallel; print(fastparallel.__file__)"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        ).stdout
    )
