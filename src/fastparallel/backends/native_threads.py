"""How many threads the native libraries' pools (BLAS, OpenMP, MKL, numexpr...) may use.

NumPy, SciPy, scikit-learn and PyTorch start thread pools sized to the whole machine. In
each of ``n`` worker processes that makes ``n`` times too many busy threads, which thrash
instead of helping. Process workers therefore get ``inner_threads`` (by default the CPUs
shared out among the workers) in two ways:

* before a library loads: the environment variables the libraries read when they start
  (:data:`VARIABLES`) are set in the worker's environment, which it takes over from the
  caller before it unpickles the call (:func:`worker_variables`);
* where a library is already loaded (a worker forked from a caller that had imported
  NumPy, or a template that preloaded it): ``threadpoolctl``, when it can be imported,
  sets the pools' sizes at run time (:func:`limit_loaded`). The process that forks the
  workers lists the loaded pools once, before forking (:func:`survey_native_pools`),
  and each worker inherits that list, so that it only resizes them.

The caller's own settings win, as in joblib: a variable set in its environment is kept,
and ``OMP_NUM_THREADS``, which every one of these libraries falls back on, stands for
the variables it did not set. Only an explicit ``inner_threads`` overrides them.

This module imports nothing of fastparallel's (worker processes import it) and imports
``threadpoolctl`` only where a limit must be applied at run time.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "VARIABLES",
    "limit_here",
    "limit_loaded",
    "limit_openmp_here",
    "one_thread_for_imports",
    "survey_native_pools",
    "unset",
    "worker_variables",
]

# The variables, and the threadpoolctl internal API (a pool's implementation) each sets.
VARIABLES = {
    "OMP_NUM_THREADS": "openmp",
    "OPENBLAS_NUM_THREADS": "openblas",
    "MKL_NUM_THREADS": "mkl",
    "BLIS_NUM_THREADS": "blis",
    "FLEXIBLAS_NUM_THREADS": "flexiblas",
    "VECLIB_MAXIMUM_THREADS": "",  # macOS Accelerate: no run-time control
    "NUMEXPR_NUM_THREADS": "",  # numexpr reads it at import
}
# Modules whose presence means native pools may already have started with the machine's size.
_NATIVE_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr", "mkl", "threadpoolctl")


def one_thread_for_imports() -> list[str]:
    """Before the template process imports modules for its workers: the thread variables
    its environment does not set say 1, so that NumPy and the like start no pool of
    threads there (a forked worker would inherit it, and the template must stay single-
    threaded to fork safely); returns them, for :func:`unset` after the imports. Each
    worker then sizes its pools at run time (:func:`limit_loaded`)."""
    added = [name for name in VARIABLES if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    return added


def unset(names: list[str]) -> None:
    """Remove the variables ``names`` from this process's environment."""
    for name in names:
        os.environ.pop(name, None)


def worker_variables(
    inner_threads: int | None, default: int, environ: Mapping[str, str]
) -> dict[str, str]:
    """The thread variables for a worker's environment.

    ``inner_threads`` given: every variable says it. Else each keeps the caller's value
    (``environ``), falls back on the caller's ``OMP_NUM_THREADS``, and else says
    ``default`` (the CPUs shared out among the workers).

    Example:
        >>> worker_variables(None, 2, {"OMP_NUM_THREADS": "3"})["OPENBLAS_NUM_THREADS"]
        '3'
        >>> worker_variables(None, 2, {"MKL_NUM_THREADS": "1"})["MKL_NUM_THREADS"]
        '1'
        >>> worker_variables(4, 2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"]
        '4'
    """
    if inner_threads is not None:
        return dict.fromkeys(VARIABLES, str(inner_threads))
    fallback = environ.get("OMP_NUM_THREADS") or str(default)
    return {name: environ.get(name) or fallback for name in VARIABLES}


def _limits(environ: Mapping[str, str]) -> dict[str, int]:
    """threadpoolctl's limits by internal API, from the variables in ``environ``."""
    limits = {}
    for name, api in VARIABLES.items():
        value = environ.get(name, "")
        if api and value.isdigit() and int(value) > 0:
            limits[api] = int(value)
    return limits


class _Survey:
    """threadpoolctl's controller of the native pools loaded in this process (None: none,
    or no threadpoolctl), and ``len(sys.modules)`` when it was made: libraries are loaded
    by imports."""

    __slots__ = ("controller", "modules")

    def __init__(self) -> None:
        self.controller: Any = None
        self.modules = -1


_survey = _Survey()


