"""Benchmark suite for fastparallel.

Run it from the repository root with ``python -m benchmarks.run`` (see ``docs/benchmarks.md``).
Each measurement runs in a fresh interpreter (``python -m benchmarks._one``); the runner in
:mod:`benchmarks.run` interleaves contenders, repeats, and writes JSON, Markdown and plots.
"""
