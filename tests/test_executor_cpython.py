"""CPython's own ``test.test_concurrent_futures``, run against ``fastparallel.Executor``.

The generic groups of the interpreter's own test package (nothing of it is copied
here) run on fastparallel's worker processes (the default start) and on its threads
(``threadpool=True``): ``ExecutorTest``, ``WaitTests``, ``AsCompletedTests``,
``InitializerMixin``, ``FailingInitializerMixin``, ``ExecutorShutdownTest`` and, on
processes, ``ExecutorDeadlockTest``. Interpreters without the ``test`` package (most
distributions ship it apart) skip this module, saying so.

Two adaptations, both outside the tests' bodies: CPython's tests pass ``mp_context=``,
which fastparallel calls ``method=`` (:class:`_CPythonArgs`); and the failing-initializer
test looks for the initializer's traceback on fastparallel's logger rather than on
``concurrent.futures``' own (fastparallel logs on ``fastparallel`` only).

The tests left out, each with its reason, are in :data:`EXCLUDED` (and in
docs/executor.md); they run as skips that give the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import threading
import unittest
from pathlib import Path

import pytest

import fastparallel


def _cpython_tests():
    """The groups' modules: a package from Python 3.12.1 on, one module before."""
    import importlib

    try:
        package = importlib.import_module("test.test_concurrent_futures")
    except ImportError as exc:  # e.g. Debian's python3 without python3-test
        pytest.skip(
            f"this interpreter has no test.test_concurrent_futures ({exc}); run on one that "
            "ships CPython's test package (pyenv's 3.13 does)",
            allow_module_level=True,
        )
    if not hasattr(package, "__path__"):  # one module holds every group
        return {name: package for name in _PARTS}
    return {name: importlib.import_module(f"{package.__name__}.{name}") for name in _PARTS}


_PARTS = ("executor", "test_wait", "test_as_completed", "test_init", "test_shutdown")
_PARTS = (*_PARTS, "test_deadlock", "util")
_MODULES = _cpython_tests()
cpython_executor, util = _MODULES["executor"], _MODULES["util"]
test_wait, test_as_completed = _MODULES["test_wait"], _MODULES["test_as_completed"]
test_init, test_shutdown = _MODULES["test_init"], _MODULES["test_shutdown"]
test_deadlock = _MODULES["test_deadlock"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_BY_NAME = "its script imports the executor by name from concurrent.futures"
_OWN_ERROR = (
    "fastparallel fails only this future, with the error itself ({what}), where CPython's "
    "pool breaks (BrokenProcessPool); the executor stays usable"
)

EXCLUDED = {
    # ExecutorShutdownTest: scripts run in a subprocess
    "test_interpreter_shutdown": f"{_BY_NAME}; tests/test_executor.py runs the same script "
    "with fastparallel.Executor (pending work finishes at exit)",
    "test_submit_after_interpreter_shutdown": f"{_BY_NAME}; tests/test_executor.py checks "
    "submit() from an atexit handler raises RuntimeError",
    "test_hang_gh83386": f"{_BY_NAME}; tests/test_executor.py checks shutdown(wait=False) at exit",
    # ExecutorDeadlockTest: errors that fastparallel delivers as they are
    "test_exit_at_task_unpickle": _OWN_ERROR.format(
        what="the SystemExit raised while unpickling the task in the worker"
    ),
    "test_error_at_task_unpickle": _OWN_ERROR.format(
        what="the UnpicklingError raised while unpickling the task in the worker"
    ),
    "test_error_during_result_unpickle_in_result_handler": _OWN_ERROR.format(
        what="the UnpicklingError raised while unpickling the result in this process"
    ),
    "test_exit_during_result_unpickle_in_result_handler": _OWN_ERROR.format(
        what="the SystemExit raised while unpickling the result in this process"
    ),
}


class _CPythonArgs:
    """CPython's tests pass ``mp_context=`` (a context, or None here): ``method=``."""

    threadpool = False

    def __new__(cls, max_workers=None, mp_context=None, **kwargs):
        return fastparallel.Executor(
            max_workers, threadpool=cls.threadpool, method=mp_context, **kwargs
        )


class _ThreadArgs(_CPythonArgs):
    threadpool = True


class ProcessesMixin(util.ExecutorMixin):
    """fastparallel's worker processes, started its default way (the template process)."""

    executor_type = _CPythonArgs

    def get_context(self):
        return None  # the deadlock tests' mp_context: fastparallel's default start

    def create_event(self):
        """For the tests of CPython's later 3.13 releases that wait on an event in a
        worker (CPython's own mixin gives a manager's: see event_helpers.FileEvent)."""
        from event_helpers import FileEvent

        if not hasattr(self, "_events"):
            folder = tempfile.TemporaryDirectory()
            self.addCleanup(folder.cleanup)
            self._events = (Path(folder.name), itertools.count())
        where, numbers = self._events
        return FileEvent(str(where / f"event-{next(numbers)}"))


class ThreadsMixin(util.ExecutorMixin):
    executor_type = _ThreadArgs

    def create_event(self):
        return threading.Event()


class _OwnLogger:
    """The failing initializer's traceback, looked for on the ``fastparallel`` logger."""

    @contextlib.contextmanager
    def _assert_logged(self, msg):
        with self.assertLogs("fastparallel", "WARNING") as logged:
            yield
        self.assertTrue(any(msg in line for line in logged.output), logged.output)


GROUPS = [
    (cpython_executor.ExecutorTest, (ProcessesMixin, ThreadsMixin)),
    (test_wait.WaitTests, (ProcessesMixin, ThreadsMixin)),
    (test_as_completed.AsCompletedTests, (ProcessesMixin, ThreadsMixin)),
    (test_init.InitializerMixin, (ProcessesMixin, ThreadsMixin)),
    (test_init.FailingInitializerMixin, (ProcessesMixin, ThreadsMixin)),
    (test_shutdown.ExecutorShutdownTest, (ProcessesMixin, ThreadsMixin)),
    (test_deadlock.ExecutorDeadlockTest, (ProcessesMixin,)),
]


def _test_class(group, mixin):
    name = f"Test{mixin.__name__.removesuffix('Mixin')}{group.__name__}"
    bases = (group, mixin, util.BaseTestCase)
    if group is test_init.FailingInitializerMixin:
        bases = (_OwnLogger, *bases)
    cls = type(name, bases, {"__module__": __name__})
    for test, reason in EXCLUDED.items():
        if hasattr(cls, test):
            setattr(cls, test, unittest.skip(f"excluded: {reason}")(getattr(cls, test)))
    return cls


for _group, _mixins in GROUPS:
    for _mixin in _mixins:
        _cls = _test_class(_group, _mixin)
        globals()[_cls.__name__] = _cls
del _group, _mixins, _mixin, _cls