def survey_native_pools() -> Any:
    """Before this process forks workers: list the native pools loaded here, for the
    workers to inherit; returns threadpoolctl's controller of them, or None.
    threadpoolctl's controller walks every loaded library (3 to 11 ms in a process that
    imported PyTorch); made here once, it spares each worker that walk as it starts, where
    its siblings and the caller compete for the same cores. Made again only when the
    number of imported modules changed since."""
    if _survey.modules != len(sys.modules):
        _survey.controller = _controller()
        _survey.modules = len(sys.modules)  # counted after the import of threadpoolctl
    return _survey.controller


def _controller() -> Any:
    """threadpoolctl's controller of the pools loaded here; None where no native library
    is loaded, or threadpoolctl is missing, older than 3 (no controller) or fails."""
    if not any(name in sys.modules for name in _NATIVE_MODULES):
        return None
    try:
        import threadpoolctl

        return threadpoolctl.ThreadpoolController()
    except Exception:  # ImportError, AttributeError (< 3), a library it fails to read
        return None


def limit_loaded(environ: Mapping[str, str], starting: bool = False) -> Any:
    """In a worker whose environment now holds the thread variables: size the native
    pools already loaded to match (with threadpoolctl, where it can be imported). Does
    nothing where no such library is loaded: those that load later read the variables.
    Returns threadpoolctl's limiters, or None.

    ``starting``: the worker is starting, nothing else runs in it yet; the OpenBLAS
    threads that setting the size started are stopped again (:func:`_stop_openblas_threads`).
    """
    if not any(name in sys.modules for name in _NATIVE_MODULES):
        return None
    limits = _limits(environ)
    if not limits:
        return None
    try:
        import threadpoolctl
    except ImportError:
        return None
    controller = survey_native_pools()  # inherited from the forking process, if current
    if controller is None:
        if hasattr(threadpoolctl, "ThreadpoolController"):
            return None  # a library threadpoolctl fails to read: keep the run going
        return _limit_by_user_api(threadpoolctl, limits)
    try:
        limiters = [
            controller.select(internal_api=api).limit(limits=n) for api, n in limits.items()
        ]
    except Exception:  # a library threadpoolctl fails to drive: keep the run going
        return None
    if starting and "openblas" in limits:
        _stop_openblas_threads(controller)
    return limiters


def _limit_by_user_api(threadpoolctl: Any, limits: dict[str, int]) -> Any:
    """threadpoolctl < 3, which has no controller: the limits by user API only."""
    blas = min((n for api, n in limits.items() if api != "openmp"), default=None)
    by_user_api = {"openmp": limits.get("openmp"), "blas": blas}
    return threadpoolctl.threadpool_limits(limits=by_user_api)


def _stop_openblas_threads(controller: Any) -> None:
    """Stop the threads of the OpenBLAS libraries loaded here.

    A fork stops OpenBLAS's threads (its at-fork handler), and setting its thread count in
    the child starts them all again, sized to the machine: they spin for about a tenth of
    a second waiting for work, which on a busy machine halved the speed of a new worker's
    first items (fastai's ``verify_images``: ~0.1 s more for each of its workers). Stopped,
    they stay stopped until a BLAS call needs more than one thread; the count set stays.
    """
    import ctypes

    for library in controller.lib_controllers:
        if library.internal_api != "openblas":
            continue
        try:
            loaded = ctypes.CDLL(library.filepath, mode=getattr(os, "RTLD_NOLOAD", 0))
            loaded.blas_thread_shutdown_()  # what OpenBLAS runs itself before a fork
        except (AttributeError, OSError):  # another build, or an unloaded library
            continue


def limit_here(threads: int) -> Any:
    """Size this process's native pools to ``threads`` (for a call on threads or serial
    with ``inner_threads``); returns threadpoolctl's limiter, whose
    ``restore_original_limits()`` undoes it, or None where threadpoolctl is missing."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl.threadpool_limits(limits=threads)


def limit_openmp_here(threads: int) -> Any:
    """Size the OpenMP pools this thread starts to ``threads``: OpenMP keeps that number
    per thread, so a call on threads with ``inner_threads`` sets it in each pool thread (BLAS
    pools are per process: :func:`limit_here` sized them). Returns the limiter to restore,
    or None where threadpoolctl or OpenMP is missing."""
    if "threadpoolctl" not in sys.modules:  # limit_here imported it, if it could
        return None
    import threadpoolctl

    return threadpoolctl.threadpool_limits(limits=threads, user_api="openmp")
