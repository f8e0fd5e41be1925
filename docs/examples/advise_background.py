"""advise() on the two workloads of the background documents, next to measured times.

1. Many small models: fit scikit-learn decision trees, each on a random 80% of the rows
   of the iris data tiled up (the data is a keyword argument, sent once per worker).
2. Many files read and decoded: JPEG files written into a temporary folder, decoded to
   NumPy arrays that come back to the caller, in batches of 128, one call per batch.

For each, ``advise()`` runs first (before anything else touched the data), then each mode
runs three times, interleaved, with the workers the advice assumed; the medians are
printed beside the predictions. On a shared machine, each measurement waits until the
CPUs are mostly idle (as ``threads_or_processes.py`` does). Needs scikit-learn, Pillow and NumPy (the ``bench``
extra). Run from the repository root:

    PYTHONPATH=src python docs/examples/advise_background.py
"""

from __future__ import annotations

import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from threads_or_processes import wait_until_quiet

from fastparallel import advise, num_cpus, parallel

MODES = {
    "serial": {"n_workers": 0},
    "threads": {"threadpool": True},
    "processes": {"threadpool": False},
}


def iris_rows(rows):
    import numpy as np
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    reps = -(-rows // len(X))
    return np.tile(X, (reps, 1))[:rows], np.tile(y, reps)[:rows]


def fit_tree(seed, X=None, y=None):
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    rows = np.random.default_rng(seed).choice(len(X), size=int(0.8 * len(X)), replace=False)
    return DecisionTreeClassifier(random_state=seed).fit(X[rows], y[rows])


def write_jpegs(folder, count, width=320, height=240):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
        pixels = np.clip(
            ramp * (0.5 + (i % 5) / 10) + rng.integers(0, 64, (height, width, 3)), 0, 255
        )
        path = Path(folder) / f"img{i:05d}.jpg"
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def decode(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def batched(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


def compare(title, advice, run):
    """Run each mode three times, interleaved; print predicted beside the median measured."""
    times = {mode: [] for mode in MODES}
    for _ in range(3):
        for mode, options in MODES.items():
            if mode != "serial":
                options = {**options, "n_workers": advice.n_workers[mode]}
            wait_until_quiet()
            began = time.perf_counter()
            run(options)
            times[mode].append(time.perf_counter() - began)
    print(f"\n{title}\n{advice}\n")
    print("| mode | workers | predicted | measured (median of 3) |")
    print("| --- | --- | --- | --- |")
    for mode in MODES:
        mark = " (recommended)" if mode == advice.recommended else ""
        print(
            f"| {mode}{mark} | {advice.n_workers[mode]} | {advice.predicted[mode]:.2f} s | "
            f"{statistics.median(times[mode]):.2f} s |"
        )


def trees(n_trees=48, rows=200_000):
    X, y = iris_rows(rows)
    wait_until_quiet()
    advice = advise(fit_tree, range(n_trees), X=X, y=y)
    compare(
        f"{n_trees} decision trees on {rows:,} rows",
        advice,
        lambda options: parallel(fit_tree, range(n_trees), X=X, y=y, **options),
    )


def images(n_files=2048, batch=128):
    folder = tempfile.mkdtemp(prefix="fastparallel-advise-")
    try:
        paths = write_jpegs(folder, n_files)
        batches = batched(paths, batch)
        wait_until_quiet()
        advice = advise(decode, paths)  # the whole job; each batch is one call in the loop below

        def loop(options):
            for part in batches:
                parallel(decode, part, **options)

        compare(
            f"{n_files} JPEG files (320x240) decoded, {len(batches)} calls of {batch}", advice, loop
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    print(f"{platform.machine()}, {num_cpus()} CPUs, Python {sys.version.split()[0]}")
    trees()
    images()
