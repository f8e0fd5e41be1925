"""Shared test setup: the helper modules beside the tests, and the tiers every test belongs to.

Tiers (markers, registered in pyproject.toml, ``--strict-markers``):

* ``unit``: one module (or a few) in this process, no worker processes and no
  subprocesses; the whole tier runs in seconds (``pytest -m unit``);
* ``integration``: real calls end to end, worker processes, scripts in subprocesses;
* ``slow``: long stress runs, excluded from the default run (``pytest -m slow``).

Each test module says its tier with ``pytestmark``; the docstring examples in ``src``
(collected with ``--doctest-modules``) are unit tests. A test without a tier is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # the *_helpers modules are imported by their bare names
    sys.path.insert(0, str(TESTS))

TIERS = ("unit", "integration", "slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    untiered = []
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(pytest.mark.unit)
        elif not any(item.get_closest_marker(tier) for tier in TIERS):
            untiered.append(item.nodeid)
    if untiered:
        raise pytest.UsageError(
            "tests without a tier (pytestmark = pytest.mark.unit / integration / slow): "
            + ", ".join(untiered[:5])
        )
