"""A whole script, end to end: plain ``__main__`` functions go by value without
cloudpickle; when it is needed, the template imports cloudpickle while the caller does;
the interpreter's exit leaves nothing behind."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import faults_helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_helpers as h

from fastparallel.backends.processes.template import launcher as template_launcher
from fastparallel.serialize import byvalue
from fastparallel.serialize.pickling import dumps, loads, needs_cloudpickle


def _main_function(source: str, name: str) -> Any:
    """A function defined as a script's top level defines it: in ``__main__``."""
    script: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<script>", "exec"), script)  # noqa: S102 - a script's top level
    return script[name]


def test_needs_cloudpickle_spots_closures_locals_and_other_modules_lambdas() -> None:
    def local(x: int) -> int:
        return x

    assert needs_cloudpickle(lambda x: x) and needs_cloudpickle(local)
    assert needs_cloudpickle(functools.partial(local, 1))
    assert not needs_cloudpickle(len) and not needs_cloudpickle(h.square)
    assert not needs_cloudpickle(functools.partial(h.square))
    assert not needs_cloudpickle(_main_function("def double(x):\n    return 2 * x", "double"))
    assert not needs_cloudpickle(_main_function("f = lambda x: x", "f"))
    assert needs_cloudpickle(
        _main_function("def outer(y):\n    return lambda x: x + y\nf = outer(1)", "f")
    )


def test_the_launcher_asks_the_template_to_preload_only_when_cloudpickle_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[bool] = []
    monkeypatch.setattr(template_launcher, "preload_cloudpickle", lambda: asked.append(True))
    launcher = template_launcher.TemplateLauncher()
    launcher.expect(h.square)
    launcher.expect(_main_function("def double(x):\n    return 2 * x", "double"))
    assert asked == []
    launcher.expect(lambda x: x)
    assert asked == [True]


MAIN_SCRIPT = """
    import math, os

    SCALE = 3

    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    def bump():
        global SCALE
        SCALE += 1
        return SCALE

    def work(x: int, *, base=10) -> tuple:
        return (fact(x) + math.floor(math.sqrt(x)) + base) * SCALE, os.sep, bump(), bump.__doc__

    work.tag = "tagged"
    bump.__doc__ = "the doc"
"""


def test_plain_main_functions_go_by_value_without_cloudpickle() -> None:
    work = _main_function(MAIN_SCRIPT, "work")
    data = dumps(work)
    assert b"cloudpickle" not in data and b"fastparallel.serialize.byvalue" in data
    copy = loads(data)
    assert copy is not work and copy.tag == "tagged" and copy.__kwdefaults__ == {"base": 10}
    assert copy.__annotations__ == work.__annotations__ != {} and copy.__qualname__ == "work"
    # Recursion, a module, a default, a global that another function changes: one globals
    # dictionary for the functions of one pickle, as in __main__.
    assert copy(4) == ((24 + 2 + 10) * 3, "/", 4, "the doc")
    assert copy(4)[0] == (24 + 2 + 10) * 4
    assert work.__globals__["SCALE"] == 3  # the original's globals are untouched


@pytest.mark.parametrize(
    "source",
    [
        "class Box:\n    pass\ndef f(x):\n    return Box()",  # a class of __main__
        "def outer(y):\n    def f(x):\n        return x + y\n    return f\nf = outer(1)",  # a closure
        "import sys\nme = sys.modules['__main__']\ndef f(x):\n    return me",  # __main__ itself
    ],
)
def test_what_by_value_cannot_carry_goes_to_cloudpickle(source: str) -> None:
    fn = _main_function(source, "f")
    with pytest.raises(byvalue.Unsupported):
        byvalue.dumps(fn, 5)
    assert b"cloudpickle" in dumps(fn)


# In a fresh interpreter: the template's request loop, served in-process over a socketpair.
SERVE_PRELOAD = """
    import socket, sys
    from fastparallel.backends.processes.template.server import PRELOAD, _Template

    ours, theirs = socket.socketpair()
    template = _Template(theirs)
    before = "cloudpickle" in sys.modules
    ours.send(PRELOAD)
    served = template.serve_request()
    after = "cloudpickle" in sys.modules
    ours.close()
    print(before, served, after, template.serve_request())
"""


@pytest.mark.timeout(60)
def test_the_template_imports_cloudpickle_when_asked_and_keeps_serving() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SERVE_PRELOAD)],
        env=h.script_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Not loaded before; loaded by the request, which keeps the template serving; end of
    # file then means the caller has gone.
    assert done.stdout.split() == ["False", "True", "True", "False"]


SCRIPT = """
    import os, sys
    from fastparallel import parallel

    def pids(_):
        return os.getpid(), os.getppid(), "cloudpickle" in sys.modules

    if __name__ == "__main__":
        found = set(parallel(pids, range(64), n_workers=2, chunksize=1))
        print("cloudpickle" in sys.modules, " ".join(str(pid) for *pair, _ in found for pid in pair))
"""


