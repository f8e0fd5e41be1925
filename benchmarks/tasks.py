"""The functions the benchmarks map over items.

They live in an importable module (not ``__main__``) so that every contender, including the
ones that start workers with ``forkserver`` or ``spawn``, can find them by name. Only the
standard library is imported at module level: workers import this module too, and a heavy
import here would be charged to every pool start. Keyword arguments come after the item, in
the order ``fastparallel.parallel`` and ``fastcore.parallel.parallel`` call ``fn(item, **kwargs)``.
"""

from __future__ import annotations

import time
from typing import Any


def double(x: int) -> int:
    """The trivial task: the per-item cost is all overhead."""
    return x * 2


def spin(loops: int) -> int:
    """Pure-Python busy loop holding the GIL; its return value depends only on ``loops``."""
    acc = 0
    for i in range(loops):
        acc = (acc + i * i) % 1_000_003
    return acc


def burn(seed: int, loops: int) -> int:
    """A CPU-bound task of a calibrated length; returns something that names the item."""
    return seed * 1_000_003 + spin(loops)


def wait(x: int, delay: float) -> int:
    """An I/O-bound stand-in: sleeps (releasing the GIL) and hands the item back."""
    time.sleep(delay)
    return x


async def nap(x: int, delay: float) -> int:
    """The coroutine stand-in for I/O: awaits ``asyncio.sleep(delay)`` and hands the item back."""
    import asyncio  # here, not at module level: workers of the other workloads import this module

    await asyncio.sleep(delay)
    return x


def fetch(x: int, url: str) -> int:
    """GET ``{url}/{x}`` from the loopback test server, which answers with ``x`` itself."""
    import urllib.request  # here, not at the top: it takes ~40 ms, charged to every worker start

    with urllib.request.urlopen(f"{url}/{x}", timeout=30) as response:
        return int(response.read())


def use_blob(seed: int, blob: Any, loops: int) -> int:
    """Does some work with a (possibly large) bound argument and returns something small."""
    return burn(seed, loops) + int(blob[seed % len(blob)])


def use_item(blob: Any, loops: int) -> int:
    """Does some work with a (possibly large) array item and returns something small."""
    return burn(int(blob[0]), loops) + int(blob[-1])


def make_array(seed: int, mb: float) -> Any:
    """Returns a float64 array of ``mb`` MiB filled with ``seed``: a large result."""
    import numpy as np

    return np.full(int(mb * 2**20) // 8, float(seed))


def fit_tree(seed: int, X: Any, y: Any) -> Any:
    """Fits a decision tree on a random 80% of the rows of ``X``, seeded by ``seed``."""
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(X), size=int(0.8 * len(X)), replace=False)
    return DecisionTreeClassifier(random_state=seed).fit(X[rows], y[rows])


def decode_jpeg(path: str) -> Any:
    """Reads a JPEG file and decodes it to an RGB ``uint8`` array."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def matmul(seed: int, size: int) -> float:
    """The trace of the product of two ``size`` x ``size`` random matrices: BLAS work,
    on as many threads as the process's BLAS pool has."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.random((size, size))
    b = rng.random((size, size))
    return float(np.trace(a @ b))
