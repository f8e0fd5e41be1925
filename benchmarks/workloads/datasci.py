"""The published data-science workloads: many decision trees, and decoding many small JPEGs.

Both call the contender once per batch of 128 items, in a loop, as a training or data-loading
loop would.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import tasks
from ..core import ChildContext, Job
from .base import MapWorkload, Prepared, batched

# --- decision trees ---------------------------------------------------------------------------


def iris_tiled(rows: int) -> tuple[Any, Any]:
    """The iris data set repeated to ``rows`` rows."""
    import numpy as np
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    reps = -(-rows // len(X))
    return np.tile(X, (reps, 1))[:rows], np.tile(y, reps)[:rows]


def _trees(ctx: ChildContext) -> Prepared:
    import numpy as np

    X, y = iris_tiled(int(ctx.params["rows"]))
    seeds = list(range(int(ctx.params["trees"])))
    data = {"X": X, "y": y}
    jobs = [Job(tasks.fit_tree, batch, data) for batch in batched(seeds, int(ctx.params["batch"]))]
    iris_X, iris_y = X[:150], y[:150]
    spot = {s: tasks.fit_tree(s, X, y).tree_.threshold for s in (seeds[0], seeds[-1])}

    def check(trees: list[Any]) -> bool:
        if len(trees) != len(seeds):
            return False
        if [t.random_state for t in trees] != seeds:
            return False
        if any(t.score(iris_X, iris_y) < 0.95 for t in trees):
            return False
        return all(np.array_equal(trees[s].tree_.threshold, th) for s, th in spot.items())

    return Prepared(jobs, check)


TREES = MapWorkload(
    name="trees",
    title="Decision trees in batches",
    description=(
        "Fit scikit-learn decision trees, each on a random 80% of the rows of the iris data tiled "
        "up; the data is a keyword argument bound to the function. One map call per batch of 128 "
        "trees. Cold: the loop is timed from a fresh interpreter."
    ),
    modes=("thread", "process"),
    variants={"256x60k": {"trees": 256, "rows": 60_000, "batch": 128}},
    quick={"8x3k": {"trees": 8, "rows": 3_000, "batch": 4}},
    prepare=_trees,
)

# --- JPEG decoding ----------------------------------------------------------------------------


def write_jpegs(folder: Path, count: int, pixels: int) -> list[str]:
    """Writes ``count`` noisy-gradient JPEGs of ``pixels`` x ``pixels`` into ``folder``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, pixels)
    paths = []
    for i in range(count):
        base = (ramp[:, None, None] + ramp[None, :, None] * (i % 7) / 7) / 2
        noise = rng.integers(0, 96, size=(pixels, pixels, 3))
        pixels_rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(pixels_rgb).save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths


def _images(ctx: ChildContext) -> Prepared:
    import numpy as np

    folder = Path(tempfile.mkdtemp(prefix="fastparallel-bench-"))
    unique = write_jpegs(folder, int(ctx.params["unique"]), int(ctx.params["px"]))
    paths = [unique[i % len(unique)] for i in range(int(ctx.params["n"]))]
    reference = [tasks.decode_jpeg(p) for p in unique]
    jobs = [Job(tasks.decode_jpeg, batch) for batch in batched(paths, int(ctx.params["batch"]))]

    def check(arrays: list[Any]) -> bool:
        return len(arrays) == len(paths) and all(
            np.array_equal(a, reference[i % len(reference)]) for i, a in enumerate(arrays)
        )

    return Prepared(jobs, check, cleanup=lambda: shutil.rmtree(folder, ignore_errors=True))


IMAGES = MapWorkload(
    name="images",
    title="JPEG decoding in batches",
    description=(
        "Read and decode 4096 small JPEG files (128x128, generated with Pillow into a temporary "
        "folder) to numpy arrays that come back to the caller. One map call per batch of 128 "
        "paths. Cold."
    ),
    modes=("thread", "process"),
    variants={"4096x128px": {"n": 4096, "unique": 512, "px": 128, "batch": 128}},
    quick={"64x32px": {"n": 64, "unique": 16, "px": 32, "batch": 16}},
    prepare=_images,
)
