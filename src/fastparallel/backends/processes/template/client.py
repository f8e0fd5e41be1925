"""The caller's handle on the template process (see :mod:`.template`): start, ask, stop.

One template serves every process pool of this process (calls from several threads
included). It starts on the first call that needs a worker (:func:`start_early`: before
this process prepares the pool and pickles the call, so that the two overlap), restarts
if it died, stops with :func:`fastparallel.shutdown` and at interpreter exit, and is
forgotten in a child forked from this process.
"""

from __future__ import annotations

# Only the C halves of socket (and no .template) before the template has started: the
# modules that wrap them take a few milliseconds to import, which the template's boot
# can overlap (see _Template).
import _socket
import marshal
import os
import sys
import threading

from fastparallel import logs
from fastparallel.backends.processes.handles import can_fork_workers
from fastparallel.worker_state import at_fork_in_child

TYPE_CHECKING = False  # nothing more on a first call's way than needed
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "fork_worker",
    "preload_cloudpickle",
    "preload_modules",
    "running",
    "start_early",
    "stop_template",
]


_STOP_SECONDS = 2.0  # at exit: how long to wait for the template to end
_REAP_SECONDS = 0.5  # shutdown(): how long to wait, so that no exited template stays a zombie


class _Template:
    """One started template process and the caller's end of its socket."""

    def __init__(self) -> None:
        import subprocess

        ours, theirs = _socket.socketpair()
        path_r, path_w = os.pipe()  # sys.path travels here: it may be too long for a command line
        self.preloaded: set[str] = set()  # modules it was asked to import
        self.last_preload: list[str] = []
        try:
            self.process = subprocess.Popen(
                _command(theirs.fileno(), path_r),
                pass_fds=[theirs.fileno(), path_r],
                close_fds=True,
                stdin=subprocess.DEVNULL,
                **_own_process_group(),
            )
        except BaseException:
            ours.close()
            os.close(path_w)
            raise
        finally:
            theirs.close()
            os.close(path_r)
        try:
            self._boot(ours, path_w)
        except BaseException:  # Ctrl-C while it boots: leave nothing behind, print nothing
            ours.close()
            control = getattr(self, "control", None)
            if control is not None:
                control.close()
            self.process.kill()
            self.process.wait()
            raise

    def _boot(self, ours: _socket.socket, path_w: int) -> None:
        import socket  # now that it boots

        try:
            with open(path_w, "wb") as path:
                path.write(marshal.dumps(_template_path()))
        except BrokenPipeError:
            pass  # it died at once: the first request finds out and says so
        self.control = socket.socket(fileno=ours.detach())
        logs.debug("started the template process %s", self.process.pid)

    def request(self, fds: list[int]) -> tuple[int, int | None]:
        """Ask for a worker with these worker-side descriptors; its pid (negative: the fork
        failed, -errno) and pidfd. ``EOFError`` or ``ConnectionError``: the template died."""
        import socket

        from fastparallel.backends.processes.template.messages import PID, REQUEST

        socket.send_fds(self.control, [REQUEST], fds)
        data, got, _, _ = socket.recv_fds(self.control, PID.size, 1)
        while 0 < len(data) < PID.size:
            more = self.control.recv(PID.size - len(data))
            if not more:
                break
            data += more
        if len(data) < PID.size:
            for fd in got:
                os.close(fd)
            raise EOFError("the template process went away")
        pidfd = got[0] if got else None
        if pidfd is not None:
            os.set_inheritable(pidfd, False)
        return PID.unpack(data)[0], pidfd

    def close(self) -> None:
        """Tell it to stop: it forks no more and exits once its workers have ended."""
        self.control.close()

    def ended(self, timeout: float = 0) -> bool:
        import subprocess

        if timeout > 0 and self.process.returncode is None and hasattr(os, "pidfd_open"):
            _wait_exit(self.process.pid, timeout)  # Popen.wait(timeout) polls with growing sleeps
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


def _own_process_group() -> Any:  # Any: Popen's overloads take no **dict
    """Popen's arguments for a process group of its own (Python 3.11+): a terminal's Ctrl-C,
    sent to the caller's group, never reaches the template, not even while its interpreter
    starts (before it ignores SIGINT). It stays in the caller's session."""
    return {"process_group": 0} if sys.version_info >= (3, 11) else {}


def _wait_exit(pid: int, timeout: float) -> None:
    """Wait up to ``timeout`` for ``pid`` (a child not yet reaped) to exit, woken by its pidfd."""
    from fastparallel.backends.processes.fds import wait_ready

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        wait_ready([pidfd], timeout)
    finally:
        os.close(pidfd)


def _template_path() -> list[str]:
    """The template's ``sys.path``: the caller's, behind the folder of this very fastparallel."""
    package_parent = os.path.dirname(
        os.path.dirname(os.path.abspath(sys.modules["fastparallel"].__file__ or ""))
    )
    return [package_parent, *(p for p in sys.path if isinstance(p, str))]