@pytest.mark.timeout(60)
def test_a_script_pickles_without_cloudpickle_and_leaves_nothing_behind_at_exit(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=str(tmp_path),
        env=h.script_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    loaded, *found = done.stdout.split()
    assert loaded == "False"  # double() went by value without cloudpickle
    pids = {int(pid) for pid in found}
    assert len(pids) >= 2  # the template and at least one worker
    # Checked at once, without waiting: the script's exit waited for them, and each was
    # reaped (no process left, not even a zombie).
    assert [pid for pid in pids if h.proc_stat(pid) is not None] == []


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a fresh interpreter, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


# On 3.10, fastparallel's timeout errors also subclass concurrent.futures.TimeoutError (the
# builtin TimeoutError from 3.11 on), and importing concurrent.futures imports logging.
LOGGING_AT_IMPORT = sys.version_info < (3, 11)
NOT_IMPORTED = "['logging']" if LOGGING_AT_IMPORT else "[]"


def test_the_first_import_leaves_out_what_a_call_may_never_need() -> None:
    # random: only a retry needs it; byvalue and cloudpickle: only a call that pickles a
    # function by value; logging: only a message someone may read (fastparallel.logs);
    # dataclasses (and the inspect it imports): not on the way of any call.
    code = (
        "import sys\nfrom fastparallel import parallel\n"
        "print(sorted(m for m in ('random', 'cloudpickle', 'fastparallel.serialize.byvalue', 'logging', 'dataclasses')"
        " if m in sys.modules))"
    )
    done = _python(code)
    assert done.stdout.strip() == NOT_IMPORTED


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the caller is forked on Linux")
def test_the_process_backend_comes_with_parallel_and_the_fork_path_imports_nothing_more() -> None:
    # Left to the first call, the process backend's ~25 modules took it ~4 ms (a third of
    # a first call over 20k tiny items). Forking the caller needs none of the template's
    # modules, nor byvalue (the context is plain data) nor resource (sysconf tells).
    code = (
        "import sys\nfrom fastparallel import parallel\n"
        "imported = set(sys.modules)\n"
        "assert parallel(abs, range(-9, 9), n_workers=2) == [abs(i) for i in range(-9, 9)]\n"
        "print(sorted(m for m in set(sys.modules) - imported"
        " if m.startswith('fastparallel') or m in ('resource', 'cloudpickle')))\n"
        "print('fastparallel.backends.processes.pool' in imported)"
    )
    done = _python(code)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout


def test_a_call_logs_nothing_and_imports_no_logging_unless_someone_may_read_it() -> None:
    # Without logging imported, DEBUG and INFO messages can reach no handler: they are
    # dropped without importing it. Once it is configured, they arrive, from their own line.
    code = (
        "import sys\nfrom fastparallel import parallel\n"
        "parallel(abs, range(-50, 50), threadpool='auto', progress=False)\n"
        "print('logging' in sys.modules)\n"
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s %(module)s %(message)s')\n"
        "parallel(abs, range(-50, 50), threadpool='auto', progress=False)\n"
    )
    done = _python(code)
    assert done.stdout.strip() == str(LOGGING_AT_IMPORT)
    assert done.stderr.startswith("fastparallel choose auto: "), done.stderr


def test_a_call_imports_no_module_it_does_not_use() -> None:
    # inspect (with ast, dis, tokenize: ~7 ms) only told coroutine functions apart; the
    # flags of their code tell as well. logging, dataclasses: see above.
    code = (
        "import sys\nfrom fastparallel import parallel\n"
        "assert parallel(abs, range(-9, 9)) == parallel(abs, range(-9, 9), threadpool=True)\n"
        "print(sorted(m for m in ('inspect', 'logging', 'dataclasses') if m in sys.modules))"
    )
    done = _python(code)
    assert done.stdout.strip() == NOT_IMPORTED


def test_coroutine_functions_are_told_apart_with_or_without_inspect() -> None:
    code = (
        "import functools, sys\nfrom fastparallel.backends.runner import is_coroutine_function as f\n"
        "async def a(x): pass\ndef s(x): pass\n"
        "class C:\n    async def __call__(self, x): pass\n    async def m(self): pass\n"
        "class D:\n    def __call__(self, x): pass\n"
        "cases = lambda: [f(a), f(s), f(C()), f(D()), f(C().m), f(functools.partial(a, 1)), f(len), f(C),"
        " f(lambda: 1), f(functools.partial(C().m))]\n"
        "without = cases()\nassert 'inspect' not in sys.modules\nimport inspect\n"
        "print(without, without == cases())"
    )
    done = _python(code)
    assert (
        done.stdout.strip()
        == "[True, False, True, False, True, True, False, False, False, True] True"
    )
