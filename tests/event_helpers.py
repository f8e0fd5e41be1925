"""An event that worker processes can wait on (imported by name in them)."""

from __future__ import annotations

import contextlib
import os
import time


class FileEvent:
    """``threading.Event``'s interface over a file: set where the file exists.

    CPython's later 3.13 tests (``create_event()`` in ``test_wait``) hand worker processes
    an event from a multiprocessing manager. A manager's proxies authenticate with the
    key multiprocessing gives its own children, which fastparallel's workers do not have;
    a file is a handshake any process can see.
    """

    def __init__(self, path: str):
        self.path = path

    def set(self) -> None:
        with open(self.path, "w"):
            pass

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True
