"""Starting worker processes: the start method, the channels, the current-item slot.

A launcher turns a request for a worker into a running :class:`WorkerProcess`: a
process with a channel each way and a shared slot where it writes the index of the item
it is running. The process pool (:mod:`.processes`) never needs to know how the process
was started. There are two launchers:

* ``DefaultLauncher`` (:mod:`.forking`), the default on Linux: workers are forks of
  the caller when that is safe, else of fastparallel's template process;
* ``TemplateLauncher`` (:mod:`.template.launcher`), ``method="template"`` and the
  default elsewhere where ``os.fork`` exists (macOS): forks of the template;
* :class:`MultiprocessingLauncher`, for ``method='fork' | 'spawn' | 'forkserver'`` or a
  multiprocessing context (and the default where there is no ``fork``: Windows).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any, Protocol

from fastparallel import logs
from fastparallel.backends.processes.fds import enlarge_pipe
from fastparallel.backends.processes.forking import DefaultLauncher
from fastparallel.backends.processes.handles import can_fork_workers
from fastparallel.backends.processes.wire.channel import Channel, channel_from, new_passers
from fastparallel.backends.processes.worker import process_main
from fastparallel.backends.slots import STARTING

__all__ = [
    "Launcher",
    "MultiprocessingLauncher",
    "WorkerProcess",
    "make_launcher",
    "resolve_context",
]


class WorkerProcess(Protocol):
    """A started worker process as the pool sees it."""

    inbox: Channel  # results come in here
    outbox: Channel  # chunks go out here
    current_item: Any  # [0]: input index of the item it runs; -1: none; STARTING: still starting
    # [1]: with item_timeout, when that item started (time.monotonic_ns())

    @property
    def pid(self) -> int: ...

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable when the process has ended."""

    def is_alive(self) -> bool: ...

    def exitcode(self) -> int | None:
        """The exit code once it has ended (negative: killed by that signal), else None."""

    def kill(self) -> None: ...

    def join(self, timeout: float) -> None: ...

    def close(self) -> None:
        """Release the channels and whatever else it holds (after it has ended)."""

    def forget_in_child(self) -> None:
        """In a forked child of the caller: close the caller's descriptors of it."""


class Launcher(Protocol):
    forks: bool
    """Whether workers are forked from the caller during the call (they see its memory)."""

    def expect(self, fn: object) -> None:
        """A call of ``fn`` is about to start workers: prepare what they will need."""

    def preload(self, modules: list[str]) -> None:
        """The call needs these modules (names in the caller's ``sys.modules``): have
        them imported where workers fork from, if that is not the caller."""

    def describe(self) -> str:
        """How workers start, in a few words (with the reason, where there is a choice)."""

    def start(self) -> WorkerProcess: ...


def resolve_context(method: Any) -> tuple[str, Any]:
    """The start method's name and multiprocessing context for ``method=`` (not None)."""
    import multiprocessing

    if isinstance(method, str):
        return method, multiprocessing.get_context(method)
    return method.get_start_method(), method


_SCANNED_BYTES = 1 << 16  # the part of a pickled call searched for module names


def needed_modules(pickled: bytes | memoryview) -> list[str]:
    """The modules a pickled call refers to, as this process's ``sys.modules`` names them
    (the module of ``fn``, of the globals and arguments that travel with it).

    Example:
        >>> import pickle, json
        >>> needed_modules(pickle.dumps((json.dumps, [1])))
        ['json']
    """
    data = bytes(pickled[:_SCANNED_BYTES])
    modules = sys.modules
    found: dict[str, None] = {}
    at = data.find(b"\x8c")  # SHORT_BINUNICODE: how protocol 4+ writes a module's name
    while 0 <= at < len(data) - 1:
        name = data[at + 2 : at + 2 + data[at + 1]]
        at = data.find(b"\x8c", at + 1)
        try:
            text = name.decode()
        except UnicodeDecodeError:
            continue
        if text in modules and text != "__main__" and not text.startswith("fastparallel"):
            found[text] = None
    return list(found)