def _command(control_fd: int, path_fd: int) -> list[str]:
    """The template's command line: this interpreter and its flags; it reads ``sys.path``
    from ``path_fd`` before importing anything of ours."""
    import subprocess

    code = (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "import marshal, os, sys\n"
        f"with open({path_fd}, 'rb') as path: data = path.read()\n"
        # No path: the caller was interrupted while starting it; it wants nothing of us.
        "if not data: os._exit(0)\n"
        "sys.path[:] = marshal.loads(data)\n"
        f"from fastparallel.backends.processes.template.server import main; main({control_fd})\n"
    )
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return [sys.executable, *flags, "-c", code]


class _Templates:
    """The template of this process (at most one running), and stopped ones not yet ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: _Template | None = None
        self.retired: list[_Template] = []
        self.closed = False  # the interpreter is exiting: start no new template
        self.refused: set[str] = set()  # modules whose import started threads in a template

    def fork_worker(self, fds: list[int]) -> tuple[int, int | None]:
        """A worker forked with these worker-side descriptors: its pid and pidfd."""
        with self.lock:
            for attempt in (1, 2):
                template = self.running()
                try:
                    pid, pidfd = template.request(fds)
                except (EOFError, ConnectionError) as exc:  # it died: start a new one, once
                    self._retire()
                    if attempt == 2:
                        code = template.process.returncode if template.ended(1.0) else None
                        raise RuntimeError(
                            f"fastparallel: the template process that starts worker processes ended "
                            f"(exit code {code}) before it could start one; its error, if any, is on stderr"
                        ) from exc
                    continue
                except BaseException:
                    self._retire()  # interrupted between request and reply: the two are out of step
                    raise
                if pid == 0:  # what it imported for us started threads: forks are unsafe
                    self.refuse_preloads(template)
                    if attempt == 1:
                        continue
                    raise RuntimeError("fastparallel: the template process cannot fork safely")
                if pid < 0:
                    raise OSError(
                        -pid, f"fastparallel: could not fork a worker process: {os.strerror(-pid)}"
                    )
                return pid, pidfd
        raise AssertionError("unreachable")

    def preload(self, modules: list[str]) -> None:
        """Ask the template to import these modules (those it was not asked for yet)."""
        with self.lock:
            template = self.running()
            new = [m for m in modules if m not in template.preloaded and m not in self.refused]
            if not new:
                return
            from fastparallel.backends.processes.template.messages import IMPORT, SIZE

            payload = marshal.dumps(new)
            try:
                template.control.sendall(IMPORT + SIZE.pack(len(payload)) + payload)
            except OSError:
                return  # it died: the next request finds out
            template.preloaded.update(new)
            template.last_preload = new

    def refuse_preloads(self, template: _Template) -> None:
        """The modules last imported in ``template`` started threads there: never again."""
        self.refused.update(template.last_preload)
        logs.info(
            "template: importing %s there started threads; workers will import it themselves",
            ", ".join(template.last_preload) or "modules",
        )
        self._retire()

    def running(self) -> _Template:
        if self.closed:
            raise RuntimeError(
                "fastparallel: the interpreter is exiting; no worker process may start"
            )
        self.retired = [t for t in self.retired if not t.ended()]
        if self.current is None:
            at_fork_in_child(_forget_after_fork)
            self.current = _Template()
        return self.current

    def _retire(self) -> None:
        if self.current is not None:
            self.current.close()
            self.retired.append(self.current)
            self.current = None

    def stop(self, at_exit: bool) -> None:
        """Retire the running template. It ends once its workers have: at once when no
        call is running; at exit, wait for that (killing it if it takes too long)."""
        with self.lock:
            self._retire()
            self.closed = at_exit
            for template in self.retired:
                if not template.ended(_STOP_SECONDS if at_exit else _REAP_SECONDS) and at_exit:
                    template.process.kill()
                    template.ended(_STOP_SECONDS)
            self.retired = [t for t in self.retired if not t.ended()]


_templates = _Templates()


def running() -> bool:
    """Whether this process's template process is running (a worker can be forked at once)."""
    current = _templates.current
    return current is not None and current.process.poll() is None


def start_early() -> None:
    """Start the template now if it is not running: it boots (~20 ms) while the caller
    goes on preparing the pool."""
    if can_fork_workers():
        with _templates.lock:
            _templates.running()


def preload_cloudpickle() -> None:
    """Ask the running template (if any) to import cloudpickle now, while this process
    imports it too: workers forked after that start with it loaded."""
    with _templates.lock:
        template = _templates.current
        if template is not None:
            from fastparallel.backends.processes.template.messages import PRELOAD

            try:  # noqa: SIM105 - nothing more on a first call's way than needed
                template.control.send(PRELOAD)
            except OSError:
                pass  # it died: the next request finds out


def preload_modules(modules: list[str]) -> None:
    """Have the template import these modules (the caller's ``sys.modules`` names), once,
    before it forks the next workers, so that they start with them loaded."""
    if modules:
        _templates.preload(modules)


def fork_worker(fds: list[int]) -> tuple[int, int | None]:
    """A worker forked by the template with these worker-side descriptors: its pid and pidfd."""
    return _templates.fork_worker(fds)


def stop_template(at_exit: bool = False) -> None:
    """Stop the template (a later call starts a new one); at exit, wait for it to end."""
    _templates.stop(at_exit)


def _forget_after_fork() -> None:
    """In a child forked from this process: close our copy of the socket, forget the rest."""
    global _templates
    if _templates.current is not None:
        _templates.current.control.close()
    _templates = _Templates()
