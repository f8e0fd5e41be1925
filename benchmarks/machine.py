"""Describes the machine and software versions the results come from."""

from __future__ import annotations

import importlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = (
    "fastparallel",
    "fastcore",
    "mpire",
    "joblib",
    "tqdm",
    "numpy",
    "scikit-learn",
    "pillow",
    "cloudpickle",
    "fastprogress",
)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    try:  # e.g. fastparallel used from a source checkout through PYTHONPATH
        module = importlib.import_module(dist.replace("-", "_"))
    except Exception:
        source = Path(__file__).resolve().parents[1] / "src" / dist / "__init__.py"
        found = (
            re.search(r'__version__ = "([^"]+)"', source.read_text()) if source.exists() else None
        )
        return found.group(1) if found else None
    return str(getattr(module, "__version__", "unknown"))


def memory_gib() -> float | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * page_size / 2**30, 1)


def revision(root: Path) -> str | None:
    """``git describe --always --dirty`` of the checkout, if it is one."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def describe() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "libraries": {name: version_of(name) for name in LIBRARIES},
    }


def tag() -> str:
    """A short name for the results folder, e.g. ``linux-x86_64-2cpu-py3.11``."""
    py = ".".join(platform.python_version_tuple()[:2])
    return f"{platform.system().lower()}-{platform.machine()}-{os.cpu_count()}cpu-py{py}"
