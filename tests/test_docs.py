"""The documentation site builds cleanly and every page in its nav exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MKDOCS_YML = ROOT / "mkdocs.yml"


def _nav_pages(nav) -> list[str]:
    """All page paths named in a mkdocs ``nav`` (nested sections included)."""
    pages: list[str] = []
    for entry in nav:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                if isinstance(value, str):
                    pages.append(value)
                elif isinstance(value, list):
                    pages.extend(_nav_pages(value))
    return [p for p in pages if not p.startswith(("http://", "https://"))]


def _load_config() -> dict:
    try:
        import yaml
    except ImportError:  # no PyYAML (mkdocs not installed): read the simple nav by hand
        return _parse_nav_by_hand(MKDOCS_YML.read_text())

    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may use !!python/name or !ENV tags; they are irrelevant here.
    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return yaml.load(MKDOCS_YML.read_text(), Loader=Loader)


def _parse_nav_by_hand(text: str) -> dict:
    """``docs_dir`` and the page files of a flat ``nav:`` list (``- Title: page.md``)."""
    config: dict = {"nav": []}
    in_nav = False
    for line in text.splitlines():
        if line.startswith("docs_dir:"):
            config["docs_dir"] = line.split(":", 1)[1].strip()
        if line.startswith("nav:"):
            in_nav = True
            continue
        if in_nav:
            if line and not line.startswith((" ", "-")):
                break
            stripped = line.strip()
            if stripped.startswith("- ") and stripped.endswith(".md"):
                title, _, page = stripped[2:].rpartition(":")
                config["nav"].append({title.strip(): page.strip()} if title else page.strip())
    return config


def test_every_nav_page_exists():
    config = _load_config()
    docs_dir = ROOT / config.get("docs_dir", "docs")
    pages = _nav_pages(config["nav"])
    assert pages, "mkdocs.yml has an empty nav"
    missing = [p for p in pages if not (docs_dir / p).is_file()]
    assert not missing, f"pages in nav but not in {docs_dir}: {missing}"
    for required in (
        "threads-or-processes.md",
        "guide.md",
        "streaming.md",
        "errors.md",
        "benchmarks.md",
        "migrating.md",
        "scaling-out.md",
        "api.md",
    ):
        assert required in pages, required


def test_api_page_documents_the_public_api():
    text = (ROOT / "docs" / "api.md").read_text()
    for name in (
        "parallel",
        "advise",
        "Advice",
        "Measurements",
        "PickleCost",
        "StartSource",
        "StartHow",
        "StartCaveat",
        "ReturnAs",
        "Threadpool",
        "ProgressCallback",
        "num_cpus",
        "shutdown",
        "per_worker",
        "ParallelTimeoutError",
        "ItemTimeoutError",
        "WorkerDiedError",
        "TaskExitError",
    ):
        assert f"::: fastparallel.{name}" in text, name


@pytest.mark.timeout(300)
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = (
        src if not env.get("PYTHONPATH") else os.pathsep.join([src, env["PYTHONPATH"]])
    )
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(MKDOCS_YML),
            "-d",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (site / "index.html").is_file()
    api = (site / "api" / "index.html").read_text()
    # mkdocstrings rendered the signature and the docstrings, not just the headings.
    assert "n_workers" in api and "return_as" in api
    assert "WorkerDiedError" in api
