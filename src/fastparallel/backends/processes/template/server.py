"""The template process: a small, single-threaded process that forks worker processes.

The caller starts it with exec (:mod:`.template_client`), so threads in the caller
never leak into a fork, and the caller's ``__main__`` is never imported or run. It reads
the caller's ``sys.path`` from a pipe, then imports what a worker needs (:mod:`.worker`
and its imports) once; each worker is a fork of it and starts with all that loaded, in
about a millisecond.

It speaks to the caller only over one end of a ``socketpair`` inherited by file
descriptor (no named socket that another process could connect to), in the few messages
of :mod:`.messages`.

When a worker ends, the template reaps it and writes its exit code (4 bytes, negative
for a signal, as in multiprocessing) to the worker's status pipe, then closes it: the
caller waits on the read end. When the caller goes away (end of file on the socket),
the template forks no more and exits once its last worker has ended; workers end on
end of file on their inbound pipe, whose write end only the caller holds.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import socket
import sys

from fastparallel.backends import native_threads
from fastparallel.backends.processes.template.messages import (
    IMPORT,
    PID,
    PRELOAD,
    REQUEST,
    REQUEST_FDS,
    SIZE,
    STATUS,
)
from fastparallel.backends.slots import SLOT_BYTES

__all__ = ["main"]

# cloudpickle (needed by workers whose fn comes from __main__ or is a lambda) and ctypes
# (to map shared memory: see buffers.py) are imported once the template has been idle this
# long: importing them at start would delay the first workers by ~15 ms, while later forks
# (replacements, new pools) start with them loaded.
_PRELOAD_AFTER_IDLE_MS = 200


class _Template:
    def __init__(self, control: socket.socket):
        # Imported here, in the template, once: every worker forked from it has them.
        from fastparallel.backends.processes import worker
        from fastparallel.backends.processes.wire import channel, protocol
        from fastparallel.serialize import byvalue  # noqa: F401 - to load a function of the caller's __main__

        self.channel = channel
        self.protocol = protocol
        self.worker = worker
        self.control = control
        self.unsafe = ""  # why forking this process became unsafe (imports started threads)
        self.statuses: dict[int, int] = {}  # live worker pid -> write end of its status pipe
        self.wake_r, self.wake_w = os.pipe()  # SIGCHLD wakes the loop through it
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, _ignore)  # a handler, so that the wakeup fd is written
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        poller.register(self.control, select.POLLIN)
        accepting = True
        preloaded = False
        while accepting or self.statuses:
            events = poller.poll(None if preloaded else _PRELOAD_AFTER_IDLE_MS)
            if not events:
                preloaded = _preload()
            for fd, _ in events:
                if fd == self.wake_r:
                    _drain(self.wake_r)
                    self.reap()
                elif accepting and not self.serve_request():
                    accepting = False
                    poller.unregister(self.control)
                    self.control.close()

    def serve_request(self) -> bool:
        """Fork a worker for the caller's request; False once the caller has gone."""
        try:
            message, fds, _, _ = socket.recv_fds(self.control, 1, REQUEST_FDS)
        except OSError:
            return False
        if message == PRELOAD and not fds:
            _import_cloudpickle()
            return True
        if message == IMPORT and not fds:
            return self.import_modules()
        if message != REQUEST or len(fds) != REQUEST_FDS:
            for fd in fds:
                os.close(fd)
            return False
        inbound, outbound, status, slot, passer = fds
        if self.unsafe:  # forks of this process are no longer safe: the caller starts another
            for fd in fds:
                os.close(fd)
            self.reply(0)
            return False
        try:
            pid = os.fork()
        except OSError as exc:
            pid = -(exc.errno or 1)
        if pid == 0:
            self.become_worker(inbound, outbound, status, slot, passer)
        for fd in (inbound, outbound, slot, passer):
            os.close(fd)
        if pid < 0:
            os.close(status)
        else:
            self.statuses[pid] = status
        return self.reply(pid)

    def import_modules(self) -> bool:
        """Import the modules of an IMPORT message; False once the caller has gone."""
        import marshal
        import warnings

        size = self.receive(SIZE.size)
        payload = None if size is None else self.receive(SIZE.unpack(size)[0])
        if payload is None:
            return False
        with warnings.catch_warnings():  # the workers' business, if they import it again
            warnings.simplefilter("ignore")
            # NumPy and friends start no thread pool here (the template stays single-
            # threaded); each worker sizes its pools when its context comes.
            added = native_threads.one_thread_for_imports()
            for name in marshal.loads(payload):
                try:  # noqa: SIM105 - no contextlib in worker processes
                    __import__(name)
                except (Exception, SystemExit):
                    pass  # a worker that needs it fails there, with the caller's context
            native_threads.unset(added)
        native_threads.survey_native_pools()  # for every worker forked from here
        from fastparallel.backends.processes.forksafe import unsafe_reason

        self.unsafe = unsafe_reason()
        return True

    def receive(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                more = self.control.recv(size - len(data))
            except OSError:
                return None
            if not more:
                return None
            data += more
        return data

    def reply(self, pid: int) -> bool:
        pidfd = _open_pidfd(pid)
        try:
            socket.send_fds(self.control, [PID.pack(pid)], [] if pidfd is None else [pidfd])
        except OSError:
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return True

    def reap(self) -> None:
        while self.statuses:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.statuses.pop(pid, None)
            if fd is not None:
                try:  # noqa: SIM105 - no contextlib in worker processes (its import costs every start)
                    os.write(fd, STATUS.pack(os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass  # the caller closed its end: nobody is waiting for this worker
                os.close(fd)

    def become_worker(
        self, inbound: int, outbound: int, status: int, slot: int, passer_fd: int
    ) -> None:
        """In the forked child: drop what only the template may hold, then serve."""
        worker, protocol, channel = self.worker, self.protocol, self.channel
        out = channel.Channel(outbound)
        try:
            out.passer = passer = socket.socket(fileno=passer_fd)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.control.close()
            # Other workers' status pipes and our own: only the template writes them.
            for fd in (self.wake_r, self.wake_w, status, *self.statuses.values()):
                os.close(fd)
            for fd in (inbound, outbound, passer_fd):
                os.set_inheritable(fd, False)  # not into processes that fn starts
            current_item = memoryview(mmap.mmap(slot, SLOT_BYTES)).cast("q")
            os.close(slot)
        except BaseException as exc:
            worker.report_start_failure(out, exc, protocol.StartStage.FORK)  # exits
        try:
            worker.serve(channel.Channel(inbound, passer), out, current_item)  # exits when done
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(1)


def _preload() -> bool:
    from fastparallel.backends.processes.wire.buffers import prepare_mapping

    _import_cloudpickle()
    try:  # noqa: SIM105 - no contextlib in worker processes (its import costs every start)
        prepare_mapping()
    except Exception:  # pragma: no cover - workers import it on demand anyway
        pass
    return True


def _import_cloudpickle() -> None:
    try:  # noqa: SIM105 - no contextlib in worker processes (its import costs every start)
        import cloudpickle  # noqa: F401
    except Exception:  # pragma: no cover - workers import it on demand anyway
        pass


def _ignore(signum: int, frame: object) -> None:
    pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for the caller: it may signal the worker without a pid-reuse race."""
    if pid <= 0 or not hasattr(os, "pidfd_open"):
        return None
    try:
        return int(os.pidfd_open(pid))
    except OSError:
        return None


def main(control_fd: int) -> None:
    """The template's life: fork workers on request until the caller goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's business
    template = _Template(socket.socket(fileno=control_fd))
    template.run()
    # Skip the interpreter's teardown (~10 ms with the workers' modules loaded): the caller
    # waits for this exit at its own exit. Nothing of ours is left to flush or clean up.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