def make_launcher(method: Any) -> tuple[Launcher, Hashable]:
    """The launcher for ``method=``, and a key that tells its pools apart from others'.

    ``None``: on Linux, forks of the caller when that is safe, else of fastparallel's
    template process (:mod:`.forking`); the template where the platform can fork but
    forking the caller is not sane (macOS); else ``spawn``. ``"template"``: always the
    template.
    """
    if method in (None, "template"):
        if can_fork_workers():
            if method is None and sys.platform.startswith("linux"):
                return DefaultLauncher(), "default"
            from fastparallel.backends.processes.template.launcher import TemplateLauncher

            return TemplateLauncher(), "template"
        method = "spawn"
    name, ctx = resolve_context(method)
    return MultiprocessingLauncher(ctx), name if isinstance(method, str) else id(ctx)


class MultiprocessingWorker:
    """A worker started by :mod:`multiprocessing`, as the pool sees it."""

    __slots__ = ("current_item", "inbox", "outbox", "process")

    def __init__(self, process: Any, inbox: Channel, outbox: Channel, current_item: Any):
        self.process = process
        self.inbox = inbox
        self.outbox = outbox
        self.current_item = current_item

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def sentinel(self) -> int:
        return int(self.process.sentinel)

    def is_alive(self) -> bool:
        return bool(self.process.is_alive())

    def exitcode(self) -> int | None:
        code = self.process.exitcode
        return None if code is None else int(code)

    def kill(self) -> None:
        self.process.kill()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def close(self) -> None:
        self.inbox.close()
        self.outbox.close()
        self.process.close()

    def forget_in_child(self) -> None:
        self.inbox.close()
        self.outbox.close()


class MultiprocessingLauncher:
    """Starts workers with a :mod:`multiprocessing` context (fork, spawn or forkserver)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        # Forked workers see the caller's state as of their fork: such a pool serves one
        # call only (like fastcore's), and may receive __main__ objects by reference.
        self.forks = ctx.get_start_method() == "fork"

    def expect(self, fn: object) -> None:
        pass

    def preload(self, modules: list[str]) -> None:
        pass  # fork: the caller's modules; spawn and forkserver import in each worker

    def describe(self) -> str:
        return f"multiprocessing {self.ctx.get_start_method()}"

    def start(self) -> MultiprocessingWorker:
        import multiprocessing.context

        ctx = self.ctx
        worker_in, to_worker = ctx.Pipe(duplex=False)
        from_worker, worker_out = ctx.Pipe(duplex=False)
        enlarge_pipe(to_worker.fileno())
        enlarge_pipe(worker_out.fileno())
        passer, worker_passer = new_passers()
        if worker_passer is not None:
            import socket  # multiprocessing hands a child socket.socket objects, not _socket's

            worker_passer = socket.socket(fileno=worker_passer.detach())
        current_item = ctx.RawArray("q", 2)  # the item's index, and its start time (item_timeout)
        current_item[0] = STARTING
        process = ctx.Process(
            target=process_main,
            args=(worker_in, worker_out, current_item, worker_passer),
            name="fastparallel-worker",
            daemon=False,  # daemonic processes may not start their own pools (nested calls)
        )
        default_context = getattr(multiprocessing.context, "_default_context", None)
        unset = getattr(default_context, "_actual_context", "") is None
        process.start()
        if unset:
            # Starting a spawn/forkserver process asks multiprocessing.get_start_method(),
            # which fixes the global default as a side effect; undo it so that the
            # caller's own set_start_method() still works later.
            default_context._actual_context = None  # type: ignore[union-attr]
        worker_in.close()
        worker_out.close()
        if worker_passer is not None:
            worker_passer.close()
        logs.debug("started worker process %s", process.pid)
        slot = memoryview(current_item).cast("B").cast("q")
        return MultiprocessingWorker(
            process, channel_from(from_worker, passer), channel_from(to_worker, passer), slot
        )
